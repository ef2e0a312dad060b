"""ConvNN: Convolutional Nearest Neighbors.

One k-nearest-neighbor operator that contains convolution and self-attention as
special cases. :func:`convnn.functional.convnn` does the math; the layers
:class:`ConvNN2d`, :class:`ConvNN1d`, :class:`ConvNNAttention`,
:class:`BranchingConv2d` and :class:`BranchingAttention` own parameters and call it.
"""

from . import functional
from .attention import BranchingAttention, ConvNNAttention
from .branching import BranchingConv2d
from .functional import ConvNNOptions, Grid, convnn, convnn2d
from .layers import ConvNN1d, ConvNN2d

__all__ = [
    "BranchingAttention",
    "BranchingConv2d",
    "ConvNN1d",
    "ConvNN2d",
    "ConvNNAttention",
    "ConvNNOptions",
    "Grid",
    "convnn",
    "convnn2d",
    "functional",
]
