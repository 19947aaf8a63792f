r"""SIREN implicit neural representations (INRs) and batched fitting of many at once.

Two stages: :mod:`nngraph.inr.siren` is the function, its conventions (the
published ones as presets: :data:`PRESETS`) and its initialisation;
:mod:`nngraph.inr.fitting` fits ``N * V`` INRs in one batched optimisation
(:func:`fit`), every INR from a start of its own. Every public name of both
is here.
"""
from nngraph.inr.fitting import INIT_SHARING, FitResult, fit, grid_axes, inr_seeds, num_threads, view_seeds
from nngraph.inr.siren import (INITS, PRESETS, Siren, SirenConfig, grid, init_params, parse_convention, psnr,
                               save_checkpoint, stacked_forward)

__all__ = ['SirenConfig', 'Siren', 'FitResult', 'fit', 'grid', 'psnr', 'init_params',
           'stacked_forward', 'save_checkpoint', 'parse_convention', 'num_threads', 'INITS',
           'grid_axes', 'PRESETS', 'inr_seeds', 'view_seeds', 'INIT_SHARING']
