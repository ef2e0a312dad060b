"""See what ConvNN selects: record the neighbors of every ConvNN layer, measure how local
they are, and draw them.

* :func:`record_selection` (:mod:`~convnn.inspection.selection_record`): the selected token indices
  and weights of every ConvNN layer (and head) during a forward pass;
  :func:`convnn.functional.select` / :func:`~convnn.functional.select2d` for one call.
* :class:`LocalityCounter` (:mod:`~convnn.inspection.locality_stats`): mean distance, 3x3-window,
  self, prefix and padding shares, coverage and the distance histogram;
  :func:`measure_locality` over a model and data.
* :func:`image_picture`, :func:`layer_picture` (:mod:`~convnn.inspection.pictures`): the
  neighbor pictures; :func:`depth_plot`: mean distance per layer depth.

``docs/inspection.md`` explains how to read them.
"""

from .locality_stats import LocalityCounter, NeighborFacts, neighbor_facts
from .pictures import NeighborView, neighbor_view, panel, picture_grid, query_at, save_png
from .selection_record import SelectionRecord, record_selection
from .summary import (
    AUTO_POINTS,
    count_selections,
    depth_plot,
    image_picture,
    layer_picture,
    measure_locality,
    unnormalize,
)

__all__ = [
    "AUTO_POINTS",
    "LocalityCounter",
    "NeighborFacts",
    "NeighborView",
    "SelectionRecord",
    "count_selections",
    "depth_plot",
    "image_picture",
    "layer_picture",
    "measure_locality",
    "neighbor_facts",
    "neighbor_view",
    "panel",
    "picture_grid",
    "query_at",
    "record_selection",
    "save_png",
    "unnormalize",
]
