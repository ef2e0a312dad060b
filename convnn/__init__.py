"""ConvNN: Convolutional Nearest Neighbors.

One k-nearest-neighbor operator that contains convolution and self-attention as
special cases. :func:`convnn.functional.convnn` does the math; the layers
:class:`ConvNN2d`, :class:`ConvNN1d`, :class:`ConvNNAttention`,
:class:`BranchingConv2d` and :class:`BranchingAttention` own parameters and call it.
"""

from . import (
    functional,
    models,  # noqa: F401  (registers convnn_* in timm)
)
from .attention import BranchingAttention, ConvNNAttention
from .branching import BranchingConv2d
from .convert import convert
from .functional import ConvNNOptions, Grid, convnn, convnn2d
from .layers import ConvNN1d, ConvNN2d
from .profile import profile

__all__ = [
    "BranchingAttention",
    "BranchingConv2d",
    "ConvNN1d",
    "ConvNN2d",
    "ConvNNAttention",
    "ConvNNOptions",
    "Grid",
    "convert",
    "convnn",
    "convnn2d",
    "functional",
    "profile",
]
