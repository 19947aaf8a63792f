"""ZooGraphDataset (nngraph/zoo/dataset.py): split by run, targets, selections, mixed batches."""
import pytest
import torch
from torch_geometric.loader import DataLoader

from nngraph.graph import architecture, validate
from nngraph.models import GNNEncoder
from nngraph.zoo import ZooGraphDataset, read_zoo, split_runs


def test_no_run_on_two_sides(tiny_zoo):
    seen = {}
    for split in ('train', 'val', 'test'):
        ds = ZooGraphDataset(tiny_zoo, split, seed=3)
        seen[split] = set(ds.run_id.tolist())
    assert not (seen['train'] & seen['val'] or seen['train'] & seen['test'] or seen['val'] & seen['test'])
    assert seen['train'] | seen['val'] | seen['test'] == set(range(24))
    assert len(seen['test']) == int(24 * 0.2) and len(seen['val']) == int(24 * 0.1)
    assert seen['test'] != set(ZooGraphDataset(tiny_zoo, 'test', seed=4).run_id.tolist())


def test_split_runs_is_a_partition_and_checks_fractions():
    parts = split_runs(103, (0.7, 0.1, 0.2), 0)
    assert torch.equal(torch.cat(list(parts.values())).sort().values, torch.arange(103))
    with pytest.raises(ValueError, match='fractions'):
        split_runs(10, (0.7, 0.2, 0.2), 0)


def test_items_carry_every_field(tiny_zoo):
    ds = ZooGraphDataset(tiny_zoo, 'train')
    g = ds[0]
    validate(g)
    for key in ('x', 'edge_index', 'edge_attr', 'layer', 'layer_sizes', 'activation', 'layer_names',
                'layer_bias', 'convention', 'y', 'run_id', 'epoch'):
        assert key in g, key
    assert g.y.shape == (1, 1) and g.y.dtype == torch.float32
    assert g.run_id.shape == (1,) and g.epoch.shape == (1,)
    sizes = architecture(g)[0]
    assert sizes[0] == 64 and sizes[-1] == 10


def test_targets(tiny_zoo):
    acc = ZooGraphDataset(tiny_zoo, 'train')
    gap = ZooGraphDataset(tiny_zoo, 'train', target='gap')
    train = ZooGraphDataset(tiny_zoo, 'train', target='train_acc')
    torch.testing.assert_close(gap.y, train.y - acc.y)
    lr = ZooGraphDataset(tiny_zoo, 'train', target='lr')
    runs = read_zoo(tiny_zoo)['runs']
    torch.testing.assert_close(lr.y, runs['lr'][lr.run_id].float())
    with pytest.raises(ValueError, match="unknown target 'accuracy'"):
        ZooGraphDataset(tiny_zoo, 'train', target='accuracy')


def test_epoch_and_architecture_selections(tiny_zoo):
    final = ZooGraphDataset(tiny_zoo, 'train', epochs='final')
    runs = read_zoo(tiny_zoo)['runs']
    assert final.run_id.unique().numel() == len(final)
    assert torch.equal(final.epoch, runs['epochs'][final.run_id])
    init = ZooGraphDataset(tiny_zoo, 'train', epochs=[0])
    assert set(init.epoch.tolist()) == {0}
    one = ZooGraphDataset(tiny_zoo, 'train', architecture=(64, 8, 8, 10), activation='tanh')
    assert len(one) > 0 and all(architecture(g) == [(64, 8, 8, 10)] and g.activation == 'tanh' for g in one)
    with pytest.raises(ValueError, match="epochs must be"):
        ZooGraphDataset(tiny_zoo, 'train', epochs='last')
    with pytest.raises(ValueError, match="unknown split"):
        ZooGraphDataset(tiny_zoo, 'dev')


def test_mixed_architectures_batch_through_the_encoder(tiny_zoo):
    ds = ZooGraphDataset(tiny_zoo, 'train')
    batch = next(iter(DataLoader(ds, batch_size=len(ds))))
    assert len(set(architecture(batch))) > 1          # mixed: the encoder's scatter path
    enc = GNNEncoder(in_features=ds.num_features, out_features=ds.num_classes, hidden=16, layers=2, max_layers=4)
    out = enc(batch)
    assert out.shape == (len(ds), 16) and bool(torch.isfinite(out).all())
    out.sum().backward()              # the encoder trains on a mixed batch
    assert batch.y.shape == (len(ds), 1)
