"""SignGNNEncoder: exact invariance to hidden-neuron sign flips, invariance to
hidden permutations, batched = alone, what it must still see, clear refusals,
and a train.py run (model.name sign_gnn) whose checkpoint reloads."""
import pytest
import torch
from torch_geometric.data import Batch

import nngraph
from nngraph import training as T
from nngraph.graph import layer_views, permute_hidden, with_layers
from nngraph.inr import fit
from nngraph.inr.siren import grid
from nngraph.models import GNNEncoder, SignGNNEncoder
from nngraph.transforms import RandomSignFlip

SIZES = (2, 8, 6, 1)


@pytest.fixture(scope='module')
def sirens():
    """Four SIRENs fitted to random 8x8 images (weights as training leaves
    them, not as drawn), float32."""
    images = torch.rand(4, 64, generator=torch.Generator().manual_seed(0))
    result = fit(images, grid(8), hidden=SIZES[1:-1], steps=40, lr=1e-3, seed=0, progress=False)
    return result.graphs()


def random_graph(sizes, gen, activation='sine:30.0', dtype=torch.float64):
    W = [torch.randn(b, a, generator=gen, dtype=dtype) / a ** 0.5 for a, b in zip(sizes[:-1], sizes[1:])]
    b = [torch.randn(d, generator=gen, dtype=dtype) * 0.5 for d in sizes[1:]]
    return nngraph.from_weights(W, b, activation)


def encoder(batch=None, **kw):
    torch.manual_seed(0)
    args = dict(in_features=2, out_features=1, hidden=16, edge_hidden=8, layers=3, aggr='mean,max')
    args.update(kw)
    enc = SignGNNEncoder(**args).eval()
    if batch is not None:
        enc = enc.to(batch.edge_attr.dtype)
        enc.fit_normalization(batch)
    return enc


def test_sign_flips_give_the_same_bits(sirens):
    batch = Batch.from_data_list(sirens)
    enc, plain = encoder(batch), GNNEncoder(2, 1, hidden=16, edge_hidden=8, layers=2).eval()
    ref = enc(batch)
    for seed in range(3):
        torch.manual_seed(seed)
        flipped = RandomSignFlip(p=0.5)(batch)
        assert not torch.equal(flipped.edge_attr, batch.edge_attr)           # the flip changed the weights
        assert not torch.allclose(plain(flipped), plain(batch), atol=1e-4)   # and a plain GNN sees it
        assert torch.equal(enc(flipped), ref)


def test_sign_flips_of_tanh_networks_give_the_same_bits():
    gen = torch.Generator().manual_seed(1)
    batch = Batch.from_data_list([random_graph((3, 7, 5, 4, 2), gen, 'tanh') for _ in range(3)])
    enc = encoder(batch, in_features=3, out_features=2, aggr='sum')
    torch.manual_seed(0)
    flipped = RandomSignFlip(p=0.5)(batch)
    assert not torch.equal(flipped.x, batch.x)
    assert torch.equal(enc(flipped), enc(batch))


def test_invariant_to_hidden_permutations():
    gen = torch.Generator().manual_seed(2)
    graphs = [random_graph(SIZES, gen) for _ in range(3)]
    batch = Batch.from_data_list(graphs)
    permuted = []
    for g in graphs:
        weights, biases = layer_views(g)
        perms = [torch.randperm(d, generator=gen) for d in SIZES[1:-1]]
        permuted.append(with_layers(g, *permute_hidden(weights, biases, perms)))
    assert not torch.equal(permuted[0].edge_attr, graphs[0].edge_attr)
    enc = encoder(batch)
    torch.testing.assert_close(enc(Batch.from_data_list(permuted)), enc(batch), rtol=1e-10, atol=1e-10)


def test_batch_equals_each_graph_alone(sirens):
    enc = encoder(Batch.from_data_list(sirens))
    together = enc(Batch.from_data_list(sirens))
    alone = torch.cat([enc(g) for g in sirens])
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-6)


def test_sees_what_is_not_a_sign_flip(sirens):
    g = sirens[0]
    enc = encoder(Batch.from_data_list(sirens))
    ref = enc(g)
    weights, biases = layer_views(g)

    def changed(weights, biases):
        return not torch.allclose(enc(with_layers(g, weights, biases)), ref, atol=1e-5)

    # one hidden weight's magnitude; one hidden bias's magnitude
    assert changed([weights[0], weights[1] * torch.where(torch.arange(6 * 8).view(6, 8, 1) == 9, 2.0, 1.0),
                    weights[2]], biases)
    assert changed(weights, [biases[0] * torch.where(torch.arange(8).view(8, 1) == 3, 0.5, 1.0), *biases[1:]])
    # an input coordinate mirrored (input neurons never flip), the output negated
    assert changed([weights[0] * torch.tensor([-1.0, 1.0]).view(1, 2, 1), *weights[1:]], biases)
    assert changed([*weights[:-1], -weights[-1]], [*biases[:-1], -biases[-1]])


def test_refuses_other_activations_and_mixed_batches():
    gen = torch.Generator().manual_seed(3)
    enc = encoder()
    with pytest.raises(ValueError, match=r"SignGNNEncoder needs an odd activation \(sine, tanh\), but hidden "
                                         r"layer 1 has activation 'relu'.*model.name 'gnn'"):
        enc(random_graph((2, 4, 1), gen, 'relu', torch.float32))
    mixed = Batch.from_data_list([random_graph((2, 4, 1), gen, dtype=torch.float32),
                                  random_graph((2, 5, 1), gen, dtype=torch.float32)])
    with pytest.raises(ValueError, match=r'one architecture, got layer sizes \[\(2, 4, 1\), \(2, 5, 1\)\]'):
        enc(mixed)
    with pytest.raises(ValueError, match=r'graph 0 has layer sizes \(3, 4, 1\)'):
        enc(random_graph((3, 4, 1), gen, dtype=torch.float32))


def test_train_py_run_learns_and_its_checkpoint_reloads(tmp_path):
    from nngraph.data import build_inr_dataset
    from tests.data.conftest import SMALL
    root = build_inr_dataset('digits', out=tmp_path / 'digits', seed=0,
                             **dict(SMALL, limit=40, steps=60, target_psnr=None))
    cfg = T.load_config(None, [f'out_dir={tmp_path}', 'name=sign', 'data.source=inr', f'data.root={root}',
                               'data.batch_size=8', 'model.name=sign_gnn', 'model.hidden=16',
                               'model.edge_hidden=8', 'model.layers=2', 'model.out_dim=16',
                               'optim.epochs=24', 'optim.lr=1e-2', 'device=cpu'])
    m = T.run(cfg, progress=False)
    # 28 training digits, 10 classes: it learns slowly (so does the GNN), but it learns
    loss = [h['train_loss'] for h in m['epochs']]
    assert sum(loss[-3:]) < 0.9 * sum(loss[:3])
    ckpt = T.load_checkpoint(tmp_path / 'sign' / 'checkpoint.pt')
    assert ckpt['model']['encoder.edge_scale'][0, 0] != 1.0         # the fitted scales are saved
    model = T.build_model(cfg, 10, (2, 32, 32, 1))
    model.load_state_dict(ckpt['model'])
    assert type(model).__name__ == 'SignGNNClassifier'
    from torch_geometric.loader import DataLoader
    train = T.ListDataset(list(nngraph.data.INRGraphDataset(root, 'train', views=1)))
    last = T.evaluate(model, DataLoader(train, batch_size=64), torch.device('cpu'), T.Distributed('cpu'))
    assert last['loss'] == pytest.approx(m['last_train_loss'])
