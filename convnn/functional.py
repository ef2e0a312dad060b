"""The functional ConvNN operator: :func:`convnn` on tokens, :func:`convnn2d` on maps.

Each call checks its inputs (before any computation), encodes positions, chooses a
path (:func:`convnn.backends.choose_backend`: the one place that dispatches) and runs
it. The pipeline every path computes (docs/method.md §1): positional encoding of the selection
features -> candidate table -> similarity -> top-k selection (no gradient, float32,
ties to the lower token index) -> weighting scores (with gradient) -> gather values ->
aggregation kernel; :mod:`convnn.backends.reference` spells it out. :func:`select` and
:func:`select2d` return what a call selects (:class:`~convnn.selection.Selection`), through
the same selection functions.
"""

from __future__ import annotations

from typing import TypedDict

import torch
import torch.nn.functional as F
from torch import Tensor
from typing_extensions import Unpack

from . import selection
from .backends import MapCall, TokenCall, choose_backend, resolve_backend, select_top_k
from .backends.conv import location_as_window
from .call_checks import check_call, check_kernel_weights, check_location_kernel, check_map_size
from .ops.geometry import CandidateTable, ConvWindow, Grid, candidate_table, conv_queries
from .ops.positional import encode_positions
from .options import ConvNNOptions
from .selection import Selection
from .validation import check_names

__all__ = [
    "ConvNNOptions",
    "Grid",
    "MapSelectionArgs",
    "Selection",
    "SelectionArgs",
    "candidate_table",
    "convnn",
    "convnn2d",
    "encode_positions",
    "select",
    "select2d",
    "select_neighbors",
]


class MapSelectionArgs(TypedDict, total=False):
    """Keywords of :func:`convnn2d` and :func:`select2d` that decide what a call selects.

    ``pos_table``: ``(D, H0, W0)`` table of ``positional_encoding='learned'`` (default none);
    ``generator``: RNG of fresh ``random`` draws in training; ``training`` (default False):
    draws fresh random candidates (and, in :func:`convnn`, applies ``dropout_p``);
    ``backend``: overrides ``options.backend`` (``fast``, ``reference`` or a path name, see
    :mod:`convnn.backends`).
    """

    pos_table: Tensor | None
    generator: torch.Generator | None
    training: bool
    backend: str | None


class SelectionArgs(MapSelectionArgs, total=False):
    """Keywords of :func:`convnn` and :func:`select` that decide what a call selects: those of
    :class:`MapSelectionArgs` and ``grid`` (token layout: prefix tokens + H x W map; needed
    by spatial options), ``query_index`` (``(Nq,)`` tokens that are queries, e.g. a strided
    sub-grid; default all ``N`` tokens), ``sample`` (``(r,)`` fixed candidate tokens for
    ``candidates='random'``)."""

    grid: Grid | None
    query_index: Tensor | None
    sample: Tensor | None


def convnn(
    value: Tensor,
    query: Tensor | None = None,
    key: Tensor | None = None,
    *,
    options: ConvNNOptions,
    weight: Tensor | None = None,
    pointwise_weight: Tensor | None = None,
    bias: Tensor | None = None,
    dropout_p: float = 0.0,
    **where: Unpack[SelectionArgs],
) -> Tensor:
    """Convolutional nearest neighbors on tokens.

    Args:
        value: ``(*, N, C)`` values aggregated from the neighbors (``*``: any batch dims).
        query: ``(*, Nq, D)`` selection features of the queries; default: ``key``
            at ``query_index`` (identity features, the convolution-style layer).
        key: ``(*, N, D)`` selection features of the candidates; default ``value``.
        options: the operator's choices (:class:`ConvNNOptions`).
        weight, pointwise_weight, bias: aggregation kernel parameters
            (layouts in :mod:`convnn.ops.aggregation`).
        dropout_p: dropout on the neighbors' weights, in training.
        where: ``grid``, ``query_index``, ``pos_table``, ``sample``, ``generator``,
            ``training``, ``backend`` (:class:`SelectionArgs`).
    Returns:
        ``(*, Nq, O)`` aggregated outputs.
    """
    check_kernel_weights(options.kernel, weight, pointwise_weight)
    kernel = (weight, pointwise_weight, bias, dropout_p)
    call, name = _token_call("convnn", value, query, key, options, where, *kernel)
    if selection.SINK is not None:  # a recorder listens (convnn.inspection.record_selection)
        call = selection.report(call, name)
    return choose_backend("tokens", call, name).run(call)  # type: ignore[union-attr]


def convnn2d(
    x: Tensor,
    *,
    options: ConvNNOptions,
    kernel_size: tuple[int, int],
    stride: tuple[int, int] = (1, 1),
    padding: tuple[int, int] = (0, 0),
    weight: Tensor | None = None,
    pointwise_weight: Tensor | None = None,
    bias: Tensor | None = None,
    **where: Unpack[MapSelectionArgs],
) -> Tensor:
    """ConvNN on a feature map ``(B, C, H, W)`` -> ``(B, O, Ho, Wo)``.

    The output grid is that of ``nn.Conv2d`` with the same ``kernel_size``,
    ``stride`` and ``padding``: each query sits at the centre of a convolution
    window. The map is zero-padded by ``padding`` and the padding tokens are
    candidates, except for shifted windows (NATTEN), which stay inside the input, and
    ``random``/``spatial`` samples, which are drawn from the input's own tokens only
    (so the sampling grid is not skewed by padding). ``where``: ``pos_table``,
    ``generator``, ``training``, ``backend`` (:class:`MapSelectionArgs`).
    """
    B, C, H, W = x.shape
    check_map_size(H, W, kernel_size, stride, padding)
    options, where = _map_options("convnn2d", options, kernel_size, H + 2 * padding[0], where)
    check_kernel_weights(options.kernel, weight, pointwise_weight)
    window = ConvWindow(kernel_size, stride, padding)
    kernel = (weight, pointwise_weight, bias)
    call = MapCall(options, x, *window, *kernel, where.get("training", False))
    path = choose_backend("map", call, where["backend"])
    if path is not None:
        if selection.SINK is not None and selection.listens_here():  # no indices on maps
            selection.SINK(select2d(x, *window, options=options, **where))
        return path.run(call)
    tokens, grid, query_index, (Ho, Wo) = _map_tokens(x, options, window)
    out = convnn(
        tokens, options=options, weight=weight, pointwise_weight=pointwise_weight, bias=bias,
        grid=grid, query_index=query_index, **where,
    )  # (B, Ho*Wo, O)  # fmt: skip
    return out.transpose(1, 2).reshape(B, -1, Ho, Wo)


def _map_options(
    caller: str,
    options: ConvNNOptions,
    kernel_size: tuple[int, int],
    rows: int,
    where: MapSelectionArgs,
) -> tuple[ConvNNOptions, MapSelectionArgs]:
    """The options a map call (on ``rows`` padded rows) runs with, and ``where`` checked with
    its backend resolved: outside ``reference``, location among all tokens becomes the same
    neighbors from a window table (no N x N distances)."""
    check_names(f"{caller}() keywords", where, MapSelectionArgs.__optional_keys__)
    check_location_kernel(options, kernel_size, rows)
    name = resolve_backend(where.get("backend") or options.backend)
    options = options if name == "reference" else location_as_window(options, kernel_size)
    return options, {**where, "backend": name}


def _map_tokens(
    x: Tensor, options: ConvNNOptions, window: ConvWindow
) -> tuple[Tensor, Grid, Tensor, tuple[int, int]]:
    """A map ``(B, C, H, W)`` as :func:`convnn2d`'s tokens: ``(tokens (B, N, C), grid,
    query_index (Ho*Wo,), (Ho, Wo))``, zero-padded unless ``options`` draw from the input
    only."""
    real_only = options.draws_from_input_only
    H, W = x.shape[-2:]
    grid, query_index, size = conv_queries(H, W, *window, not real_only)
    padding = window.padding
    if not real_only and any(padding):
        x = F.pad(x, (padding[1], padding[1], padding[0], padding[0]))
    return x.flatten(2).transpose(1, 2), grid, query_index.to(x.device), size


def select(
    value: Tensor,
    query: Tensor | None = None,
    key: Tensor | None = None,
    *,
    options: ConvNNOptions,
    **where: Unpack[SelectionArgs],
) -> Selection:
    """The neighbors :func:`convnn` selects with these arguments, and their weights.

    Arguments as in :func:`convnn` (only ``value``'s shape ``(*, N, C)`` is read when
    ``key`` is given). Returns a :class:`~convnn.selection.Selection`: ``index`` and
    ``weights`` ``(*, Nq, k)``, the grid and the neighbors' positions on it.
    """
    call, name = _token_call("select", value, query, key, options, where)
    return selection.selection_of(call, name)


def select2d(
    x: Tensor,
    kernel_size: tuple[int, int],
    stride: tuple[int, int] = (1, 1),
    padding: tuple[int, int] = (0, 0),
    *,
    options: ConvNNOptions,
    **where: Unpack[MapSelectionArgs],
) -> Selection:
    """The neighbors :func:`convnn2d` selects on a map ``(B, C, H, W)``: ``index`` and
    ``weights`` ``(B, Ho*Wo, k)`` on the (zero-padded) map's grid, whose ``padding`` tells
    padding tokens from the input's own."""
    rows = x.shape[-2] + 2 * padding[0]
    options, where = _map_options("select2d", options, kernel_size, rows, where)
    window = ConvWindow(kernel_size, stride, padding)
    tokens, grid, query_index, _ = _map_tokens(x, options, window)
    return select(tokens, options=options, grid=grid, query_index=query_index, **where)


def select_neighbors(
    options: ConvNNOptions,
    query: Tensor,
    key: Tensor,
    table: CandidateTable,
    distance: Tensor | None,
    k: int,
    backend: str = "fast",
) -> tuple[Tensor, Tensor, Tensor | None]:
    """The neighbors ``options`` select: ``(index, slots, scores)``.

    ``index`` and ``slots`` ``(*, Nq, k)``: token indices and candidate slots (no
    gradient); ``scores``: ``(*, Nq, M)`` dense scores with gradient (``reference``) or
    ``(*, Nq, k)`` selected scores without (other backends, memory-bounded blocks).
    ``distance``: Chebyshev distances for ``location``/``mixed`` (see ``chebyshev_distance``).
    """
    query_index = torch.arange(query.shape[-2], device=query.device)
    call = TokenCall(options, key, query, key, k, query_index)
    return select_top_k(call, table, distance, resolve_backend(backend))


def _token_call(
    caller: str,
    value: Tensor,
    query: Tensor | None,
    key: Tensor | None,
    options: ConvNNOptions,
    where: SelectionArgs,
    weight: Tensor | None = None,
    pointwise_weight: Tensor | None = None,
    bias: Tensor | None = None,
    dropout_p: float = 0.0,
) -> tuple[TokenCall, str]:
    """The checked, position-encoded :class:`TokenCall` of :func:`convnn`'s (or ``caller``'s)
    arguments and the resolved backend name."""
    check_names(f"{caller}() keywords", where, SelectionArgs.__optional_keys__)
    opts = options
    key = value if key is None else key
    N = value.shape[-2]
    grid, query_index = where.get("grid"), where.get("query_index")
    if query_index is None:
        query_index = torch.arange(N, device=value.device)
    query = key[..., query_index, :] if query is None else query
    weight_channels = None
    if opts.kernel in ("standard", "separable") and weight is not None:
        weight_channels = weight.shape[1] if opts.kernel == "standard" else weight.shape[0]
        weight_channels -= (
            2 if opts.positional_encoding == "coords" and opts.coords_to_values else 0
        )
    check_call(opts, value, query, key, grid, query_index, weight_channels)
    k = opts.k if opts.k is not None else opts.max_k(N)
    name = resolve_backend(where.get("backend") or opts.backend)
    pos_table = where.get("pos_table")
    query, key, value = encode_positions(opts, query, key, value, grid, query_index, pos_table)
    call = TokenCall(
        opts, value, query, key, k, query_index, grid, weight, pointwise_weight, bias,
        where.get("sample"), where.get("generator"), where.get("training", False), dropout_p,
    )  # fmt: skip
    return call, name
