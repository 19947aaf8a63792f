"""Tests for nngraph/data/show.py: the originals-vs-INRs figure."""
import matplotlib.image
import pytest

from nngraph.data.__main__ import main
from nngraph.data.show import show


def test_show_saves_a_png_atomically(small_build, tmp_path):
    path = show(small_build, tmp_path / 'fig.png', split='val')
    with open(path, 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'
    img = matplotlib.image.imread(path)
    assert img.shape[0] > 300 and img.shape[1] > 600
    assert [p.name for p in tmp_path.iterdir()] == ['fig.png']       # no temp file left


def test_show_command_line_default_path(small_build, capsys):
    assert main(['show', str(small_build), '--per-class', '1']) == 0
    assert capsys.readouterr().out.strip().endswith('figure.png')


def test_show_needs_a_complete_build(tmp_path):
    with pytest.raises(FileNotFoundError, match='manifest.json is missing'):
        show(tmp_path)
