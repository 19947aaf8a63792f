"""Weight-space models: the GNN encoder of parameter graphs and its
sign-equivariant variant for odd activations, a classifier on top of each,
the calibration baselines of DWSNets (flat MLP, StatNN, MLP on weight-matched
networks) and the SimCLR projection head."""
from nngraph.models.aligned import AlignedMLPEncoder
from nngraph.models.classifier import (EncoderClassifier, FlatMLPClassifier, FlatMLPEncoder, GraphClassifier,
                                       ProjectionHead)
from nngraph.models.encoder import AGGREGATIONS, EncoderLayer, FourierFeatures, GNNEncoder
from nngraph.models.sign_gnn import SignGNNClassifier, SignGNNEncoder
from nngraph.models.statnn import StatNNEncoder, statnn_features

__all__ = ['GNNEncoder', 'GraphClassifier', 'SignGNNEncoder', 'SignGNNClassifier', 'FlatMLPEncoder',
           'FlatMLPClassifier', 'StatNNEncoder', 'statnn_features', 'AlignedMLPEncoder', 'EncoderClassifier',
           'ProjectionHead', 'EncoderLayer', 'FourierFeatures', 'AGGREGATIONS']
