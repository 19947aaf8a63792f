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


@pytest.fixture(scope='session')
def tiny_zoo(tmp_path_factory):
    """Path of a complete tiny digits zoo (24 networks of 8 architectures,
    mixed depths; a few seconds), for the regression runs."""
    from nngraph.zoo import build_zoo
    from tests.zoo.conftest import TINY
    return build_zoo('digits', tmp_path_factory.mktemp('zoo'), seed=0, **TINY)


@pytest.fixture
def zoo(tmp_path, tiny_zoo):
    """``zoo(*overrides)``: a resolved regression config on the tiny zoo
    writing under ``tmp_path`` (a small GNN, 2 epochs)."""
    def make(*overrides):
        return T.load_config(None, [f'out_dir={tmp_path}', 'name=zoo', 'data.source=zoo', f'data.root={tiny_zoo}',
                                    'data.batch_size=8', 'model.hidden=8', 'model.edge_hidden=8', 'model.layers=1',
                                    'model.out_dim=8', 'model.flat_hidden=16', 'optim.epochs=2', 'device=cpu']
                             + list(overrides))
    return make
