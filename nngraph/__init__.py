"""nngraph: learning on the weights of neural networks.

Trained MLPs become PyTorch Geometric graphs (neurons are nodes, weights are
edges, biases are node features); see ``DESIGN.md`` for the schema.
"""
from nngraph.activations import Sine
from nngraph.checkpoints import from_checkpoint, from_module
from nngraph.graph import (draw, forward, from_weights, graph_layer_views, layer_views, load,
                           permute_hidden, rescale_hidden, save, stacked_layer_views, to_module, to_networkx,
                           to_state_dict, to_weights, validate, with_layers, with_stacked_layers)

__version__ = '0.1.0'

__all__ = [
    'from_module', 'from_checkpoint', 'from_weights', 'to_weights', 'to_state_dict',
    'to_module', 'forward', 'to_networkx', 'draw', 'layer_views', 'stacked_layer_views',
    'graph_layer_views', 'with_layers', 'with_stacked_layers', 'permute_hidden',
    'rescale_hidden', 'validate', 'save', 'load', 'Sine',
]
