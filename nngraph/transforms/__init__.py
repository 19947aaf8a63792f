"""Weight-space augmentations as PyTorch Geometric transforms (one concern per file)."""
from nngraph.transforms.mixup import WeightMixUp
from nngraph.transforms.self_align_mixup import SelfAlignMixUp

__all__ = ['WeightMixUp', 'SelfAlignMixUp']
