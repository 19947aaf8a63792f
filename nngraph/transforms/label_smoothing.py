"""Label smoothing: hard or soft labels to smoothed soft labels."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch_geometric.data import Batch, Data
from torch_geometric.data.datapipes import functional_transform
from torch_geometric.transforms import BaseTransform

from nngraph.transforms._base import require_finite_labels


@functional_transform('label_smoothing')
class LabelSmoothing(BaseTransform):
    r"""Replaces the label by a smoothed soft label (functional name:
    :obj:`label_smoothing`):

    .. math::
        y' = (1 - \epsilon)\, y + \frac{\epsilon}{K},

    where a hard label (``y`` long of shape ``[1]``) is first turned into its
    one-hot vector, and a soft label (``y`` float ``[1, K]``, e.g. after
    MixUp) is smoothed as it is. The result is float ``[1, K]`` summing to 1
    (``[B, K]`` for a :class:`~torch_geometric.data.Batch`, which stays
    splittable back into ``[1, K]`` labels). Deterministic.

    Args:
        eps (float): smoothing weight :math:`\epsilon`, in :math:`[0, 1]`.
        num_classes (int): number of classes :math:`K \ge 2`.

    Valid for: any graph with a label ``y``. Preserves: the weights (only
    ``y`` changes) and the arg-max class when :math:`\epsilon < 1`.
    """

    def __init__(self, eps: float, num_classes: int) -> None:
        if not 0.0 <= float(eps) <= 1.0:
            raise ValueError(f'LabelSmoothing: eps must be in [0, 1], got {eps}')
        if isinstance(num_classes, bool) or int(num_classes) != num_classes or num_classes < 2:
            raise ValueError(f'LabelSmoothing: num_classes must be an integer >= 2, got {num_classes!r}')
        self.eps, self.num_classes = float(eps), int(num_classes)

    def forward(self, data: Data) -> Data:
        y = getattr(data, 'y', None)
        if y is None:
            raise ValueError('LabelSmoothing: the graph has no label y')
        n = data.num_graphs if isinstance(data, Batch) else 1
        K = self.num_classes
        if not y.dtype.is_floating_point:
            y = y.reshape(-1)
            if y.numel() != n:
                raise ValueError(f'LabelSmoothing: hard labels must hold one class per graph '
                                 f'({n}), got shape {tuple(data.y.shape)}')
            if bool(((y < 0) | (y >= K)).any()):
                raise ValueError(f'LabelSmoothing: class labels must lie in [0, {K}), got '
                                 f'{y.min().item()}..{y.max().item()}')
            y = F.one_hot(y, K).to(torch.get_default_dtype())
        elif y.dim() != 2 or y.shape != (n, K):
            raise ValueError(f'LabelSmoothing: soft labels must have shape [{n}, {K}], '
                             f'got {tuple(y.shape)}')
        else:
            require_finite_labels(y, 'LabelSmoothing')
        data.y = (1.0 - self.eps) * y + self.eps / K
        return data

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}(eps={self.eps}, num_classes={self.num_classes})'
