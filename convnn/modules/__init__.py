"""The ConvNN layers: parameters and reshaping around :mod:`convnn.functional`.

Every layer takes ``options: ConvNNOptions | None = None, **overrides`` (any
:class:`~convnn.ConvNNOptions` field by name), so a new option needs no layer edit.
"""

from .attention import BranchingAttention, ConvNNAttention
from .branching import BranchingConv2d
from .conv_layers import ConvNN1d, ConvNN2d

__all__ = [
    "CONVNN_LAYERS",
    "BranchingAttention",
    "BranchingConv2d",
    "ConvNN1d",
    "ConvNN2d",
    "ConvNNAttention",
]

CONVNN_LAYERS = (ConvNN1d, ConvNN2d, ConvNNAttention)
"""The layers that call the operator and check their input sizes (branching layers hold
one of them)."""
