"""Supervised training: the epoch loop with validation-based model
selection, evaluation, and the final test of the selected model."""
from __future__ import annotations

import math
import os
import random
import time
from typing import Any, Dict, Optional

import numpy as np
import torch
from torch import Tensor, nn
from torch_geometric.loader import DataLoader
from tqdm.auto import tqdm

from nngraph.training.data import REGRESSION_SOURCES, architectures_of, prepare_data, train_loader
from nngraph.training.distributed import Distributed, shard
from nngraph.training.losses import warmup_cosine
from nngraph.training.models import build_model, fit_normalization, training_module
from nngraph.training.run_dir import (plot_curves, rng_state, save_checkpoint, set_rng_state, write_metrics,
                                      run_metrics, write_predictions)
from nngraph.training.tasks import Classification, Regression, evaluate

__all__ = ['NonFiniteLossError', 'seed_epoch', 'evaluate', 'optimizer_step', 'check_loss', 'restore',
           'supervised']


class NonFiniteLossError(ValueError):
    """The training loss became NaN or infinite: the run stops, and its last
    checkpoint (from the last finished epoch) is left as it was."""


def check_loss(value: float, epoch: int, epochs: int, step: int, steps: int, run_dir: str) -> None:
    """Raises :class:`NonFiniteLossError` naming the epoch and step (1-based,
    as the progress bar counts) when the loss ``value`` is not finite."""
    if not math.isfinite(value):
        ckpt = os.path.join(run_dir, 'checkpoint.pt')
        kept = (f'{ckpt} (the last finished epoch) is left as it was' if os.path.exists(ckpt)
                else 'no checkpoint was written')
        raise NonFiniteLossError(f'training loss is {value} at epoch {epoch + 1}/{epochs}, step {step + 1}/{steps}; '
                                 f'stopped, {kept}. Lower optim.lr or set optim.grad_clip')


def restore(checkpoint: Dict[str, Any], config: Dict[str, Any], model: nn.Module, optimizer, scheduler) -> None:
    """Loads a resumed run's model, optimizer, schedule and RNG states. When
    ``optim.epochs`` grew (the run is extended), the schedule is the one of
    the new total, continued from the step reached: the learning rate of the
    next step is what a run started with the new ``optim.epochs`` uses there."""
    model.load_state_dict(checkpoint['model'])
    optimizer.load_state_dict(checkpoint['optimizer'])
    scheduler.load_state_dict(checkpoint['scheduler'])
    if checkpoint['config']['optim']['epochs'] != config['optim']['epochs']:
        # LambdaLR keeps its step count and base rates; the lambda is the new
        # schedule's. The optimizer still holds the old schedule's rate for
        # the next step: set it from the new one.
        for group, base, factor in zip(optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas):
            group['lr'] = base * factor(scheduler.last_epoch)
    set_rng_state(checkpoint['rng'])


def seed_epoch(seed: int, epoch: int, rank: int) -> None:
    """Seeds torch, numpy and random for one epoch of one process."""
    # Every epoch starts from a state derived only from (seed, epoch, rank):
    # a resumed run draws exactly what the uninterrupted one drew.
    s = (seed * 1_000_003 + epoch * 7919 + rank) % (2 ** 31)
    torch.manual_seed(s)
    np.random.seed(s)
    random.seed(s)


def optimizer_step(loss: Tensor, model: nn.Module, optimizer, scheduler, grad_clip) -> None:
    """Backward, optional gradient-norm clipping, one optimizer and one schedule step."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip:
        nn.utils.clip_grad_norm_(model.parameters(), float(grad_clip))
    optimizer.step()
    scheduler.step()


def supervised(config: Dict[str, Any], run_dir: str, dist_: Distributed, checkpoint: Optional[Dict[str, Any]],
               progress: bool) -> Dict[str, Any]:
    """Supervised training (mode ``supervised``), continuing ``checkpoint``
    (a verified one, :func:`~nngraph.training.run_dir.resume_checkpoint`) if
    given; returns the run's metrics. Stops with :class:`NonFiniteLossError`
    on a NaN or infinite loss, before any checkpoint of that epoch is written."""
    seed, o, d = int(config['seed']), config['optim'], config['data']
    device = dist_.device
    torch.manual_seed(seed)
    train, val, test, source, K, sizes, _ = prepare_data(config, dist_, True, soft_labels=True)
    regression = d['source'] in REGRESSION_SOURCES

    # ---- model, optimizer, schedule
    torch.manual_seed(seed)             # same initial weights on every rank
    if regression:
        model = build_model(config, K, sizes, regression=True, architectures=architectures_of(train, val, test))
        model.fit_targets(source.y)
    else:
        model = build_model(config, K, sizes)
    fit_normalization(model, source)
    model = model.to(device)
    task = Regression(model.y_scale) if regression else Classification()
    metric = f'val_{task.metric}'       # the validation metric that selects the model
    ddp = training_module(model, config, dist_.enabled)     # evaluation runs `model` itself
    optimizer = torch.optim.AdamW(model.parameters(), lr=o['lr'], weight_decay=o['weight_decay'])
    loader, sampler = train_loader(train, int(d['batch_size']), int(d['num_workers']), dist_, seed,
                                    d['samples_per_epoch'])
    steps_per_epoch = len(loader)
    total = int(o['epochs']) * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(total, int(o['warmup_epochs']) * steps_per_epoch))
    val_loader = DataLoader(shard(val, dist_), batch_size=int(d['eval_batch_size']))
    test_loader = DataLoader(shard(test, dist_), batch_size=int(d['eval_batch_size']))

    # tau >= -1 and acc >= 0: the first finite validation metric is the best so far
    history, start, best = [], 0, {'epoch': -1, metric: -1.0 if metric == 'val_acc' else -2.0, 'state': None}
    ckpt_path = os.path.join(run_dir, 'checkpoint.pt')
    wall_before = 0.0
    if checkpoint is not None:
        restore(checkpoint, config, model, optimizer, scheduler)
        history, start, best = checkpoint['history'], checkpoint['epoch'] + 1, checkpoint['best']
        wall_before = checkpoint.get('wall_time', 0.0)

    t_start, train_time, train_graphs = time.perf_counter(), 0.0, 0
    for epoch in range(start, int(o['epochs'])):
        seed_epoch(seed, epoch, dist_.rank)
        if sampler is not None:
            sampler.set_epoch(epoch)
        ddp.train()
        running = task.running()
        t0 = time.perf_counter()
        bar = tqdm(loader, desc=f'epoch {epoch + 1}/{o["epochs"]}', disable=not (progress and dist_.main),
                   leave=False)
        for step, batch in enumerate(bar):
            batch = batch.to(device)
            out = ddp(batch)
            loss = task.loss(out, batch.y)
            optimizer_step(loss, model, optimizer, scheduler, o['grad_clip'])
            # The one sync per step the running mean already made; a NaN
            # stops the run here, before this epoch's checkpoint.
            value = float(loss.detach())
            check_loss(value, epoch, int(o['epochs']), step, steps_per_epoch, run_dir)
            bar.set_postfix(**running.add(out, batch.y, value, batch.num_graphs))
        epoch_time = time.perf_counter() - t0
        train_row, count = running.result(dist_)
        train_time += epoch_time
        train_graphs += count
        v = task.evaluate(model, val_loader, device, dist_)
        row = {'epoch': epoch, **train_row, **{f'val_{k}': x for k, x in v.items()}}
        if d['test_every_epoch']:
            t = task.evaluate(model, test_loader, device, dist_)
            row.update({f'test_{k}': x for k, x in t.items()})
        row.update(lr=scheduler.get_last_lr()[0], epoch_time_s=epoch_time,
                   graphs_per_s=count / max(epoch_time, 1e-9))
        history.append(row)
        if row[metric] > best[metric]:
            best = {'epoch': epoch, metric: row[metric],
                    'state': {k: x.detach().cpu().clone() for k, x in model.state_dict().items()}}
        if dist_.main:
            if progress:
                m = task.metric
                test = f" test {row[f'test_{m}']:.3f}" if f'test_{m}' in row else ''
                tqdm.write(f"epoch {epoch + 1}: train {row[f'train_{m}']:.3f} val {row[metric]:.3f}{test} "
                           f"({row['graphs_per_s']:.0f} graphs/s)")
            save_checkpoint(ckpt_path, model=model.state_dict(), optimizer=optimizer.state_dict(),
                            scheduler=scheduler.state_dict(), epoch=epoch, history=history, best=best,
                            rng=rng_state(), config=config,
                            wall_time=wall_before + time.perf_counter() - t_start)
            write_metrics(run_dir, config, history, best, None, wall_before + time.perf_counter() - t_start,
                           finished=False)
        dist_.barrier()

    # ---- how well the last epoch's model fits the training graphs as they are
    # (the regime: a model that cannot fit them cannot overfit), then the
    # best-on-validation model on the test split
    source_loader = DataLoader(shard(source, dist_), batch_size=int(d['eval_batch_size']))
    last = task.evaluate(model, source_loader, device, dist_) if history else {}
    if best['state'] is not None:
        model.load_state_dict(best['state'])
    final = task.evaluate(model, test_loader, device, dist_, keep=True)
    predictions = final.pop('predictions', None)
    # The generalization gap's other end: the same model on the training
    # graphs as they are (no augmentation), not the running batch accuracy.
    clean = task.evaluate(model, source_loader, device, dist_)
    # (classification keeps metrics.json's key order: train_acc first)
    extra = ({f'train_{k}': x for k, x in clean.items()} if regression
             else {'train_acc': clean['acc'], 'train_loss': clean['loss']})
    extra.update({f'last_train_{k}': x for k, x in last.items()})
    wall = wall_before + time.perf_counter() - t_start
    metrics = run_metrics(config, history, best, final, wall, extra)
    if dist_.main:
        write_metrics(run_dir, config, history, best, final, wall, finished=True, extra=extra)
        if predictions is not None:
            write_predictions(os.path.join(run_dir, 'predictions.csv'), predictions)
        if history:
            plot_curves(os.path.join(run_dir, 'curves.png'), history,
                        f"{config['name']}: best epoch {best['epoch']}, {task.summary(final)}", task.metric)
    dist_.barrier()
    return metrics
