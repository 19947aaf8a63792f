"""What the supervised loop optimises and measures: classification (cross-
entropy, accuracy) or regression of a float target (a model zoo's test
accuracy: standardised squared error; Kendall's tau, R^2, MAE).

The loop in :mod:`~nngraph.training.loops` is one loop for both; a task
supplies its loss, the running statistics of a training epoch, evaluation
over a split, and the validation metric that selects the model (accuracy,
or Kendall's tau: the ranking of networks is what the field reports)."""
from __future__ import annotations

from typing import Any, Dict, List, Tuple

import torch
from torch import Tensor, nn

from nngraph.training.distributed import Distributed
from nngraph.training.losses import hard_labels, soft_cross_entropy
from nngraph.training.metrics import kendall_tau, regression_metrics

__all__ = ['Classification', 'Regression', 'evaluate', 'predict']


@torch.no_grad()
def evaluate(model: nn.Module, loader, device, dist_: Distributed) -> Dict[str, float]:
    """Loss and accuracy over a (sharded) split, summed over processes."""
    model.eval()
    loss_sum = correct = count = 0.0
    for batch in loader:
        batch = batch.to(device)
        logits = model(batch)
        loss_sum += float(soft_cross_entropy(logits, batch.y)) * batch.num_graphs
        correct += float((logits.argmax(-1) == hard_labels(batch.y)).sum())
        count += batch.num_graphs
    loss_sum, correct, count = dist_.sum([loss_sum, correct, count])
    return {'loss': loss_sum / max(count, 1), 'acc': correct / max(count, 1)}


@torch.no_grad()
def predict(model: nn.Module, loader, device, dist_: Distributed) -> Dict[str, Tensor]:
    """``{'pred', 'y', 'run_id', 'epoch'}`` ``[n]`` over a (sharded) split,
    gathered from every process (on the CPU); ``run_id``/``epoch`` where the
    graphs carry them (a model zoo's), else -1."""
    model.eval()
    cols: Dict[str, List[Tensor]] = {'pred': [], 'y': [], 'run_id': [], 'epoch': []}
    for batch in loader:
        batch = batch.to(device)
        cols['pred'].append(model(batch).reshape(-1).float().cpu())
        cols['y'].append(batch.y.reshape(-1).float().cpu())
        for key in ('run_id', 'epoch'):
            value = getattr(batch, key, None)
            cols[key].append(value.reshape(-1).cpu() if value is not None
                             else torch.full((batch.num_graphs,), -1, dtype=torch.long))
    out = {k: torch.cat(v) if v else torch.zeros(0) for k, v in cols.items()}
    return {k: dist_.gather(v) for k, v in out.items()}


class Classification:
    """Cross-entropy on hard or soft labels; selects on validation accuracy."""

    metric = 'acc'

    def loss(self, out: Tensor, y: Tensor) -> Tensor:
        return soft_cross_entropy(out, y)

    def running(self) -> '_RunningAccuracy':
        return _RunningAccuracy()

    def evaluate(self, model: nn.Module, loader, device, dist_: Distributed,
                 keep: bool = False) -> Dict[str, float]:
        """``{'loss', 'acc'}`` over a split (``keep``: no predictions are kept
        for classification)."""
        return evaluate(model, loader, device, dist_)

    def summary(self, final: Dict[str, float]) -> str:
        return f"test acc {final['acc']:.3f}"


class _RunningAccuracy:
    def __init__(self) -> None:
        self.loss_sum = self.correct = self.count = 0.0

    def add(self, out: Tensor, y: Tensor, value: float, n: int) -> Dict[str, str]:
        self.loss_sum += value * n
        self.correct += float((out.argmax(-1) == hard_labels(y)).sum())
        self.count += n
        return dict(loss=f'{self.loss_sum / self.count:.3f}', acc=f'{self.correct / self.count:.3f}')

    def result(self, dist_: Distributed) -> Tuple[Dict[str, float], float]:
        """``({'train_loss', 'train_acc'}, graphs)`` summed over processes."""
        loss_sum, correct, count = dist_.sum([self.loss_sum, self.correct, self.count])
        return {'train_loss': loss_sum / max(count, 1), 'train_acc': correct / max(count, 1)}, count


class Regression:
    r"""Squared error of standardised values,
    :math:`\frac1B\sum_i ((\hat y_i - y_i)/\sigma)^2` with :math:`\sigma` the
    training targets' standard deviation (the model's ``y_scale``): about
    :math:`1 - R^2`, whatever the target's units. Selects on validation
    Kendall's tau.

    Args:
        scale: the model's ``y_scale`` buffer (read at every step).
    """

    metric = 'tau'

    def __init__(self, scale: Tensor) -> None:
        self.scale = scale

    def loss(self, out: Tensor, y: Tensor) -> Tensor:
        return (((out - y.view_as(out)) / self.scale) ** 2).mean()

    def running(self) -> '_RunningRegression':
        return _RunningRegression(self)

    def evaluate(self, model: nn.Module, loader, device, dist_: Distributed,
                 keep: bool = False) -> Dict[str, Any]:
        """``{'loss', 'tau', 'r2', 'mae'}`` over a split (and, with ``keep``,
        ``'predictions'``: :func:`predict`'s columns)."""
        p = predict(model, loader, device, dist_)
        loss = self.loss(p['pred'], p['y'].to(p['pred'])).item() if p['y'].numel() else float('nan')
        out: Dict[str, Any] = {'loss': loss, **regression_metrics(p['pred'], p['y'])}
        if keep:
            out['predictions'] = p
        return out

    def summary(self, final: Dict[str, float]) -> str:
        return f"test tau {final['tau']:.3f}, R2 {final['r2']:.3f}"


class _RunningRegression:
    def __init__(self, task: Regression) -> None:
        self.task = task
        self.loss_sum = self.count = 0.0
        self.pred: List[Tensor] = []
        self.y: List[Tensor] = []

    def add(self, out: Tensor, y: Tensor, value: float, n: int) -> Dict[str, str]:
        self.loss_sum += value * n
        self.count += n
        self.pred.append(out.detach().reshape(-1).float().cpu())
        self.y.append(y.detach().reshape(-1).float().cpu())
        return dict(loss=f'{self.loss_sum / self.count:.3f}')

    def result(self, dist_: Distributed) -> Tuple[Dict[str, float], float]:
        """``({'train_loss', 'train_tau'}, graphs)`` over the epoch's
        (augmented) batches of every process."""
        loss_sum, count = dist_.sum([self.loss_sum, self.count])
        pred, y = dist_.gather(torch.cat(self.pred)), dist_.gather(torch.cat(self.y))
        return {'train_loss': loss_sum / max(count, 1), 'train_tau': kendall_tau(pred, y)}, count

