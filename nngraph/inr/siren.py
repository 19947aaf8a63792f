r"""SIRENs: the function, its conventions (published ones as presets), initialisation.

A SIREN with layer sizes :math:`(d_0, d_1, \dots, d_L)` computes

.. math::
    h_1 = \sin(w_0^{\text{first}} (W_0 x + b_0)), \quad
    h_{l+1} = \sin(w_0 (W_l h_l + b_l)), \quad
    f(x) = W_{L-1} h_{L-1} + b_{L-1} + c

with a constant output offset :math:`c` (DWSNets' INRs add :math:`c = 0.5`).
The conventions that differ between published datasets are explicit
(:class:`SirenConfig`): the widths, :math:`w_0`, the first layer's
:math:`w_0`, the initialisation and :math:`c`. The published ones are named
presets (:data:`PRESETS`, :meth:`SirenConfig.preset`, ``fit(preset=...)``),
as their generating code does it (read from the public repositories):

* ``'siren'`` (Sitzmann et al.; NFN's ``siren_utils.py`` is the same code, so
  ``'nfn'`` names it too): first layer :math:`W \sim U(\pm 1/d_{in})`, every
  later layer, the linear last one included, :math:`U(\pm\sqrt{6/d_{in}}/w_0)`;
  biases as ``nn.Linear`` draws them, :math:`U(\pm 1/\sqrt{d_{in}})`;
  :math:`w_0 = 30` everywhere; no offset.
* ``'dwsnets'`` (DWSNets' ``nn/inr.py``; neural-graphs' copy of it is the
  same, so ``'neural-graphs'`` names it too): ``is_first`` is never set, so
  *every* sine layer, the first included, draws
  :math:`U(\pm\sqrt{6/d_{in}}/w_0)` (:math:`\pm 0.058` for
  :math:`d_{in} = 2, w_0 = 30`) with zero biases; the last layer is a plain
  ``nn.Linear`` (weights and bias :math:`U(\pm 1/\sqrt{d_{in}})`); output
  :math:`+0.5`.

``init='zero_bias'`` (the ``'siren'`` weights with zero biases) matches no
published code; it is kept so that builds and convention strings that name
it still read.

Every graph made here computes the *whole* function: the offset is folded
into the last bias, the activation is ``'sine:w0'`` (one string per layer when
the first layer's :math:`w_0` differs), and the string attribute
``convention`` records the SIREN conventions the weights were fitted under.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn
from torch_geometric.data import Data

from nngraph import activations as A
from nngraph._atomic import atomic_path
from nngraph.graph import from_weights

__all__ = ['SirenConfig', 'Siren', 'grid', 'psnr', 'init_params', 'stacked_forward', 'save_checkpoint',
           'parse_convention', 'INITS', 'PRESETS']

INITS = ('siren', 'dwsnets', 'zero_bias')

#: The published SIREN conventions, by name: what :meth:`SirenConfig.preset`
#: and ``fit(preset=...)`` fix (see the module docstring for the sources).
PRESETS: Dict[str, Dict[str, Any]] = {
    'siren': dict(init='siren', w0=30.0, first_w0=None, output_offset=0.0),
    'nfn': dict(init='siren', w0=30.0, first_w0=None, output_offset=0.0),
    'dwsnets': dict(init='dwsnets', w0=30.0, first_w0=None, output_offset=0.5),
    'neural-graphs': dict(init='dwsnets', w0=30.0, first_w0=None, output_offset=0.5),
}


# --------------------------------------------------------------------------- #
# Conventions
# --------------------------------------------------------------------------- #

@dataclass(frozen=True)
class SirenConfig:
    """The conventions of a SIREN: everything needed to rebuild its function
    from its weights and to initialise it.

    Args:
        layer_sizes: widths ``(d_0, ..., d_L)``, e.g. ``(2, 32, 32, 1)``.
        w0: frequency of the hidden sine layers (:math:`\\sin(w_0 z)`).
        first_w0: frequency of the first layer; ``None`` means ``w0``.
        init: how :func:`init_params` draws the first weights, named after the
            preset that uses it: ``'siren'`` (first layer :math:`U(\\pm 1/d_{in})`,
            later layers :math:`U(\\pm\\sqrt{6/d_{in}}/w_0)`, biases
            :math:`U(\\pm 1/\\sqrt{d_{in}})` as ``nn.Linear`` draws them),
            ``'dwsnets'`` (every sine layer :math:`U(\\pm\\sqrt{6/d_{in}}/w_l)`
            with its own :math:`w_l` and zero bias, the last layer ``nn.Linear``'s
            default :math:`U(\\pm 1/\\sqrt{d_{in}})` for weights and bias) or
            ``'zero_bias'`` (the ``'siren'`` weights with zero biases; no
            published code does this, kept for old builds).
        output_offset: constant :math:`c` added to the output.
    """

    layer_sizes: Tuple[int, ...] = (2, 32, 32, 1)
    w0: float = 30.0
    first_w0: Optional[float] = None
    init: str = 'siren'
    output_offset: float = 0.0

    def __post_init__(self) -> None:
        sizes = tuple(int(d) for d in self.layer_sizes)
        if len(sizes) < 2 or min(sizes) < 1:
            raise ValueError(f'layer_sizes must hold at least two positive widths, got {self.layer_sizes}')
        object.__setattr__(self, 'layer_sizes', sizes)
        for name in ('w0', 'first_w0'):
            v = getattr(self, name)
            if v is not None and (not math.isfinite(float(v)) or float(v) == 0.0):
                raise ValueError(f'{name} must be finite and non-zero, got {v}')
            if v is not None:
                object.__setattr__(self, name, float(v))
        if self.init not in INITS:
            raise ValueError(f'unknown SIREN init {self.init!r}; choose one of {INITS}')
        if not math.isfinite(float(self.output_offset)):
            raise ValueError(f'output_offset must be finite, got {self.output_offset}')
        object.__setattr__(self, 'output_offset', float(self.output_offset))

    @classmethod
    def preset(cls, name: str, layer_sizes: Sequence[int] = (2, 32, 32, 1)) -> 'SirenConfig':
        """The conventions of a published INR dataset's generating code
        (:data:`PRESETS`): ``SirenConfig.preset('dwsnets', layer_sizes=(2, 32, 32, 1))``."""
        if name not in PRESETS:
            raise ValueError(f'unknown SIREN preset {name!r}; choose one of {tuple(PRESETS)}')
        return cls(layer_sizes=tuple(layer_sizes), **PRESETS[name])

    @property
    def first(self) -> float:
        """The first layer's :math:`w_0`."""
        return self.w0 if self.first_w0 is None else self.first_w0

    @property
    def num_layers(self) -> int:
        """Number of ``Linear`` layers, ``len(layer_sizes) - 1``."""
        return len(self.layer_sizes) - 1

    @property
    def activations(self) -> Tuple[str, ...]:
        """One canonical activation string per layer (the last is linear)."""
        hidden = [f'sine:{self.w0!r}'] * (self.num_layers - 1)
        if hidden:
            hidden[0] = f'sine:{self.first!r}'
        return tuple(A.canonical(a) for a in hidden) + ('identity',)

    @property
    def activation(self) -> Union[str, Tuple[str, ...]]:
        """The graph's ``activation`` field: one string when all sine layers
        share :math:`w_0`, else one string per layer."""
        return A.compact(self.activations)

    @property
    def convention(self) -> str:
        """The string stored as every graph's ``convention`` attribute."""
        return (f'siren:w0={self.w0!r},first_w0={self.first!r},init={self.init},'
                f'output_offset={self.output_offset!r}')

    def to_dict(self) -> Dict[str, Any]:
        """The fields as a JSON-friendly dict (inverse of :meth:`from_dict`)."""
        return {'layer_sizes': list(self.layer_sizes), 'w0': self.w0, 'first_w0': self.first_w0,
                'init': self.init, 'output_offset': self.output_offset}

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> 'SirenConfig':
        """Rebuilds a config from :meth:`to_dict`."""
        return cls(layer_sizes=tuple(d['layer_sizes']), w0=d['w0'], first_w0=d.get('first_w0'),
                   init=d.get('init', 'siren'), output_offset=d.get('output_offset', 0.0))


def parse_convention(convention: str) -> Dict[str, Any]:
    """Parses a graph's ``convention`` string back into a dict
    (``{'w0': 30.0, 'first_w0': 30.0, 'init': 'siren', 'output_offset': 0.5}``).

    The offset is already folded into the graph's last bias; it is recorded so
    that the original network's bias is ``b_last - output_offset``."""
    kind, _, rest = convention.partition(':')
    if kind != 'siren' or not rest:
        raise ValueError(f'not a SIREN convention string: {convention!r}')
    out: Dict[str, Any] = {}
    for item in rest.split(','):
        key, _, value = item.partition('=')
        out[key] = value if key == 'init' else float(value)
    return out


# --------------------------------------------------------------------------- #
# Grids and metrics
# --------------------------------------------------------------------------- #

def grid(height: int, width: Optional[int] = None, *, dtype: torch.dtype = torch.float32,
         device: Union[str, torch.device, None] = None) -> Tensor:
    """Pixel-centre-free image grid in :math:`[-1, 1]^2`: ``[H * W, 2]`` with
    rows ``(y, x)`` in row-major pixel order (``linspace(-1, 1)`` on each
    axis, the convention of SIREN, NFN and DWSNets)."""
    width = height if width is None else width
    if height < 1 or width < 1:
        raise ValueError(f'grid size must be positive, got {height}x{width}')
    ys = torch.linspace(-1, 1, height, dtype=dtype, device=device)
    xs = torch.linspace(-1, 1, width, dtype=dtype, device=device)
    return torch.stack(torch.meshgrid(ys, xs, indexing='ij'), dim=-1).reshape(-1, 2)


def psnr(pred: Tensor, target: Tensor, peak: float = 1.0, dim: Optional[Sequence[int]] = None) -> Tensor:
    r"""Peak signal-to-noise ratio :math:`10 \log_{10}(\text{peak}^2 / \text{MSE})`
    in dB, reduced over ``dim`` (all dims but the first by default)."""
    if dim is None:
        dim = tuple(range(1, pred.dim()))
    mse = (pred - target).pow(2).mean(dim=dim)
    return 10.0 * torch.log10(peak ** 2 / mse)


# --------------------------------------------------------------------------- #
# The SIREN module and initialisation
# --------------------------------------------------------------------------- #

def init_params(config: SirenConfig, generator: Optional[torch.Generator] = None, *,
                dtype: torch.dtype = torch.float32,
                device: Union[str, torch.device, None] = None) -> Tuple[List[Tensor], List[Tensor]]:
    """One SIREN's initial ``(weights, biases)`` under ``config.init``.

    Draws layer by layer, weight then bias, from ``generator`` (the global
    RNG if ``None``), so a seed fixes the whole network. Drawn on the CPU and
    moved, so a seed gives the same network on every device.
    """
    weights, biases = [], []
    sizes = config.layer_sizes
    last = config.num_layers - 1
    for l in range(config.num_layers):
        d_in, d_out = sizes[l], sizes[l + 1]
        linear_default = 1.0 / math.sqrt(d_in)          # nn.Linear's bound for weights and bias
        if config.init == 'dwsnets':
            w0_l = config.first if l == 0 else config.w0
            bound = linear_default if l == last else math.sqrt(6.0 / d_in) / w0_l
        else:
            bound = 1.0 / d_in if l == 0 else math.sqrt(6.0 / d_in) / config.w0
        # Weight then bias, the bias drawn even where it is zeroed, so that a
        # seed gives the same weights under every init.
        w = (torch.rand(d_out, d_in, generator=generator, dtype=torch.float64) * 2 - 1) * bound
        b = (torch.rand(d_out, generator=generator, dtype=torch.float64) * 2 - 1) * linear_default
        if config.init == 'zero_bias' or (config.init == 'dwsnets' and l < last):
            b = torch.zeros_like(b)
        weights.append(w.to(dtype=dtype, device=device))
        biases.append(b.to(dtype=dtype, device=device))
    return weights, biases


class Siren(nn.Module):
    r"""A SIREN: ``Linear`` layers with :math:`\sin(w_0 \cdot)` between them, a
    linear last layer and a constant output offset (see :class:`SirenConfig`).

    Args:
        config: the conventions (or pass them as keyword arguments).
        seed: seeds the initialisation (:func:`init_params`); ``None`` draws
            from the global RNG.
        **kwargs: fields of :class:`SirenConfig` when ``config`` is ``None``.

    ``Siren`` is the reference definition: :func:`fit` optimises exactly this
    function for many INRs at once, and :meth:`to_graph` gives its parameter
    graph (offset folded into the last bias).
    """

    def __init__(self, config: Optional[SirenConfig] = None, *, seed: Optional[int] = None,
                 **kwargs) -> None:
        super().__init__()
        self.config = config if config is not None else SirenConfig(**kwargs)
        gen = torch.Generator().manual_seed(int(seed)) if seed is not None else None
        weights, biases = init_params(self.config, gen)
        self.layers = nn.ModuleList()
        for w, b in zip(weights, biases):
            lin = nn.Linear(w.shape[1], w.shape[0])
            with torch.no_grad():
                lin.weight.copy_(w)
                lin.bias.copy_(b)
            self.layers.append(lin)

    def forward(self, coords: Tensor) -> Tensor:
        """``coords [..., d_0] -> [..., d_L]``."""
        h = coords
        for l, lin in enumerate(self.layers):
            h = lin(h)
            if l + 1 < len(self.layers):
                h = torch.sin((self.config.first if l == 0 else self.config.w0) * h)
        return h + self.config.output_offset

    def to_graph(self, **extra) -> Data:
        """The parameter graph of this SIREN (offset folded into the last bias)."""
        weights = [lin.weight.detach() for lin in self.layers]
        biases = [lin.bias.detach() for lin in self.layers]
        biases[-1] = biases[-1] + self.config.output_offset
        return from_weights(weights, biases, activation=self.config.activation,
                            convention=self.config.convention, **extra)



# --------------------------------------------------------------------------- #
# Batched evaluation and fitting
# --------------------------------------------------------------------------- #

def stacked_forward(weights: Sequence[Tensor], biases: Sequence[Tensor], coords: Tensor,
                    config: SirenConfig) -> Tensor:
    """Evaluates ``B`` SIRENs at once: ``weights[l]`` is ``[B, d_{l+1}, d_l]``,
    ``biases[l]`` is ``[B, d_{l+1}]``, ``coords`` is ``[P, d_0]`` (shared) or
    ``[B, P, d_0]``. Returns ``[B, P, d_L]`` including the output offset.
    One batched matmul per layer."""
    B = weights[0].shape[0]
    h = coords if coords.dim() == 3 else coords.unsqueeze(0).expand(B, -1, -1)
    last = len(weights) - 1
    for l, (w, b) in enumerate(zip(weights, biases)):
        if l < last:
            # sin(w0 (h W^T + b)): w0 goes into baddbmm's alpha and beta, which
            # saves one elementwise pass forward and one backward.
            w0 = config.first if l == 0 else config.w0
            h = torch.sin(torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2), beta=w0, alpha=w0))
        else:
            h = torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))   # [B, P, d_L]
    return h + config.output_offset if config.output_offset else h



# --------------------------------------------------------------------------- #
# Checkpoints
# --------------------------------------------------------------------------- #

def save_checkpoint(path: Union[str, os.PathLike], weights: Sequence[Tensor], biases: Sequence[Tensor],
                    activation: A.ActivationSpec, **meta) -> None:
    """Writes one MLP as ``{"state_dict": {"layers.0.weight": ..., ...},
    "activation": ..., **meta}`` atomically (temp file, then rename), so that
    ``nngraph.from_checkpoint(path)`` reads it back with no further arguments.

    Args:
        path: the ``.pt`` file to write.
        weights: ``W_l`` ``[d_{l+1}, d_l]``; biases: ``b_l`` ``[d_{l+1}]``
            (with any output offset already folded in, as :func:`fit` returns them).
        activation: one string (``'sine:30.0'``) or one per layer; a per-layer
            tuple is stored as a list (``from_checkpoint`` then needs
            ``activation=`` until it reads lists, see the report).
        **meta: further plain values (str, int, float, bool) stored beside.
    """
    if len(weights) != len(biases):
        raise ValueError(f'got {len(weights)} weights but {len(biases)} biases')
    acts = A.per_layer(activation, len(weights))      # validates names and length
    act = A.compact(acts)
    for k, v in meta.items():
        if not isinstance(v, (str, int, float, bool)):
            raise TypeError(f'checkpoint metadata {k!r} must be a plain str/int/float/bool, '
                            f'got {type(v).__name__}')
    state = {}
    for l, (w, b) in enumerate(zip(weights, biases)):
        state[f'layers.{l}.weight'] = w.detach().cpu().clone()
        state[f'layers.{l}.bias'] = b.detach().cpu().clone()
    obj = {'state_dict': state, 'activation': act if isinstance(act, str) else list(act), **meta}
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
