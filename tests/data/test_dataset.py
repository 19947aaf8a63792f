"""Tests for nngraph/data/dataset.py: INRGraphDataset items, views, batching."""
import pytest
import torch
from torch_geometric.data import Batch
from torch_geometric.loader import DataLoader
from torch_geometric.transforms import BaseTransform

from nngraph import forward, from_weights
from nngraph.data import INRGraphDataset
from nngraph.inr import grid, psnr


def test_items_are_parameter_graphs_with_ids(small_build):
    ds = INRGraphDataset(small_build, 'train')
    g = ds[3]
    assert g.y.dtype == torch.long and g.y.shape == (1,)
    assert g.object_id.dtype == torch.long and g.object_id.shape == (1,)
    assert g.view_id.dtype == torch.long and g.view_id.shape == (1,)
    assert g.layer_sizes == (2, 32, 32, 1) == ds.layer_sizes
    assert g.activation == 'sine:30.0' == ds.activation
    assert g.convention.startswith('siren:w0=30.0')
    assert ds.num_classes == 10
    assert int(g.y) == int(ds.y[3]) and int(g.object_id) == int(ds.object_id[3])


def test_a_root_under_home_is_expanded(small_build, monkeypatch):
    """'~/...' reads the build under $HOME, as the README's example does."""
    import os
    monkeypatch.setenv('HOME', os.path.dirname(small_build))
    ds = INRGraphDataset(os.path.join('~', os.path.basename(small_build)), 'train')
    assert ds.path == str(small_build) and len(ds) == len(INRGraphDataset(small_build, 'train'))


def test_graph_evaluates_to_its_image_at_the_reported_psnr(small_build):
    ds = INRGraphDataset(small_build, 'test')
    for k in range(len(ds)):
        g = ds[k]
        image = ds.images[(ds.image_object_id == g.object_id).nonzero()[0, 0]].reshape(1, -1, 1)
        got = psnr(forward(g, grid(8))[None], image)
        assert float(got) == pytest.approx(float(ds.psnr[k]), abs=1e-3)
        assert float(got) >= 35.0


@pytest.mark.parametrize('views', [1, 2])
def test_views_picks_the_first_views_of_every_object(small_build, views):
    full = INRGraphDataset(small_build, 'train')
    ds = INRGraphDataset(small_build, 'train', views=views)
    assert len(ds) == len(full.object_id.unique()) * views
    assert set(ds.view_id.tolist()) == set(range(views))
    assert torch.equal(ds.object_id.unique(), full.object_id.unique())
    # The same INR under both selections.
    k = int((ds.view_id == views - 1).nonzero()[0, 0])
    j = int(((full.object_id == ds.object_id[k]) & (full.view_id == views - 1)).nonzero()[0, 0])
    assert torch.equal(ds[k].edge_attr, full[j].edge_attr)


def test_views_beyond_the_build_is_an_error(small_build):
    with pytest.raises(ValueError, match=r"views=3 but split 'train' .* built with 2 view"):
        INRGraphDataset(small_build, 'train', views=3)
    with pytest.raises(ValueError, match=r"views=2 but split 'val' .* built with 1 view"):
        INRGraphDataset(small_build, 'val', views=2)
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        INRGraphDataset(small_build, 'dev')


def test_dataloader_batches_equal_their_parts(small_build):
    ds = INRGraphDataset(small_build, 'train')
    batch = next(iter(DataLoader(ds, batch_size=5, shuffle=False)))
    assert isinstance(batch, Batch) and batch.num_graphs == 5
    assert torch.equal(batch.y, ds.y[:5]) and torch.equal(batch.view_id, ds.view_id[:5])
    out = forward(batch, grid(8))
    for k in range(5):
        torch.testing.assert_close(out[k], forward(ds[k], grid(8)))


class Negate(BaseTransform):
    def forward(self, data):
        data.edge_attr = -data.edge_attr
        return data


def test_transform_applies_on_access_and_leaves_the_store(small_build):
    plain = INRGraphDataset(small_build, 'val')
    ds = INRGraphDataset(small_build, 'val', transform=Negate())
    assert torch.equal(ds[0].edge_attr, -plain[0].edge_attr)
    assert torch.equal(ds[0].edge_attr, -plain[0].edge_attr)       # not applied twice to the store


def test_graphs_come_from_the_stacked_weights(small_build):
    ds = INRGraphDataset(small_build, 'train')
    W, b = ds.stacked_weights()
    g = from_weights([w[7] for w in W], [x[7] for x in b], activation=ds.activation)
    assert torch.equal(g.edge_attr, ds[7].edge_attr) and torch.equal(g.x, ds[7].x)


@pytest.mark.parametrize('k', [1, 2])
def test_objects_per_class_keeps_the_first_objects_of_every_class(small_build, k):
    full = INRGraphDataset(small_build, 'train')
    ds = INRGraphDataset(small_build, 'train', objects_per_class=k)
    for c in full.y.unique().tolist():
        objects = full.object_id[full.y == c].unique()          # sorted
        kept = ds.object_id[ds.y == c].unique()
        assert torch.equal(kept, objects[:k])
    # Every view of a kept object is kept, and with views= both apply.
    assert len(ds) == 2 * len(ds.object_id.unique())
    one = INRGraphDataset(small_build, 'train', views=1, objects_per_class=k)
    assert torch.equal(one.object_id, ds.object_id[ds.view_id == 0])
    with pytest.raises(ValueError, match='objects_per_class must be at least 1, got 0'):
        INRGraphDataset(small_build, 'train', objects_per_class=0)


def test_items_batch_with_graphs_of_the_other_constructors(small_build):
    """Every graph carries the same attribute set (DESIGN.md), so dataset items
    batch with graphs made by from_weights, in either order (issue 10)."""
    from nngraph import to_weights
    ds = INRGraphDataset(small_build, 'train')
    d = ds[0]
    W, b = to_weights(d)
    made = from_weights(W, b, d.activation, y=d.y, object_id=d.object_id, view_id=d.view_id)
    assert set(made.keys()) == set(d.keys())
    for graphs in ([d, made, ds[1]], [made, ds[1], d]):
        batch = Batch.from_data_list(graphs)
        assert batch.convention == [g.convention for g in graphs]
        for i, g in enumerate(graphs):
            for got, want in zip(to_weights(batch.get_example(i)), to_weights(g)):
                assert all(torch.equal(u, v) for u, v in zip(got, want))
