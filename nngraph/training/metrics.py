"""Regression metrics of the zoo task: Kendall's tau (the field's headline
number for predicting a network's accuracy), R^2 and mean absolute error."""
from __future__ import annotations

from typing import Dict

from torch import Tensor

__all__ = ['kendall_tau', 'r2_score', 'mean_absolute_error', 'regression_metrics']


def kendall_tau(pred: Tensor, y: Tensor) -> float:
    r"""Kendall's :math:`\tau_b` rank correlation of ``pred`` and ``y``
    (``[n]`` or ``[n, 1]``; :func:`scipy.stats.kendalltau`, which handles
    ties): 1 when the predictions rank the networks exactly as their targets
    do. ``nan`` for fewer than two points or a constant input (no ranking)."""
    from scipy.stats import kendalltau
    p, t = pred.detach().reshape(-1).double().cpu().numpy(), y.detach().reshape(-1).double().cpu().numpy()
    if p.size < 2:
        return float('nan')
    return float(kendalltau(p, t).statistic)


def r2_score(pred: Tensor, y: Tensor) -> float:
    r""":math:`R^2 = 1 - \sum_i (y_i - \hat y_i)^2 / \sum_i (y_i - \bar y)^2`
    (the coefficient of determination; 0 for predicting the mean, negative
    for worse). ``nan`` when ``y`` is constant."""
    p, t = pred.detach().reshape(-1).double(), y.detach().reshape(-1).double()
    total = ((t - t.mean()) ** 2).sum()
    if t.numel() < 2 or float(total) == 0.0:
        return float('nan')
    return float(1 - ((t - p) ** 2).sum() / total)


def mean_absolute_error(pred: Tensor, y: Tensor) -> float:
    r""":math:`\frac1n \sum_i |y_i - \hat y_i|` in the target's units."""
    p, t = pred.detach().reshape(-1).double(), y.detach().reshape(-1).double()
    return float((t - p).abs().mean()) if t.numel() else float('nan')


def regression_metrics(pred: Tensor, y: Tensor) -> Dict[str, float]:
    """``{'tau', 'r2', 'mae'}`` of predictions ``pred`` against targets ``y``."""
    return {'tau': kendall_tau(pred, y), 'r2': r2_score(pred, y), 'mae': mean_absolute_error(pred, y)}
