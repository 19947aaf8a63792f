"""Weight-space models: the GNN encoder of parameter graphs, a classifier on
top of it, the flat MLP baseline and the SimCLR projection head."""
from nngraph.models.classifier import FlatMLPClassifier, FlatMLPEncoder, GraphClassifier, ProjectionHead
from nngraph.models.encoder import AGGREGATIONS, EncoderLayer, FourierFeatures, GNNEncoder

__all__ = ['GNNEncoder', 'GraphClassifier', 'FlatMLPEncoder', 'FlatMLPClassifier', 'ProjectionHead',
           'EncoderLayer', 'FourierFeatures', 'AGGREGATIONS']
