"""Any MLP, as a module or a checkpoint, into an ordered chain of ``(W, b)``.

:func:`from_module` follows the module's real call order (``torch.fx``
tracing where it works, parameter registration order otherwise) and reads the
activations from the modules and functional calls between the ``Linear``
layers. :func:`from_checkpoint` reads a state dict from a file (never
unpickling code) or a dict, unwraps containers and prefixes, and orders the
layers by their key order, the numbering of their names, or the one order
their shapes allow (an Euler trail through the widths, found in polynomial
time), or takes the order from ``layers=``. Both check what they find and
raise a ``ValueError`` that names the key, shape, layer or file at fault.
"""
from __future__ import annotations

import collections
import functools
import math
import operator
import os
import re
from collections.abc import Mapping
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.fx
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.data import Data

from nngraph import activations as A
from nngraph.graph import from_weights, read_weights_only

__all__ = ['from_module', 'from_checkpoint', 'load_state_dict', 'chain_layers']

CONTAINER_KEYS = ('state_dict', 'model_state_dict', 'model', 'net', 'params', 'weights')
STRIP_PREFIXES = ('module.', '_orig_mod.')
W0_ATTRS = ('w0', 'omega_0', 'omega0', 'omega')

# --------------------------------------------------------------------------- #
# Modules
# --------------------------------------------------------------------------- #

_ACTIVATION_MODULES = {
    nn.ReLU: lambda m: 'relu',
    nn.LeakyReLU: lambda m: f'leaky_relu:{float(m.negative_slope)!r}',
    nn.Tanh: lambda m: 'tanh',
    nn.Sigmoid: lambda m: 'sigmoid',
    nn.GELU: lambda m: 'gelu',
    nn.SiLU: lambda m: 'silu',
    nn.Identity: lambda m: 'identity',
    A.Sine: lambda m: f'sine:{float(m.w0)!r}',
}
# Modules that carry no parameters and do not change the function of an MLP.
_NEUTRAL_MODULES = (nn.Dropout, nn.Flatten, nn.Unflatten)

_ACTIVATION_FUNCTIONS = {
    torch.relu: 'relu', F.relu: 'relu', torch.tanh: 'tanh', F.tanh: 'tanh',
    torch.sigmoid: 'sigmoid', F.sigmoid: 'sigmoid', F.gelu: 'gelu', F.silu: 'silu',
    F.leaky_relu: 'leaky_relu', torch.sin: 'sine',
}
_ACTIVATION_METHODS = {'relu': 'relu', 'tanh': 'tanh', 'sigmoid': 'sigmoid', 'sin': 'sine'}
_SHAPE_METHODS = {'view', 'reshape', 'flatten', 'squeeze', 'unsqueeze', 'contiguous', 'float',
                  'size', 'to'}
_SHAPE_FUNCTIONS = {torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze,
                    operator.getitem, getattr}


def _sine_layer_w0(m: nn.Module) -> Optional[float]:
    """``w0`` of a SIREN layer module (a ``Linear`` child plus a float ``w0``,
    ``omega_0`` or ``omega`` attribute), else ``None``."""
    children = list(m.children())
    if len(children) != 1 or not isinstance(children[0], nn.Linear):
        return None
    for attr in W0_ATTRS:
        v = getattr(m, attr, None)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return float(v)
        if isinstance(v, Tensor) and v.numel() == 1:
            return float(v)
    return None


class _Tracer(torch.fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return (isinstance(m, (nn.Linear, *_ACTIVATION_MODULES, *_NEUTRAL_MODULES))
                or _sine_layer_w0(m) is not None or super().is_leaf_module(m, qualname))


class _Chain:
    """Collects Linear layers and the activation after each, in call order."""

    def __init__(self, override: bool) -> None:
        self.names: List[str] = []
        self.linears: List[nn.Linear] = []
        self.acts: List[str] = []
        self.override = override
        self.pending_scale: Optional[float] = None

    def linear(self, name: str, lin: nn.Linear) -> None:
        if any(lin is seen for seen in self.linears):
            raise ValueError(f"layer '{name}' is called more than once (shared weights are not an MLP)")
        self._flush_scale(f"before layer '{name}'")
        self.names.append(name)
        self.linears.append(lin)
        self.acts.append('identity')

    def activation(self, spec: str, where: str) -> None:
        if self.pending_scale is not None:
            if not spec.startswith('sine'):
                self._flush_scale(where)
            else:
                spec = f'sine:{self.pending_scale * A.get(spec).param!r}'
                self.pending_scale = None
        if not self.linears:
            raise ValueError(f'activation {spec!r} ({where}) comes before the first Linear layer')
        if self.acts[-1] != 'identity':
            raise ValueError(f"two activations after layer '{self.names[-1]}': "
                             f'{self.acts[-1]!r} and {spec!r} ({where})')
        self.acts[-1] = A.canonical(spec)

    def scale(self, factor: float, where: str) -> None:
        self._flush_scale(where)
        self.pending_scale = factor

    def unknown(self, what: str) -> None:
        if not self.override:
            raise ValueError(f'{what} is not a Linear layer or a known activation; pass '
                             f'activation=... to from_module to say what the network computes')

    def _flush_scale(self, where: str) -> None:
        if self.pending_scale is not None:
            self.pending_scale = None
            self.unknown(f'a multiplication by a constant that is not followed by sin ({where})')


def _scalar(arg: Any) -> Optional[float]:
    if isinstance(arg, (int, float)) and not isinstance(arg, bool):
        return float(arg)
    return None


def _walk_fx(module: nn.Module, chain: _Chain) -> None:
    gm = torch.fx.GraphModule(module, _Tracer().trace(module))
    for node in gm.graph.nodes:
        where = f'node {node.name!r}'
        if node.op == 'call_module':
            _module_step(node.target, gm.get_submodule(node.target), chain)
        elif node.op == 'call_function':
            if node.target in _ACTIVATION_FUNCTIONS:
                spec = _ACTIVATION_FUNCTIONS[node.target]
                if spec == 'leaky_relu':
                    slope = node.kwargs.get('negative_slope', node.args[1] if len(node.args) > 1 else 0.01)
                    spec = f'leaky_relu:{float(slope)!r}'
                elif spec == 'sine':
                    spec = 'sine:1.0'
                chain.activation(spec, where)
            elif node.target in (operator.mul, torch.mul) and any(_scalar(a) is not None for a in node.args):
                chain.scale(next(_scalar(a) for a in node.args if _scalar(a) is not None), where)
            elif node.target not in _SHAPE_FUNCTIONS:
                chain.unknown(f'function {getattr(node.target, "__name__", node.target)} ({where})')
        elif node.op == 'call_method':
            if node.target in _ACTIVATION_METHODS:
                spec = _ACTIVATION_METHODS[node.target]
                chain.activation('sine:1.0' if spec == 'sine' else spec, where)
            elif node.target == 'mul' and len(node.args) == 2 and _scalar(node.args[1]) is not None:
                chain.scale(_scalar(node.args[1]), where)
            elif node.target not in _SHAPE_METHODS:
                chain.unknown(f'method .{node.target}() ({where})')
        elif node.op == 'get_attr':
            chain.unknown(f"direct use of parameter or buffer '{node.target}'")


def _module_step(name: str, m: nn.Module, chain: _Chain) -> None:
    w0 = _sine_layer_w0(m)
    if isinstance(m, nn.Linear):
        chain.linear(name, m)
    elif w0 is not None:
        lin_name, lin = next((n, c) for n, c in m.named_children() if isinstance(c, nn.Linear))
        chain.linear(f'{name}.{lin_name}', lin)
        chain.activation(f'sine:{w0!r}', f"SIREN layer '{name}'")
    elif type(m) in _ACTIVATION_MODULES:
        spec = _ACTIVATION_MODULES[type(m)](m)
        if spec != 'identity':
            chain.activation(spec, f"module '{name}'")
    elif isinstance(m, _NEUTRAL_MODULES):
        pass
    elif any(True for _ in m.parameters(recurse=False)):
        shapes = ', '.join(f'{n} {tuple(p.shape)}' for n, p in m.named_parameters(recurse=False))
        raise ValueError(f"module '{name}' ({type(m).__name__}: {shapes}) is a parameterised layer "
                         f'that is not nn.Linear; nngraph reads MLPs (chains of Linear layers)')
    else:
        chain.unknown(f"module '{name}' ({type(m).__name__})")


def _walk_registration(module: nn.Module, chain: _Chain) -> None:
    skip: set = set()
    for name, m in module.named_modules():
        if name == '' or any(name.startswith(s + '.') for s in skip):
            continue
        if isinstance(m, nn.Linear) or _sine_layer_w0(m) is not None or type(m) in _ACTIVATION_MODULES:
            _module_step(name, m, chain)
            skip.add(name)
        elif any(True for _ in m.parameters(recurse=False)) or not any(True for _ in m.children()):
            _module_step(name, m, chain)


def from_module(module: nn.Module, activation: Optional[A.ActivationSpec] = None, *,
                y: Optional[Tensor] = None, trace: bool = True) -> Data:
    """The parameter graph of an ``nn.Module`` whose ``Linear`` layers form a chain.

    The call order comes from ``torch.fx`` tracing, or from the order in which
    the layers were registered when tracing fails (data-dependent control flow)
    or ``trace=False``. Activations are read from modules (``ReLU``,
    ``LeakyReLU(slope)``, ``Tanh``, ``Sigmoid``, ``GELU``, ``SiLU``,
    :class:`~nngraph.activations.Sine` and SIREN layer modules with a ``w0`` or
    ``omega_0`` attribute) and from functional calls (``torch.relu``,
    ``F.leaky_relu``, ``torch.sin(w0 * z)``, ...); one per layer is allowed.

    Args:
        module: the network.
        activation: overrides the detected activations (one string, or one per
            layer); needed when the forward computes something unrecognised.
        y: optional label.
        trace: try ``torch.fx`` tracing first.

    Raises:
        ValueError: parameterised layers other than ``Linear`` (named), shapes
            that do not chain (both layers named), unrecognised operations
            without ``activation=``.
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f'from_module expects an nn.Module, got {type(module).__name__}')
    chain = _Chain(override=activation is not None)
    traced = False
    if trace:
        try:
            _walk_fx(module, chain)
            traced = True
        except (torch.fx.proxy.TraceError, TypeError, NotImplementedError, RuntimeError, AttributeError):
            chain = _Chain(override=activation is not None)
    if not traced:
        _walk_registration(module, chain)
    if not chain.linears:
        raise ValueError(f'{type(module).__name__} has no nn.Linear layers')
    chain._flush_scale('after the last layer')

    used = {id(p) for lin in chain.linears for p in lin.parameters()}
    stray = [n for n, p in module.named_parameters() if id(p) not in used]
    if stray:
        raise ValueError(f'parameters outside the chain of Linear layers: {", ".join(stray)} '
                         f'(nngraph reads MLPs; a layer not called in forward also counts)')
    for l in range(1, len(chain.linears)):
        prev, cur = chain.linears[l - 1], chain.linears[l]
        if cur.in_features != prev.out_features:
            raise ValueError(f"layer '{chain.names[l]}' takes {cur.in_features} features but the "
                             f"previous layer '{chain.names[l - 1]}' outputs {prev.out_features}")
    acts = A.per_layer(activation, len(chain.linears)) if activation is not None else chain.acts
    return from_weights(
        [lin.weight.detach() for lin in chain.linears],
        [lin.bias.detach() if lin.bias is not None else None for lin in chain.linears],
        activation=A.compact(acts), y=y, names=chain.names,
        layer_bias=tuple(lin.bias is not None for lin in chain.linears))


# --------------------------------------------------------------------------- #
# Checkpoints
# --------------------------------------------------------------------------- #

def load_state_dict(source: Union[str, os.PathLike, Mapping]) -> Tuple[Dict[str, Tensor], Dict[str, Any]]:
    """Reads a checkpoint into a flat ``{key: tensor}`` dict and its metadata.

    ``source`` is a ``.pt``/``.pth``/``.ckpt`` file (read with
    ``torch.load(weights_only=True)``: no code is unpickled), a
    ``.safetensors`` file, or an already-loaded dict. Containers
    (``state_dict``, ``model``, ``net``, ``params``, ...) are unwrapped, nested
    dicts flattened with dots, and the ``module.`` (DDP) and ``_orig_mod.``
    (``torch.compile``) prefixes removed. Non-tensor entries of the outermost
    dict are returned as metadata (e.g. ``activation``).
    """
    if isinstance(source, (str, os.PathLike)):
        obj = _read_file(os.fspath(source))
        where = f'checkpoint {os.fspath(source)!r}'
    elif isinstance(source, Mapping):
        obj, where = source, 'checkpoint dict'
    else:
        raise TypeError(f'from_checkpoint expects a path or a dict, got {type(source).__name__}')
    if not isinstance(obj, Mapping):
        raise ValueError(f'{where} holds a {type(obj).__name__}, not a dict of tensors')
    if obj.get('format') == 'nngraph.graphs':
        raise ValueError(f'{where} holds graphs written by nngraph.save, not a state dict: '
                         f'read it with nngraph.load')
    meta = {k: v for k, v in obj.items() if isinstance(k, str) and (
        isinstance(v, (str, int, float, bool))
        or (isinstance(v, (list, tuple)) and v and all(isinstance(x, str) for x in v)))}
    while not any(isinstance(v, Tensor) for v in obj.values()):
        inner = next((obj[k] for k in CONTAINER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = inner
    flat: Dict[str, Tensor] = {}
    _flatten(obj, '', flat)
    if not flat:
        raise ValueError(f'{where} is empty: it holds no tensors (keys: {list(obj)[:10]})')
    for prefix in STRIP_PREFIXES:
        if all(k.startswith(prefix) for k in flat):
            flat = {k[len(prefix):]: v for k, v in flat.items()}
    return flat, meta


def _read_file(path: str) -> Any:
    if not os.path.exists(path):
        raise FileNotFoundError(f'no checkpoint at {path!r}')
    if path.endswith('.safetensors'):
        from safetensors.torch import load_file
        try:
            state = load_file(path)
        except Exception as err:  # safetensors raises its own error types
            raise ValueError(f'{path!r} is not a valid safetensors file: {err}') from None
        # The format stores keys sorted as strings ('layers.10' before 'layers.2');
        # natural order restores the order a state dict had, which breaks chaining ties.
        return {k: state[k] for k in sorted(state, key=_natural)}
    return read_weights_only(path, 'a PyTorch checkpoint')


def _flatten(obj: Mapping, prefix: str, out: Dict[str, Tensor]) -> None:
    for k, v in obj.items():
        key = f'{prefix}{k}'
        if isinstance(v, Tensor):
            out[key] = v
        elif isinstance(v, Mapping):
            _flatten(v, key + '.', out)


# weight key -> bias key: 'fc.weight'/'fc.bias', 'weight_0'/'bias_0', 'w0'/'b0', 'layers.1.W'/'layers.1.b'
_PAIRS = ((re.compile(r'(.*)weight'), r'\1bias'),
          (re.compile(r'(.*)weight([_.]?\d+)'), r'\1bias\2'),
          (re.compile(r'(.*(?:^|[._]))[wW]([_.]?\d*)'), r'\1b\2'))


@functools.lru_cache(maxsize=4096)
def _bias_key(key: str) -> Optional[str]:
    for pattern, replacement in _PAIRS:
        if pattern.fullmatch(key):
            return pattern.sub(replacement, key, count=1)
    return None


def _natural(key: str):
    return [int(t) if t.isdigit() else t for t in re.split(r'(\d+)', key)]


def chain_layers(state: Mapping[str, Tensor], layers: Optional[Sequence[str]] = None,
                 ) -> List[Tuple[str, Tensor, Optional[str], Optional[Tensor]]]:
    """Orders the dense layers of a flat state dict into a chain.

    Every 2-D tensor is a weight ``[d_out, d_in]``; its bias is the 1-D tensor
    under the partner key (``fc.weight``/``fc.bias``, ``w0``/``b0``, ...).
    Returns ``(weight_key, W, bias_key, b)`` tuples, input layer first.

    The order, in polynomial time (linear for the usual checkpoint):

    1. ``layers`` given: those layers, in that order (weight keys, or module
       names such as ``'fc1'`` for ``'fc1.weight'``); every other tensor is
       ignored (e.g. the value head of an actor-critic).
    2. The key order, where each layer takes as many inputs as the previous
       one outputs (a ``state_dict`` lists layers in registration order).
    3. Otherwise the one order that the shapes allow. A chain through all
       layers is an Euler trail in the multigraph whose nodes are widths and
       whose edges are layers (``d_in -> d_out``), so whether one exists, and
       whether two chains differ in any width, is decided greedily in
       O(layers^2) at worst. Layers of one shape are interchangeable to the
       shapes; key order places them.
    4. Several orders that differ in some width: the numbering of the module
       names (``layers.2`` before ``layers.10``) where every key is numbered
       and that order chains; else a ``ValueError`` naming two candidate
       chains and asking for ``layers=``.

    The plan depends only on the keys and shapes, so it is computed once per
    layout: a dataset of thousands of same-layout checkpoints parses one.

    Raises:
        ValueError: tensors that are not part of a chain, biases of the wrong
            shape or dtype, weights whose shapes do not chain or chain in
            several ways (each named), ``layers`` naming keys that are not
            weights.
    """
    # A sparse tensor's layout is part of the key: refused once per layout, in _plan.
    layout = tuple((k, tuple(v.shape), v.dtype if v.layout == torch.strided else v.layout)
                   for k, v in state.items())
    if layers is not None:
        if isinstance(layers, str) or not all(isinstance(name, str) for name in layers):
            raise ValueError(f'layers= must be a list of weight keys or layer names, input layer '
                             f'first, got {layers!r}')
        layers = tuple(layers)
    return [(wk, state[wk], bk, None if bk is None else state[bk]) for wk, bk in _plan(layout, layers)]


# The dtypes a parameter graph holds (float8 and complex tensors are not weights of an MLP we read).
_WEIGHT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


@functools.lru_cache(maxsize=1024)
def _plan(layout: Tuple[Tuple[str, Tuple[int, ...], Any], ...],
          chosen: Optional[Tuple[str, ...]] = None) -> Tuple[Tuple[str, Optional[str]], ...]:
    shapes = {k: shape for k, shape, _ in layout}
    dtypes = {k: dtype for k, _, dtype in layout}
    sparse = next((k for k, _, dtype in layout if not isinstance(dtype, torch.dtype)), None)
    if sparse is not None:
        raise ValueError(f"tensor '{sparse}' is a {dtypes[sparse]} tensor; checkpoints hold dense tensors")
    if chosen is not None:
        weights = [(k, shapes[k]) for k in _resolve_layers(chosen, shapes)]
    else:
        weights = [(k, shape) for k, shape, _ in layout if len(shape) == 2]
        for k, shape, _ in layout:
            if len(shape) > 2:
                raise ValueError(f"tensor '{k}' has shape {shape}: only dense layers "
                                 f'(2-D weights, 1-D biases) are supported')
    if not weights:
        raise ValueError(f'no 2-D weight matrices among the checkpoint keys {list(shapes)[:10]}')
    layers, claimed = [], set()
    for k, shape in weights:
        if min(shape) < 1:
            raise ValueError(f"weight '{k}' has shape {shape}: a layer needs at least one input "
                             f'and one output')
        bk = _bias_key(k)
        if bk is not None and bk in shapes and (chosen is None or len(shapes[bk]) == 1):
            if shapes[bk] != (shape[0],):
                raise ValueError(f"bias '{bk}' has shape {shapes[bk]} but its weight '{k}' "
                                 f'has shape {shape} (expected ({shape[0]},))')
            claimed.add(bk)
        else:
            bk = None
        layers.append((k, shape, bk))
    keys = [k for k, _, bk in layers] + [bk for _, _, bk in layers if bk is not None]
    for k in keys:
        if dtypes[k] not in _WEIGHT_DTYPES:
            raise ValueError(f"tensor '{k}' has dtype {dtypes[k]}; weights must be floating point "
                             f'(float16, bfloat16, float32 or float64)')
    odd = next((k for k in keys if dtypes[k] != dtypes[keys[0]]), None)
    if odd is not None:
        raise ValueError(f"tensor '{odd}' is {dtypes[odd]} but '{keys[0]}' is {dtypes[keys[0]]}; "
                         f'all weights and biases of a network share one dtype')
    if chosen is not None:
        for (k0, s0, _), (k1, s1, _) in zip(layers, layers[1:]):
            if s1[1] != s0[0]:
                raise ValueError(f"layer '{k1}' {s1} takes {s1[1]} features but the previous layer "
                                 f"in layers=, '{k0}' {s0}, outputs {s0[0]}")
        return tuple((k, bk) for k, _, bk in layers)
    stray = [f"'{k}' {shape}" for k, shape, _ in layout if len(shape) == 1 and k not in claimed]
    if stray:
        raise ValueError(f'tensors that are not the bias of any weight: {", ".join(stray)}; '
                         f'nngraph reads chains of dense layers')
    return tuple((k, bk) for k, _, bk in _order_chain(layers))


def _resolve_layers(chosen: Tuple[str, ...], shapes: Mapping[str, Tuple[int, ...]]) -> List[str]:
    """The weight keys ``layers=`` names: a key itself, or a module name + ``.weight``."""
    if not chosen:
        raise ValueError('layers= is empty: name the weight keys of the chain, input layer first')
    out: List[str] = []
    for name in chosen:
        key = name if name in shapes else f'{name}.weight'
        if key not in shapes:
            known = [k for k, s in shapes.items() if len(s) == 2]
            raise ValueError(f"layers= names '{name}', but the checkpoint has no weight '{name}' or "
                             f"'{name}.weight' (weights: {_few(known)})")
        if len(shapes[key]) != 2:
            raise ValueError(f"layers= names '{key}', which has shape {shapes[key]}, not a 2-D weight")
        if key in out:
            raise ValueError(f"layers= names '{key}' twice (shared weights are not an MLP)")
        out.append(key)
    return out


def _few(items: Sequence[str], limit: int = 8) -> str:
    """At most ``limit`` items of a list, for an error message of one line."""
    shown = ', '.join(items[:limit])
    return shown + (f', ... ({len(items) - limit} more)' if len(items) > limit else '')


def _order_chain(layers):
    """The chain of ``(key, shape, bias_key)`` layers (see :func:`chain_layers`
    for the rules), or a ``ValueError`` saying why there is none or which
    two chains the shapes allow."""
    if _chains(layers):
        return layers
    # A dict rebuilt by hand or by a format that sorts keys as strings loses the key
    # order; numbered module names ('layers.2', 'fc10') still record the call order.
    numbered = sorted(layers, key=lambda layer: _natural(layer[0]))
    if all(re.search(r'\d', k) for k, _, _ in layers) and _chains(numbered):
        return numbered
    edges = [(shape[1], shape[0]) for _, shape, _ in layers]           # d_in -> d_out
    why = _why_no_chain(edges, layers)
    if why:
        desc = _few([f"'{k}' {shape}" for k, shape, _ in layers], 6)
        raise ValueError(f'weights do not chain into one MLP (each layer must take as many inputs '
                         f'as the previous one outputs): {desc}; {why}')
    order, fork = _euler_chain(edges)
    if fork is None:
        return [layers[i] for i in order]
    other, _ = _euler_chain(edges, force=fork)
    names = [[layers[i][0] for i in chain] for chain in (order, other)]
    step = fork[0]
    at = f"after '{names[0][step - 1]}'" if step else 'as the input layer'
    raise ValueError(f"the weights chain in more than one order and neither the key order nor the "
                     f"names' numbering is one of them: {at} both '{names[0][step]}' "
                     f"{layers[order[step]][1]} and '{names[1][step]}' {layers[other[step]][1]} fit, "
                     f'e.g. [{_few(names[0])}] or [{_few(names[1])}]; pass layers=[weight keys, input '
                     f'layer first] to from_checkpoint')


def _chains(layers) -> bool:
    """Whether each layer takes as many inputs as the one before outputs."""
    return all(cur[1][1] == prev[1][0] for prev, cur in zip(layers, layers[1:]))


def _why_no_chain(edges: List[Tuple[int, int]], layers) -> str:
    """Why no chain runs through every layer, or ``''`` when one does.

    Euler's condition: every width but the first and the last is taken by as
    many layers as output it; the first is taken once more than it is output,
    the last output once more than it is taken; all layers are connected.
    """
    takes, outputs = collections.Counter(a for a, _ in edges), collections.Counter(b for _, b in edges)
    widths = sorted(set(takes) | set(outputs))
    surplus = {w: takes[w] - outputs[w] for w in widths if takes[w] != outputs[w]}
    starts = [w for w, d in surplus.items() if d > 0]
    ends = [w for w, d in surplus.items() if d < 0]
    if surplus and not (len(starts) == len(ends) == 1 and surplus[starts[0]] == 1 and surplus[ends[0]] == -1):
        parts = []
        for w, d in surplus.items():
            side = [f"'{k}'" for (a, b), (k, _, _) in zip(edges, layers) if (a if d > 0 else b) == w]
            parts.append(f'width {w} is taken by {takes[w]} layers and output by {outputs[w]} '
                         f'({"taken" if d > 0 else "output"} by {_few(side, 4)})')
        return ('only the input width may be taken once more than it is output and only the output '
                'width output once more than it is taken (several heads or inputs?): '
                + '; '.join(parts)
                + '; pass layers=[weight keys, input layer first] to from_checkpoint to read one chain')
    groups = _components(edges)
    if len(groups) > 1:
        desc = ' | '.join(_few([f"'{layers[i][0]}'" for i in g], 4) for g in groups[:4])
        return f'the layers form {len(groups)} groups that share no width: {desc}'
    return ''


def _components(edges: List[Tuple[int, int]]) -> List[List[int]]:
    """Indices of the layers in each connected group (layers joined by a shared width)."""
    parent: Dict[int, int] = {}

    def find(w: int) -> int:
        while parent.setdefault(w, w) != w:
            parent[w] = parent[parent[w]]
            w = parent[w]
        return w

    for a, b in edges:
        parent[find(a)] = find(b)
    groups: Dict[int, List[int]] = {}
    for i, (a, _) in enumerate(edges):
        groups.setdefault(find(a), []).append(i)
    return list(groups.values())


def _euler_chain(edges: List[Tuple[int, int]], force: Optional[Tuple[int, int]] = None,
                 ) -> Tuple[List[int], Optional[Tuple[int, int]]]:
    """The chain through all layers that takes, at each step, the lowest-indexed
    layer after which the rest can still be chained (the first chain in key
    order), and the first fork: ``(step, layer)`` where a layer of another shape
    could also come next. ``force=(step, layer)`` takes that layer there.

    A chain exists (:func:`_why_no_chain` said so), and taking a layer keeps
    Euler's degree condition for the rest, so a layer is a valid next step
    exactly when every remaining layer stays connected to its output width:
    checked only where two shapes compete, O(layers) each.
    """
    remaining = collections.Counter(edges)                         # (d_in, d_out) -> layers left
    queues: Dict[Tuple[int, int], collections.deque] = {}
    for i, e in enumerate(edges):
        queues.setdefault(e, collections.deque()).append(i)
    takes, outputs = collections.Counter(a for a, _ in edges), collections.Counter(b for _, b in edges)
    first = [w for w in takes if takes[w] > outputs[w]]
    at: Optional[int] = None if not first else first[0]           # None: any width can start a cycle
    order: List[int] = []
    fork: Optional[Tuple[int, int]] = None
    for step in range(len(edges)):
        # Candidate shapes next, lowest-indexed layer first (that is the key-order preference).
        cands = sorted((queues[e][0], e) for e, n in remaining.items()
                       if n and (at is None or e[0] == at))
        if force is not None and force[0] == step:
            viable = [(force[1], edges[force[1]])]
        elif len(cands) == 1:
            viable = cands
        else:
            viable = [(i, e) for i, e in cands if _still_connected(remaining, e)]
            if fork is None and len(viable) > 1:
                fork = (step, viable[1][0])
        i, e = viable[0]
        queues[e].remove(i)
        remaining[e] -= 1
        order.append(i)
        at = e[1]
    return order, fork


def _still_connected(remaining: collections.Counter, taken: Tuple[int, int]) -> bool:
    """Whether, once one ``taken`` layer is used, every remaining layer is
    connected to its output width (so the chain can go on from there)."""
    rest = remaining.copy()
    rest[taken] -= 1
    live = [e for e, n in rest.items() if n]
    if not live:
        return True
    groups = _components(live)
    return len(groups) == 1 and any(taken[1] in e for e in live)


def from_checkpoint(
    source: Union[str, os.PathLike, Mapping],
    activation: Optional[A.ActivationSpec] = None,
    *,
    w0: Optional[float] = None,
    first_w0: Optional[float] = None,
    output_offset: float = 0.0,
    y: Optional[Tensor] = None,
    layers: Optional[Sequence[str]] = None,
) -> Data:
    """The parameter graph of an MLP checkpoint.

    A state dict does not record its activation: give ``activation`` (or
    ``w0`` for a SIREN), unless the checkpoint's outermost dict carries an
    ``activation`` string (as :func:`nngraph.inr.save_checkpoint` writes).

    SIREN conventions of published INR datasets are options, not guesses:

    Args:
        source: path (``.pt``, ``.pth``, ``.safetensors``) or dict.
        activation: activation string, or one per layer.
        w0: SIREN frequency: the hidden activation is ``sine:w0``.
        first_w0: a different frequency for the first layer (``sine:first_w0``).
        output_offset: a constant the original network adds to its output
            (e.g. ``0.5``); folded into the last bias, so the graph computes
            the full function.
        y: optional label.
        layers: the layers to read, in call order (weight keys such as
            ``'pi.weight'``, or module names such as ``'pi'``); other tensors
            are ignored. Needed where the shapes chain in several orders and
            the key order is not one of them, or to read one chain of a
            network with several heads. By default the order is found as
            :func:`chain_layers` says, in polynomial time.

    Raises:
        ValueError: no activation given, an empty checkpoint, a file that is
            not a checkpoint (named), or tensors that do not form one chain or
            form several (keys named; a file's errors name the file too).
    """
    state, meta = load_state_dict(source)
    if isinstance(source, (str, os.PathLike)):
        try:
            return _from_state(state, meta, activation, w0, first_w0, output_offset, y, layers)
        except ValueError as err:
            raise ValueError(f'checkpoint {os.fspath(source)!r}: {err}') from None
    return _from_state(state, meta, activation, w0, first_w0, output_offset, y, layers)


def _from_state(state, meta, activation, w0, first_w0, output_offset, y, layers) -> Data:
    if activation is None and w0 is None:
        activation = meta.get('activation')
        if activation is None:
            raise ValueError('a state dict does not record its activation: pass activation= '
                             '(e.g. "relu") or w0= for a SIREN')
    if w0 is not None:
        if activation is not None and not (isinstance(activation, str) and activation.startswith('sine')):
            raise ValueError(f'w0={w0} is for SIRENs but activation={activation!r} was given too')
        activation = f'sine:{float(w0)!r}'
    layers = chain_layers(state, layers)
    if first_w0 is not None:
        acts = list(A.per_layer(activation, len(layers)))
        if not acts[0].startswith('sine'):
            raise ValueError(f'first_w0 is for SIRENs but the first layer has activation {acts[0]!r}')
        acts[0] = f'sine:{float(first_w0)!r}'
        activation = tuple(acts)
    weights = [w for _, w, _, _ in layers]
    biases = [b for _, _, _, b in layers]
    had_bias = tuple(b is not None for b in biases)
    if output_offset:
        if not math.isfinite(output_offset):
            raise ValueError(f'output_offset must be finite, got {output_offset}')
        last = biases[-1] if biases[-1] is not None else torch.zeros(weights[-1].shape[0], dtype=weights[-1].dtype)
        biases[-1] = last + output_offset
    names = [k[:-len('.weight')] if k.endswith('.weight') else k for k, _, _, _ in layers]
    try:
        return from_weights(weights, biases, activation=activation, y=y, names=names,
                            layer_bias=had_bias)
    except ValueError as err:
        if 'NaN or Inf' not in str(err):
            raise
        # from_weights names the layer; the user looks for the key in the checkpoint
        key = next((k for l in layers for k, t in ((l[0], l[1]), (l[2], l[3]))
                    if t is not None and not bool(torch.isfinite(t).all())), None)
        if key is None:      # the output_offset overflowed the last bias
            raise ValueError(f'{err} once output_offset={output_offset} is added') from None
        raise ValueError(f"{err} (checkpoint key '{key}')") from None
