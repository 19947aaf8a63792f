"""Tests for nngraph/data/build.py that a hostile or careless user would try
(issue 19): corrupt shards, bad fitting settings, diverged fits, unwritable
roots, killed builds, two builds into one root."""
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap

import pytest
import torch

from nngraph._atomic import LockHeldError
from nngraph.data import INRGraphDataset, build_inr_dataset, merge_shards
from nngraph.data import build as B
from nngraph.data import workspace as W
from nngraph.data import store
from nngraph.data.__main__ import main

from .conftest import Crash, count_fits, tiny

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def same_build(a, b):
    """Every split file holds the same tensors, bit for bit."""
    for s in store.SPLITS:
        x, y = (torch.load(os.path.join(r, f'{s}.pt'), weights_only=True) for r in (a, b))
        for key in ('weights', 'biases'):
            assert all(torch.equal(u, v) for u, v in zip(x[key], y[key])), (s, key)
        for key in ('y', 'object_id', 'view_id', 'psnr', 'steps', 'seeds', 'images'):
            assert torch.equal(x[key], y[key]), (s, key)
    return True


# --------------------------------------------------------------------------- #
# Row 5: checksummed shards
# --------------------------------------------------------------------------- #

def test_merge_refuses_a_shard_with_one_flipped_exponent_bit_and_writes_nothing(tmp_path):
    """Issue 19 row 5: a weight -0.0115 became -3.9e36 and merge vouched for it."""
    out = tmp_path / 'ds'
    paths = [build_inr_dataset('digits', out=out, shard=(i, 2), **tiny()) for i in range(2)]
    rec = torch.load(paths[1], weights_only=True)
    w = rec['weights'][1]
    raw = bytearray(open(paths[1], 'rb').read())
    at = raw.find(w.numpy().tobytes()[:64])         # the stored weights, uncompressed in the zip
    assert at > 0
    raw[at + 3] ^= 0x40                             # bit 30: the top exponent bit of a float32
    open(paths[1], 'wb').write(bytes(raw))
    flipped = torch.load(paths[1], weights_only=True)['weights'][1]
    assert not torch.equal(flipped, w)              # torch.load alone reads it silently
    with pytest.raises(ValueError, match=r"shard file '.*shard-1-of-2\.pt' is corrupt: its contents do "
                                         r'not match the checksum'):
        merge_shards(out)
    assert sorted(os.listdir(out)) == ['shards']    # no split file, no manifest, no lock
    build_inr_dataset('digits', out=out, shard=(1, 2), **tiny())
    merge_shards(out)
    assert len(INRGraphDataset(out, 'train')) > 0


def test_merge_refuses_a_shard_without_checksum(tmp_path):
    out = tmp_path / 'ds'
    paths = [build_inr_dataset('digits', out=out, shard=(i, 2), **tiny()) for i in range(2)]
    rec = torch.load(paths[0], weights_only=True)
    del rec['sha256']
    torch.save(rec, paths[0])
    with pytest.raises(ValueError, match=r"shard-0-of-2\.pt' has no checksum"):
        merge_shards(out)
    assert assert_main_error(['merge', str(out)], 'has no checksum')


def assert_main_error(argv, text):
    import io
    import contextlib
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        status = main(argv)
    assert status == 2 and text in err.getvalue() and len(err.getvalue().strip().splitlines()) == 1, \
        err.getvalue()
    return True


# --------------------------------------------------------------------------- #
# Row 7: fitting settings and diverged fits
# --------------------------------------------------------------------------- #

@pytest.mark.parametrize('setting, value, message', [
    ('lr', float('nan'), 'lr=nan is not a finite number > 0'),
    ('lr', float('inf'), 'lr=inf is not a finite number > 0'),
    ('lr', 0.0, 'lr=0.0 is not a finite number > 0'),
    ('lr', -1e-3, 'lr=-0.001 is not'),
    ('lr', 'abc', "lr='abc' is not a finite number"),
    ('steps', 0, 'steps=0 is not an integer >= 1'),
    ('steps', 2.5, 'steps=2.5 is not an integer'),
    ('w0', float('nan'), 'w0=nan is not a finite number'),
    ('first_w0', float('inf'), 'first_w0=inf is not a finite number'),
    ('target_psnr', float('nan'), 'target_psnr=nan is not a finite number'),
    ('output_offset', float('-inf'), 'output_offset=-inf'),
    ('chunk_size', 0, 'chunk_size=0 is not an integer >= 1'),
    ('grid', 0, 'grid=0 is not an integer >= 1'),
    ('hidden', (32, 0), r'hidden=\(32, 0\) must be a sequence of positive integers'),
    ('hidden', (32.5,), 'hidden=.* must be a sequence of positive integers'),
    ('test_fraction', float('nan'), 'test_fraction=nan'),
])
def test_build_refuses_bad_fitting_settings_before_anything(tmp_path, monkeypatch, setting, value, message):
    """Issue 19 row 7: ``--lr nan`` fitted NaN networks and exited 0."""
    fitted = count_fits(monkeypatch)
    with pytest.raises(ValueError, match=rf'build setting {message}'):
        build_inr_dataset('digits', out=tmp_path / 'o', **tiny(**{setting: value}))
    assert fitted == [] and not os.path.exists(tmp_path / 'o')


def test_build_cli_refuses_lr_nan_in_one_line(tmp_path):
    assert assert_main_error(['build', 'digits', '--out', str(tmp_path / 'o'), '--limit', '8', '--lr', 'nan',
                              '--quiet'], 'build setting lr=nan is not a finite number > 0')
    assert not os.path.exists(tmp_path / 'o')


def test_a_diverged_fit_is_refused_naming_the_image_and_nothing_is_recorded(tmp_path, monkeypatch):
    """Issue 19 row 7: the NaN surfaced only when an item was read, naming no INR."""
    real = B.I.fit

    def one_nan(*args, **kw):                       # INR 3 of the second chunk diverges
        res = real(*args, **kw)
        if kw['seeds'][0, 0] != B.inr_seed(0, torch.tensor(0), torch.tensor(0)):
            res.weights[1][3, 0, 0] = float('nan')
        return res
    monkeypatch.setattr(B.I, 'fit', one_nan)
    ds_table = B._plan('digits', 1, 0, 24, B._options('digits', {k: v for k, v in tiny().items()
                                                                  if k not in ('limit', 'progress', 'views')})[1])[5]
    split, obj, view = (int(v) for v in ds_table[:, 6 + 3])
    with pytest.raises(ValueError, match=rf'the fit of image {obj} \(view {view}, {store.SPLITS[split]} split, '
                                         r'INR 9 of the build\) diverged: non-finite weights with lr=0.002'):
        build_inr_dataset('digits', out=tmp_path, **tiny())
    assert not os.path.exists(tmp_path / 'manifest.json')
    assert not os.path.exists(tmp_path / W.PARTIAL / 'chunk-000000006-000000012.pt')


def test_a_huge_learning_rate_diverges_and_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r'the fit of image \d+ \(view 0, .* diverged: .* lr=10000000000.0'):
        build_inr_dataset('digits', out=tmp_path, **tiny(lr=1e10, steps=5))
    assert not os.path.exists(tmp_path / 'manifest.json')


# --------------------------------------------------------------------------- #
# Row 11: the root is checked for writability before fitting
# --------------------------------------------------------------------------- #

@pytest.mark.parametrize('where', ['a regular file', 'under a regular file'])
def test_an_unwritable_root_is_refused_before_fitting(tmp_path, monkeypatch, where):
    """Issue 19 row 11: 42 minutes of fitting, then a PermissionError traceback.
    (Tests may run as root, for whom chmod does not block writes: a root that
    is, or is under, a regular file cannot be written by anyone.)"""
    blocker = tmp_path / 'file'
    blocker.write_text('not a directory')
    out = blocker if where == 'a regular file' else blocker / 'ds'
    fitted = count_fits(monkeypatch)
    with pytest.raises(ValueError, match=rf"cannot write the INR dataset directory '{out}'"):
        build_inr_dataset('digits', out=out, **tiny())
    with pytest.raises(ValueError, match=rf"cannot write shard 0/2 of '{out}'"):
        build_inr_dataset('digits', out=out, shard='0/2', **tiny())
    assert fitted == []
    assert blocker.read_text() == 'not a directory'


@pytest.mark.skipif(os.geteuid() == 0, reason='root writes through chmod; covered by the regular-file cases')
def test_a_read_only_root_is_refused_before_fitting(tmp_path, monkeypatch):
    out = tmp_path / 'ro'
    out.mkdir()
    out.chmod(0o555)
    fitted = count_fits(monkeypatch)
    try:
        with pytest.raises(ValueError, match=r'cannot write the INR dataset directory .*Permission denied'):
            build_inr_dataset('digits', out=out, **tiny())
    finally:
        out.chmod(0o755)
    assert fitted == []


def test_a_complete_build_in_a_read_only_root_is_still_reused(tmp_path, monkeypatch):
    """Reuse takes no lock and writes nothing: a shared, read-only build serves everyone."""
    out = build_inr_dataset('digits', out=tmp_path / 'ds', **tiny())
    def no_write(*a, **k):
        raise PermissionError(13, 'Permission denied')
    monkeypatch.setattr(W, 'exclusive', no_write)
    assert build_inr_dataset('digits', out=out, **tiny()) == out


# --------------------------------------------------------------------------- #
# Row 12: resumable builds
# --------------------------------------------------------------------------- #

def test_a_crashed_build_resumes_from_its_finished_chunks_bit_for_bit(tmp_path, monkeypatch):
    clean = build_inr_dataset('digits', out=tmp_path / 'clean', **tiny())
    out = tmp_path / 'ds'
    with pytest.raises(Crash):
        count_fits(monkeypatch, fail_after=2)
        build_inr_dataset('digits', out=out, **tiny())
    assert sorted(os.listdir(out / W.PARTIAL)) == ['chunk-000000000-000000006.pt',
                                                   'chunk-000000006-000000012.pt']
    assert not os.path.exists(out / W.LOCK)            # released on the way out
    fitted = count_fits(monkeypatch)
    build_inr_dataset('digits', out=out, **tiny())
    assert fitted == [12, 18]                          # only the chunks not finished before
    assert same_build(clean, out)
    assert sorted(os.listdir(out)) == ['manifest.json', 'test.pt', 'train.pt', 'val.pt']


def test_a_corrupt_or_foreign_partial_chunk_is_refitted(tmp_path, monkeypatch):
    out = tmp_path / 'ds'
    with pytest.raises(Crash):
        count_fits(monkeypatch, fail_after=2)
        build_inr_dataset('digits', out=out, **tiny())
    chunk = out / W.PARTIAL / 'chunk-000000000-000000006.pt'
    rec = torch.load(chunk, weights_only=True)
    rec['weights'][0][0, 0, 0] += 1                     # edited: the checksum no longer matches
    torch.save(rec, chunk)
    fitted = count_fits(monkeypatch)
    build_inr_dataset('digits', out=out, **tiny())
    assert fitted == [0, 12, 18]
    with pytest.raises(Crash):               # chunks of other settings are not used
        count_fits(monkeypatch, fail_after=2)
        build_inr_dataset('digits', out=tmp_path / 'b', **tiny())
    fitted = count_fits(monkeypatch)
    build_inr_dataset('digits', out=tmp_path / 'b', **tiny(lr=3e-3))
    assert fitted == [0, 6, 12, 18]


def test_overwrite_really_rebuilds(tmp_path, monkeypatch):
    out = tmp_path / 'ds'
    with pytest.raises(Crash):
        count_fits(monkeypatch, fail_after=2)
        build_inr_dataset('digits', out=out, **tiny())
    fitted = count_fits(monkeypatch)
    build_inr_dataset('digits', out=out, overwrite=True, **tiny())
    assert fitted == [0, 6, 12, 18]                     # the partial chunks were discarded
    fitted.clear()
    build_inr_dataset('digits', out=out, overwrite=True, **tiny())
    assert fitted == [0, 6, 12, 18]                     # a complete build with the same settings too
    fitted.clear()
    build_inr_dataset('digits', out=out, **tiny())
    assert fitted == []                                 # without overwrite: reused


def test_a_sigkilled_build_is_locked_while_alive_then_resumes_and_cleans_up(tmp_path, monkeypatch):
    """Issue 19 rows 12 and 13 with a real process: while it runs, a second
    build into its root is refused naming the root and the holder; after
    SIGKILL the rerun takes over the stale lock, removes the temp files the
    kill left, fits only the chunks not finished, and equals a clean build."""
    out = tmp_path / 'ds'
    script = textwrap.dedent(f'''
        import time
        from nngraph.data import build as B
        real, done = B._fit_rows, []
        def fit_rows(*args):
            if len(done) == 2:
                print('fitted', len(done), flush=True)
                time.sleep(60)
            done.append(1)
            return real(*args)
        B._fit_rows = fit_rows
        B.build_inr_dataset('digits', out={str(out)!r}, **{tiny()!r})
    ''')
    proc = subprocess.Popen([sys.executable, '-c', script], cwd=ROOT, stdout=subprocess.PIPE,
                            env=dict(os.environ, PYTHONPATH=ROOT))
    try:
        line = proc.stdout.readline().decode()
        assert line.startswith('fitted 2'), line
        with pytest.raises(LockHeldError, match=rf"the INR dataset directory '{out}' is locked by pid "
                                                rf"{proc.pid} on host '{socket.gethostname()}' since"):
            build_inr_dataset('digits', out=out, **tiny())
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    (out / '.train.pt.abc123.tmp').write_bytes(b'half')                 # what a kill mid-write leaves
    (out / W.PARTIAL / '.chunk-000000012-000000018.pt.x.tmp').write_bytes(b'half')
    fitted = count_fits(monkeypatch)
    build_inr_dataset('digits', out=out, **tiny())
    assert fitted == [12, 18]
    assert sorted(os.listdir(out)) == ['manifest.json', 'test.pt', 'train.pt', 'val.pt']
    assert same_build(build_inr_dataset('digits', out=tmp_path / 'clean', **tiny()), out)


# --------------------------------------------------------------------------- #
# Row 13: exclusive builds
# --------------------------------------------------------------------------- #

def write_lock(path, pid, host=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
        json.dump(dict(pid=pid, host=host or socket.gethostname(), since=0), f)


def dead_pid():
    proc = subprocess.Popen([sys.executable, '-c', 'pass'])
    proc.wait()
    return proc.pid


def test_a_second_build_into_a_locked_root_is_refused_naming_root_and_holder(tmp_path, monkeypatch):
    """Issue 19 row 13: two builds into one root both exited 0, the last writer won."""
    out = tmp_path / 'ds'
    fitted = count_fits(monkeypatch)
    write_lock(out / W.LOCK, os.getppid())                              # a live process of this host
    with pytest.raises(LockHeldError, match=rf"'{out}' is locked by pid {os.getppid()} on host "
                                            rf"'{socket.gethostname()}'.*remove '{out / W.LOCK}'"):
        build_inr_dataset('digits', out=out, **tiny())
    write_lock(out / W.LOCK, 1, host='another-host')                    # cannot tell: refused
    with pytest.raises(LockHeldError, match="pid 1 on host 'another-host'"):
        build_inr_dataset('digits', out=out, **tiny())
    (out / W.LOCK).write_text('')                                      # unreadable: refused
    with pytest.raises(LockHeldError, match='unknown process'):
        build_inr_dataset('digits', out=out, **tiny())
    assert fitted == []
    write_lock(out / W.LOCK, dead_pid())                                # killed: taken over
    build_inr_dataset('digits', out=out, **tiny())
    assert len(fitted) == 4 and not os.path.exists(out / W.LOCK)


def test_shards_lock_one_shard_each_and_merge_locks_the_root(tmp_path):
    out = tmp_path / 'ds'
    write_lock(out / 'shards' / '.shard-0-of-2.lock', os.getppid())
    with pytest.raises(LockHeldError, match=rf"shard 0/2 of '{out}' is locked by pid {os.getppid()}"):
        build_inr_dataset('digits', out=out, shard='0/2', **tiny())
    build_inr_dataset('digits', out=out, shard='1/2', **tiny())        # another shard runs alongside
    os.unlink(out / 'shards' / '.shard-0-of-2.lock')
    build_inr_dataset('digits', out=out, shard='0/2', **tiny())
    write_lock(out / W.LOCK, os.getppid())
    with pytest.raises(LockHeldError, match=rf"'{out}' is locked by pid {os.getppid()}"):
        merge_shards(out)
    assert not os.path.exists(out / 'manifest.json')
    os.unlink(out / W.LOCK)
    merge_shards(out)
    assert sorted(os.listdir(out)) == ['manifest.json', 'shards', 'test.pt', 'train.pt', 'val.pt']


# --------------------------------------------------------------------------- #
# Fingerprints are pure functions of the source's bytes
# --------------------------------------------------------------------------- #

def test_the_source_fingerprint_hashes_the_source_bytes_before_resizing(tmp_path):
    import hashlib
    from nngraph.data.sources import load_source
    raw, labels, _ = load_source('digits')
    out = build_inr_dataset('digits', out=tmp_path / 'ds', **tiny())
    settings = store.read_manifest(out)['settings']
    h = hashlib.sha256(raw[:24].numpy().tobytes() + labels[:24].numpy().tobytes()).hexdigest()[:16]
    assert settings['source_fingerprint'] == h and settings['fingerprint_version'] == 2
    # A build of the previous version (fingerprint of the resized images) is still reused.
    manifest = json.load(open(os.path.join(out, 'manifest.json')))
    resized = B.resize(raw[:24], 8)
    manifest['settings'].pop('fingerprint_version')
    manifest['settings']['source_fingerprint'] = B._fingerprint(resized, labels[:24])
    json.dump(manifest, open(os.path.join(out, 'manifest.json'), 'w'))
    stamp = os.stat(os.path.join(out, 'train.pt')).st_mtime_ns
    assert build_inr_dataset('digits', out=out, **tiny()) == out
    assert os.stat(os.path.join(out, 'train.pt')).st_mtime_ns == stamp
    manifest['settings']['source_fingerprint'] = '0' * 16                # another source: refused
    json.dump(manifest, open(os.path.join(out, 'manifest.json'), 'w'))
    with pytest.raises(ValueError, match='source_fingerprint: built'):
        build_inr_dataset('digits', out=out, **tiny())


def test_a_finished_shard_is_not_refitted_unless_overwritten(tmp_path, monkeypatch):
    out = tmp_path / 'ds'
    path = build_inr_dataset('digits', out=out, shard='0/2', **tiny())
    fitted = count_fits(monkeypatch)
    assert build_inr_dataset('digits', out=out, shard='0/2', **tiny()) == path
    assert fitted == []
    build_inr_dataset('digits', out=out, shard='0/2', overwrite=True, **tiny())
    assert fitted == [0, 6]
    fitted.clear()
    build_inr_dataset('digits', out=out, shard='0/2', **tiny(lr=3e-3))  # other settings: refitted
    assert fitted == [0, 6]


def test_negative_labels_of_user_arrays_are_refused(tmp_path):
    with pytest.raises(ValueError, match='labels must be class indices >= 0, got -1 at position 2'):
        build_inr_dataset((torch.rand(4, 6, 6), [0, 1, -1, 1]), out=tmp_path, **tiny(limit=None, grid=None))
