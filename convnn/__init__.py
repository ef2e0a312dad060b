"""ConvNN: Convolutional Nearest Neighbors.

One k-nearest-neighbor operator that contains convolution and self-attention as
special cases. :func:`convnn.functional.convnn` does the math (checks, positions, one
dispatcher over the named paths of :mod:`convnn.backends`, the math in :mod:`convnn.ops`);
the layers of :mod:`convnn.modules` (:class:`ConvNN2d`, :class:`ConvNN1d`,
:class:`ConvNNAttention`, :class:`BranchingConv2d`, :class:`BranchingAttention`) own
parameters and call it; :mod:`convnn.models` registers the timm backbones and
:func:`convert`; :mod:`convnn.tools` holds :func:`profile` and the demo.
"""

from . import (
    functional,
    models,  # noqa: F401  (registers convnn_* in timm)
)
from .errors import ConvNNError, OptionError
from .functional import ConvNNOptions, Grid, convnn, convnn2d
from .models.convert import convert
from .modules import BranchingAttention, BranchingConv2d, ConvNN1d, ConvNN2d, ConvNNAttention
from .tools.profile import profile

__all__ = [
    "BranchingAttention",
    "BranchingConv2d",
    "ConvNN1d",
    "ConvNN2d",
    "ConvNNAttention",
    "ConvNNError",
    "ConvNNOptions",
    "Grid",
    "OptionError",
    "convert",
    "convnn",
    "convnn2d",
    "functional",
    "profile",
]
