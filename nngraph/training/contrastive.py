"""SimCLR contrastive pretraining of an encoder and the linear probe on its
frozen embeddings (``mode`` contrastive, probe, contrastive+probe)."""
from __future__ import annotations

import os
import time
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn
from torch_geometric.data import Batch
from torch_geometric.loader import DataLoader
from tqdm.auto import tqdm

from nngraph.training.data import prepare_data, train_loader
from nngraph.training.losses import hard_labels, nt_xent, warmup_cosine
from nngraph.training.distributed import Distributed
from nngraph.training.loops import check_loss, optimizer_step, restore, seed_epoch
from nngraph.training.models import ContrastiveModel, build_encoder, fit_normalization, training_module
from nngraph.training.run_dir import plot_curves, rng_state, run_metrics, save_checkpoint, write_metrics

__all__ = ['POSITIVES', 'TwoViews', 'ObjectViews', 'embed', 'linear_probe', 'contrastive_and_probe']


POSITIVES = ('augmentations', 'views')


class TwoViews(torch.utils.data.Dataset):
    """Two independently augmented copies of each graph of ``dataset``: the
    positive pair of SimCLR (``contrastive.positives: augmentations``)."""

    def __init__(self, dataset, transform) -> None:
        self.dataset, self.transform = dataset, transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        g = self.dataset[i]
        if self.transform is None:
            return g, g
        return self.transform(g), self.transform(g)


class ObjectViews(torch.utils.data.Dataset):
    """Two distinct INRs of one object (``contrastive.positives: views``), each
    augmented independently: item ``i`` is the ``i``-th object, so a batch
    holds each object at most once and has no false negatives from views.

    The views of an object are other networks fitted to the same image from
    other seeds: they differ in everything a weight-space symmetry cannot
    reach, which is what augmentations of one network lack. An object with one
    view pairs the network with itself (its augmentations still differ).

    Args:
        dataset: a training split with an ``object_id`` per graph (an
            :class:`~nngraph.data.INRGraphDataset`).
        transform: the weight-space augmentations applied to each member.
    """

    def __init__(self, dataset, transform) -> None:
        object_id = getattr(dataset, 'object_id', None)
        if object_id is None:
            raise ValueError(f'contrastive.positives: views needs a dataset with object ids (views of one '
                             f'object), got {type(dataset).__name__}; use positives: augmentations')
        self.dataset, self.transform = dataset, transform
        order = torch.argsort(object_id, stable=True)
        _, counts = torch.unique(object_id[order], return_counts=True)
        self._members = order                                   # graph indices grouped by object
        self._start = torch.cumsum(counts, 0) - counts          # first member of each object
        self._count = counts

    def __len__(self) -> int:
        return int(self._count.numel())

    def __getitem__(self, i: int):
        n, start = int(self._count[i]), int(self._start[i])
        a = int(torch.randint(n, ()))
        b = (a + 1 + int(torch.randint(n - 1, ()))) % n if n > 1 else a   # another view, uniformly
        pair = [self.dataset[int(self._members[start + k])] for k in (a, b)]
        return tuple(self.transform(g) if self.transform is not None else g for g in pair)


@torch.no_grad()
def embed(encoder: nn.Module, dataset, device, batch_size: int = 256) -> Tuple[np.ndarray, np.ndarray]:
    """Frozen embeddings ``[n, out_dim]`` and labels ``[n]`` of a dataset."""
    encoder.eval()
    zs, ys = [], []
    for batch in DataLoader(dataset, batch_size=batch_size):
        batch = batch.to(device)
        zs.append(encoder(batch).cpu())
        ys.append(hard_labels(batch.y).cpu())
    return torch.cat(zs).numpy(), torch.cat(ys).numpy()


def linear_probe(encoder: nn.Module, train, val, test, device, Cs: Sequence[float]) -> Dict[str, float]:
    """Logistic regression on frozen, standardised embeddings; the inverse L2
    strength ``C`` is chosen on validation accuracy; returns train/val/test
    accuracy of the chosen probe."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler
    Xtr, ytr = embed(encoder, train, device)
    Xva, yva = embed(encoder, val, device)
    Xte, yte = embed(encoder, test, device)
    scaler = StandardScaler().fit(Xtr)
    Xtr, Xva, Xte = scaler.transform(Xtr), scaler.transform(Xva), scaler.transform(Xte)
    best = None
    for C in Cs:
        clf = LogisticRegression(C=float(C), max_iter=2000).fit(Xtr, ytr)
        acc = float(clf.score(Xva, yva))
        if best is None or acc > best[0]:
            best = (acc, C, clf)
    acc, C, clf = best
    return {'train_acc': float(clf.score(Xtr, ytr)), 'val_acc': acc, 'test_acc': float(clf.score(Xte, yte)),
            'C': float(C)}


def contrastive_and_probe(config: Dict[str, Any], run_dir: str, dist_: Distributed,
                          checkpoint: Optional[Dict[str, Any]], progress: bool,
                          probed: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Modes ``contrastive``, ``probe`` and ``contrastive+probe``; returns the
    run's metrics. ``checkpoint``: the verified checkpoint a resumed run
    continues; ``probed``: the verified contrastive checkpoint mode ``probe``
    reads (:func:`~nngraph.training.run_dir.probe_checkpoint`). Stops with
    :class:`~nngraph.training.loops.NonFiniteLossError` on a NaN or infinite
    loss, before any checkpoint of that epoch is written."""
    seed, o, d, c = int(config['seed']), config['optim'], config['data'], config['contrastive']
    device = dist_.device
    mode = config['mode']
    torch.manual_seed(seed)
    _, val, test, source, K, sizes, transform = prepare_data(config, dist_, True, soft_labels=False)
    torch.manual_seed(seed)
    encoder = build_encoder(config, sizes)
    fit_normalization(encoder, source)
    encoder = encoder.to(device)
    random_state = {k: v.clone() for k, v in encoder.state_dict().items()}
    model = ContrastiveModel(encoder, int(c['projection_dim'])).to(device)
    history, wall_before, start = [], 0.0, 0
    ckpt_path = os.path.join(run_dir, 'checkpoint.pt')
    t_start = time.perf_counter()

    if mode == 'probe':
        if probed is None:
            raise ValueError('mode probe needs the checkpoint of probe.checkpoint, read by run_dir.probe_checkpoint')
        try:
            model.load_state_dict(probed['model'])
        except RuntimeError as err:
            # e.g. another data set's architecture: the sizes do not fit
            raise ValueError(f"probe.checkpoint {probed.get('path', '')} does not fit this config's encoder: "
                             f"{' '.join(str(err).split())[:300]}") from None
    else:
        ddp = training_module(model, config, dist_.enabled)
        optimizer = torch.optim.AdamW(model.parameters(), lr=o['lr'], weight_decay=o['weight_decay'])
        pairs = (ObjectViews if c['positives'] == 'views' else TwoViews)(source, transform)
        loader, sampler = train_loader(pairs, int(d['batch_size']),
                                        int(d['num_workers']), dist_, seed, d['samples_per_epoch'])
        total = int(o['epochs']) * len(loader)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, warmup_cosine(total, int(o['warmup_epochs']) * len(loader)))
        if checkpoint is not None:
            restore(checkpoint, config, model, optimizer, scheduler)
            history, start = checkpoint['history'], checkpoint['epoch'] + 1
            wall_before = checkpoint.get('wall_time', 0.0)
        for epoch in range(start, int(o['epochs'])):
            seed_epoch(seed, epoch, dist_.rank)
            if sampler is not None:
                sampler.set_epoch(epoch)
            ddp.train()
            loss_sum = count = 0.0
            t0 = time.perf_counter()
            bar = tqdm(loader, desc=f'ssl epoch {epoch + 1}/{o["epochs"]}',
                       disable=not (progress and dist_.main), leave=False)
            for step, (v1, v2) in enumerate(bar):
                v1, v2 = v1.to(device), v2.to(device)
                # One forward over both views: one batch, one DDP all-reduce.
                z = ddp(Batch.from_data_list(v1.to_data_list() + v2.to_data_list()))
                loss = nt_xent(z[:v1.num_graphs], z[v1.num_graphs:], float(c['temperature']))
                optimizer_step(loss, model, optimizer, scheduler, o['grad_clip'])
                value = float(loss.detach())
                check_loss(value, epoch, int(o['epochs']), step, len(loader), run_dir)
                loss_sum += value * v1.num_graphs
                count += v1.num_graphs
                bar.set_postfix(loss=f'{loss_sum / count:.3f}')
            epoch_time = time.perf_counter() - t0
            loss_sum, count = dist_.sum([loss_sum, count])
            history.append({'epoch': epoch, 'train_loss': loss_sum / max(count, 1),
                            'epoch_time_s': epoch_time, 'graphs_per_s': 2 * count / max(epoch_time, 1e-9)})
            if dist_.main:
                save_checkpoint(ckpt_path, model=model.state_dict(), optimizer=optimizer.state_dict(),
                                scheduler=scheduler.state_dict(), epoch=epoch, history=history,
                                rng=rng_state(), config=config,
                                wall_time=wall_before + time.perf_counter() - t_start)
                write_metrics(run_dir, config, history, None, None,
                               wall_before + time.perf_counter() - t_start, finished=False)
            dist_.barrier()

    extra = {}
    if mode in ('probe', 'contrastive+probe'):
        # The probe is cheap and deterministic: every rank computes it, rank 0 writes.
        Cs = config['probe']['C']
        plain_train = source
        extra['probe'] = linear_probe(model.encoder, plain_train, val, test, device, Cs)
        rand = build_encoder(config, sizes).to(device)
        rand.load_state_dict(random_state)
        extra['probe_random_encoder'] = linear_probe(rand, plain_train, val, test, device, Cs)
    wall = wall_before + time.perf_counter() - t_start
    final = None
    if 'probe' in extra:
        final = {'acc': extra['probe']['test_acc'], 'loss': None}
    metrics = run_metrics(config, history, None, final, wall, extra)
    if dist_.main:
        write_metrics(run_dir, config, history, None, final, wall, finished=True, extra=extra)
        if history:
            plot_curves(os.path.join(run_dir, 'curves.png'), history, f"{config['name']}: NT-Xent loss")
    dist_.barrier()
    return metrics
