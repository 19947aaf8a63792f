"""A small digits-INR build shared by the data tests (about a second to fit)."""
import pytest

from nngraph.data import build as B
from nngraph.data import build_inr_dataset

# 8x8 digits, SIREN init with w0 = 30, a 35 dB target: fast fits for tests that
# check how a build is made, not what its INRs learn (the defaults fit 16x16 with
# DWSNets' init for 300 steps, to ~29 dB). The conventions are set here so that
# these tests do not move with the defaults.
SMALL = dict(limit=40, grid=8, w0=30.0, first_w0=None, init='siren', output_offset=0.0, steps=200,
             lr=2e-3, target_psnr=35.0, chunk_size=16, progress=False)


def tiny(**over):
    """24 digits, 40 steps, 1 view, chunks of 6: 4 chunks (about a second in one process)."""
    args = dict(SMALL, limit=24, steps=40, chunk_size=6, views=1)
    args.update(over)
    return args


@pytest.fixture(scope='session')
def small_build(tmp_path_factory):
    """Path of a complete build: 40 digits, 2 train views, 35 dB target."""
    return build_inr_dataset('digits', out=tmp_path_factory.mktemp('digits-inr'), views=2, seed=0,
                             **SMALL)


REAL_FIT_ROWS = B._fit_rows       # before any test wraps it


class Crash(BaseException):
    """What a crash mid-build looks like to the builder (not an Exception, like Ctrl-C)."""


def count_fits(monkeypatch, fail_after=None):
    """Counts the chunks this process fits (``_fit_rows`` calls, by first
    INR; spawned workers are not counted); raises :class:`Crash` after
    ``fail_after`` of them."""
    fitted = []

    def counting(images, table, lo, hi, *args):
        if fail_after is not None and len(fitted) == fail_after:
            raise Crash('killed')
        fitted.append(lo)
        return REAL_FIT_ROWS(images, table, lo, hi, *args)
    monkeypatch.setattr(B, '_fit_rows', counting)
    return fitted
