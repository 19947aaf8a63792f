"""Weight-space transforms: ordinary PyG transforms on parameter graphs.

Every transform works on a single graph, in ``T.Compose``, as the
``transform=`` of a dataset, inside ``DataLoader`` workers, and on a whole
:class:`~torch_geometric.data.Batch` of one architecture in one tensor
operation per layer (see :mod:`nngraph.transforms._base`).
"""
from nngraph.transforms.canonical_signs import CanonicalSigns
from nngraph.transforms.input_rotation import InputRotation
from nngraph.transforms.input_scaling import InputScaling
from nngraph.transforms.input_translation import InputTranslation
from nngraph.transforms.label_smoothing import LabelSmoothing
from nngraph.transforms.mixup import WeightMixUp
from nngraph.transforms.neuron_permutation import RandomNeuronPermutation
from nngraph.transforms.positive_scaling import RandomPositiveScaling
from nngraph.transforms.quantile_zeroing import QuantileZeroing
from nngraph.transforms.self_align_mixup import SelfAlignMixUp
from nngraph.transforms.siren_bias_fold import SirenBiasFold
from nngraph.transforms.siren_bias_shift import SirenBiasShift
from nngraph.transforms.sign_flip import RandomSignFlip
from nngraph.transforms.weight_dropout import WeightDropout
from nngraph.transforms.weight_noise import WeightNoise

__all__ = [
    'CanonicalSigns',
    'InputRotation',
    'InputScaling',
    'InputTranslation',
    'LabelSmoothing',
    'QuantileZeroing',
    'RandomNeuronPermutation',
    'RandomPositiveScaling',
    'RandomSignFlip',
    'SelfAlignMixUp',
    'SirenBiasFold',
    'SirenBiasShift',
    'WeightDropout',
    'WeightMixUp',
    'WeightNoise',
]
