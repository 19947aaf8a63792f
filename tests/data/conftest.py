"""A small digits-INR build shared by the data tests (about a second to fit)."""
import pytest

from nngraph.data import build_inr_dataset

# 8x8 digits with the paper's w0 = 30, a 35 dB target: fast fits for tests (the
# defaults fit 16x16 with w0 = 15 to 40 dB).
SMALL = dict(limit=40, grid=8, w0=30.0, first_w0=None, steps=200, lr=2e-3, target_psnr=35.0,
             chunk_size=16, progress=False)


@pytest.fixture(scope='session')
def small_build(tmp_path_factory):
    """Path of a complete build: 40 digits, 2 train views, 35 dB target."""
    return build_inr_dataset('digits', out=tmp_path_factory.mktemp('digits-inr'), views=2, seed=0,
                             **SMALL)
