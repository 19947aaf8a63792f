"""Batched training of many small MLP classifiers at once.

Networks of one architecture (depth, width, activation) train together as
stacked tensors ``W_l: [G, d_{l+1}, d_l]``: one ``baddbmm`` per layer for all
``G`` networks, autograd on the *sum* of their losses (each network's gradient
is the gradient of its own loss), and an elementwise AdamW whose learning rate
and weight decay are per-network tensors. Each network has its own training
subset, label noise and epoch budget; networks past their budget leave the
batch at the epoch boundary (a boolean mask over the rows of every per-network
tensor), so a batch of mixed budgets costs the sum of the budgets, not ``G``
times the largest (3x less for the default zoo), and nothing loops over networks.

Randomness is *counter-based* (:func:`counter_uniform`): every random number
is a hash of ``(seed, run id, stream, index...)``. A network's initial weights,
training subset, noisy labels and minibatches therefore depend only on the
build seed and its own run id, never on which other networks share its batch:
a shard, a resumed chunk and a network trained alone
(:func:`train_networks` with ``G = 1``) see the same numbers.

An *epoch* is ``steps_per_epoch = ceil(n_train / batch_size)`` steps of
``batch_size`` examples drawn with replacement from the network's own subset:
every network sees the same number of examples per epoch whatever its subset
size (a small subset is revisited more often, as over-training should).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from nngraph import activations as A

__all__ = ['counter_hash', 'counter_uniform', 'counter_normal', 'init_weights', 'subset_order',
           'noisy_labels', 'batch_images', 'checkpoint_epochs', 'train_networks', 'ZooFit', 'logits']

_M32 = 0xFFFFFFFF
# Streams of random numbers, one per use, so that no two uses share numbers.
HYPER, INIT, SUBSET, NOISE, BATCH = 1, 2, 3, 4, 5
# Eval in slices of this many images: bounds the [G, n, width] activations
# (128 networks x 10,000 Fashion-MNIST images x 32 would be 160 MB).
_EVAL_BLOCK = 2048
_FIT_METRICS = ('train_acc', 'train_loss', 'test_acc', 'test_loss')


# --------------------------------------------------------------------------- #
# Counter-based random numbers
# --------------------------------------------------------------------------- #

def _mix(x: Tensor) -> Tensor:
    """A 32-bit integer hash (two multiply-xorshift rounds) on int64 tensors;
    multipliers below 2**27 keep every product inside int64 (no overflow)."""
    x = x & _M32
    x = (((x >> 16) ^ x) * 0x45D9F3B) & _M32
    x = (((x >> 16) ^ x) * 0x45D9F3B) & _M32
    return (x >> 16) ^ x


def counter_hash(*keys, start: Tensor | None = None) -> Tensor:
    """A 32-bit hash (int64 tensor in ``[0, 2**32)``) of ``keys``, combined in
    order and broadcast like tensors (ints or long tensors, each below 2**32).
    ``start`` continues a hash of leading keys computed once."""
    h = torch.tensor(0x2545F491, dtype=torch.long) if start is None else start
    for k in keys:
        k = torch.as_tensor(k, dtype=torch.long)
        h = _mix(h ^ (_mix(k) + 0x9E3779B9 + ((h << 6) & _M32) + (h >> 2)))
    return h


def counter_uniform(*keys, start: Tensor | None = None) -> Tensor:
    """Float64 numbers in ``(0, 1)``, one per broadcast position of ``keys``."""
    return (counter_hash(*keys, start=start).double() + 0.5) / 2.0 ** 32


def counter_normal(*keys) -> Tensor:
    """Standard normal float64 numbers (Box-Muller on two counter uniforms)."""
    u1, u2 = counter_uniform(*keys, 0), counter_uniform(*keys, 1)
    return torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(2.0 * math.pi * u2)


# --------------------------------------------------------------------------- #
# What each network starts from and trains on
# --------------------------------------------------------------------------- #

def init_weights(seed: int, run_ids: Tensor, layer_sizes: Sequence[int],
                 init_scale: Tensor) -> Tuple[List[Tensor], List[Tensor]]:
    """Initial weights of networks ``run_ids`` ``[G]``: ``W_l ~ N(0, s^2 / d_l)``
    (LeCun normal times the network's ``init_scale`` ``s``), biases zero.
    Returns float32 ``([G, d_{l+1}, d_l]...)``, ``([G, d_{l+1}]...)``."""
    run = run_ids.long().view(-1, 1, 1)
    scale = init_scale.double().view(-1, 1, 1)
    weights, biases = [], []
    for l in range(len(layer_sizes) - 1):       # a loop over layers, not networks
        d_in, d_out = int(layer_sizes[l]), int(layer_sizes[l + 1])
        z = counter_normal(seed, run, INIT, l, torch.arange(d_out * d_in).view(1, d_out, d_in))
        weights.append((z * scale / math.sqrt(d_in)).float())
        biases.append(torch.zeros(run.shape[0], d_out))
    return weights, biases


def subset_order(seed: int, run_ids: Tensor, n_train: int) -> Tensor:
    """Each network's random order of the training images ``[G, n_train]``;
    a network trains on the first ``round(train_fraction * n_train)``."""
    keys = counter_hash(seed, run_ids.long().view(-1, 1), SUBSET, torch.arange(n_train).view(1, -1))
    return torch.argsort(keys, dim=1, stable=True)


def subset_sizes(train_fraction: Tensor, n_train: int) -> Tensor:
    """``round(train_fraction * n_train)`` images per network, at least 1."""
    return torch.round(train_fraction.double() * n_train).long().clamp(1, n_train)


def noisy_labels(seed: int, run_ids: Tensor, labels: Tensor, label_noise: Tensor,
                 num_classes: int) -> Tensor:
    """Each network's training labels ``[G, n_train]``: image ``j``'s label is
    replaced, with probability ``label_noise``, by one of the *other* classes
    (uniformly), so the noise fraction is the fraction of wrong labels."""
    run = run_ids.long().view(-1, 1)
    j = torch.arange(labels.numel()).view(1, -1)
    flip = counter_uniform(seed, run, NOISE, j, 0) < label_noise.double().view(-1, 1)
    shift = 1 + torch.floor(counter_uniform(seed, run, NOISE, j, 1) * (num_classes - 1)).long()
    return torch.where(flip, (labels.view(1, -1) + shift) % num_classes, labels.view(1, -1))


def batch_images(batch_key: Tensor, step: int, batch_size: int, order: Tensor, sizes: Tensor) -> Tensor:
    """Training images of step ``step`` for every network ``[G, batch_size]``:
    positions drawn uniformly (with replacement) from the network's subset.
    ``batch_key`` is ``counter_hash(seed, run_ids[:, None], BATCH)``."""
    u = counter_uniform(step, torch.arange(batch_size).view(1, -1), start=batch_key)
    pos = torch.floor(u * sizes.view(-1, 1).double()).long()
    return order.gather(1, pos)


def checkpoint_epochs(budget: int) -> List[int]:
    """Epochs at which a network of budget ``budget`` is recorded: 0 (its
    initialisation), the powers of two below the budget, and the budget."""
    out, e = [0], 1
    while e < budget:
        out.append(e)
        e *= 2
    return out + [int(budget)]


# --------------------------------------------------------------------------- #
# Training
# --------------------------------------------------------------------------- #

def logits(weights: Sequence[Tensor], biases: Sequence[Tensor], activation: str, x: Tensor) -> Tensor:
    """Outputs ``[G, n, d_L]`` of ``G`` stacked networks on inputs ``x``
    (``[n, d_0]`` shared, or ``[G, n, d_0]``). One ``baddbmm`` per layer, the
    op :func:`nngraph.forward` uses on a batch, so a graph evaluated there
    gives these outputs bit for bit."""
    G = weights[0].shape[0]
    h = x.unsqueeze(0).expand(G, -1, -1) if x.dim() == 2 else x
    act = A.get(activation)
    for l, (w, b) in enumerate(zip(weights, biases)):
        h = torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))
        if l < len(weights) - 1:
            h = act(h)
    return h


def _metrics(weights, biases, activation, x, y, mask=None) -> Tuple[Tensor, Tensor]:
    """Accuracy and mean cross-entropy ``[G]`` of every network on ``x``, ``y``
    (``y`` ``[n]`` shared or ``[G, n]``), counting only ``mask`` ``[G, n]``."""
    G, n = weights[0].shape[0], x.shape[0]
    correct = torch.zeros(G, dtype=torch.float64)
    loss = torch.zeros(G, dtype=torch.float64)
    for a in range(0, n, _EVAL_BLOCK):       # slices of images, all networks at once
        b = min(a + _EVAL_BLOCK, n)
        out = logits(weights, biases, activation, x[a:b])                       # [G, m, C]
        yy = (y[..., a:b] if y.dim() == 2 else y[a:b].expand(G, -1))             # [G, m]
        m = torch.ones_like(yy, dtype=torch.float64) if mask is None else mask[:, a:b].double()
        ce = F.cross_entropy(out.transpose(1, 2), yy, reduction='none').double()
        correct += ((out.argmax(-1) == yy).double() * m).sum(1)
        loss += (ce * m).sum(1)
    count = torch.full((G,), float(n), dtype=torch.float64) if mask is None else mask.double().sum(1)
    return (correct / count).float(), (loss / count).float()


@dataclass
class ZooFit:
    """Checkpoints of a batch of trained networks, ``K`` rows sorted by
    (network, epoch): ``weights`` ``[K, d_{l+1}, d_l]`` and ``biases``
    ``[K, d_{l+1}]`` per layer, and per row ``network`` (index into the batch),
    ``epoch``, ``train_acc``/``train_loss`` (on the network's own subset, with
    its noisy labels: what it was fitted to) and ``test_acc``/``test_loss``."""
    weights: List[Tensor]
    biases: List[Tensor]
    network: Tensor
    epoch: Tensor
    train_acc: Tensor
    train_loss: Tensor
    test_acc: Tensor
    test_loss: Tensor


def train_networks(
    train_x: Tensor, train_y: Tensor, test_x: Tensor, test_y: Tensor, layer_sizes: Sequence[int],
    activation: str, *, seed: int, run_ids: Tensor, lr: Tensor, weight_decay: Tensor, init_scale: Tensor,
    label_noise: Tensor, train_fraction: Tensor, epochs: Tensor, batch_size: int, num_classes: int,
    betas: Tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
) -> ZooFit:
    """Trains ``G = len(run_ids)`` MLP classifiers of one architecture at once.

    Each network (``run_ids[i]``) starts from :func:`init_weights`, trains on
    its :func:`subset_order` subset with its :func:`noisy_labels`, with
    minibatches :func:`batch_images`, for ``epochs[i]`` epochs of AdamW
    (``torch.optim.AdamW``'s update, with its own ``lr[i]`` and
    ``weight_decay[i]``) on the mean cross-entropy of its minibatch, and is
    recorded at :func:`checkpoint_epochs`.

    Args:
        train_x, train_y: training images ``[n_train, d_0]`` float and labels ``[n_train]``.
        test_x, test_y: test images and labels (the test metrics).
        layer_sizes: ``(d_0, hidden..., num_classes)``.
        activation: registered activation string of the hidden layers.
        seed: the build seed (see the module docstring on randomness).
        run_ids, lr, weight_decay, init_scale, label_noise, train_fraction,
            epochs: one entry per network ``[G]``.
        batch_size: examples per step, every network.
        num_classes: number of classes.

    Returns:
        :class:`ZooFit`. Every network's result depends only on ``seed``, its
        run id and its own settings, not on the other networks of the batch.
    """
    G, n_train = run_ids.numel(), train_x.shape[0]
    per_network = dict(lr=lr, weight_decay=weight_decay, init_scale=init_scale, label_noise=label_noise,
                       train_fraction=train_fraction, epochs=epochs)
    wrong = {k: tuple(v.shape) for k, v in per_network.items() if tuple(v.shape) != (G,)}
    if G == 0 or wrong:
        raise ValueError(f'train_networks needs at least one run id and one value per network for '
                         f'{len(run_ids)} run ids, got shapes {wrong}')
    if bool((epochs < 1).any()):
        raise ValueError(f'epochs must be at least 1 for every network, got {epochs.tolist()}')
    L = len(layer_sizes) - 1
    weights0, biases0 = init_weights(seed, run_ids, layer_sizes, init_scale)
    # All parameters of a network in one row, layer l's [W_l | b_l] at offsets[l]:
    # AdamW is then a handful of whole-tensor ops over [G, P].
    shapes = [(int(layer_sizes[l + 1]), int(layer_sizes[l]) + 1) for l in range(L)]
    offsets = [0]
    for d_out, d_in1 in shapes:
        offsets.append(offsets[-1] + d_out * d_in1)
    flat = torch.cat([torch.cat([w, b.unsqueeze(-1)], -1).reshape(G, -1)
                      for w, b in zip(weights0, biases0)], 1)

    def layers(p: Tensor) -> Tuple[List[Tensor], List[Tensor]]:
        views = [p[:, offsets[l]:offsets[l + 1]].view(p.shape[0], *shapes[l]) for l in range(L)]
        return [v[..., :-1] for v in views], [v[..., -1] for v in views]

    order = subset_order(seed, run_ids, n_train)
    sizes = subset_sizes(train_fraction, n_train)
    steps_per_epoch = math.ceil(n_train / batch_size)
    # Everything that is per network, row i for network net[i]: networks past
    # their epoch budget leave the batch (their rows are dropped), so a batch
    # of mixed budgets costs the sum of the budgets, not G times the largest.
    rows = dict(net=torch.arange(G), flat=flat, exp_avg=torch.zeros_like(flat), exp_avg_sq=torch.zeros_like(flat),
                lr=lr.float().view(-1, 1), wd=weight_decay.float().view(-1, 1), order=order, sizes=sizes,
                labels=noisy_labels(seed, run_ids, train_y, label_noise, num_classes),          # [G, n_train]
                in_subset=torch.zeros(G, n_train, dtype=torch.bool).scatter_(
                    1, order, torch.arange(n_train).view(1, -1) < sizes.view(-1, 1)),
                batch_key=counter_hash(seed, run_ids.long().view(-1, 1), BATCH),
                budget=epochs.long().view(-1))
    b1, b2 = betas
    saved: Dict[str, List[Tensor]] = {k: [] for k in ('net', 'epoch', 'flat', *_FIT_METRICS)}

    def record(epoch: int, want: Tensor) -> None:
        w, b = layers(rows['flat'][want])
        train = _metrics(w, b, activation, train_x, rows['labels'][want], rows['in_subset'][want])
        test = _metrics(w, b, activation, test_x, test_y)
        for k, v in zip(('net', 'flat', *_FIT_METRICS), (rows['net'][want], rows['flat'][want], *train, *test)):
            saved[k].append(v)
        saved['epoch'].append(torch.full((int(want.sum()),), epoch, dtype=torch.long))

    t = 0
    while True:
        if t % steps_per_epoch == 0:
            e = t // steps_per_epoch
            budget = rows['budget']
            want = (budget == e) | (e == 0 or e & (e - 1) == 0)        # checkpoint_epochs(budget)
            if bool(want.any()):
                record(e, want)
            if bool((budget == e).any()):
                alive = budget > e
                rows = {k: v[alive] for k, v in rows.items()}
            if rows['net'].numel() == 0:
                break
        flat = rows['flat'].requires_grad_()
        img = batch_images(rows['batch_key'], t, batch_size, rows['order'], rows['sizes'])   # [g, B]
        w, b = layers(flat)
        out = logits(w, b, activation, train_x[img])                                         # [g, B, C]
        loss = F.cross_entropy(out.reshape(-1, out.shape[-1]), rows['labels'].gather(1, img).reshape(-1))
        # cross_entropy averaged over g * B; times g is the sum of the g networks'
        # minibatch means, so each network's gradient is that of its own loss.
        (grad,) = torch.autograd.grad(loss * flat.shape[0], flat)
        t += 1
        with torch.no_grad():      # torch.optim.AdamW's update, lr and weight decay per network
            flat = flat.detach()
            bc1, bc2 = 1 - b1 ** t, 1 - b2 ** t
            flat.mul_(1 - rows['lr'] * rows['wd'])
            rows['exp_avg'].lerp_(grad, 1 - b1)
            rows['exp_avg_sq'].mul_(b2).addcmul_(grad, grad, value=1 - b2)
            denom = (rows['exp_avg_sq'].sqrt() / math.sqrt(bc2)).add_(eps)
            flat.sub_((rows['lr'] / bc1) * rows['exp_avg'] / denom)
            rows['flat'] = flat

    # Rows sorted by (network, epoch).
    cat = {k: torch.cat(v) for k, v in saved.items()}
    perm = torch.sort(cat['net'] * (1 << 20) + cat['epoch'], stable=True).indices
    cat = {k: v[perm] for k, v in cat.items()}
    w, b = layers(cat['flat'])
    return ZooFit(weights=[x.contiguous() for x in w], biases=[x.contiguous() for x in b], network=cat['net'],
                  epoch=cat['epoch'], **{k: cat[k] for k in _FIT_METRICS})
