"""MixUp of a network with an aligned, perturbed copy of itself."""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor
from torch_geometric.data import Batch, Data
from torch_geometric.data.datapipes import functional_transform
from torch_geometric.transforms import BaseTransform

from nngraph import activations as A
from nngraph.graph import activations, architecture, layer_offsets
from nngraph.transforms._base import require_finite
from nngraph.transforms.mixup import (_beta, _gather, aligned_flat, batch_architecture, mix_flat,
                                      random_flat_index)

__all__ = ['SelfAlignMixUp']


def relative_noise(ea: Tensor, x: Tensor, layer_sizes: Sequence[int], std: float):
    """Zero-mean Gaussian noise for stacked flat parameters (``[B, E, C]``,
    ``[B, N, C]``): for each graph and layer, standard deviation ``std``
    times the standard deviation of that layer's weights, on its weights and
    its biases; none on the input nodes. Returns the two noise tensors."""
    sizes = tuple(layer_sizes)
    node_off, edge_off = layer_offsets(sizes)
    B, C_e, C_n = ea.shape[0], ea.shape[-1], x.shape[-1]
    scales = [std * ea[:, edge_off[l]:edge_off[l + 1]].std(dim=(1, 2), correction=0)
              for l in range(len(sizes) - 1)]                                  # [B] each
    e_scale = torch.cat([s[:, None].expand(-1, edge_off[l + 1] - edge_off[l])
                         for l, s in enumerate(scales)], 1)
    n_scale = torch.cat([torch.zeros(B, sizes[0], dtype=ea.dtype, device=ea.device)]
                        + [s[:, None].expand(-1, sizes[l + 1]) for l, s in enumerate(scales)], 1)
    e_noise = torch.randn(B, edge_off[-1], C_e, dtype=ea.dtype, device=ea.device)
    n_noise = torch.randn(B, node_off[-1], C_n, dtype=x.dtype, device=x.device)
    return e_scale.unsqueeze(-1) * e_noise, n_scale.unsqueeze(-1).to(x.dtype) * n_noise


@functional_transform('self_align_mixup')
class SelfAlignMixUp(BaseTransform):
    r"""MixUp of a network with a perturbed copy of itself that has been
    aligned back to it. The copy is the sample with every hidden layer
    randomly permuted, every hidden neuron's sign flipped with probability
    1/2 (odd activations, ``signs``), and Gaussian noise of standard deviation
    ``noise`` times each layer's weight standard deviation added to that
    layer's weights and bias. The copy is then aligned to the sample by weight
    matching (:func:`nngraph.matching.align`, with signs when they were
    flipped) and mixed,

    .. math::
        \theta = \lambda\,\theta + (1 - \lambda)\,\mathrm{align}_\theta\big(\pi(\theta) + \varepsilon\big),
        \qquad \lambda \sim \mathrm{Beta}(\alpha, \alpha),

    so the result is a sample-specific interpolation towards a noisy
    equivalent of itself; the label is kept. Without noise the alignment
    undoes the permutation and signs exactly and the sample comes back
    (up to float rounding): the noise is what makes this an augmentation.

    A :class:`~torch_geometric.data.Batch` of one architecture is perturbed
    and mixed in one tensor op per layer; the alignment matches all pairs
    with batched matrix products and one assignment per pair and layer.
    Randomness from torch's global RNG: permutations, signs, noise, then
    :math:`\lambda`.

    Valid for: any activation (sign flips only for odd ones).
    Preserves: the label; the function only approximately (for small noise).

    Args:
        alpha (float, optional): Beta concentration; ``None`` draws
            :math:`\lambda` from :math:`\mathcal{U}(0, 1)`.
        noise (float): relative noise std of the copy (0 disables noise).
        signs (bool, optional): flip random signs in the copy and match
            signs; ``None`` (default) does so exactly for odd activations,
            ``True`` refuses other activations with a ``ValueError``.
        lam (float, optional): a fixed :math:`\lambda` instead of a random one.
        max_iter (int): most weight-matching sweeps.
    """

    def __init__(self, alpha: Optional[float] = None, noise: float = 0.1, *,
                 signs: Optional[bool] = None, lam: Optional[float] = None,
                 max_iter: int = 100) -> None:
        if alpha is not None and not 0 < alpha < float('inf'):
            raise ValueError(f'SelfAlignMixUp: alpha must be positive and finite, or None, got {alpha}')
        if not 0 <= noise < float('inf'):
            # infinite noise on a layer of equal weights (std 0) is 0 * inf = NaN
            raise ValueError(f'SelfAlignMixUp: noise must be finite and non-negative, got {noise}')
        if lam is not None and not 0.0 <= lam <= 1.0:
            raise ValueError(f'SelfAlignMixUp: lam must lie in [0, 1], got {lam}')
        self.alpha, self.noise, self.signs, self.lam, self.max_iter = alpha, noise, signs, lam, max_iter
        self._beta = _beta(alpha)

    def _use_signs(self, activation, num_layers: int) -> bool:
        if self.signs is True:
            A.require(activation, num_layers, 'odd', 'SelfAlignMixUp(signs=True)')
            return True
        if self.signs is None:
            return all(a.odd for a in A.hidden_activations(activation, num_layers))
        return False

    def forward(self, data: Data) -> Data:
        require_finite(data, 'SelfAlignMixUp')
        if isinstance(data, Batch):
            sizes, activation = batch_architecture(data, 'SelfAlignMixUp')
            B = data.num_graphs
        else:
            sizes, activation, B = architecture(data)[0], activations(data)[0], 1
        signs = self._use_signs(activation, len(sizes) - 1)
        device = data.edge_attr.device
        ea_s = data.edge_attr.reshape(B, -1, data.edge_attr.size(-1))
        x_s = data.x.reshape(B, -1, data.x.size(-1))

        e_idx, e_sign, n_idx, n_sign = random_flat_index(sizes, B, device, signs)
        ea_c, x_c = _gather(ea_s, e_idx, e_sign), _gather(x_s, n_idx, n_sign)
        if self.noise > 0:
            e_noise, n_noise = relative_noise(ea_s, x_s, sizes, self.noise)
            ea_c, x_c = ea_c + e_noise, x_c + n_noise
        if self.lam is not None:
            lam = torch.full((B,), float(self.lam), device=device)
        else:
            lam = torch.rand(B, device=device) if self._beta is None else self._beta.sample((B,), device)

        ea_c, x_c = aligned_flat(ea_s, x_s, ea_c, x_c, sizes, signs, self.max_iter)
        ea, x = mix_flat(lam, ea_s, x_s, ea_c, x_c, sizes[0])
        # ``data`` is already BaseTransform's shallow copy: assign new tensors to it
        data.edge_attr, data.x = ea.view(data.edge_attr.shape), x.view(data.x.shape)
        return data

    def __repr__(self) -> str:
        extra = f', lam={self.lam}' if self.lam is not None else ''
        return (f'{self.__class__.__name__}(alpha={self.alpha}, noise={self.noise}, '
                f'signs={self.signs}{extra})')
