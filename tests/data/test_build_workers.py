"""Tests for the builds that use several processes (issue 20): ``workers=``
(``--workers``) on one machine, torchrun's ranks (``distributed=True``, the
command line under ``RANK``/``WORLD_SIZE``), in nngraph/data/build.py and
nngraph/data/workspace.py. Every worker or rank is a fresh interpreter that
imports torch and nngraph (about 3 s here), so each test starts two at most."""
import os
import socket
import subprocess
import sys
import time

import pytest
import torch

from nngraph.data import INRGraphDataset, build_inr_dataset, store
from nngraph.data import build as B
from nngraph.data import workspace as W
from nngraph.data.__main__ import main

from .conftest import Crash, count_fits, tiny

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


# tiny() as command-line flags
FLAGS = ['--views', '1', '--limit', '24', '--grid', '8', '--w0', '30', '--first-w0', 'none', '--init', 'siren',
         '--output-offset', '0', '--steps', '40', '--lr', '2e-3', '--target-psnr', '35', '--chunk-size', '6',
         '--quiet']
LAST_CHUNK = 'chunk-000000018-000000024.pt'        # the last of shard 1/2


def bits(value):
    """A record's value with every tensor as its dtype, shape and bytes."""
    if isinstance(value, torch.Tensor):
        return value.dtype, tuple(value.shape), value.contiguous().numpy().tobytes()
    if isinstance(value, (list, tuple)):
        return [bits(v) for v in value]
    return value


def same_build(a, b):
    """The same files, byte for byte (so the same manifest, sha256 included),
    and every record equal bit for bit."""
    assert sorted(os.listdir(a)) == sorted(os.listdir(b)) == ['manifest.json', 'test.pt', 'train.pt', 'val.pt']
    for s in store.SPLITS:
        x, y = (torch.load(os.path.join(r, f'{s}.pt'), weights_only=True) for r in (a, b))
        assert x.keys() == y.keys()
        for key in x:
            assert bits(x[key]) == bits(y[key]), (s, key)
    for name in os.listdir(a):
        with open(os.path.join(a, name), 'rb') as fa, open(os.path.join(b, name), 'rb') as fb:
            assert fa.read() == fb.read(), name
    return True


def chunk_files(out):
    """``{name: (inode, mtime)}`` of the finished chunks in ``out``: a refitted
    chunk is a new file (written beside, renamed over)."""
    folder = os.path.join(out, W.PARTIAL)
    stats = {n: os.stat(os.path.join(folder, n)) for n in sorted(os.listdir(folder)) if n.startswith('chunk-')}
    return {n: (st.st_ino, st.st_mtime_ns) for n, st in stats.items() if not os.path.isdir(os.path.join(folder, n))}


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def start_ranks(args, world=2):
    """``python -m nngraph.data ARGS`` as ranks 0..world-1 of one torchrun
    job (its variables set by hand), started."""
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS='1', MASTER_ADDR='127.0.0.1',
               MASTER_PORT=str(free_port()), WORLD_SIZE=str(world))
    return [subprocess.Popen([sys.executable, '-m', 'nngraph.data', *args], cwd=ROOT,
                             env=dict(env, RANK=str(r), LOCAL_RANK=str(r)),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in range(world)]


def finish_ranks(procs, timeout=120):
    """``[(returncode, stderr)]`` of every rank (killed after ``timeout`` s)."""
    try:
        return [(p.wait(timeout=timeout), p.communicate()[1]) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()


# --------------------------------------------------------------------------- #
# --workers
# --------------------------------------------------------------------------- #

def test_a_workers_build_is_the_one_process_build_bit_for_bit(tmp_path):
    one = build_inr_dataset('digits', out=tmp_path / 'one', **tiny())
    two = build_inr_dataset('digits', out=tmp_path / 'two', workers=2, **tiny())
    assert two == str(tmp_path / 'two')
    assert same_build(one, two)                  # no lock, no .partial, no shard files left


def test_a_resumed_workers_build_does_not_refit_finished_chunks(tmp_path, monkeypatch):
    clean = build_inr_dataset('digits', out=tmp_path / 'clean', **tiny())
    out = tmp_path / 'ds'
    with pytest.raises(Crash):
        count_fits(monkeypatch, fail_after=2)
        build_inr_dataset('digits', out=out, **tiny())
    before = chunk_files(out)
    assert len(before) == 2                      # chunks [0, 6) and [6, 12): shard 0/2 of 2 workers
    seen = []
    real_write = B._write_splits

    def write_splits(*args):
        seen.append(chunk_files(out))
        return real_write(*args)
    monkeypatch.setattr(B, '_write_splits', write_splits)
    fitted = count_fits(monkeypatch)
    assert main(['build', 'digits', '--out', str(out), *FLAGS, '--workers', '2']) == 0
    assert len(seen[0]) == 4 and {n: seen[0][n] for n in before} == before    # read, not refitted
    assert fitted == []                          # nothing left for the writer to fit
    assert same_build(clean, out)


def test_a_failed_worker_is_named_and_nothing_poses_as_a_build(tmp_path, capsys):
    out = tmp_path / 'ds'
    (out / W.PARTIAL / LAST_CHUNK).mkdir(parents=True)     # worker 1 cannot save its last chunk
    assert main(['build', 'digits', '--out', str(out), *FLAGS, '--workers', '2']) == 2
    err = capsys.readouterr().err
    assert f"error: worker 1 of 2 (shard 1/2, INRs 12-23) of '{out}' failed: IsADirectoryError" in err
    assert 'worker 0' not in err and 'rerun the same build to resume' in err
    assert sorted(os.listdir(out)) == [W.PARTIAL]          # no split file, no manifest, no lock
    kept = chunk_files(out)
    assert 'chunk-000000012-000000018.pt' in kept and set(kept) <= {
        'chunk-000000000-000000006.pt', 'chunk-000000006-000000012.pt', 'chunk-000000012-000000018.pt'}
    with pytest.raises(FileNotFoundError, match='manifest.json is missing'):
        INRGraphDataset(out, 'train')


def _fail_at_once(job):
    raise ValueError(f'{job} went wrong')


def _wait_for_stop(job):
    """Works until told to stop (another job failed), at most a minute."""
    end = time.monotonic() + 60
    while not W.stopping() and time.monotonic() < end:
        time.sleep(0.05)
    return job


def _job(job):
    return _fail_at_once(job) if job == 'first' else _wait_for_stop(job)


def test_a_failed_worker_stops_the_others_and_is_named(tmp_path):
    start = time.monotonic()
    with pytest.raises(ValueError, match=r"^job 0 failed: ValueError: first went wrong\. Finished chunks"):
        W.in_workers(_job, ['first', 'second'], ['job 0', 'job 1'])
    assert time.monotonic() - start < 45         # job 1 stopped when job 0 failed, not after its minute


def test_workers_or_torchrun_with_shard_is_refused(tmp_path, capsys, monkeypatch):
    with pytest.raises(ValueError, match=r'shard=0/2 \(--shard\) builds one slice .* workers=2 \(--workers\)'):
        build_inr_dataset('digits', out=tmp_path / 'a', shard='0/2', workers=2, **tiny())
    with pytest.raises(ValueError, match='workers must be a positive number of processes, got 0'):
        build_inr_dataset('digits', out=tmp_path / 'a', workers=0, **tiny())
    monkeypatch.delenv('MASTER_ADDR', raising=False)
    monkeypatch.delenv('RANK', raising=False)
    with pytest.raises(ValueError, match="one of torchrun's processes .*RANK"):
        build_inr_dataset('digits', out=tmp_path / 'a', distributed=True, **tiny())
    assert not os.listdir(tmp_path)
    args = ['build', 'digits', '--out', str(tmp_path / 'b'), *FLAGS, '--shard', '0/2']
    assert main(args + ['--workers', '2']) == 2
    assert 'pass one of the two' in capsys.readouterr().err
    monkeypatch.setenv('RANK', '0')
    monkeypatch.setenv('WORLD_SIZE', '2')
    assert main(args) == 2
    assert 'a distributed build (torchrun) takes its slice from its rank' in capsys.readouterr().err
    assert not os.listdir(tmp_path)


# --------------------------------------------------------------------------- #
# torchrun
# --------------------------------------------------------------------------- #

def test_torchrun_ranks_build_and_rank_0_writes_the_one_process_build(tmp_path):
    out = tmp_path / 'ranks'
    ranks = start_ranks(['build', 'digits', '--out', str(out), *FLAGS])
    one = build_inr_dataset('digits', out=tmp_path / 'one', **tiny())      # while the ranks start
    results = finish_ranks(ranks)
    assert [rc for rc, _ in results] == [0, 0], results
    assert same_build(one, out)


@pytest.mark.slow
def test_a_failed_rank_is_named_on_every_rank_and_nothing_poses_as_a_build(tmp_path):
    out = tmp_path / 'ranks'
    (out / W.PARTIAL / LAST_CHUNK).mkdir(parents=True)     # rank 1 cannot save its last chunk
    (rc0, err0), (rc1, err1) = finish_ranks(start_ranks(['build', 'digits', '--out', str(out), *FLAGS]))
    assert rc0 == 2 and f"error: rank 1 of 2 (shard 1/2) of the build in '{out}' failed: IsADirectoryError" in err0
    assert rc1 != 0 and 'IsADirectoryError' in err1                   # its own error, where it happened
    assert sorted(os.listdir(out)) == [W.PARTIAL]          # no split file, no manifest, no lock
    assert set(chunk_files(out)) == {'chunk-000000000-000000006.pt', 'chunk-000000006-000000012.pt',
                                     'chunk-000000012-000000018.pt'}


@pytest.mark.slow
def test_torchrun_ranks_with_workers_build_the_one_process_build(tmp_path):
    """2 ranks x 2 workers: each rank splits its slice over its own workers."""
    out = tmp_path / 'ranks'
    ranks = start_ranks(['build', 'digits', '--out', str(out), *FLAGS, '--workers', '2'])
    one = build_inr_dataset('digits', out=tmp_path / 'one', **tiny())
    results = finish_ranks(ranks, timeout=240)
    assert [rc for rc, _ in results] == [0, 0], results
    assert same_build(one, out)
