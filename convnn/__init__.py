"""ConvNN: Convolutional Nearest Neighbors.

One k-nearest-neighbor operator that contains convolution and self-attention as
special cases. :func:`convnn.functional.convnn` does the math (checks, positions, one
dispatcher over the named paths of :mod:`convnn.backends`, the math in :mod:`convnn.ops`);
the layers of :mod:`convnn.modules` (:class:`ConvNN2d`, :class:`ConvNN1d`,
:class:`ConvNNAttention`, :class:`BranchingConv2d`, :class:`BranchingAttention`) own
parameters and call it; :mod:`convnn.models` registers the timm backbones and
:func:`convert` (imported when timm is: ``import convnn`` alone does not import timm, see
:mod:`convnn.registration`); :mod:`convnn.tools` holds :func:`profile` and the demo;
:func:`record_selection` (:mod:`convnn.inspection`)
shows which neighbors every ConvNN layer selects.
"""

import importlib
from typing import TYPE_CHECKING, Any

from .registration import register_with_timm

register_with_timm()  # the convnn_* timm models, as soon as timm is imported

_SOURCES = {
    "BranchingAttention": ".modules",
    "BranchingConv2d": ".modules",
    "ConvNN1d": ".modules",
    "ConvNN2d": ".modules",
    "ConvNNAttention": ".modules",
    "ConvNNError": ".errors",
    "ConvNNOptions": ".functional",
    "Grid": ".functional",
    "OptionError": ".errors",
    "convert": ".models.convert",
    "convnn": ".functional",
    "convnn2d": ".functional",
    "profile": ".tools.profile",
    "record_selection": ".inspection",
}
_MODULES = ("backends", "functional", "inspection", "models", "modules", "ops", "tools")

__all__ = [  # = _SOURCES and "functional"
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
    "record_selection",
]


def __getattr__(name: str) -> Any:
    """The public names, imported on first use: ``import convnn`` itself imports nothing
    heavy (not even torch), and ``convnn.convert``/``convnn.models`` bring timm in."""
    if name in _MODULES:
        return importlib.import_module(f".{name}", __name__)
    if name not in _SOURCES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_SOURCES[name], __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_SOURCES, *_MODULES])


if TYPE_CHECKING:  # what the names are, for type checkers and editors
    from .errors import ConvNNError, OptionError
    from .functional import ConvNNOptions, Grid, convnn, convnn2d
    from .inspection import record_selection
    from .models.convert import convert
    from .modules import (
        BranchingAttention,
        BranchingConv2d,
        ConvNN1d,
        ConvNN2d,
        ConvNNAttention,
    )
    from .tools.profile import profile
