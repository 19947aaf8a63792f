"""Fuzz suite (issue 19): random corruptions of small fabricated idx files.

Whatever is done to one of the four files of an MNIST-format source (a bad
magic number, a truncation, wrong dimensions, a label out of range, random
bytes, a corrupt gzip stream), reading it either succeeds with what the
files say or raises a ``ValueError`` that names the file, never another
exception from deep inside numpy, gzip or torch.
"""
import gzip
import os
import tempfile

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from nngraph.data.sources import load_idx_source, read_idx

FILES = ('train-images-idx3-ubyte', 'train-labels-idx1-ubyte', 't10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte')
FUZZ = settings(max_examples=50, deadline=None, derandomize=True)


def idx_bytes(array, type_byte=0x08):
    header = bytes([0, 0, type_byte, array.ndim]) + b''.join(int(d).to_bytes(4, 'big') for d in array.shape)
    return header + array.tobytes()


def valid_files():
    """The four idx files of a tiny source: 6 + 3 images of 4x4 pixels, labels 0..9."""
    rng = np.random.default_rng(0)
    out = {}
    for prefix, n in (('train', 6), ('t10k', 3)):
        out[f'{prefix}-images-idx3-ubyte'] = idx_bytes(rng.integers(0, 256, (n, 4, 4), dtype=np.uint8))
        out[f'{prefix}-labels-idx1-ubyte'] = idx_bytes((np.arange(n) % 10).astype(np.uint8))
    return out


def corrupt(raw: bytes, kind: str, data) -> bytes:
    """One corruption of an idx file's bytes, drawn by hypothesis."""
    if kind == 'magic':
        return bytes(data.draw(st.binary(min_size=4, max_size=4))) + raw[4:]
    if kind == 'truncate':
        return raw[:data.draw(st.integers(0, len(raw) - 1))]
    if kind == 'pad':
        return raw + data.draw(st.binary(min_size=1, max_size=9))
    if kind == 'ndim':
        return raw[:3] + bytes([data.draw(st.integers(0, 255))]) + raw[4:]
    if kind == 'dims':                                    # one size rewritten
        k = data.draw(st.integers(0, raw[3] - 1))
        size = data.draw(st.one_of(st.integers(0, 20), st.integers(0, 2 ** 32 - 1)))
        return raw[:4 + 4 * k] + size.to_bytes(4, 'big') + raw[8 + 4 * k:]
    if kind == 'type':
        return raw[:2] + bytes([data.draw(st.sampled_from([0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E]))]) + raw[3:]
    if kind == 'label':                                   # any byte value in the data
        at = data.draw(st.integers(4 + 4 * raw[3], len(raw) - 1))
        return raw[:at] + bytes([data.draw(st.integers(0, 255))]) + raw[at + 1:]
    if kind == 'flip':                                    # one bit anywhere
        at = data.draw(st.integers(0, len(raw) - 1))
        return raw[:at] + bytes([raw[at] ^ (1 << data.draw(st.integers(0, 7)))]) + raw[at + 1:]
    return data.draw(st.binary(max_size=64))              # 'random'


KINDS = ('magic', 'truncate', 'pad', 'ndim', 'dims', 'type', 'label', 'flip', 'random')


@FUZZ
@given(name=st.sampled_from(FILES), kind=st.sampled_from(KINDS), gz=st.booleans(),
       gz_after=st.booleans(), data=st.data())
def test_a_corrupt_idx_source_is_a_value_error_naming_the_file(name, kind, gz, gz_after, data):
    files = valid_files()
    raw = corrupt(files[name], kind, data)
    with tempfile.TemporaryDirectory() as folder:
        for stem, content in files.items():
            if stem == name:
                if gz and gz_after:                       # corrupt bytes inside a good gzip stream
                    content = gzip.compress(raw, mtime=0)
                elif gz:                                  # a corrupt gzip stream
                    generic = kind if kind in ('magic', 'truncate', 'pad', 'flip', 'random') else 'flip'
                    content = corrupt(gzip.compress(files[name], mtime=0), generic, data)
                else:
                    content = raw
            path = os.path.join(folder, stem + ('.gz' if gz and stem == name else ''))
            with open(path, 'wb') as f:
                f.write(content)
        try:
            images, labels, num_train = load_idx_source('mnist', folder)
        except ValueError as err:
            assert name in str(err), str(err)
            assert '\n' not in str(err)
            return
        # Accepted: the corruption left a valid source (a pixel, a label in range).
        assert images.shape[1:] == (4, 4, 1) and labels.min() >= 0 and labels.max() < 10
        assert images.shape[0] == labels.shape[0] == num_train + 3


@FUZZ
@given(raw=st.binary(max_size=80), gz=st.booleans())
def test_random_bytes_are_an_array_or_a_value_error_naming_the_file(raw, gz):
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, 'x-idx' + ('.gz' if gz else ''))
        with open(path, 'wb') as f:
            f.write(raw)
        try:
            array = read_idx(path)
        except ValueError as err:
            assert path in str(err)
            return
        assert isinstance(array, np.ndarray)
