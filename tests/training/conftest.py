"""A tiny run on the toy set for the training tests: 64 graphs, 4 steps per epoch."""
import pytest

from nngraph import training as T

TOY = ['name=toy', 'data.source=toy', 'data.limit=64', 'data.batch_size=16', 'model.hidden=16',
       'model.edge_hidden=8', 'model.layers=2', 'model.out_dim=16', 'optim.epochs=2', 'optim.lr=1e-2',
       'device=cpu']


@pytest.fixture
def toy(tmp_path):
    """``toy(*overrides)``: the resolved toy config writing under ``tmp_path``."""
    def make(*overrides, out_dir=None):
        return T.load_config(None, [f'out_dir={out_dir or tmp_path}'] + TOY + list(overrides))
    return make
