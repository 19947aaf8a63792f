"""nngraph.training.run_dir: checkpoints hold tensors, numbers, strings and
containers only, carry a sha256, and are refused (a ValueError naming the
file) when empty, truncated, changed or carrying code (issue 19, rows 1, 4,
14); a refused --resume or probe leaves the run folder as it was."""
import io
import json
import os
import random
import zipfile

import numpy as np
import pytest
import torch

from nngraph import training as T
from nngraph.training import run_dir as R


class Payload:
    """Pickles as a call of os.system: loading it unsafely creates ``marker``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f'touch {self.marker}',)


def _state():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.AdamW(model.parameters())
    model(torch.randn(2, 4)).sum().backward()
    opt.step()
    return {'model': model.state_dict(), 'optimizer': opt.state_dict(), 'epoch': 3, 'rng': R.rng_state(),
            'config': T.load_config(None), 'history': [{'epoch': 0, 'train_loss': 0.5}]}


def test_checkpoint_round_trip_is_weights_only_and_plain_torch_readable(tmp_path):
    path = tmp_path / 'checkpoint.pt'
    state = _state()
    R.save_checkpoint(path, **state)
    back = R.load_checkpoint(path)
    assert back['epoch'] == 3 and back['config'] == state['config'] and back['history'] == state['history']
    torch.testing.assert_close(back['optimizer']['state'], state['optimizer']['state'])
    # Still an ordinary torch.save archive: torch.load reads it, weights only.
    plain = torch.load(path, weights_only=True)
    assert torch.equal(plain['model']['weight'], state['model']['weight'])
    assert zipfile.ZipFile(path).comment.startswith(b'nngraph-sha256:')


def test_rng_states_survive_a_weights_only_checkpoint(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    np.random.randn()                       # a cached Gaussian in numpy's state
    R.save_checkpoint(tmp_path / 'c.pt', rng=R.rng_state())
    first = (torch.rand(3).tolist(), np.random.rand(3).tolist(), [random.random() for _ in range(3)],
             random.gauss(0, 1), np.random.randn())
    R.set_rng_state(R.load_checkpoint(tmp_path / 'c.pt')['rng'])
    again = (torch.rand(3).tolist(), np.random.rand(3).tolist(), [random.random() for _ in range(3)],
             random.gauss(0, 1), np.random.randn())
    assert first == again


def _tensor_byte(path):
    # An offset inside the largest tensor record (the optimizer's or the model's data).
    with zipfile.ZipFile(path) as z:
        info = max((i for i in z.infolist() if '/data/' in i.filename), key=lambda i: i.file_size)
    with open(path, 'rb') as f:
        f.seek(info.header_offset + 26)
        n, m = int.from_bytes(f.read(2), 'little'), int.from_bytes(f.read(2), 'little')
    return info.header_offset + 30 + n + m + info.file_size // 2


@pytest.mark.parametrize('where', ['first', 'middle', 'tensor', 'checksum'])
def test_one_flipped_byte_is_refused(tmp_path, where):
    path = tmp_path / 'checkpoint.pt'
    R.save_checkpoint(path, **_state())
    data = bytearray(path.read_bytes())
    i = {'first': 0, 'middle': len(data) // 2, 'tensor': _tensor_byte(path), 'checksum': len(data) - 1}[where]
    data[i] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(T.CheckpointError, match=f'checkpoint {path} (is corrupt|carries no nngraph checksum)'):
        R.load_checkpoint(path)


@pytest.mark.parametrize('keep', [0, 1, 100, 0.5, -1, -30])
def test_empty_or_truncated_checkpoint_is_refused(tmp_path, keep):
    path = tmp_path / 'checkpoint.pt'
    R.save_checkpoint(path, **_state())
    data = path.read_bytes()
    n = int(len(data) * keep) if isinstance(keep, float) else keep
    path.write_bytes(data[:n])
    with pytest.raises(ValueError, match=f'checkpoint {path} (is empty|carries no nngraph checksum|is corrupt)'):
        R.load_checkpoint(path)


def test_a_checkpoint_without_checksum_is_refused(tmp_path):
    path = tmp_path / 'checkpoint.pt'
    torch.save(_state(), path)                # an older nngraph, or someone else's file
    with pytest.raises(T.CheckpointError, match=f'checkpoint {path} carries no nngraph checksum.*--overwrite'):
        R.load_checkpoint(path)


@pytest.mark.parametrize('checksummed', [True, False])
def test_a_pickled_payload_is_refused_and_never_runs(tmp_path, checksummed):
    marker, path = tmp_path / 'pwned', tmp_path / 'checkpoint.pt'
    if checksummed:   # the checksum guards against damage, not against a crafted file
        R.save_checkpoint(path, model=Payload(marker), epoch=0)
    else:
        torch.save({'model': Payload(marker)}, path)
    with pytest.raises(T.CheckpointError, match=f'checkpoint {path} '):
        R.load_checkpoint(path)
    assert not marker.exists()


FLAT = ('model.name=flat', 'model.flat_hidden=16')       # the model does not matter here: the fastest


def _finished_run(toy, tmp_path, *over):
    T.run(toy(*FLAT, *over), progress=False)
    run = tmp_path / 'toy'
    return run, {f: (run / f).read_bytes() for f in ('config.yaml', 'checkpoint.pt', 'metrics.json')}


def test_resume_from_a_pickled_payload_runs_nothing_and_writes_nothing(tmp_path, toy):
    run, before = _finished_run(toy, tmp_path)
    marker = tmp_path / 'pwned'
    ck = R.load_checkpoint(run / 'checkpoint.pt')
    ck['best'] = Payload(marker)
    R.save_checkpoint(run / 'checkpoint.pt', **ck)
    with pytest.raises(T.CheckpointError, match=f"checkpoint {run / 'checkpoint.pt'} holds something other"):
        T.run(toy(*FLAT), resume=True, progress=False)
    assert not marker.exists()
    assert (run / 'config.yaml').read_bytes() == before['config.yaml']
    assert (run / 'metrics.json').read_bytes() == before['metrics.json']


def test_probe_of_a_pickled_payload_runs_nothing(tmp_path, toy):
    marker, evil = tmp_path / 'pwned', tmp_path / 'evil.pt'
    torch.save({'model': Payload(marker)}, evil)
    R.save_checkpoint(tmp_path / 'evil-checksummed.pt', model=Payload(marker), config=toy())
    for path in (evil, tmp_path / 'evil-checksummed.pt'):
        cfg = toy('mode=probe', 'name=probe', f'probe.checkpoint={path}')
        with pytest.raises(T.CheckpointError, match=f'checkpoint {path} '):
            T.run(cfg, progress=False)
    assert not marker.exists() and not (tmp_path / 'probe').exists()


def test_resume_from_a_flipped_or_truncated_checkpoint_is_refused(tmp_path, toy):
    run, before = _finished_run(toy, tmp_path)
    path = run / 'checkpoint.pt'
    flipped = bytearray(before['checkpoint.pt'])
    flipped[_tensor_byte(path)] ^= 0x01
    for damaged in (bytes(flipped), before['checkpoint.pt'][:len(flipped) // 3], b''):
        path.write_bytes(damaged)
        with pytest.raises(T.CheckpointError, match=f'checkpoint {path} '):
            T.run(toy(*FLAT), resume=True, progress=False)
        assert (run / 'config.yaml').read_bytes() == before['config.yaml']
        assert (run / 'metrics.json').read_bytes() == before['metrics.json']
    assert json.loads(before['metrics.json'])['finished']
