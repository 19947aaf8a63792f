"""Contrastive pairs: two augmentations of one INR, or two INRs (views) of one object."""
import pytest
import torch
from torch_geometric.data import Data

from nngraph import training as T
from nngraph.training.contrastive import ObjectViews, TwoViews


@pytest.fixture(scope='module')
def views_build(tmp_path_factory):
    """A tiny digits-INR build with 2 views per training image (about 10 s)."""
    from nngraph.data import build_inr_dataset
    from tests.data.conftest import SMALL
    return build_inr_dataset('digits', out=tmp_path_factory.mktemp('views'), views=2, seed=0,
                             **dict(SMALL, limit=60, steps=60, target_psnr=None))


class Views(torch.utils.data.Dataset):
    """Graphs tagged by object: object k has ``counts[k]`` views."""

    def __init__(self, counts):
        ids = [k for k, n in enumerate(counts) for _ in range(n)]
        order = torch.randperm(len(ids), generator=torch.Generator().manual_seed(0))   # views interleaved
        self.object_id = torch.tensor(ids)[order]
        self.graphs = [Data(x=torch.tensor([[float(i)]]), object_id=self.object_id[i:i + 1]) for i in range(len(ids))]

    def __len__(self):
        return len(self.graphs)

    def __getitem__(self, i):
        return self.graphs[i]


def test_object_views_pairs_two_distinct_inrs_of_one_object():
    data = Views([3, 1, 2, 5])
    pairs = ObjectViews(data, None)
    assert len(pairs) == 4                              # one item per object
    torch.manual_seed(0)
    seen = {k: set() for k in range(4)}
    for _ in range(200):
        for k in range(len(pairs)):
            a, b = pairs[k]
            assert int(a.object_id) == int(b.object_id) == k
            if k != 1:                                  # object 1 has one view: paired with itself
                assert int(a.x) != int(b.x)
            seen[k].add((int(a.x), int(b.x)))
    # every ordered pair of distinct views is drawn (uniform choice of the second view)
    assert [len(s) for s in seen.values()] == [6, 1, 2, 20]


def test_object_views_augments_each_member_independently():
    data = Views([2])
    calls = []
    pairs = ObjectViews(data, lambda g: calls.append(int(g.x)) or g)
    a, b = pairs[0]
    assert sorted(calls) == sorted([int(a.x), int(b.x)]) == [0, 1]


def test_two_views_is_the_inr_twice():
    data = Views([2, 2])
    a, b = TwoViews(data, None)[3]
    assert a is b and len(TwoViews(data, None)) == 4


def test_views_positives_need_object_ids(toy):
    with pytest.raises(ValueError, match='contrastive.positives: views needs a dataset with object ids'):
        T.run(toy('mode=contrastive', 'contrastive.positives=views'), progress=False)


def test_positives_must_be_known(toy):
    with pytest.raises(ValueError, match="contrastive.positives must be 'augmentations' or 'views'"):
        toy('contrastive.positives=objects')


def test_contrastive_on_views_runs_and_probes(tmp_path, views_build):
    cfg = T.load_config(None, [f'out_dir={tmp_path}', 'name=ssl-views', 'mode=contrastive+probe', 'data.source=inr',
                               f'data.root={views_build}', 'data.views=2', 'data.batch_size=8',
                               'contrastive.positives=views', 'transforms=[{WeightNoise: {std: 0.01}}]',
                               'model.hidden=16', 'model.edge_hidden=8', 'model.layers=1', 'model.out_dim=16',
                               'model.canonical_signs=out', 'optim.epochs=2', 'device=cpu'])
    m = T.run(cfg, progress=False)
    assert len(m['epochs']) == 2 and all(h['train_loss'] > 0 for h in m['epochs'])
    assert 0.0 <= m['probe']['test_acc'] <= 1.0 and 'probe_random_encoder' in m
