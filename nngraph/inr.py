r"""SIREN implicit neural representations (INRs) and batched fitting of many at once.

A SIREN with layer sizes :math:`(d_0, d_1, \dots, d_L)` computes

.. math::
    h_1 = \sin(w_0^{\text{first}} (W_0 x + b_0)), \quad
    h_{l+1} = \sin(w_0 (W_l h_l + b_l)), \quad
    f(x) = W_{L-1} h_{L-1} + b_{L-1} + c

with a constant output offset :math:`c` (DWSNets' INRs add :math:`c = 0.5`).
The conventions that differ between published datasets are explicit
(:class:`SirenConfig`): the widths, :math:`w_0`, the first layer's
:math:`w_0`, the initialisation (``'siren'``: Sitzmann et al.'s uniform
weights with PyTorch's default ``Linear`` biases; ``'zero_bias'``: the same
weights with zero biases, as DWSNets and neural-graphs do) and :math:`c`.

Every graph made here computes the *whole* function: the offset is folded
into the last bias, the activation is ``'sine:w0'`` (one string per layer when
the first layer's :math:`w_0` differs), and the string attribute
``convention`` records the SIREN conventions the weights were fitted under.

:func:`fit` fits ``N * V`` INRs in one batched optimisation: all parameters
are stacked (``W_l`` of shape ``[B, d_{l+1}, d_l]``), one batched matmul per
layer evaluates all of them, and the loss is the *sum* of the per-INR mean
squared errors, so each INR's gradient (and Adam step) is exactly what it
would be if it were fitted alone.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn
from torch_geometric.data import Data

from nngraph import activations as A
from nngraph._atomic import atomic_path
from nngraph.graph import from_weights

__all__ = ['SirenConfig', 'Siren', 'FitResult', 'fit', 'grid', 'psnr', 'init_params',
           'stacked_forward', 'save_checkpoint', 'parse_convention', 'INITS']

INITS = ('siren', 'zero_bias')


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
        init: ``'siren'`` (weights :math:`U(\\pm 1/d_{in})` in the first layer
            and :math:`U(\\pm\\sqrt{6/d_{in}}/w_0)` after it, biases
            :math:`U(\\pm 1/\\sqrt{d_{in}})` as ``nn.Linear`` draws them) or
            ``'zero_bias'`` (same weights, zero biases).
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

    @property
    def first(self) -> float:
        """The first layer's :math:`w_0`."""
        return self.w0 if self.first_w0 is None else self.first_w0

    @property
    def num_layers(self) -> int:
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
        return {'layer_sizes': list(self.layer_sizes), 'w0': self.w0, 'first_w0': self.first_w0,
                'init': self.init, 'output_offset': self.output_offset}

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> 'SirenConfig':
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
    for l in range(config.num_layers):
        d_in, d_out = sizes[l], sizes[l + 1]
        bound = 1.0 / d_in if l == 0 else math.sqrt(6.0 / d_in) / config.w0
        w = (torch.rand(d_out, d_in, generator=generator, dtype=torch.float64) * 2 - 1) * bound
        b_bound = 1.0 / math.sqrt(d_in)
        b = (torch.rand(d_out, generator=generator, dtype=torch.float64) * 2 - 1) * b_bound
        if config.init == 'zero_bias':
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


@dataclass
class FitResult:
    """What :func:`fit` returns for ``B = N * V`` INRs (INR ``k`` fits signal
    ``k // V`` with view ``k % V``).

    Attributes:
        weights: ``W_l`` stacked, ``[B, d_{l+1}, d_l]``, input layer first.
        biases: ``b_l`` stacked, ``[B, d_{l+1}]``, **with the output offset
            folded into the last bias**, so ``from_weights([w[k] for w in
            weights], [b[k] for b in biases], activation)`` is the INR's whole
            function.
        psnr: ``[B]`` PSNR (dB) of the returned weights on their signal.
        steps: ``[B]`` Adam steps each INR took before it stopped.
        signal_index, view_index, seeds: ``[B]`` long.
        config: the SIREN conventions.
    """

    weights: List[Tensor]
    biases: List[Tensor]
    psnr: Tensor
    steps: Tensor
    signal_index: Tensor
    view_index: Tensor
    seeds: Tensor
    config: SirenConfig

    @property
    def activation(self) -> Union[str, Tuple[str, ...]]:
        return self.config.activation

    def __len__(self) -> int:
        return self.psnr.numel()

    def graph(self, k: int, **extra) -> Data:
        """The parameter graph of INR ``k`` (``convention`` recorded)."""
        return from_weights([w[k] for w in self.weights], [b[k] for b in self.biases],
                            activation=self.activation, convention=self.config.convention, **extra)

    def graphs(self) -> List[Data]:
        """All INRs' graphs, with ``view_id`` set."""
        return [self.graph(k, view_id=self.view_index[k:k + 1]) for k in range(len(self))]


def view_seeds(seed: int, num_signals: int, views: int) -> Tensor:
    """``[N, V]`` seeds where view ``v`` of every signal gets ``seed + v``: one
    seed per view, so view ``v`` of all signals starts from one network."""
    return (torch.arange(views, dtype=torch.long) + int(seed)).expand(num_signals, views).clone()


def _init_stacked(config: SirenConfig, seeds: Tensor, dtype, device) -> Tuple[List[Tensor], List[Tensor]]:
    # Each INR's start depends on its seed alone (not on what else is in the
    # batch), so batched and one-at-a-time fitting start from the same network.
    # Equal seeds share one draw.
    uniq, inverse = torch.unique(seeds, return_inverse=True)
    draws = [init_params(config, torch.Generator().manual_seed(int(s))) for s in uniq.tolist()]
    weights = [torch.stack([d[0][l] for d in draws])[inverse].to(dtype=dtype, device=device)
               for l in range(config.num_layers)]
    biases = [torch.stack([d[1][l] for d in draws])[inverse].to(dtype=dtype, device=device)
              for l in range(config.num_layers)]
    return weights, biases


def fit(
    signals: Tensor,
    coords: Tensor,
    views: int = 1,
    *,
    hidden: Sequence[int] = (32, 32),
    w0: float = 30.0,
    first_w0: Optional[float] = None,
    init: str = 'siren',
    output_offset: float = 0.0,
    steps: int = 500,
    lr: float = 1e-3,
    betas: Tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    target_psnr: Optional[float] = None,
    peak: float = 1.0,
    seed: int = 0,
    seeds: Optional[Tensor] = None,
    progress: bool = True,
) -> FitResult:
    r"""Fits ``V`` SIRENs to each of ``N`` signals, all at once.

    All ``B = N * V`` networks' parameters are stacked and updated together:
    one batched forward/backward per step (:func:`stacked_forward`), loss
    :math:`\sum_k \mathrm{MSE}_k` so that each INR's gradient is its own, and
    Adam applied elementwise (the update of ``torch.optim.Adam``). An INR stops
    as soon as its PSNR reaches ``target_psnr`` (its weights at that step are
    kept and it leaves the batch, so the batch shrinks as INRs finish); the rest
    stop after ``steps`` steps. Runs on the device and in the dtype of
    ``signals``.

    Args:
        signals: ``[N, P]`` or ``[N, P, C]`` values at the ``P`` coordinates.
        coords: ``[P, d_0]`` coordinates shared by all signals (see :func:`grid`).
        views: independently initialised INRs per signal.
        hidden: widths of the hidden layers (``layer_sizes = (d_0, *hidden, C)``).
        w0, first_w0, init, output_offset: the SIREN conventions (:class:`SirenConfig`).
        steps: step budget (Adam updates) per INR.
        lr, betas, eps: Adam's hyperparameters.
        target_psnr: per-INR early stop in dB (``None``: always ``steps``).
        peak: signal peak for the PSNR (1 for images in ``[0, 1]``).
        seed: view ``v`` of every signal is initialised from ``seed + v``.
        seeds: ``[N, V]`` long tensor of per-INR seeds, overriding ``seed``.
        progress: show a tqdm bar.

    Returns:
        :class:`FitResult` with stacked weights (offset folded into the last
        bias), each INR's PSNR and step count.

    Raises:
        ValueError: empty or non-finite signals, shapes that do not match,
            ``views < 1``, ``steps < 0``, seeds of the wrong shape.
    """
    from tqdm.auto import tqdm

    if not isinstance(signals, Tensor) or not isinstance(coords, Tensor):
        raise TypeError('fit expects tensors for signals and coords')
    if signals.dim() == 2:
        signals = signals.unsqueeze(-1)
    if signals.dim() != 3:
        raise ValueError(f'signals must be [N, P] or [N, P, C], got shape {tuple(signals.shape)}')
    N, P, C = signals.shape
    if N == 0 or P == 0:
        raise ValueError(f'no signals to fit (signals have shape {tuple(signals.shape)})')
    if not signals.dtype.is_floating_point:
        raise ValueError(f'signals must be floating point, got {signals.dtype}')
    if not bool(torch.isfinite(signals).all()):
        raise ValueError('signals hold NaN or Inf values')
    if coords.dim() != 2 or coords.shape[0] != P:
        raise ValueError(f'coords must be [P={P}, d_0] to match the signals, got {tuple(coords.shape)}')
    if int(views) < 1:
        raise ValueError(f'views must be at least 1, got {views}')
    if int(steps) < 0:
        raise ValueError(f'steps must be >= 0, got {steps}')
    V, device, dtype = int(views), signals.device, signals.dtype
    coords = coords.to(device=device, dtype=dtype)
    config = SirenConfig(layer_sizes=(coords.shape[1], *hidden, C), w0=w0, first_w0=first_w0,
                         init=init, output_offset=output_offset)
    if seeds is None:
        seeds = view_seeds(seed, N, V)
    seeds = torch.as_tensor(seeds, dtype=torch.long)
    if seeds.shape != (N, V):
        raise ValueError(f'seeds must have shape (N={N}, views={V}), got {tuple(seeds.shape)}')
    seeds = seeds.reshape(-1).cpu()

    B = N * V
    params = [*_init_stacked(config, seeds, dtype, device)]
    L = config.num_layers
    params = [p.requires_grad_() for p in params[0] + params[1]]   # W_0..W_{L-1}, b_0..b_{L-1}
    exp_avg = [torch.zeros_like(p) for p in params]
    exp_avg_sq = [torch.zeros_like(p) for p in params]
    active = torch.arange(B, device=device)                          # INR ids still fitting
    sig_of = torch.arange(B, device=device) // V
    out = [torch.empty_like(p, requires_grad=False) for p in params]
    out_psnr = torch.full((B,), float('nan'), dtype=dtype, device=device)
    out_steps = torch.zeros(B, dtype=torch.long, device=device)
    b1, b2 = betas
    target = float('inf') if target_psnr is None else float(target_psnr)

    bar = tqdm(total=B, desc=f'fitting {B} INRs', unit='INR', disable=not progress, leave=False)
    for t in range(int(steps) + 1):
        pred = stacked_forward(params[:L], params[L:], coords, config)      # [b, P, C]
        mse = (pred - signals[sig_of[active]]).pow(2).mean(dim=(1, 2))   # [b]
        with torch.no_grad():
            p_now = 10.0 * torch.log10(peak ** 2 / mse.detach())
            done = p_now >= target
            if t == steps:
                done = torch.ones_like(done)
            n_done = int(done.sum())
        if n_done:
            ids = active[done]
            with torch.no_grad():
                for o, p in zip(out, params):
                    o[ids] = p[done]
            out_psnr[ids] = p_now[done]
            out_steps[ids] = t
            bar.update(n_done)
            if n_done == active.numel():
                break
        # Every INR's gradient is that of its own MSE: the loss is their sum.
        grads = torch.autograd.grad(mse.sum(), params)
        with torch.no_grad():
            keep = ~done
            if n_done:
                active = active[keep]
                params = [p[keep].requires_grad_() for p in params]
                grads = [g[keep] for g in grads]
                exp_avg = [m[keep] for m in exp_avg]
                exp_avg_sq = [v[keep] for v in exp_avg_sq]
            # Adam (Kingma & Ba), the update of torch.optim.Adam with default options.
            step = t + 1
            bc1, bc2 = 1 - b1 ** step, 1 - b2 ** step
            for p, g, m, v in zip(params, grads, exp_avg, exp_avg_sq):
                m.lerp_(g, 1 - b1)
                v.mul_(b2).addcmul_(g, g, value=1 - b2)
                denom = (v.sqrt() / math.sqrt(bc2)).add_(eps)
                p.addcdiv_(m, denom, value=-lr / bc1)
        if progress and t % 25 == 0:
            bar.set_postfix(step=t, active=int(active.numel()),
                            psnr=f'{float(p_now.mean()):.1f}')
    bar.close()

    weights = [o.detach() for o in out[:L]]
    biases = [o.detach() for o in out[L:]]
    if config.output_offset:
        biases[-1] = biases[-1] + config.output_offset
    return FitResult(weights=weights, biases=biases, psnr=out_psnr, steps=out_steps,
                     signal_index=torch.arange(B) // V, view_index=torch.arange(B) % V,
                     seeds=seeds, config=config)


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
