"""Configuration: every key a run may set (:data:`DEFAULTS`), YAML files,
``key.sub=value`` overrides, and the checks that refuse a bad config before
any run folder exists."""
from __future__ import annotations

import copy
import os
from typing import Any, Dict, Optional, Sequence

import yaml

from nngraph.training.data import SOURCES
from nngraph.training.models import MODELS

__all__ = ['MODES', 'DEFAULTS', 'merge_config', 'apply_overrides', 'load_config', 'validate']


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
        'source': 'digits',     # digits (built if absent) | fashion-mnist (an existing build) | inr | toy
        'root': 'data/digits',  # a build of the source, or any INRGraphDataset folder (source inr); ~ expanded
        'format': 'auto',       # source inr: auto | nngraph | dwsnets | neural-graphs | nfn
        'build_views': 1,       # views fitted per training object when building
        'views': 1,             # views per training object used for training
        'limit': None,          # build from the first `limit` images only
        'objects_per_class': None,  # train on the first k training objects of each class only
        'samples_per_epoch': None,  # graphs drawn per epoch (None: one pass over the training split)
        'batch_size': 64,
        'eval_batch_size': 256,
        'num_workers': 0,
        'test_every_epoch': True,   # False: the test split only once, for the selected model (faster)
    },
    'transforms': [],           # list of names or {Name: {arg: value}}; see nngraph.transforms
    'model': {
        'name': 'gnn',          # gnn | flat | statnn | aligned_mlp
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
    },
    'probe': {
        'checkpoint': None,     # mode probe: a run folder or checkpoint.pt of a contrastive run
        'C': [0.01, 0.1, 1.0, 10.0],   # inverse L2 strengths tried, chosen on validation
    },
}


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
        value = _parse_value(raw)
        node = update
        parts = key.split('.')
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return merge_config(config, update)


def _parse_value(raw: str) -> Any:
    # YAML 1.1 reads '1e-3' as a string; numbers without a dot are still numbers here.
    value = yaml.safe_load(raw) if raw != '' else None
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
            loaded = yaml.safe_load(f) or {}
        config = merge_config(config, loaded)
        if config['name'] is None:
            config['name'] = os.path.splitext(os.path.basename(path))[0]
    config = apply_overrides(config, overrides)
    if config['name'] is None:
        config['name'] = 'run'
    validate(config)
    return config


def validate(config: Dict[str, Any]) -> None:
    """Raises ``ValueError`` for a config that cannot run (bad mode, source, device, sizes)."""
    if config['mode'] not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {config['mode']!r}")
    m = config['model']
    if m['name'] not in MODELS:
        raise ValueError(f"model.name must be one of {MODELS}, got {m['name']!r}")
    if not isinstance(m['align_signs'], bool):
        raise ValueError(f"model.align_signs must be true or false, got {m['align_signs']!r}")
    if m['align_signs'] and m['name'] != 'aligned_mlp':
        raise ValueError(f"model.align_signs is an option of model.name 'aligned_mlp', not {m['name']!r}")
    if config['data']['source'] not in SOURCES:
        raise ValueError(f"data.source must be one of {SOURCES}, got {config['data']['source']!r}")
    if config['data']['source'] == 'toy' and config['data']['objects_per_class'] is not None:
        raise ValueError("data.objects_per_class selects objects of an INR dataset; data.source 'toy' "
                         'has none (use data.limit)')
    if config['device'] not in ('auto', 'cpu', 'cuda'):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {config['device']!r}")
    if not isinstance(config['compile'], bool):
        raise ValueError(f"compile must be true or false, got {config['compile']!r}")
    if not isinstance(config['transforms'], list):
        raise ValueError(f"transforms must be a list, got {type(config['transforms']).__name__}")
    for key in ('epochs', 'warmup_epochs'):
        if int(config['optim'][key]) < 0:
            raise ValueError(f'optim.{key} must be >= 0')
    for key in ('objects_per_class', 'samples_per_epoch'):
        value = config['data'][key]
        if value is not None and (not isinstance(value, int) or value < 1):
            raise ValueError(f'data.{key} must be a positive integer or null, got {value!r}')
