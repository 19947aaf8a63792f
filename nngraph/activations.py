"""Activation registry: name <-> callable, and the symmetries each admits.

An activation is written as a string, ``name`` or ``name:param``:
``relu``, ``leaky_relu:0.01``, ``tanh``, ``sigmoid``, ``gelu``, ``silu``,
``sine:30.0`` (:math:`\\sin(w_0 z)`) and ``identity``. :func:`canonical`
turns any accepted spelling into the one stored on graphs (``sine`` becomes
``sine:30.0``, ``leaky_relu`` becomes ``leaky_relu:0.01``), so two graphs of
one architecture compare equal by string.

The symmetry flags are what transforms consult before they act:

* ``odd``: :math:`\\sigma(-z) = -\\sigma(z)` (sign flips of hidden neurons);
* ``homogeneous``: :math:`\\sigma(cz) = c\\,\\sigma(z)` for :math:`c > 0`
  (positive rescaling of hidden neurons);
* ``half_period``: a shift :math:`s` with :math:`\\sigma(z + s) = -\\sigma(z)`
  (bias shifts of sine neurons), ``None`` where there is none.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class Sine(nn.Module):
    r"""The SIREN activation :math:`\sin(w_0 z)`."""

    def __init__(self, w0: float = 30.0) -> None:
        super().__init__()
        self.w0 = float(w0)

    def forward(self, z: Tensor) -> Tensor:
        return torch.sin(self.w0 * z)

    def extra_repr(self) -> str:
        return f'w0={self.w0}'


@dataclass(frozen=True)
class Activation:
    """One registered activation with its parameter resolved."""

    name: str
    param: Optional[float]
    fn: Callable[[Tensor], Tensor]
    odd: bool
    homogeneous: bool
    half_period: Optional[float]

    @property
    def spec(self) -> str:
        """The canonical string, e.g. ``'sine:30.0'``."""
        return self.name if self.param is None else f'{self.name}:{self.param!r}'

    def module(self) -> nn.Module:
        """A fresh ``nn.Module`` computing this activation."""
        return _MODULES[self.name](self.param)

    def __call__(self, z: Tensor) -> Tensor:
        return self.fn(z)


# name -> (default parameter or None if it takes none, builder of Activation fields)
def _sine(w0: float) -> dict:
    return dict(fn=lambda z: torch.sin(w0 * z), odd=True, homogeneous=False,
                half_period=math.pi / w0)


def _leaky(slope: float) -> dict:
    return dict(fn=lambda z: F.leaky_relu(z, slope), odd=False, homogeneous=True,
                half_period=None)


_PLAIN = dict(odd=False, homogeneous=False, half_period=None)
_REGISTRY: dict[str, Tuple[Optional[float], Callable[[Optional[float]], dict]]] = {
    'identity': (None, lambda _: dict(fn=lambda z: z, odd=True, homogeneous=True,
                                      half_period=None)),
    'relu': (None, lambda _: dict(fn=torch.relu, odd=False, homogeneous=True,
                                  half_period=None)),
    'leaky_relu': (0.01, _leaky),
    'tanh': (None, lambda _: dict(fn=torch.tanh, odd=True, homogeneous=False,
                                  half_period=None)),
    'sigmoid': (None, lambda _: dict(fn=torch.sigmoid, **_PLAIN)),
    'gelu': (None, lambda _: dict(fn=F.gelu, **_PLAIN)),
    'silu': (None, lambda _: dict(fn=F.silu, **_PLAIN)),
    'sine': (30.0, _sine),
}

_MODULES: dict[str, Callable[[Optional[float]], nn.Module]] = {
    'identity': lambda _: nn.Identity(),
    'relu': lambda _: nn.ReLU(),
    'leaky_relu': lambda p: nn.LeakyReLU(p),
    'tanh': lambda _: nn.Tanh(),
    'sigmoid': lambda _: nn.Sigmoid(),
    'gelu': lambda _: nn.GELU(),
    'silu': lambda _: nn.SiLU(),
    'sine': lambda p: Sine(p),
}

_CACHE: dict[str, Activation] = {}


def names() -> Tuple[str, ...]:
    """The registered activation names."""
    return tuple(_REGISTRY)


def get(spec: Union[str, Activation]) -> Activation:
    """Parses an activation string (``'sine:30.0'``) into an :class:`Activation`.

    Raises:
        ValueError: unknown name or a parameter that is not a finite number.
    """
    if isinstance(spec, Activation):
        return spec
    if not isinstance(spec, str):
        raise TypeError(f'activation must be a string such as "relu" or "sine:30.0", '
                        f'got {type(spec).__name__}')
    hit = _CACHE.get(spec)
    if hit is not None:
        return hit
    name, _, raw = spec.strip().partition(':')
    if name not in _REGISTRY:
        raise ValueError(f'unknown activation {spec!r}; registered: {", ".join(_REGISTRY)}')
    default, build = _REGISTRY[name]
    if default is None:
        if raw:
            raise ValueError(f'activation {name!r} takes no parameter, got {spec!r}')
        param = None
    else:
        try:
            param = float(raw) if raw else default
        except ValueError:
            raise ValueError(f'activation {spec!r}: parameter {raw!r} is not a number') from None
        if not math.isfinite(param) or (name == 'sine' and param == 0.0):
            raise ValueError(f'activation {spec!r}: parameter must be finite'
                             + (' and non-zero' if name == 'sine' else ''))
    act = Activation(name=name, param=param, **build(param))
    _CACHE[spec] = act
    return act


def canonical(spec: str) -> str:
    """The canonical spelling of an activation string."""
    return get(spec).spec


ActivationSpec = Union[str, Sequence[str]]


def per_layer(activation: ActivationSpec, num_layers: int) -> Tuple[str, ...]:
    """Expands a graph's ``activation`` field to one canonical string per layer.

    A single string applies after every layer but the last, which is linear
    (the convention of MLPs and SIRENs); a sequence gives one string per layer.
    """
    if isinstance(activation, str):
        hidden = canonical(activation)
        return (hidden,) * (num_layers - 1) + ('identity',)
    acts = tuple(canonical(a) for a in activation)
    if len(acts) != num_layers:
        raise ValueError(f'got {len(acts)} activations for a network of {num_layers} layers')
    return acts


def compact(acts: Sequence[str]) -> Union[str, Tuple[str, ...]]:
    """Inverse of :func:`per_layer`: one string when hidden layers agree and the
    last layer is linear, else the tuple of per-layer strings."""
    acts = tuple(canonical(a) for a in acts)
    if acts[-1] == 'identity' and len(set(acts[:-1])) <= 1:
        return acts[0] if len(acts) > 1 else 'identity'
    return acts


def hidden_activations(activation: ActivationSpec, num_layers: int) -> Tuple[Activation, ...]:
    """The activations that act on the hidden layers ``1 .. L-1``."""
    return tuple(get(a) for a in per_layer(activation, num_layers)[:-1])


def require(activation: ActivationSpec, num_layers: int, prop: str, transform: str) -> Tuple[Activation, ...]:
    """Returns the hidden activations, or raises ``ValueError`` naming
    ``transform`` and the activation when one of them lacks ``prop``."""
    acts = hidden_activations(activation, num_layers)
    for i, act in enumerate(acts):
        if not getattr(act, prop):
            kind = {'odd': 'an odd activation (sine, tanh)',
                    'homogeneous': 'a positively homogeneous activation (relu, leaky_relu)',
                    'half_period': 'a sine activation'}[prop]
            raise ValueError(f'{transform} needs {kind}, but hidden layer {i + 1} '
                             f'has activation {act.spec!r}')
    return acts
