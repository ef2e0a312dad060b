"""ConvNN: Convolutional Nearest Neighbors.

One k-nearest-neighbor operator that contains convolution and self-attention as
special cases. See :func:`convnn.functional.convnn` for the math and the layers
:class:`ConvNN2d`, :class:`ConvNN1d`, :class:`ConvNNAttention`,
:class:`BranchingConv2d` and :class:`BranchingAttention`.
"""

from . import functional
from .functional import ConvNNOptions, Grid, convnn

__all__ = ["ConvNNOptions", "Grid", "convnn", "functional"]
