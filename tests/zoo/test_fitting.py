"""Batched training (nngraph/zoo/fitting.py): the batch is the plain loop, network by network."""
import math

import pytest
import torch
import torch.nn.functional as F

from nngraph.zoo.fitting import (BATCH, batch_images, checkpoint_epochs, counter_hash, counter_normal,
                                 counter_uniform, init_weights, noisy_labels, subset_order, subset_sizes,
                                 train_networks)

SIZES = (6, 5, 4, 3)


def _data(n_train=50, n_test=20, d=6, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n_train, d, generator=g), torch.randint(0, classes, (n_train,), generator=g),
            torch.rand(n_test, d, generator=g), torch.randint(0, classes, (n_test,), generator=g))


HYPER = dict(run_ids=torch.tensor([3, 7, 11]), lr=torch.tensor([1e-2, 3e-3, 2e-2]),
             weight_decay=torch.tensor([1e-3, 0.0, 1e-2]), init_scale=torch.tensor([1.0, 0.5, 2.0]),
             label_noise=torch.tensor([0.0, 0.3, 0.5]), train_fraction=torch.tensor([1.0, 0.5, 0.2]),
             epochs=torch.tensor([3, 1, 2]))


def _plain_loop(train_x, train_y, k, seed, batch_size, classes):
    """Network k of HYPER trained alone: nn parameters, torch.optim.AdamW, a Python loop."""
    run = HYPER['run_ids'][k:k + 1]
    w0, b0 = init_weights(seed, run, SIZES, HYPER['init_scale'][k:k + 1])
    params = [p[0].clone().requires_grad_() for pair in zip(w0, b0) for p in pair]
    opt = torch.optim.AdamW(params, lr=float(HYPER['lr'][k]), weight_decay=float(HYPER['weight_decay'][k]))
    order = subset_order(seed, run, train_x.shape[0])
    sizes = subset_sizes(HYPER['train_fraction'][k:k + 1], train_x.shape[0])
    labels = noisy_labels(seed, run, train_y, HYPER['label_noise'][k:k + 1], classes)[0]
    key = counter_hash(seed, run.view(-1, 1), BATCH)
    steps = int(HYPER['epochs'][k]) * math.ceil(train_x.shape[0] / batch_size)
    for t in range(steps):
        img = batch_images(key, t, batch_size, order, sizes)[0]
        h = train_x[img]
        for l in range(len(SIZES) - 1):
            h = h @ params[2 * l].t() + params[2 * l + 1]
            if l < len(SIZES) - 2:
                h = torch.tanh(h)
        opt.zero_grad()
        F.cross_entropy(h, labels[img]).backward()
        opt.step()
    return [p.detach() for p in params]


def test_batch_equals_plain_loop_per_network():
    train_x, train_y, test_x, test_y = _data()
    fit = train_networks(train_x, train_y, test_x, test_y, SIZES, 'tanh', seed=5, batch_size=8, num_classes=3,
                         **HYPER)
    for k in range(3):
        final = ((fit.network == k) & (fit.epoch == HYPER['epochs'][k])).nonzero().item()
        alone = _plain_loop(train_x, train_y, k, seed=5, batch_size=8, classes=3)
        for l in range(len(SIZES) - 1):
            torch.testing.assert_close(fit.weights[l][final], alone[2 * l], rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(fit.biases[l][final], alone[2 * l + 1], rtol=1e-4, atol=1e-5)


def test_network_does_not_depend_on_its_batch():
    """Run 7 trained alone is run 7 trained beside others (counter-based randomness)."""
    train_x, train_y, test_x, test_y = _data()
    both = train_networks(train_x, train_y, test_x, test_y, SIZES, 'relu', seed=1, batch_size=8, num_classes=3,
                          **HYPER)
    alone = train_networks(train_x, train_y, test_x, test_y, SIZES, 'relu', seed=1, batch_size=8, num_classes=3,
                           **{k: v[1:2] for k, v in HYPER.items()})
    rows = (both.network == 1).nonzero().squeeze(1)
    assert torch.equal(both.epoch[rows], alone.epoch)
    for l in range(len(SIZES) - 1):
        torch.testing.assert_close(both.weights[l][rows], alone.weights[l], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(both.test_acc[rows], alone.test_acc)


def test_checkpoints_and_metrics():
    train_x, train_y, test_x, test_y = _data()
    fit = train_networks(train_x, train_y, test_x, test_y, SIZES, 'relu', seed=0, batch_size=8, num_classes=3,
                         **HYPER)
    assert fit.network.tolist() == [0, 0, 0, 0, 1, 1, 2, 2, 2]
    assert fit.epoch.tolist() == [0, 1, 2, 3, 0, 1, 0, 1, 2]
    # Epoch 0 is the initialisation: zero biases, the init_weights draw.
    w0, _ = init_weights(0, HYPER['run_ids'], SIZES, HYPER['init_scale'])
    assert torch.equal(fit.weights[0][fit.epoch == 0], w0[0])
    assert bool(((fit.test_acc >= 0) & (fit.test_acc <= 1)).all())
    assert bool((fit.train_loss > 0).all())


def test_checkpoint_epochs():
    assert checkpoint_epochs(1) == [0, 1]
    assert checkpoint_epochs(4) == [0, 1, 2, 4]
    assert checkpoint_epochs(5) == [0, 1, 2, 4, 5]


def test_counter_randomness_is_deterministic_and_spread():
    u = counter_uniform(3, torch.arange(20000))
    assert torch.equal(u, counter_uniform(3, torch.arange(20000)))
    assert float(u.min()) > 0 and float(u.max()) < 1 and abs(float(u.mean()) - 0.5) < 0.01
    assert not torch.equal(u, counter_uniform(4, torch.arange(20000)))
    z = counter_normal(0, torch.arange(20000))
    assert abs(float(z.mean())) < 0.03 and abs(float(z.std()) - 1) < 0.03


def test_noisy_labels_flip_the_asked_fraction_to_other_classes():
    y = torch.arange(10000) % 10
    noisy = noisy_labels(0, torch.tensor([0, 1]), y, torch.tensor([0.0, 0.3]), 10)
    assert torch.equal(noisy[0], y)
    wrong = (noisy[1] != y).float().mean()
    assert abs(float(wrong) - 0.3) < 0.02
    assert int(noisy.min()) >= 0 and int(noisy.max()) <= 9


def test_per_network_settings_must_match_the_run_ids():
    train_x, train_y, test_x, test_y = _data()
    bad = dict(HYPER, lr=torch.tensor([1e-2, 1e-2]))
    with pytest.raises(ValueError, match=r"'lr': \(2,\)"):
        train_networks(train_x, train_y, test_x, test_y, SIZES, 'relu', seed=0, batch_size=8, num_classes=3, **bad)
