r"""Batched fitting of many SIRENs at once (:func:`fit`).

:func:`fit` fits ``N * V`` INRs in one batched optimisation: all parameters
are stacked (``W_l`` of shape ``[B, d_{l+1}, d_l]``), one batched matmul per
layer evaluates all of them, and the loss is the *sum* of the per-INR mean
squared errors, so each INR's gradient (and Adam step) is exactly what it
would be if it were fitted alone. The gradients are written by hand: a
generic path for any coordinates, and a faster one for pixel grids that
factorises the first sine layer over rows and columns.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor
from torch_geometric.data import Data

from nngraph.graph import from_weights
from nngraph.inr.siren import PRESETS, SirenConfig, init_params

__all__ = ['FitResult', 'fit', 'num_threads', 'grid_axes', 'inr_seeds', 'view_seeds', 'INIT_SHARING']

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
        """The graphs' ``activation`` field (:attr:`SirenConfig.activation`)."""
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


def inr_seeds(seed: int, num_signals: int, views: int) -> Tensor:
    """``[N, V]`` seeds, a distinct one for every INR: view ``v`` of signal
    ``n`` gets ``seed * 2**40 + n * 2**16 + v`` (the formula of
    :func:`nngraph.data.build.inr_seed` with the signal's index as its object
    id), so no two INRs of a call start from the same network."""
    n = torch.arange(num_signals, dtype=torch.long).unsqueeze(1)
    v = torch.arange(views, dtype=torch.long)
    return int(seed) * (1 << 40) + n * (1 << 16) + v


def view_seeds(seed: int, num_signals: int, views: int) -> Tensor:
    """``[N, V]`` seeds where view ``v`` of every signal gets ``seed + v``: one
    seed per view, so view ``v`` of all signals starts from one network
    (``fit(init_sharing='shared_per_view')``; not the default, because shared
    starts make the weights of different signals comparable entry by entry,
    which makes weight-space learning artificially easy)."""
    return (torch.arange(views, dtype=torch.long) + int(seed)).expand(num_signals, views).clone()


INIT_SHARING = ('independent', 'shared_per_view')


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


# INRs per gradient evaluation on the grid path: the number whose [B, d, P]
# activation holds about this many values (32 INRs of 28x28 pixels and 32
# neurons; 4 MB in float32), so that the activations stay in one core's cache
# between passes.
_BLOCK_FLOATS = 1 << 20


class _Workspace:
    """Reused buffers for the ``[B, P, d]`` activations of :func:`_mse_and_grads`.

    Allocating them afresh every step made glibc map and unmap megabytes per
    step: as much system time (page faults) as compute. The batch only
    shrinks (finished INRs leave), so a buffer sized for the first step serves
    every later one as a leading slice (contiguous)."""

    def __init__(self) -> None:
        self.buffers: Dict[str, Tensor] = {}

    def get(self, name: str, B: int, P: int, d: int, like: Tensor) -> Tensor:
        """A ``[B, P, d]`` buffer named ``name`` (contents undefined)."""
        buf = self.buffers.get(name)
        if buf is None or buf.shape[0] < B or buf.shape[1:] != (P, d):
            buf = self.buffers[name] = torch.empty(B, P, d, dtype=like.dtype, device=like.device)
        return buf[:B]

    def get_aug(self, name: str, B: int, d: int, P: int, like: Tensor) -> Tensor:
        """A ``[B, d + 1, P]`` buffer whose last row is ones (the others undefined)."""
        buf = self.buffers.get(name)
        if buf is None or buf.shape[0] < B or buf.shape[1:] != (d + 1, P):
            buf = self.buffers[name] = torch.empty(B, d + 1, P, dtype=like.dtype, device=like.device)
            buf[:, d] = 1
        return buf[:B]


def _mse_and_grads(weights: List[Tensor], biases: List[Tensor], coords: Tensor, targets: Tensor,
                   config: SirenConfig, workspace: Optional['_Workspace'] = None) -> Tuple[Tensor, List[Tensor]]:
    r"""Per-INR MSE ``[B]`` and the gradients of their sum, by hand.

    The same numbers as autograd through :func:`stacked_forward`, in fewer
    passes over the ``[B, P, d]`` activations (which dominate the cost):
    every constant factor (the :math:`w_0` of each layer and the MSE's
    :math:`2 / (P C)`) rides in the ``alpha`` of a batched matmul or scales a
    small bias gradient, so a sine layer costs ``sin`` forward and
    ``cos`` plus one multiply backward.

    With :math:`z_l = w_l (h_l W_l^\top + b_l)`, :math:`h_{l+1} = \sin z_l`,
    output :math:`y = h_{L-1} W_{L-1}^\top + b_{L-1} + c` and residual
    :math:`r = y - s`: the last layer gets :math:`g = r` with scale
    :math:`a = 2 / (P C)`; a sine layer gets :math:`g_l = (\partial/\partial h_{l+1})
    \odot \cos z_l` with scale :math:`a = w_l`; then :math:`\nabla W_l = a\,g_l^\top h_l`,
    :math:`\nabla b_l = a \sum_P g_l` and :math:`\partial/\partial h_l = a\,g_l W_l`.
    """
    B, P, C = targets.shape
    L = len(weights)
    ws = _Workspace() if workspace is None else workspace
    h = coords.unsqueeze(0).expand(B, -1, -1)
    inputs, pre = [], []
    for l in range(L - 1):
        w0 = config.first if l == 0 else config.w0
        z = torch.baddbmm(biases[l].unsqueeze(1), h, weights[l].transpose(1, 2), beta=w0, alpha=w0,
                          out=ws.get(f'z{l}', B, P, weights[l].shape[1], like=targets))
        inputs.append(h)
        pre.append(z)
        h = torch.sin(z, out=ws.get(f'h{l + 1}', B, P, z.shape[2], like=targets))
    inputs.append(h)
    b_out = biases[-1] + config.output_offset if config.output_offset else biases[-1]
    g = torch.baddbmm(b_out.unsqueeze(1), h, weights[-1].transpose(1, 2),
                      out=ws.get('r', B, P, C, like=targets)).sub_(targets)          # r
    mse = g.pow(2).mean(dim=(1, 2))                                            # [B]
    scale = 2.0 / (P * C)
    gw: List[Tensor] = [None] * L
    gb: List[Tensor] = [None] * L
    for l in range(L - 1, -1, -1):
        gw[l] = torch.bmm(g.transpose(1, 2), inputs[l]).mul_(scale)           # small: [B, d_out, d_in]
        gb[l] = g.sum(dim=1).mul_(scale)
        if l == 0:
            break
        d = weights[l].shape[2]
        dh = torch.bmm(g, weights[l] * scale, out=ws.get(f'dh{l}', B, P, d, like=targets))   # [B, P, d_l]
        g = torch.cos(pre[l - 1], out=ws.get(f'g{l - 1}', B, P, d, like=targets)).mul_(dh)
        scale = config.first if l - 1 == 0 else config.w0
    return mse, gw + gb


def grid_axes(coords: Tensor) -> Optional[Tuple[Tensor, Tensor]]:
    """``(ys [H], xs [W])`` when ``coords [P, 2]`` is the product grid of
    them in row-major order (``coords[i * W + j] == (ys[i], xs[j])``, as
    :func:`grid` makes), else ``None``."""
    if coords.dim() != 2 or coords.shape[1] != 2 or coords.shape[0] == 0:
        return None
    P = coords.shape[0]
    moved = (coords[:, 0] != coords[0, 0]).nonzero()
    W = int(moved[0]) if moved.numel() else P
    if P % W:
        return None
    ys, xs = coords[::W, 0], coords[:W, 1]
    full = torch.stack(torch.meshgrid(ys, xs, indexing='ij'), dim=-1).reshape(-1, 2)
    return (ys, xs) if torch.equal(full, coords) else None


def _mse_and_grads_grid(params: List[Tensor], ys: Tensor, xs: Tensor, targets: Tensor,
                        config: SirenConfig, ws: '_Workspace', grads: List[Tensor]) -> Tensor:
    r"""What :func:`_mse_and_grads` computes, for coordinates on a grid, in
    fewer and cheaper passes over the activations (the same numbers up to
    float rounding; checked against it in the tests).

    ``params[l]`` is ``[W_l | b_l]``, ``[B, d_{l+1}, d_l + 1]``; ``targets``
    is ``[B, C, P]``; the gradients are written into ``grads`` (views shaped
    like ``params``) and the per-INR MSE ``[B]`` is returned. Activations are channel-first, ``[B, d, P]``, each with
    a row of ones below it so that one matmul applies weights and bias.

    The first layer's input is the grid ``(y_i, x_j)``, so its pre-activation
    is a sum :math:`z_0 = a_i + c_j` with :math:`a = w_0 W_{0,y} y_i` and
    :math:`c = w_0 (W_{0,x} x_j + b_0)`, and

    .. math::
        \sin z_0 = \sin a_i \cos c_j + \cos a_i \sin c_j, \quad
        \cos z_0 = \cos a_i \cos c_j - \sin a_i \sin c_j:

    sines and cosines of ``H + W`` values per neuron instead of ``H W``.
    Backward, the first layer's gradients are sums over the grid of
    :math:`D \odot \cos z_0` (``D`` the gradient at :math:`h_1`) weighted by
    1, :math:`y_i` or :math:`x_j`; they come from one batched matmul of ``D``
    (per neuron an ``H x W`` matrix) with ``[cos c, sin c, x cos c, x sin c]``
    (``W x 4``), so :math:`\cos z_0` is never formed. A hidden sine layer
    costs one matmul, ``sin`` forward and ``cos``, one multiply, two matmuls
    backward.
    """
    B, C, P = targets.shape
    H, W = ys.numel(), xs.numel()
    L = len(params)
    # First layer, factorised on the grid: z_0 = a_i + c_j.
    w0f = config.first
    K0 = params[0].shape[1]
    a = params[0][:, :, 0:1] * (w0f * ys)                                            # [B, K0, H]
    c = torch.addcmul(params[0][:, :, 2:3], params[0][:, :, 1:2], xs).mul_(w0f)       # [B, K0, W]
    sa, ca = a.sin(), a.cos()
    # Q = [cos c, x cos c, sin c, x sin c] per neuron, [B, K0, 4, W]: the forward
    # uses rows 0 and 2, the first layer's gradients all four.
    Q = ws.get('Q', B * K0, 4, W, like=targets).view(B, K0, 4, W)
    cc, sc = torch.cos(c, out=Q[:, :, 0]), torch.sin(c, out=Q[:, :, 2])
    torch.mul(Q[:, :, 0::2], xs, out=Q[:, :, 1::2])
    hs = [ws.get_aug('h1', B, K0, P, like=targets)]
    h1 = hs[0][:, :K0].view(B, K0, H, W)
    torch.mul(sa.unsqueeze(-1), cc.unsqueeze(-2), out=h1)
    h1.addcmul_(ca.unsqueeze(-1), sc.unsqueeze(-2))
    # Hidden sine layers: z = w0 [W | b] [h; 1].
    zs = []
    for l in range(1, L - 1):
        d = params[l].shape[1]
        z = torch.bmm(params[l] * config.w0, hs[-1], out=ws.get(f'z{l}', B, d, P, like=targets))
        zs.append(z)
        h = ws.get_aug(f'h{l + 1}', B, d, P, like=targets)
        torch.sin(z, out=h[:, :d])
        hs.append(h)
    last = params[-1]
    if config.output_offset:
        last = last.clone()
        last[:, :, -1] += config.output_offset
    r = torch.bmm(last, hs[-1], out=ws.get('r', B, C, P, like=targets)).sub_(targets)     # [B, C, P]
    mse = r.pow(2).mean(dim=(1, 2))
    scale = 2.0 / (P * C)
    # [h; 1] r^T then transposed, as for the hidden layers (a plain gemv for C = 1).
    torch.mul(torch.bmm(hs[-1], r.transpose(1, 2)).transpose(1, 2), scale, out=grads[-1])   # [B, C, d+1]
    # dL/dz_l = colscale[k] * g[k, p]: for one output channel the last layer's
    # weights ride in colscale, so g = r cos z needs no outer product.
    if C == 1:
        colscale = params[-1][:, 0, :-1] * scale                                         # [B, d]
        g_in = r
    else:
        colscale = None
        g_in = torch.bmm(params[-1][:, :, :-1].transpose(1, 2), r).mul_(scale)            # [B, d, P]
    for l in range(L - 2, 0, -1):
        d = zs[l - 1].shape[1]
        g = torch.cos(zs[l - 1], out=ws.get(f'g{l}', B, d, P, like=targets)).mul_(g_in)
        s = (colscale * config.w0).unsqueeze(-1) if colscale is not None else config.w0
        # [h; 1] g^T then transposed: MKL runs this orientation ~1.3x faster than g [h; 1]^T.
        gT = torch.bmm(hs[l - 1], g.transpose(1, 2))                                    # [B, d_in+1, d]
        torch.mul(gT.transpose(1, 2), s, out=grads[l])
        d_in = params[l].shape[2] - 1
        m = params[l][:, :, :d_in] * s                                                   # [B, d, d_in]
        g_in = torch.bmm(m.transpose(1, 2), g, out=ws.get(f'dh{l}', B, d_in, P, like=targets))
        colscale = None
    # First layer: D = dL/dh_1 [B, K0, P]; per neuron, sums over the grid of
    # D cos z_0 weighted by 1, y_i, x_j, without forming cos z_0:
    # R = Q [4, W] @ D^T [W, H], per neuron.
    D = g_in if L > 2 else torch.bmm(params[-1][:, :, :-1].transpose(1, 2), r).mul_(scale)
    R = torch.bmm(Q.view(B * K0, 4, W), D.view(B * K0, H, W).transpose(1, 2)).view(B, K0, 4, H)
    # S[:, :, 0] = sum_j dz_0, S[:, :, 1] = sum_j dz_0 x_j, per row i: [B, K0, 2, H].
    S = (ca.unsqueeze(2) * R[:, :, 0:2]).sub_(sa.unsqueeze(2) * R[:, :, 2:4])
    yw = torch.stack([ys * w0f, torch.full_like(ys, w0f)], dim=-1)                   # [H, 2]
    T = torch.matmul(S, yw)                                                          # [B, K0, 2, 2]
    g0 = grads[0]
    g0[..., 0] = T[..., 0, 0]                                                        # y weight
    g0[..., 1] = T[..., 1, 1]                                                        # x weight
    g0[..., 2] = T[..., 0, 1]                                                        # bias
    return mse


def fit(
    signals: Tensor,
    coords: Tensor,
    views: int = 1,
    *,
    hidden: Sequence[int] = (32, 32),
    w0: Optional[float] = None,
    first_w0: Optional[float] = None,
    init: Optional[str] = None,
    output_offset: Optional[float] = None,
    preset: Optional[str] = None,
    steps: int = 500,
    lr: float = 1e-3,
    betas: Tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    target_psnr: Optional[float] = None,
    peak: float = 1.0,
    seed: int = 0,
    seeds: Optional[Tensor] = None,
    init_sharing: str = 'independent',
    threads: Optional[int] = 1,
    progress: bool = True,
    separable: Optional[bool] = None,
) -> FitResult:
    r"""Fits ``V`` SIRENs to each of ``N`` signals, all at once.

    All ``B = N * V`` networks' parameters are stacked and updated together:
    one batched forward/backward per step (:func:`stacked_forward`), loss
    :math:`\sum_k \mathrm{MSE}_k` so that each INR's gradient is its own, and
    Adam applied elementwise (the update of ``torch.optim.Adam``). An INR stops
    as soon as its PSNR reaches ``target_psnr`` (its weights at that step are
    kept and it leaves the batch, so the batch shrinks as INRs finish); the rest
    stop after ``steps`` steps. Runs on the device and in the dtype of
    ``signals``. The gradients are computed by hand (:func:`_mse_and_grads`,
    checked against autograd and ``torch.optim.Adam`` in the tests). On a
    CPU shared with other work, one thread is much faster than several
    (measured on 2 busy cores: 8x for batches of 128 INRs, 200x for tiny
    ones, where every op waits for the second thread to be scheduled), hence
    ``threads=1``.

    Args:
        signals: ``[N, P]`` or ``[N, P, C]`` values at the ``P`` coordinates.
        coords: ``[P, d_0]`` coordinates shared by all signals (see :func:`grid`).
        views: INRs per signal, each initialised on its own.
        hidden: widths of the hidden layers (``layer_sizes = (d_0, *hidden, C)``).
        w0, first_w0, init, output_offset: the SIREN conventions
            (:class:`SirenConfig`); unset, they are the preset's, or without a
            preset ``w0=30``, ``first_w0=None`` (= ``w0``), ``init='siren'``,
            ``output_offset=0``.
        preset: a published convention by name (:data:`PRESETS`, e.g.
            ``'dwsnets'``): fixes ``w0``, ``first_w0``, ``init`` and
            ``output_offset``, which must then be left unset.
        steps: step budget (Adam updates) per INR.
        lr, betas, eps: Adam's hyperparameters.
        target_psnr: per-INR early stop in dB (``None``: always ``steps``).
        peak: signal peak for the PSNR (1 for images in ``[0, 1]``).
        seed: seeds the initialisations: INR (signal ``n``, view ``v``) starts
            from :func:`inr_seeds` ``(seed, N, V)[n, v]``, a network of its own.
        seeds: ``[N, V]`` long tensor of per-INR seeds, overriding ``seed``
            (equal seeds start from equal networks).
        init_sharing: ``'independent'`` (default, see ``seed``) or
            ``'shared_per_view'``: view ``v`` of *every* signal starts from
            one network, seeded ``seed + v`` (:func:`view_seeds`; the
            behaviour of ``fit`` before independent starts were the default).
        threads: CPU threads while fitting (torch's setting is restored
            afterwards); ``None`` leaves torch's setting. Run several
            processes (shards) to use more cores.
        progress: show a tqdm bar.
        separable: how the gradients are computed. ``None`` (default): on a
            product grid of 2-D coordinates (:func:`grid`, :func:`grid_axes`)
            the first layer is factorised over the grid's rows and columns
            (:func:`_mse_and_grads_grid`; 1.6-1.8x the generic path on 28x28
            images in chunks of 128 INRs, one core),
            otherwise the generic path (:func:`_mse_and_grads`). ``False``
            forces the generic path (the reference); ``True`` requires the grid.
            Both give the same INRs up to float rounding.

    Returns:
        :class:`FitResult` with stacked weights (offset folded into the last
        bias), each INR's PSNR and step count.

    Raises:
        ValueError: empty or non-finite signals, shapes that do not match,
            ``views < 1``, ``steps < 0``, ``lr`` or ``eps`` not finite and
            positive (or ``lr`` so large that Adam's step overflows),
            ``betas`` outside ``[0, 1)``, seeds of the wrong shape, an
            unknown preset or init sharing, a preset with conventions beside it.
    """
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
    _check_adam(lr, betas, eps, dtype)
    coords = coords.to(device=device, dtype=dtype)
    given = dict(w0=w0, first_w0=first_w0, init=init, output_offset=output_offset)
    if preset is not None:
        if preset not in PRESETS:
            raise ValueError(f'unknown SIREN preset {preset!r}; choose one of {tuple(PRESETS)}')
        clash = [k for k, v in given.items() if v is not None]
        if clash:
            raise ValueError(f'preset={preset!r} fixes {", ".join(clash)}; pass either the preset '
                             f'or the conventions, not both')
        conventions = PRESETS[preset]
    else:
        conventions = dict(w0=30.0 if w0 is None else w0, first_w0=first_w0,
                           init='siren' if init is None else init,
                           output_offset=0.0 if output_offset is None else output_offset)
    config = SirenConfig(layer_sizes=(coords.shape[1], *hidden, C), **conventions)
    if init_sharing not in INIT_SHARING:
        raise ValueError(f'unknown init_sharing {init_sharing!r}; choose one of {INIT_SHARING}')
    if seeds is None:
        if init_sharing == 'independent' and not (0 <= int(seed) < (1 << 22) and N <= (1 << 24)
                                                  and V <= (1 << 16)):
            raise ValueError(f'independent seeds need 0 <= seed < 2**22, at most 2**24 signals and '
                             f'2**16 views, got seed={seed}, {N} signals, {V} views; pass seeds=')
        seeds = (inr_seeds if init_sharing == 'independent' else view_seeds)(seed, N, V)
    seeds = torch.as_tensor(seeds, dtype=torch.long)
    if seeds.shape != (N, V):
        raise ValueError(f'seeds must have shape (N={N}, views={V}), got {tuple(seeds.shape)}')
    seeds = seeds.reshape(-1).cpu()

    with num_threads(threads if device.type == 'cpu' else None):
        return _fit(signals, coords, V, config, seeds, int(steps), float(lr), betas, float(eps),
                    target_psnr, float(peak), progress, separable)


def _check_adam(lr: float, betas: Tuple[float, float], eps: float, dtype: torch.dtype) -> None:
    """Refuses Adam settings that cannot fit anything: a NaN, infinite or
    non-positive ``lr`` or ``eps``, ``betas`` outside ``[0, 1)``, or an ``lr``
    so large that Adam's first step ``lr / (1 - beta1)`` overflows ``dtype``
    (a deep torch error otherwise)."""
    def number(v) -> float:
        try:
            return float('nan') if isinstance(v, (bool, str)) else float(v)
        except (TypeError, ValueError):
            return float('nan')

    for name, v in (('lr', lr), ('eps', eps)):
        if not (math.isfinite(number(v)) and number(v) > 0):
            raise ValueError(f'{name} must be a finite number > 0, got {v!r}')
    b = [number(v) for v in betas] if isinstance(betas, (tuple, list)) else []
    if len(b) != 2 or not all(0 <= v < 1 for v in b):
        raise ValueError(f'betas must be two numbers in [0, 1), got {betas!r}')
    if number(lr) / (1 - b[0]) > torch.finfo(dtype).max:
        raise ValueError(f'lr={lr!r} is too large: the first Adam step lr / (1 - beta1) overflows {dtype}')


@contextlib.contextmanager
def num_threads(n: Optional[int]) -> Iterator[None]:
    """Runs the block with ``torch.set_num_threads(n)`` and restores the old
    setting; ``None`` leaves it alone."""
    if n is None:
        yield
        return
    if int(n) < 1:
        raise ValueError(f'threads must be a positive number, got {n}')
    before = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _fit(signals: Tensor, coords: Tensor, V: int, config: SirenConfig, seeds: Tensor, steps: int,
         lr: float, betas: Tuple[float, float], eps: float, target_psnr: Optional[float], peak: float,
         progress: bool, separable: Optional[bool] = None) -> FitResult:
    from tqdm.auto import tqdm

    N, P, C = signals.shape
    device, dtype = signals.device, signals.dtype
    B = N * V
    L = config.num_layers
    axes = grid_axes(coords) if L >= 2 and separable is not False else None
    if separable and axes is None:
        raise ValueError('separable=True needs coords on a product grid [H * W, 2] (see grid()) '
                         'and at least one hidden layer')
    # All parameters of an INR in one row: layer l's [W_l | b_l] ([d_{l+1}, d_l + 1])
    # at offsets[l], so Adam and the early-stop bookkeeping are a few whole-tensor ops.
    weights0, biases0 = _init_stacked(config, seeds, dtype, device)
    params = torch.cat([torch.cat([w, b.unsqueeze(-1)], dim=-1).reshape(B, -1)
                        for w, b in zip(weights0, biases0)], dim=1)              # [B, n]
    shapes = [(config.layer_sizes[l + 1], config.layer_sizes[l] + 1) for l in range(L)]
    offsets = [0]
    for d_out, d_in1 in shapes:
        offsets.append(offsets[-1] + d_out * d_in1)

    def layers(flat: Tensor) -> List[Tensor]:
        return [flat[:, offsets[l]:offsets[l + 1]].view(-1, *shapes[l]) for l in range(L)]

    if axes is not None:
        ys, xs = axes
        targets_all = signals.transpose(1, 2).contiguous()                     # [N, C, P]
    else:
        targets_all = signals
    grad = torch.empty_like(params)
    exp_avg = torch.zeros_like(params)
    exp_avg_sq = torch.zeros_like(params)
    active = torch.arange(B, device=device)                          # INR ids still fitting
    sig_of = torch.arange(B, device=device) // V
    targets = targets_all[sig_of]
    out = torch.empty_like(params)
    out_psnr = torch.full((B,), float('nan'), dtype=dtype, device=device)
    out_steps = torch.zeros(B, dtype=torch.long, device=device)
    b1, b2 = betas
    target = float('inf') if target_psnr is None else float(target_psnr)

    workspace = _Workspace()
    block = max(1, _BLOCK_FLOATS // max(1, P * max(config.layer_sizes[1:-1])))
    bar = tqdm(total=B, desc=f'fitting {B} INRs', unit='INR', disable=not progress, leave=False)
    for t in range(int(steps) + 1):
        per_layer = layers(params)
        if axes is not None:
            # In slices of `block` INRs: their activations stay in the core's
            # cache between passes (measured: 128 INRs at once are ~1.4x slower
            # per INR than 32). A loop over blocks of INRs, not over INRs.
            n_now = params.shape[0]
            mse = torch.empty(n_now, dtype=dtype, device=device)
            grad_layers = layers(grad)
            for a in range(0, n_now, block):
                b = min(a + block, n_now)
                mse[a:b] = _mse_and_grads_grid([q[a:b] for q in per_layer], ys, xs, targets[a:b], config,
                                               workspace, [g[a:b] for g in grad_layers])
        else:
            mse, gwb = _mse_and_grads([p[..., :-1].contiguous() for p in per_layer],
                                      [p[..., -1].contiguous() for p in per_layer],
                                      coords, targets, config, workspace)
            for g, gw, gb in zip(layers(grad), gwb[:L], gwb[L:]):
                g[..., :-1] = gw
                g[..., -1] = gb
        p_now = 10.0 * torch.log10(peak ** 2 / mse)
        done = p_now >= target
        if t == steps:
            done = torch.ones_like(done)
        n_done = int(done.sum())
        if n_done:
            ids = active[done]
            out[ids] = params[done]
            out_psnr[ids] = p_now[done]
            out_steps[ids] = t
            bar.update(n_done)
            if n_done == active.numel():
                break
            keep = ~done
            active, params, grad = active[keep], params[keep], grad[keep]
            exp_avg, exp_avg_sq, targets = exp_avg[keep], exp_avg_sq[keep], targets[keep]
        # Adam (Kingma & Ba), the update of torch.optim.Adam with default options.
        step = t + 1
        bc1, bc2 = 1 - b1 ** step, 1 - b2 ** step
        exp_avg.lerp_(grad, 1 - b1)
        exp_avg_sq.mul_(b2).addcmul_(grad, grad, value=1 - b2)
        denom = (exp_avg_sq.sqrt() / math.sqrt(bc2)).add_(eps)
        params.addcdiv_(exp_avg, denom, value=-lr / bc1)
        if progress and t % 25 == 0:
            bar.set_postfix(step=t, active=int(active.numel()),
                            psnr=f'{float(p_now.mean()):.1f}')
    bar.close()

    per_layer = layers(out)
    weights = [p[..., :-1].contiguous() for p in per_layer]
    biases = [p[..., -1].contiguous() for p in per_layer]
    if config.output_offset:
        biases[-1] = biases[-1] + config.output_offset
    return FitResult(weights=weights, biases=biases, psnr=out_psnr, steps=out_steps,
                     signal_index=torch.arange(B) // V, view_index=torch.arange(B) % V,
                     seeds=seeds, config=config)
