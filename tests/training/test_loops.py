"""The training loops stop on a non-finite loss, naming the epoch and the
step, and leave the last good checkpoint as it was (issue 19, row 6)."""
import json
import os
import subprocess
import sys

import pytest
import torch

from nngraph import training as T
from nngraph.training import contrastive, loops, tasks

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _nan_after(monkeypatch, module, name, calls):
    """``module.name`` returns NaN from its ``calls + 1``-th training call on
    (evaluation runs without gradients and is not counted)."""
    real, n = getattr(module, name), [0]

    def loss(*args, **kwargs):
        out = real(*args, **kwargs)
        if torch.is_grad_enabled():
            n[0] += 1
            if n[0] > calls:
                return out * float('nan')
        return out
    monkeypatch.setattr(module, name, loss)


def _record_checkpoints(monkeypatch, module):
    real, written = module.save_checkpoint, []

    def save(path, **state):
        real(path, **state)
        with open(path, 'rb') as f:
            written.append(f.read())
    monkeypatch.setattr(module, 'save_checkpoint', save)
    return written


@pytest.mark.parametrize('mode', ['supervised', 'contrastive'])
def test_a_nan_loss_stops_the_run_and_keeps_the_last_checkpoint(tmp_path, toy, monkeypatch, mode):
    module, name = (tasks, 'soft_cross_entropy') if mode == 'supervised' else (contrastive, 'nt_xent')
    _nan_after(monkeypatch, module, name, calls=2 * 4 + 1)       # epoch 3, step 2 (4 steps per epoch)
    written = _record_checkpoints(monkeypatch, loops if mode == 'supervised' else module)
    cfg = toy(f'mode={mode}', 'optim.epochs=3', 'model.name=flat', 'model.flat_hidden=16')
    with pytest.raises(T.NonFiniteLossError, match=r'training loss is nan at epoch 3/3, step 2/4; stopped, '
                                                   r'.*checkpoint\.pt \(the last finished epoch\) is left'):
        T.run(cfg, progress=False)
    run = tmp_path / 'toy'
    assert len(written) == 2 and (run / 'checkpoint.pt').read_bytes() == written[-1]
    assert T.load_checkpoint(run / 'checkpoint.pt')['epoch'] == 1
    metrics = json.loads((run / 'metrics.json').read_text())
    assert not metrics['finished'] and len(metrics['epochs']) == 2


def test_a_diverging_run_stops_at_its_first_non_finite_loss(tmp_path, toy):
    cfg = toy('optim.lr=1e30', 'optim.grad_clip=null', 'optim.warmup_epochs=0', 'model.name=flat',
              'model.flat_hidden=16')
    with pytest.raises(T.NonFiniteLossError, match=r'training loss is (nan|inf) at epoch \d+/2, step \d+/4'):
        T.run(cfg, progress=False)


def test_cli_reports_a_diverged_run_in_one_line(tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''), OMP_NUM_THREADS='1')
    r = subprocess.run([sys.executable, os.path.join(ROOT, 'train.py'), '--quiet', f'out_dir={tmp_path}',
                        'data.source=toy', 'data.limit=32', 'data.batch_size=8', 'model.name=flat',
                        'model.flat_hidden=8', 'optim.epochs=1', 'optim.lr=1e30', 'optim.grad_clip=0',
                        'optim.warmup_epochs=0', 'device=cpu'],
                       capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert r.returncode != 0 and 'Traceback' not in r.stderr, r.stderr[-2000:]
    assert r.stderr.strip().startswith('error: training loss is') and r.stderr.strip().count('\n') == 0


def test_an_extended_run_takes_its_next_step_at_the_new_schedules_rate():
    # What README promises for "ten more epochs": the step after the resume
    # uses the new total's rate, not the old schedule's last one (0 at its end).
    from nngraph.training.losses import warmup_cosine
    from nngraph.training.run_dir import rng_state
    cfg = T.load_config(None, ['optim.epochs=2'])
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(8, 4))
    for _ in range(8):
        opt.step()
        sched.step()
    assert opt.param_groups[0]['lr'] == pytest.approx(0.0)
    ck = {'model': model.state_dict(), 'optimizer': opt.state_dict(), 'scheduler': sched.state_dict(),
          'rng': rng_state(), 'config': cfg}
    opt2 = torch.optim.AdamW(model.parameters(), lr=0.1)
    sched2 = torch.optim.lr_scheduler.LambdaLR(opt2, warmup_cosine(16, 4))
    loops.restore(ck, T.load_config(None, ['optim.epochs=4']), model, opt2, sched2)
    assert sched2.last_epoch == 8
    # step 8 of 16 with 4 of warmup: cosine at 4/12 of its way, 0.5 * (1 + cos(pi / 3)) = 0.75
    assert opt2.param_groups[0]['lr'] == pytest.approx(0.1 * 0.75)
