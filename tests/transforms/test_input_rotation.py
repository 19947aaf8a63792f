import math

import pytest
import torch
from torch_geometric.data import Batch

from nngraph.graph import forward
from nngraph.transforms import InputRotation


@pytest.mark.parametrize('activation', ['sine:30.0', 'relu'])
def test_fixed_2d_rotation_against_hand_matrix(activation, kit):
    g = kit.make_graph((2, 32, 32, 1), activation)
    h = InputRotation((90, 90))(g)
    x = kit.inputs(2)
    r90 = torch.tensor([[0., -1.], [1., 0.]])          # counter-clockwise by 90 degrees
    kit.assert_close_f32(forward(h, x), forward(g, x @ r90.T))   # f'(x) = f(R x)


def test_fixed_3d_rotation_about_given_axis(kit):
    g = kit.make_graph((3, 16, 16, 2), 'sine:30.0')
    h = InputRotation((90, 90), axis=(0, 0, 2))(g)
    x = kit.inputs(3)
    rz = torch.tensor([[0., -1., 0.], [1., 0., 0.], [0., 0., 1.]])
    kit.assert_close_f32(forward(h, x), forward(g, x @ rz.T))


@pytest.mark.parametrize('d', [2, 3])
def test_random_rotation_equals_original_at_rotated_points(d, kit):
    t = InputRotation(180)
    for _ in range(4):
        g = kit.make_graph((d, 16, 16, 1), 'sine:30.0')
        rot = t.sample(g)
        assert torch.allclose(rot @ rot.T, torch.eye(d), atol=1e-6)
        assert abs(float(torch.linalg.det(rot)) - 1.0) < 1e-5
        x = kit.inputs(d)
        kit.assert_close_f32(forward(t.apply(g, rot), x), forward(g, x @ rot.T))


def test_2d_angles_lie_in_range(kit):
    batch = Batch.from_data_list([kit.make_graph((2, 4, 1))] * 2000)
    rot = InputRotation((-30, 60)).sample(batch)
    angle = torch.rad2deg(torch.atan2(rot[:, 1, 0], rot[:, 0, 0]))
    assert float(angle.min()) >= -30 - 1e-3 and float(angle.max()) <= 60 + 1e-3
    assert float(angle.min()) < -25 and float(angle.max()) > 55


def test_3d_angles_lie_in_range_and_axes_spread(kit):
    batch = Batch.from_data_list([kit.make_graph((3, 4, 1))] * 2000)
    rot = InputRotation(40).sample(batch).double()
    trace = rot.diagonal(dim1=-2, dim2=-1).sum(-1)
    angle = torch.rad2deg(torch.arccos(((trace - 1) / 2).clamp(-1, 1)))
    assert float(angle.max()) <= 40 + 1e-2 and float(angle.max()) > 35
    # the rotation axis (from the antisymmetric part) points everywhere
    axis = torch.stack([rot[:, 2, 1] - rot[:, 1, 2], rot[:, 0, 2] - rot[:, 2, 0],
                        rot[:, 1, 0] - rot[:, 0, 1]], -1)
    axis = axis / axis.norm(dim=-1, keepdim=True)
    assert float(axis.mean(0).abs().max()) < 0.1


def test_refuses_other_input_sizes(kit):
    for d in (1, 4):
        with pytest.raises(ValueError, match=f'InputRotation rotates 2-D or 3-D inputs.*{d} input'):
            InputRotation(10)(kit.make_graph((d, 4, 1)))
    with pytest.raises(ValueError, match='axis is given but the network takes 2-D'):
        InputRotation(10, axis=(0, 0, 1))(kit.make_graph((2, 4, 1)))


def test_bad_arguments():
    with pytest.raises(ValueError, match='InputRotation: degrees range .* low > high'):
        InputRotation((10, -10))
    with pytest.raises(ValueError, match='InputRotation: axis must be a non-zero 3-vector'):
        InputRotation(10, axis=(0, 0, 0))
