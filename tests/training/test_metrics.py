"""nngraph.training.metrics: Kendall's tau, R^2 and MAE against values worked by hand."""
import math

import torch

from nngraph.training.metrics import kendall_tau, mean_absolute_error, r2_score, regression_metrics


def test_kendall_tau_counts_concordant_pairs():
    # 6 pairs, one discordant (items 2 and 3 swap): (5 - 1) / 6
    pred, y = torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.tensor([1.0, 3.0, 2.0, 4.0])
    assert math.isclose(kendall_tau(pred, y), 4 / 6, rel_tol=1e-12)
    assert kendall_tau(y, y) == 1.0 and kendall_tau(-y, y) == -1.0
    # a monotone transform of the predictions changes no rank
    assert math.isclose(kendall_tau(pred.exp().view(4, 1), y.view(4, 1)), 4 / 6, rel_tol=1e-12)


def test_r2_and_mae():
    y, pred = torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.tensor([1.0, 2.0, 3.0, 5.0])
    assert math.isclose(r2_score(pred, y), 1 - 1 / 5)          # residual 1, total 5
    assert math.isclose(mean_absolute_error(pred, y), 0.25)
    assert r2_score(torch.full((4,), 2.5), y) == 0.0              # the mean predicts nothing
    assert math.isnan(r2_score(pred, torch.ones(4)))              # a constant target has no variance
    assert regression_metrics(pred, y) == {'tau': 1.0, 'r2': 0.8, 'mae': 0.25}
