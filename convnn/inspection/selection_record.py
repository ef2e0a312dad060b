"""``record_selection(model)``: the neighbors every ConvNN layer of a model selects.

Forward hooks on the model's ConvNN layers (:data:`LAYERS`: ``ConvNN2d``, ``ConvNN1d``,
``ConvNNAttention``, also inside branching layers) say which layer is running;
:func:`convnn.selection.listening` receives each call's
:class:`~convnn.selection.Selection`. The model's outputs are unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from torch import nn

from ..modules import CONVNN_LAYERS, ConvNNAttention
from ..selection import Selection, listening

__all__ = ["LAYERS", "SelectionRecord", "record_selection"]

LAYERS = CONVNN_LAYERS
"""The layers that call the operator (:data:`convnn.modules.CONVNN_LAYERS`)."""


class SelectionRecord:
    """What the ConvNN layers selected, by layer name (``model.named_modules()`` names), in
    the order the layers first ran.

    ``record[name]`` is the layer's last :class:`~convnn.selection.Selection`: ``index`` and
    ``weights`` ``(B, Nq, k)`` for a convolution-style layer, ``(B, heads, Nq, k)`` for
    attention (its ConvNN heads). ``record.calls[name]`` lists every call of the layer.
    """

    def __init__(self) -> None:
        self.calls: dict[str, list[Selection]] = {}
        self.layers: dict[str, nn.Module] = {}

    def __getitem__(self, name: str) -> Selection:
        return self.calls[name][-1]

    def __contains__(self, name: object) -> bool:
        return name in self.calls

    def __iter__(self) -> Iterator[str]:
        return iter(self.calls)

    def __len__(self) -> int:
        return len(self.calls)

    def items(self) -> Iterator[tuple[str, Selection]]:
        """``(name, last selection)`` of every layer that ran."""
        return ((name, calls[-1]) for name, calls in self.calls.items())

    def clear(self) -> None:
        """Forget the recorded selections (before the next forward pass)."""
        self.calls.clear()


@contextmanager
def record_selection(model: nn.Module) -> Iterator[SelectionRecord]:
    """Record, during the block, every ConvNN layer's selected neighbors and weights.

    Example::

        with convnn.record_selection(net) as record:
            net(images)
        record["blocks.0.attn"].index  # (B, heads, N, k)

    Works on every backend and candidate kind; calls of ConvNN layers outside ``model``
    are ignored. Attention layers called without a grid get ``num_prefix_tokens`` prefix
    tokens and a square patch map. Each call is also appended to ``record.calls``; call
    :meth:`SelectionRecord.clear` between forward passes to keep one.
    """
    record = SelectionRecord()
    running: list[tuple[str, nn.Module]] = []

    def enter(name: str):
        def hook(module: nn.Module, args: Any) -> None:
            running.append((name, module))

        return hook

    def leave(module: nn.Module, args: Any, output: Any) -> None:
        running.pop()

    def sink(selection: Selection) -> None:
        if not running:
            return
        name, module = running[-1]
        if selection.grid is None and isinstance(module, ConvNNAttention):
            grid = module.token_grid(selection.num_tokens)
            selection = selection if grid is None else selection.with_grid(grid)
        record.layers[name] = module
        record.calls.setdefault(name, []).append(selection)

    handles = []
    for name, module in model.named_modules():
        if isinstance(module, LAYERS):
            label = name or type(module).__name__
            handles.append(module.register_forward_pre_hook(enter(label)))
            handles.append(module.register_forward_hook(leave, always_call=True))
    try:
        with listening(sink):
            yield record
    finally:
        for handle in handles:
            handle.remove()
