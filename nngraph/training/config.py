"""Configuration: every key a run may set (:data:`DEFAULTS`), YAML files,
``key.sub=value`` overrides, and the checks that refuse a bad config before
any run folder exists."""
from __future__ import annotations

import copy
import inspect
import math
import os
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import yaml

from nngraph.training.data import SOURCES
from nngraph.training.models import MODELS

__all__ = ['MODES', 'DEFAULTS', 'EXECUTION_KEYS', 'merge_config', 'apply_overrides', 'load_config', 'validate',
           'without_execution_keys', 'flatten', 'check_resume']


MODES = ('supervised', 'contrastive', 'probe', 'contrastive+probe')

#: Every key a config may set, with its default. A config file overrides a
#: subset; anything not listed here is an error that names the valid keys.
DEFAULTS: Dict[str, Any] = {
    'name': None,               # run folder name (default: the config file's stem)
    'out_dir': 'runs',
    'seed': 0,
    'mode': 'supervised',       # supervised | contrastive | probe | contrastive+probe
    'device': 'auto',           # auto | cpu | cuda
    'compile': False,           # torch.compile the training forward (CPU: needs a C++ compiler; ~2x for the GNN)
    'data': {
        'source': 'digits',     # digits (built if absent) | fashion-mnist (an existing build) | inr | zoo | toy
        'root': 'data/digits',  # a build of the source, any INRGraphDataset folder (source inr), or a model
                                # zoo (source zoo: the digits zoo built there if absent); ~ expanded
        'format': 'auto',       # source inr: auto | nngraph | dwsnets | neural-graphs | nfn
        'build_views': 1,       # views fitted per training object when building
        'build_workers': 1,     # processes fitting INRs when train.py builds (same build, bit for bit)
        'views': 1,             # views per training object used for training
        'limit': None,          # build from the first `limit` images only
        'objects_per_class': None,  # train on the first k training objects of each class only
        'samples_per_epoch': None,  # graphs drawn per epoch (None: one pass over the training split)
        'batch_size': 64,
        'eval_batch_size': 256,
        'num_workers': 0,
        'test_every_epoch': True,   # False: the test split only once, for the selected model (faster)
        # source zoo (regression of a network's property from its weights, nngraph.zoo):
        'target': None,         # what to predict; null: test_acc. Any of nngraph.zoo.TARGETS
        'zoo_epochs': 'all',    # checkpoints used: all | final | a list of epochs (0: the initialisation)
        'zoo_seed': 0,          # seeds the split of the zoo's runs (and the zoo built when absent)
        'architecture': None,   # only networks of these layer sizes, e.g. [64, 8, 8, 8, 10] (model flat)
        'activation': None,     # only networks of this activation, e.g. relu (RandomPositiveScaling)
    },
    'transforms': [],           # list of names or {Name: {arg: value}}; see nngraph.transforms
    'model': {
        'name': 'gnn',          # gnn | flat | statnn | aligned_mlp | sign_gnn (odd activations)
        'hidden': 64,
        'edge_hidden': 32,
        'layers': 3,
        'out_dim': 64,
        'dropout': 0.0,
        'aggr': 'mean',
        'fourier_features': 0,
        'fourier_scale': 10.0,
        'probe_points': 0,      # neuron activations at P fixed inputs as node features
        'canonical_signs': None,  # gnn: bias | out (CanonicalSigns first: sign-flip invariant; odd activations)
        'fold_siren_bias': False,  # gnn: fold each sine neuron's bias into one half period (SirenBiasFold
                                   # first): SirenBiasShift cannot change what the encoder reads
        'flat_hidden': 256,     # MLP of the baselines (flat, statnn, aligned_mlp)
        'flat_layers': 2,
        'align_signs': False,   # aligned_mlp: also match signs (odd activations: sine, tanh)
    },
    'optim': {
        'epochs': 10,
        'lr': 1.0e-3,
        'weight_decay': 1.0e-4,
        'warmup_epochs': 1,
        'grad_clip': 1.0,
    },
    'contrastive': {
        'temperature': 0.1,
        'projection_dim': 64,
        'positives': 'augmentations',   # augmentations: two of one INR | views: two INRs of one object
    },
    'probe': {
        'checkpoint': None,     # mode probe: a run folder or checkpoint.pt of a contrastive run
        'C': [0.01, 0.1, 1.0, 10.0],   # inverse L2 strengths tried, chosen on validation
    },
}

#: The keys of ``data`` that select from a model zoo (data.source zoo only).
ZOO_KEYS = ('target', 'zoo_epochs', 'zoo_seed', 'architecture', 'activation')

#: Config keys that say how or where a run executes, not what it computes:
#: ``--resume`` accepts a checkpoint whose config differs from the current one
#: in these only (and in a larger ``optim.epochs``), and a study keeps a
#: finished cell when only these changed. ``out_dir`` and ``name`` say where
#: the run folder is (a moved folder is the same run).
EXECUTION_KEYS = ('compile', 'device', 'data.num_workers', 'data.build_workers', 'out_dir', 'name')


def merge_config(base: Dict[str, Any], update: Dict[str, Any], where: str = '') -> Dict[str, Any]:
    """``base`` deep-updated with ``update``; every key of ``update`` must
    exist in ``base`` (``ValueError`` naming the key and the valid ones)."""
    out = copy.deepcopy(base)
    if not isinstance(update, dict):
        raise ValueError(f"config{' section ' + repr(where) if where else ''} must be a mapping, "
                         f'got {type(update).__name__}')
    for key, value in update.items():
        path = f'{where}.{key}' if where else str(key)
        if key not in base:
            raise ValueError(f'unknown config key {path!r}; valid keys'
                             f"{' of ' + repr(where) if where else ''}: {sorted(base)}")
        if isinstance(base[key], dict):
            out[key] = merge_config(base[key], value, path)
        else:
            out[key] = value
    return out


def apply_overrides(config: Dict[str, Any], overrides: Sequence[str]) -> Dict[str, Any]:
    """Applies command-line overrides ``key.sub=value`` (value read as YAML,
    so ``optim.lr=3e-4``, ``transforms=[RandomSignFlip]`` work)."""
    update: Dict[str, Any] = {}
    for item in overrides:
        if '=' not in item:
            raise ValueError(f'override {item!r} must look like key.sub=value')
        key, raw = item.split('=', 1)
        value = _parse_value(key, raw)
        node = update
        parts = key.split('.')
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ValueError(f'override {item!r} sets a key inside {p!r}, which another override '
                                 f'set to a value')
        node[parts[-1]] = value
    return merge_config(config, update)


def _parse_value(key: str, raw: str) -> Any:
    # YAML 1.1 reads '1e-3' as a string; numbers without a dot are still numbers here.
    try:
        value = yaml.safe_load(raw) if raw != '' else None
    except yaml.YAMLError as err:
        problem = getattr(err, 'problem', None) or str(err).splitlines()[0]
        raise ValueError(f'override {key}={raw!r} is not a YAML value: {problem}') from None
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    return value


def load_config(path: Optional[str], overrides: Sequence[str] = ()) -> Dict[str, Any]:
    """The resolved config: :data:`DEFAULTS`, then the YAML file, then the
    overrides. ``name`` defaults to the file's stem."""
    config = copy.deepcopy(DEFAULTS)
    if path is not None:
        with open(path) as f:
            try:
                loaded = yaml.safe_load(f) or {}
            except yaml.YAMLError as err:
                raise ValueError(f'{path} is not valid YAML: {" ".join(str(err).split())}') from None
        config = merge_config(config, loaded)
        if config['name'] is None:
            config['name'] = os.path.splitext(os.path.basename(path))[0]
    config = apply_overrides(config, overrides)
    if config['name'] is None:
        config['name'] = 'run'
    validate(config)
    return config


# --------------------------------------------------------------------------- checks
# One predicate and one phrase of what is expected per key: every key of
# DEFAULTS is checked before anything is created, and a refusal names the
# key, the value and the expectation in one line. bool is an int in Python;
# a YAML `true` is never accepted as a number.

def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    # ints are finite whatever their size (math.isfinite would overflow on 10**400)
    return _is_int(v) or (isinstance(v, float) and math.isfinite(v))


def _int_at_least(low: int) -> Callable[[Any], bool]:
    return lambda v: _is_int(v) and v >= low


def _optional(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: v is None or check(v)


def _one_of(options: Sequence[Any]) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, (str, type(None))) and v in options


def _run_name(v: Any) -> bool:
    # The run folder is <out_dir>/<name>: a name is one path component, so a
    # run never writes outside out_dir.
    seps = {'/', '\\', os.sep} | ({os.altsep} if os.altsep else set())
    return (isinstance(v, str) and v.strip() != '' and v not in ('.', '..') and '\0' not in v
            and not any(s in v for s in seps))


def _aggr(v: Any) -> bool:
    from nngraph.models.encoder import AGGREGATIONS
    if not isinstance(v, str):
        return False
    names = [a.strip() for a in v.split(',')]
    return all(a in AGGREGATIONS for a in names) and len(set(names)) == len(names)


def _nonempty_str(v: Any) -> bool:
    return isinstance(v, str) and v.strip() != '' and '\0' not in v


def _zoo_targets() -> Tuple[str, ...]:
    from nngraph.zoo.dataset import TARGETS
    return TARGETS


def _dataset_formats() -> Tuple[str, ...]:
    from nngraph.data.dataset import FORMATS
    return FORMATS


POSITIVE_INT = 'a positive integer'
_CHECKS: Dict[str, Tuple[Callable[[Any], bool], Any]] = {
    # key: (predicate, what is expected; a callable is evaluated on the failure path only)
    'name': (_run_name, 'a folder name: a non-empty string without / or \\, not . or ..'),
    'out_dir': (_nonempty_str, 'a folder (a non-empty string)'),
    'seed': (lambda v: _is_int(v) and 0 <= v < 2 ** 31, 'an integer in [0, 2**31)'),
    'mode': (_one_of(MODES), f'one of {MODES}'),
    'device': (_one_of(('auto', 'cpu', 'cuda')), "'auto', 'cpu' or 'cuda'"),
    'compile': (lambda v: isinstance(v, bool), 'true or false'),
    'data.source': (_one_of(SOURCES), f'one of {SOURCES}'),
    'data.root': (_nonempty_str, 'a folder (a non-empty string)'),
    'data.format': (lambda v: _one_of(_dataset_formats())(v), lambda: f'one of {_dataset_formats()}'),
    'data.build_views': (_int_at_least(1), POSITIVE_INT),
    'data.build_workers': (_int_at_least(1), POSITIVE_INT),
    'data.views': (_optional(_int_at_least(1)), 'a positive integer or null (all views)'),
    'data.limit': (_optional(_int_at_least(1)), 'a positive integer or null'),
    'data.objects_per_class': (_optional(_int_at_least(1)), 'a positive integer or null'),
    'data.samples_per_epoch': (_optional(_int_at_least(1)), 'a positive integer or null'),
    'data.batch_size': (_int_at_least(1), POSITIVE_INT),
    'data.eval_batch_size': (_int_at_least(1), POSITIVE_INT),
    'data.num_workers': (_int_at_least(0), 'an integer >= 0'),
    'data.test_every_epoch': (lambda v: isinstance(v, bool), 'true or false'),
    'data.target': (lambda v: v is None or _one_of(_zoo_targets())(v), lambda: f'null or one of {_zoo_targets()}'),
    'data.zoo_epochs': (lambda v: v in ('all', 'final') if isinstance(v, str) else
                        isinstance(v, list) and len(v) > 0 and all(_is_int(e) and e >= 0 for e in v),
                        "'all', 'final' or a non-empty list of epochs (integers >= 0)"),
    'data.zoo_seed': (lambda v: _is_int(v) and 0 <= v < 2 ** 31, 'an integer in [0, 2**31)'),
    'data.architecture': (_optional(lambda v: isinstance(v, list) and len(v) >= 2 and all(_is_int(d) and d >= 1
                                                                                       for d in v)),
                          'null or a list of at least two positive layer sizes, e.g. [64, 8, 8, 8, 10]'),
    'data.activation': (_optional(_nonempty_str), "null or an activation string, e.g. 'relu'"),
    'transforms': (lambda v: isinstance(v, list), 'a list of transform names or {Name: {arg: value}}'),
    'model.name': (_one_of(MODELS), f'one of {MODELS}'),
    'model.hidden': (_int_at_least(1), POSITIVE_INT),
    'model.edge_hidden': (_int_at_least(1), POSITIVE_INT),
    'model.layers': (_int_at_least(1), POSITIVE_INT),
    'model.out_dim': (_int_at_least(1), POSITIVE_INT),
    'model.dropout': (lambda v: _is_number(v) and 0 <= v < 1, 'a number in [0, 1)'),
    'model.aggr': (_aggr, "one or more distinct of 'mean', 'sum', 'max', comma-separated (e.g. 'mean,max')"),
    'model.fourier_features': (_int_at_least(0), 'an integer >= 0'),
    'model.fourier_scale': (lambda v: _is_number(v) and v > 0, 'a finite number > 0'),
    'model.probe_points': (_int_at_least(0), 'an integer >= 0'),
    'model.canonical_signs': (_one_of((None, 'bias', 'out')), "null, 'bias' or 'out'"),
    'model.fold_siren_bias': (lambda v: isinstance(v, bool), 'true or false'),
    'model.flat_hidden': (_int_at_least(1), POSITIVE_INT),
    'model.flat_layers': (_int_at_least(1), POSITIVE_INT),
    'model.align_signs': (lambda v: isinstance(v, bool), 'true or false'),
    'optim.epochs': (_int_at_least(1), POSITIVE_INT),
    'optim.lr': (lambda v: _is_number(v) and v > 0, 'a finite number > 0'),
    'optim.weight_decay': (lambda v: _is_number(v) and v >= 0, 'a finite number >= 0'),
    'optim.warmup_epochs': (_int_at_least(0), 'an integer >= 0'),
    'optim.grad_clip': (_optional(lambda v: _is_number(v) and v >= 0),
                        'a finite number >= 0 (0 or null: no clipping)'),
    'contrastive.temperature': (lambda v: _is_number(v) and v > 0, 'a finite number > 0'),
    'contrastive.projection_dim': (_int_at_least(1), POSITIVE_INT),
    'contrastive.positives': (_one_of(('augmentations', 'views')), "'augmentations' or 'views'"),
    'probe.checkpoint': (_optional(_nonempty_str), 'a run folder or checkpoint file (a string) or null'),
    'probe.C': (lambda v: isinstance(v, list) and len(v) > 0 and all(_is_number(c) and c > 0 for c in v),
                'a non-empty list of finite numbers > 0'),
}


#: The sections of :data:`DEFAULTS` (one level of nesting); every other value is a leaf.
SECTIONS = tuple(k for k, v in DEFAULTS.items() if isinstance(v, dict))


def flatten(config: Dict[str, Any]) -> Dict[str, Any]:
    """``config`` as dotted keys, ``{'optim.lr': 1e-3, ...}``: the sections of
    :data:`DEFAULTS` are opened, every other value (``transforms``, a list)
    stays whole."""
    out: Dict[str, Any] = {}
    for key, value in config.items():
        if key in SECTIONS and isinstance(value, dict):
            out.update((f'{key}.{k}', v) for k, v in value.items())
        else:
            out[str(key)] = value
    return out


def validate(config: Dict[str, Any]) -> None:
    """Raises ``ValueError`` for a config that cannot run: every key of
    :data:`DEFAULTS` is checked for its type and range (one line naming the
    key, the value and what is expected), then the keys that depend on each
    other, then the transform list (names and arguments). Nothing is created."""
    for section in SECTIONS:
        if not isinstance(config.get(section), dict):
            raise ValueError(f'config section {section!r} must be a mapping, got {config.get(section)!r}')
    flat = flatten(config)
    for key, (ok, expected) in _CHECKS.items():
        if key not in flat:
            raise ValueError(f'config key {key!r} is missing')
        value = flat[key]
        if not ok(value):
            expected = expected() if callable(expected) else expected
            raise ValueError(f'{key} must be {expected}, got {value!r}')
    m, d = config['model'], config['data']
    if m['align_signs'] and m['name'] != 'aligned_mlp':
        raise ValueError(f"model.align_signs is an option of model.name 'aligned_mlp', not {m['name']!r}")
    if d['source'] == 'toy' and d['objects_per_class'] is not None:
        raise ValueError("data.objects_per_class selects objects of an INR dataset; data.source 'toy' "
                         'has none (use data.limit)')
    zoo_keys = [k for k in ZOO_KEYS if d[k] != DEFAULTS['data'][k]]
    if d['source'] != 'zoo' and zoo_keys:
        raise ValueError(f"data.{zoo_keys[0]} selects from a model zoo; it is an option of data.source 'zoo', "
                         f"not {d['source']!r}")
    if d['source'] == 'zoo' and config['mode'] != 'supervised':
        raise ValueError(f"mode {config['mode']!r} is for classification; data.source 'zoo' is a regression task: "
                         "use mode 'supervised'")
    if d['source'] == 'zoo' and d['objects_per_class'] is not None:
        raise ValueError("data.objects_per_class selects objects of an INR dataset; data.source 'zoo' has none")
    if config['mode'] == 'probe' and config['probe']['checkpoint'] is None:
        raise ValueError('mode probe needs probe.checkpoint: a contrastive run folder or its checkpoint.pt')
    _check_transforms(config['transforms'])


def _check_transforms(spec: List[Any]) -> None:
    # Names, the shape of each entry and the arguments, before any run folder
    # exists: each transform is built once here (a pure constructor); those
    # that take the training set (WeightMixUp) have their arguments matched
    # against the signature, and are built with the data later.
    import nngraph.transforms as T
    valid = sorted(getattr(T, '__all__', []))
    for i, entry in enumerate(spec):
        if isinstance(entry, str):
            name, args = entry, {}
        elif isinstance(entry, dict) and len(entry) == 1:
            name, args = next(iter(entry.items()))
            args = {} if args is None else args
        else:
            raise ValueError(f'transforms[{i}] must be a name or {{Name: {{arg: value}}}}, got {entry!r}')
        if not isinstance(name, str) or name not in valid:
            raise ValueError(f'transforms[{i}]: unknown transform {name!r}; valid transforms: {valid}')
        if not isinstance(args, dict) or not all(isinstance(k, str) for k in args):
            raise ValueError(f'transforms[{i}] ({name}): arguments must be a mapping {{arg: value}}, got {args!r}')
        cls = getattr(T, name)
        needs_data = 'source' in inspect.signature(cls).parameters
        try:
            if needs_data:
                inspect.signature(cls).bind(source=None, **args)
            else:
                cls(**args)
        except Exception as err:   # noqa: BLE001 -- any refusal of user arguments, named here
            raise ValueError(f'transforms[{i}] ({name}) with arguments {args!r}: '
                             f'{" ".join(str(err).split()) or type(err).__name__}') from None


# --------------------------------------------------------------------------- resume

def without_execution_keys(config: Dict[str, Any]) -> Dict[str, Any]:
    """A copy of ``config`` (or of a partial config update) without the
    :data:`EXECUTION_KEYS` it holds: what the run computes."""
    out = copy.deepcopy(config)
    for key in EXECUTION_KEYS:
        *sections, leaf = key.split('.')
        node = out
        for s in sections:
            node = node.get(s) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(leaf, None)
    return out


def check_resume(saved: Dict[str, Any], config: Dict[str, Any], where: str) -> None:
    """Refuses to continue the run whose checkpoint ``where`` was made with
    config ``saved`` under ``config``, unless they differ only in
    :data:`EXECUTION_KEYS` and a larger ``optim.epochs`` (which extends the
    run). One ``ValueError`` names every other key that differs, with its old
    and new value. The saved config is read over today's :data:`DEFAULTS`,
    so a key added since (at its default) is no difference."""
    old = flatten(DEFAULTS)
    old.update(flatten(saved) if isinstance(saved, dict) else {})
    new = flatten(config)
    changed = []
    for key in dict.fromkeys(list(old) + list(new)):     # in DEFAULTS' order
        if key in EXECUTION_KEYS:
            continue
        a, b = old.get(key, '<absent>'), new.get(key, '<absent>')
        if key == 'optim.epochs' and _is_int(a) and _is_int(b) and b >= a:
            continue                                    # a larger budget extends the run
        if a != b or isinstance(a, bool) != isinstance(b, bool):     # True == 1, but not as a config value
            note = ' (a run is extended, never shortened)' if key == 'optim.epochs' else ''
            changed.append(f'{key}: {a!r} -> {b!r}{note}')
    if changed:
        raise ValueError(
            f'cannot resume from {where}: it was made with another config ({"; ".join(changed)}); only '
            f'{", ".join(EXECUTION_KEYS)} may change and optim.epochs may grow. Resume with the old values, '
            f'or start a new run (another name, or --overwrite)')
