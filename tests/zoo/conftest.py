"""A tiny digits zoo shared by the zoo tests (a few seconds to train)."""
import pytest

from nngraph.zoo import build_zoo

# Two depths, two widths, two activations: 8 architectures, so mixed batches
# and several chunks per architecture (chunk_size 3) are exercised; budgets of
# 1 or 2 epochs of 19 steps keep a build to a few seconds.
TINY = dict(networks=24, depths=(1, 2), widths=(4, 8), activations=('relu', 'tanh'), epochs=(1, 2),
            batch_size=64, chunk_size=3, progress=False)


@pytest.fixture(scope='session')
def tiny_zoo(tmp_path_factory):
    """Path of a complete tiny zoo (seed 0)."""
    return build_zoo('digits', tmp_path_factory.mktemp('zoo'), seed=0, **TINY)
