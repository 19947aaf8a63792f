"""Fuzzing train.py's configs (issue 19): any value of any key, as a YAML
override or in a config dict, is accepted or refused with a ValueError that
names the key; never another exception, and a refused config creates no run
folder."""
import os
import tempfile

from hypothesis import given, settings, strategies as st

from nngraph import training as T
from nngraph.training.config import SECTIONS, flatten

KEYS = sorted(flatten(T.DEFAULTS)) + list(SECTIONS)
TRICKY = ['nan', 'inf', '-inf', '-1', '0', '2.5', '1e400', '1e-3', 'abc', 'true', 'false', 'null', '', '[1]',
          '[]', '{a: 1}', '../x', 'a/b', '..', '0x10', '1_000', '2024-01-01', '!!binary aGk=', '!!set {a}',
          '[RandomSignFlip]', '[{WeightNoise: {std: -1}}]', '[{WeightMixUp: {mode: x}}]', '{', ': :', '"',
          'probe', 'cuda', 'mean,mean', '!!python/name:os.system']
RAW = st.one_of(st.sampled_from(TRICKY), st.text(max_size=12))
VALUE = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-10 ** 20, 10 ** 20), st.floats(), st.text(max_size=8),
              st.sampled_from(['RandomSignFlip', 'WeightNoise', 'mean', 'probe', 'toy', '..', 'auto'])),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=4), inner, max_size=2)),
    max_leaves=4)
BASE = ['data.source=toy', 'device=cpu', 'name=fuzz']


def _names_the_key(err: ValueError, key: str) -> bool:
    return key in str(err) and '\n' not in str(err)


@settings(max_examples=50, deadline=None, derandomize=True)
@given(key=st.sampled_from(KEYS), raw=RAW)
def test_any_override_is_accepted_or_refused_naming_its_key(key, raw):
    try:
        T.load_config(None, BASE + [f'{key}={raw}'])
    except ValueError as err:
        assert _names_the_key(err, key), (key, raw, str(err))


@settings(max_examples=50, deadline=None, derandomize=True)
@given(key=st.sampled_from(KEYS), value=VALUE)
def test_a_refused_config_value_creates_no_run_folder(key, value):
    with tempfile.TemporaryDirectory() as out:
        cfg = T.load_config(None, BASE + [f'out_dir={out}'])
        *sections, leaf = key.split('.')
        update = {leaf: value}
        for s in reversed(sections):
            update = {s: update}
        try:
            bad = T.merge_config(cfg, update)        # a section set to a non-mapping is refused here
        except ValueError as err:
            assert _names_the_key(err, key), (key, value, str(err))
            return
        try:
            T.validate(bad)
        except ValueError as err:
            assert _names_the_key(err, key), (key, value, str(err))
        else:
            return                                    # a valid value: nothing to refuse
        # run() refuses it too, before any folder (or anything else) exists
        try:
            T.run(bad, progress=False)
        except ValueError as err:
            assert _names_the_key(err, key), (key, value, str(err))
        else:
            raise AssertionError(f'{key}={value!r} is refused by validate, but run() ran it')
        assert os.listdir(out) == []
