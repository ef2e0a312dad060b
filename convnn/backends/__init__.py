"""Named implementations ("paths") of the ConvNN operator, and the one place that picks one.

A path has a name, a level and a predicate ``can_run(call)`` over the call's options and
shapes. ``map`` paths compute :func:`convnn.functional.convnn2d` on a feature map without
forming tokens; ``tokens`` paths compute :func:`convnn.functional.convnn`:

==================  ======  ==============================================================
name                level   runs
==================  ======  ==============================================================
``conv``            map     whole zero-padded windows, no weighting: ``F.conv2d``
``window_attention``map     zero-padded neighborhood attention, fused (identity features)
``shifts``          map     weighted whole windows from strided views of the padded map
``sdpa``            tokens  all tokens, ``softmax(dot)``, ``sum``: scaled dot-product attention
``dense``           tokens  all tokens, feature similarity, ``sum``, N <= 2C: sparse matrix
``blocked``         tokens  everything: memory-bounded selection, gathers (Triton on CUDA)
``reference``       tokens  everything: the definition, dense scores (ground truth of tests)
==================  ======  ==============================================================

``backend`` (the option, or the ``CONVNN_BACKEND`` environment variable under ``auto``):
``fast`` takes the first path of each level that can run, in the table's order
(``blocked`` runs everything); ``reference`` takes the reference; a path's name takes
that path and raises :class:`~convnn.errors.BackendError` when it cannot run the call.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, get_args

import torch
from torch import Tensor

from ..errors import BackendError
from ..ops.aggregation import kernel_spec
from ..ops.geometry import CandidateTable, ConvWindow, Grid, candidate_table
from ..options import Backend, ConvNNOptions
from ..validation import check_choice

__all__ = [
    "BACKEND_ENV",
    "MapCall",
    "Path",
    "TokenCall",
    "choose_backend",
    "register",
    "select_top_k",
]

BACKEND_ENV = "CONVNN_BACKEND"
logger = logging.getLogger("convnn.backends")


@dataclass
class TokenCall:
    """Everything a ``tokens`` path needs: positions already encoded, inputs checked.

    Shapes: ``value`` ``(*, N, C)``, ``query`` ``(*, Nq, D)``, ``key`` ``(*, N, D)``,
    ``query_index`` ``(Nq,)``; kernel parameters as in :mod:`convnn.ops.aggregation`.
    """

    options: ConvNNOptions
    value: Tensor
    query: Tensor
    key: Tensor
    k: int
    query_index: Tensor
    grid: Grid | None = None
    weight: Tensor | None = None
    pointwise_weight: Tensor | None = None
    bias: Tensor | None = None
    sample: Tensor | None = None
    generator: torch.Generator | None = None
    training: bool = False
    dropout_p: float = 0.0

    @property
    def num_tokens(self) -> int:
        return self.value.shape[-2]

    @property
    def drop(self) -> float:
        """The dropout probability of the weights in this call (0 in eval)."""
        return self.dropout_p if self.training else 0.0

    def table(self) -> CandidateTable:
        """The candidate table of this call (see :func:`~convnn.ops.geometry.candidate_table`)."""
        return candidate_table(
            self.options,
            self.num_tokens,
            self.query_index,
            self.grid,
            self.sample,
            self.training,
            self.generator,
            tuple(self.query.shape[:-2]),
        )

    def with_bias(self, out: Tensor) -> Tensor:
        return out if self.bias is None else out + self.bias


@dataclass
class MapCall:
    """Everything a ``map`` path needs: ``x`` ``(B, C, H, W)`` and the convolution geometry."""

    options: ConvNNOptions
    x: Tensor
    kernel_size: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    weight: Tensor | None = None
    pointwise_weight: Tensor | None = None
    bias: Tensor | None = None
    training: bool = False

    @property
    def window(self) -> ConvWindow:
        return ConvWindow(self.kernel_size, self.stride, self.padding)

    @property
    def in_channels(self) -> int:
        return self.x.shape[1]

    @property
    def out_channels(self) -> int:
        if kernel_spec(self.options.kernel).pointwise:
            return self.pointwise_weight.shape[0]  # type: ignore[union-attr]
        return self.in_channels if self.weight is None else self.weight.shape[0]


@dataclass(frozen=True)
class Path:
    """One implementation: ``run(call)`` computes the operator wherever ``can_run(call)``."""

    name: str
    level: Literal["map", "tokens"]
    can_run: Callable[..., bool]
    run: Callable[..., Tensor]
    requires: str = field(default="", compare=False)


PATHS: dict[str, Path] = {}
"""Registered paths in the order ``fast`` tries them."""


def register(path: Path) -> Path:
    check_choice("path name", path.name, Backend)
    PATHS[path.name] = path
    return path


def resolve_backend(backend: str) -> str:
    """``auto`` -> the ``CONVNN_BACKEND`` environment variable, else ``fast``; other
    values (``fast``, ``reference`` or a path name) are returned after checking."""
    check_choice("backend", backend, Backend)
    if backend == "auto":
        backend = os.environ.get(BACKEND_ENV, "fast") or "fast"
        allowed = [b for b in get_args(Backend) if b != "auto"]
        check_choice(f"environment variable {BACKEND_ENV}", backend, allowed)
    return backend


def choose_backend(level: str, call: TokenCall | MapCall, backend: str) -> Path | None:
    """The path of ``level`` that runs ``call`` under ``backend`` (already resolved).

    ``None`` only at the ``map`` level: no map path is chosen and the call continues
    on tokens. Logs the choice at debug level (not while compiling).
    """
    path = None
    if backend == "fast":
        candidates = (p for p in PATHS.values() if p.level == level and p.name != "reference")
        path = next((p for p in candidates if p.can_run(call)), None)
    elif backend == "reference":
        path = PATHS["reference"] if level == "tokens" else None
    else:
        named = PATHS[backend]
        if named.level != level and level == "tokens":
            raise BackendError(
                f"backend={backend!r} runs on feature maps (convnn2d / ConvNN2d), not on "
                "tokens; use 'fast', 'reference' or a tokens path",
                key="backend",
            )
        if named.level == level:
            if not named.can_run(call):
                raise BackendError(
                    f"backend={backend!r} cannot run these options: it needs {named.requires}",
                    key="backend",
                )
            path = named
    if path is not None and not torch.compiler.is_compiling() and logger.isEnabledFor(10):
        logger.debug("convnn %s path: %s (backend=%s)", level, path.name, backend)
    return path


def select_top_k(
    call: TokenCall,
    table: CandidateTable,
    distance: Tensor | None,
    backend: str,
    keep_scores: bool = True,
) -> tuple[Tensor, Tensor, Tensor | None]:
    """``(index, slots, scores)`` of ``call``'s selection under ``backend`` (resolved): the
    reference's dense selection (``scores`` ``(*, Nq, M)``, with gradient) under
    ``reference``, the memory-bounded blocked one under every other backend (``scores``
    ``(*, Nq, k)`` without gradient, or ``None`` without ``keep_scores``)."""
    if backend == "reference":
        return reference.select_dense(call, table, distance)
    return blocked.select_blocked(call, table, distance, keep_scores)


from . import conv, sdpa, dense, blocked, reference  # noqa: E402, F401, I001  (registration order)
