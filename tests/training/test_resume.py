"""--resume is bound to the run folder's checkpoint (issue 19, rows 3 and 9):
only execution keys may change and optim.epochs may grow (which extends the
run, finished or not, on the schedule of the new total); anything else is
refused in one line naming each key, before config.yaml is touched."""
import json
import shutil

import pytest

from nngraph import training as T
from nngraph.training.losses import warmup_cosine

FILES = ('config.yaml', 'checkpoint.pt', 'metrics.json')
FLAT = ('model.name=flat', 'model.flat_hidden=16')      # fastest where the model does not matter


def _snapshot(run):
    return {f: (run / f).read_bytes() for f in FILES}


def test_resume_with_another_config_is_refused_before_anything_is_written(tmp_path, toy):
    T.run(toy(), progress=False)
    run = tmp_path / 'toy'
    before = _snapshot(run)
    changed = {'optim.lr=0.1': 'optim.lr: 0.01 -> 0.1', 'seed=1': 'seed: 0 -> 1',
               'transforms=[RandomSignFlip]': "transforms: [] -> ['RandomSignFlip']",
               'model.dropout=0.5': 'model.dropout: 0.0 -> 0.5'}
    with pytest.raises(ValueError) as info:
        T.run(toy(*changed), resume=True, progress=False)
    msg = str(info.value)
    assert msg.startswith(f"cannot resume from {run / 'checkpoint.pt'}") and '\n' not in msg
    assert all(part in msg for part in changed.values()), msg
    # Row 9: a wider model is refused by this check, not by a size mismatch deep in torch.
    with pytest.raises(ValueError, match=r'model\.hidden: 16 -> 32'):
        T.run(toy('model.hidden=32'), resume=True, progress=False)
    # Row 3: fewer epochs than the run was made with (finished or not) cannot rewrite it as finished.
    with pytest.raises(ValueError, match=r'optim\.epochs: 2 -> 1 \(a run is extended, never shortened\)'):
        T.run(toy('optim.epochs=1'), resume=True, progress=False)
    assert _snapshot(run) == before


def test_execution_keys_may_change_and_a_moved_run_folder_resumes(tmp_path, toy):
    T.run(toy(*FLAT, out_dir=tmp_path / 'a'), progress=False)
    shutil.copytree(tmp_path / 'a', tmp_path / 'b')
    again = T.run(toy(*FLAT, 'device=auto', 'data.num_workers=0', out_dir=tmp_path / 'b'), resume=True,
                  progress=False)
    first = json.loads((tmp_path / 'a' / 'toy' / 'metrics.json').read_text())
    assert [h['val_acc'] for h in again['epochs']] == [h['val_acc'] for h in first['epochs']]
    assert again['test_acc'] == first['test_acc']


def test_a_larger_epoch_budget_extends_a_finished_run_on_the_new_schedule(tmp_path, toy):
    T.run(toy(*FLAT, out_dir=tmp_path / 'short'), progress=False)
    extended = T.run(toy(*FLAT, 'optim.epochs=4', out_dir=tmp_path / 'short'), resume=True, progress=False)
    full = T.run(toy(*FLAT, 'optim.epochs=4', out_dir=tmp_path / 'full'), progress=False)
    hist = extended['epochs']
    assert [h['epoch'] for h in hist] == [0, 1, 2, 3]
    saved = json.loads((tmp_path / 'short' / 'toy' / 'metrics.json').read_text())
    assert saved['finished'] and len(saved['epochs']) == 4
    assert T.load_config(str(tmp_path / 'short' / 'toy' / 'config.yaml'))['optim']['epochs'] == 4
    # The first two epochs keep the 2-epoch schedule they ran on; from the
    # step reached on, the learning rate is the 4-epoch schedule's.
    steps, lr = 4, 1e-2
    short, long = warmup_cosine(2 * steps, steps), warmup_cosine(4 * steps, steps)
    assert hist[1]['lr'] == pytest.approx(lr * short(2 * steps))          # 0: the short run had ended
    for e in (2, 3):
        assert hist[e]['lr'] == pytest.approx(lr * long((e + 1) * steps))
        assert hist[e]['lr'] == pytest.approx(full['epochs'][e]['lr'])


def test_a_contrastive_resume_is_bound_too(tmp_path, toy):
    flat = ('mode=contrastive', 'model.name=flat', 'model.flat_hidden=16', 'optim.epochs=1')
    T.run(toy(*flat), progress=False)
    before = _snapshot(tmp_path / 'toy')
    with pytest.raises(ValueError, match=r'contrastive\.temperature: 0\.1 -> 0\.5'):
        T.run(toy(*flat, 'contrastive.temperature=0.5'), resume=True, progress=False)
    assert _snapshot(tmp_path / 'toy') == before
    more = T.run(toy(*flat[:-1], 'optim.epochs=2'), resume=True, progress=False)
    assert [h['epoch'] for h in more['epochs']] == [0, 1]
