import pytest
import torch
from torch_geometric.data import Batch

from nngraph.graph import forward, layer_views
from nngraph.transforms import InputTranslation


@pytest.mark.parametrize('d', [2, 3])
def test_fixed_shift_against_original(d, kit):
    g = kit.make_graph((d, 32, 32, 1), 'sine:30.0')
    h = InputTranslation((0.25, 0.25))(g)
    x = kit.inputs(d)
    kit.assert_close_f32(forward(h, x), forward(g, x + 0.25))   # f'(x) = f(x + t)
    # only the first bias changes
    (w, b), (v, c) = layer_views(g), layer_views(h)
    assert all(torch.equal(p, q) for p, q in zip(w, v))
    assert torch.equal(b[1], c[1]) and not torch.equal(b[0], c[0])


def test_per_coordinate_ranges(kit):
    g = kit.make_graph((2, 16, 1), 'relu')
    h = InputTranslation([(0.1, 0.1), (-0.3, -0.3)])(g)
    x = kit.inputs(2)
    kit.assert_close_f32(forward(h, x), forward(g, x + torch.tensor([0.1, -0.3])))


@pytest.mark.parametrize('d', [2, 3])
def test_random_shift_equals_original_at_shifted_points(d, kit):
    t = InputTranslation(0.5)
    g = kit.make_graph((d, 16, 16, 1), 'sine:30.0')
    for _ in range(4):
        shift = t.sample(g)
        assert shift.shape == (d,) and float(shift.abs().max()) <= 0.5
        x = kit.inputs(d)
        kit.assert_close_f32(forward(t.apply(g, shift), x), forward(g, x + shift))


def test_coordinates_are_independent_and_cover_range(kit):
    batch = Batch.from_data_list([kit.make_graph((2, 4, 1))] * 4000)
    shift = InputTranslation(0.5).sample(batch)
    assert float(shift.min()) >= -0.5 and float(shift.max()) <= 0.5
    assert abs(float(torch.corrcoef(shift.T)[0, 1])) < 0.05
    assert abs(float(shift.std()) - 1 / 12 ** 0.5) < 0.01        # std of U(-0.5, 0.5)


def test_bad_arguments(kit):
    with pytest.raises(ValueError, match='InputTranslation: max_shift gives 3 per-coordinate ranges'):
        InputTranslation([(0, 1)] * 3)(kit.make_graph((2, 4, 1)))
    with pytest.raises(ValueError, match='InputTranslation: max_shift must be a number or a'):
        InputTranslation('far')
