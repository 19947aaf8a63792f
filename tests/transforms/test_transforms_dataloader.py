"""The transforms as a dataset's ``transform=``, composed with PyG's Compose,
inside a PyG DataLoader with worker processes."""
import torch
import torch_geometric.transforms as PyGT
from torch_geometric.data import Dataset
from torch_geometric.loader import DataLoader

import nngraph.transforms as T
from nngraph.graph import forward


class GraphList(Dataset):
    """A minimal PyG dataset over graphs held in memory."""

    def __init__(self, graphs, transform=None):
        super().__init__(None, transform)
        self.graphs = graphs

    def len(self):
        return len(self.graphs)

    def get(self, idx):
        return self.graphs[idx]


def test_compose_in_dataloader_workers(kit):
    graphs = [kit.make_graph((2, 16, 16, 1), 'sine:30.0', y=torch.tensor([i % 3]))
              for i in range(4)] * 4          # each network four times
    for i, g in enumerate(graphs):
        graphs[i] = g.clone()
        graphs[i].idx = i
    transform = PyGT.Compose([T.RandomNeuronPermutation(), T.RandomSignFlip(),
                              T.SirenBiasShift(k_max=2), T.LabelSmoothing(0.1, 3)])
    loader = DataLoader(GraphList(graphs, transform), batch_size=4, num_workers=2)
    x = kit.inputs(2)
    seen = []
    for batch in loader:
        originals = [graphs[i] for i in batch.idx.tolist()]
        # the composed symmetries keep every function; the labels became soft
        for out, g in zip(batch.to_data_list(), originals):
            kit.assert_close_f32(forward(out, x), forward(g, x))
            assert not torch.equal(out.edge_attr, g.edge_attr)
        assert batch.y.shape == (4, 3)
        torch.testing.assert_close(batch.y.sum(-1), torch.ones(4))
        seen += batch.to_data_list()
    assert len(seen) == 16
    # workers draw from distinct streams: items 0-3 (worker 0) and 4-7 (worker 1)
    # are the same networks at the same position of each worker's stream
    for i in range(4):
        copies = [seen[j].edge_attr for j in range(16) if j % 4 == i]
        assert all(not torch.equal(copies[0], c) for c in copies[1:])
