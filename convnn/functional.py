"""The functional ConvNN operator: one entry point, :func:`convnn`.

Pipeline (SPEC §1): positional encoding of the selection features -> candidate
table -> similarity -> top-k selection (no gradient, float32, ties to the lower
token index) -> weighting scores (with gradient) -> gather values -> aggregation
kernel. Two backends compute the same function:

* ``reference``: plain and obviously correct — the dense ``(B, Nq, M)`` similarity
  with gradient, then gathers. Used by tests as the ground truth.
* ``fast``: selection without autograd over blocks of queries, weighting scores
  of the selected neighbors only (reused from the selection pass, gradients by
  re-gathering), and exact special cases dispatched to PyTorch's fused ops.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from . import dense_path, positional
from .aggregation import aggregate
from .gather_ops import weighted_gather_sum
from .geometry import (
    CandidateTable,
    Grid,
    all_candidates,
    chebyshev_distance,
    conv_queries,
    hashed_sample,
    random_sample,
    sampled_candidates,
    spatial_sample,
    window_candidates,
)
from .map_paths import (
    as_convolution,
    is_convolution,
    location_as_window,
    shifts_apply,
    window_by_shifts,
)
from .options import ConvNNOptions, resolve_backend
from .selection import gather_tokens, neighbor_scores, select_neighbors
from .window_attention import applies as window_attention_applies
from .window_attention import window_attention

__all__ = ["ConvNNOptions", "Grid", "convnn", "convnn2d", "candidate_table", "encode_positions"]


def _check_inputs(
    opts: ConvNNOptions,
    value: Tensor,
    query: Tensor,
    key: Tensor,
    grid: Grid | None,
    query_index: Tensor,
    weight_channels: int | None,
) -> None:
    """All shape and size checks, before any computation."""
    if value.dim() < 3 or query.dim() != value.dim() or key.dim() != value.dim():
        raise ValueError(
            "value, query and key must be (*, N, C) token tensors with the same batch dims"
        )
    *batch, N, C = value.shape
    if key.shape[:-1] != value.shape[:-1]:
        raise ValueError(f"key has shape {tuple(key.shape)}; expected (*, N, D) with N={N}")
    if query.shape[:-2] != value.shape[:-2] or query.shape[-2] != query_index.shape[0]:
        raise ValueError(
            f"query has shape {tuple(query.shape)}; expected (*, Nq, D) with Nq = "
            f"{query_index.shape[0]} queries"
        )
    if query.shape[-1] != key.shape[-1]:
        raise ValueError(f"query has {query.shape[-1]} channels but key has {key.shape[-1]}")
    if weight_channels is not None and weight_channels != C:
        raise ValueError(
            f"input has {C} channels but the kernel expects in_channels={weight_channels}"
        )
    if grid is None and opts.needs_grid:
        raise ValueError(
            "a grid (H, W) is required by the chosen similarity, candidates or positional_encoding"
        )
    if grid is not None and grid.num_tokens != N:
        raise ValueError(
            f"grid {grid.num_prefix} + {grid.height}x{grid.width} does not match N={N} tokens"
        )
    if opts.candidates in ("random", "spatial") and opts.num_samples > N:  # type: ignore[operator]
        raise ValueError(
            f"num_samples={opts.num_samples} is larger than the N={N} tokens; "
            f"allowed: k <= num_samples <= {N}"
        )
    if opts.candidates == "spatial" and grid.height > 1:  # type: ignore[union-attr]
        side = math.isqrt(opts.num_samples)  # type: ignore[arg-type]
        if side > min(grid.height, grid.width):  # type: ignore[union-attr]
            raise ValueError(
                f"num_samples={opts.num_samples} asks for a {side}x{side} grid, "
                f"larger than the {grid.height}x{grid.width} map"
            )  # type: ignore
    if opts.candidates == "window":
        if grid.num_prefix:  # type: ignore[union-attr]
            raise ValueError("candidates='window' does not support prefix (class) tokens")
        sh, sw = opts.window_shape
        if opts.window_border == "shift" and (sh > grid.height or sw > grid.width):  # type: ignore
            raise ValueError(
                f"window_size={opts.window_size} is larger than the "
                f"{grid.height}x{grid.width} map; window_border='shift' needs "
                "the window inside the map"
            )  # type: ignore
    if opts.k is not None and opts.candidates == "all" and opts.k > N:
        raise ValueError(
            f"k={opts.k} is larger than the N={N} candidate tokens; allowed: 1 <= k <= {N}"
        )
    dim = key.shape[-1]
    if opts.positional_encoding in ("sincos", "rope") and dim % 4:
        raise ValueError(
            f"positional_encoding={opts.positional_encoding!r} needs the selection "
            f"feature dimension divisible by 4, got {dim}"
        )


def candidate_table(
    opts: ConvNNOptions,
    num_tokens: int,
    query_index: Tensor,
    grid: Grid | None,
    sample: Tensor | None = None,
    training: bool = False,
    generator: torch.Generator | None = None,
) -> CandidateTable:
    """The candidate table for ``opts.candidates``.

    ``random``: ``sample`` if given; else, in training, a fresh draw from
    ``generator`` (or the global RNG) and, in eval, a fixed draw seeded by
    ``opts.sample_seed`` so that evaluation is reproducible.
    """
    device = query_index.device
    if opts.candidates == "all":
        return all_candidates(num_tokens, grid, device)
    if opts.candidates == "window":
        return window_candidates(query_index, grid, opts.window_shape, opts.window_border)  # type: ignore
    if opts.candidates == "spatial":
        return sampled_candidates(spatial_sample(grid, opts.num_samples, device), query_index, grid)  # type: ignore
    if sample is None and training:
        sample = random_sample(num_tokens, opts.num_samples, device, generator)  # type: ignore
    elif sample is None:
        sample = hashed_sample(num_tokens, opts.num_samples, opts.sample_seed, device)  # type: ignore
    return sampled_candidates(sample, query_index, grid)


def encode_positions(
    opts: ConvNNOptions,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    grid: Grid | None,
    query_index: Tensor,
    pos_table: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Apply ``opts.positional_encoding`` to the selection features (and coords to values)."""
    kind = opts.positional_encoding
    if kind == "none":
        return query, key, value
    assert grid is not None
    token_index = torch.arange(key.shape[-2], device=key.device)
    if kind == "rope":
        return (
            positional.rope(query, grid, query_index),
            positional.rope(key, grid, token_index),
            value,
        )
    if kind == "coords":

        def add(x: Tensor, index: Tensor) -> Tensor:
            xy = positional.coords(grid, index, x.dtype).expand(*x.shape[:-2], -1, -1)
            return torch.cat((x, xy), dim=-1)

        value = add(value, token_index) if opts.coords_to_values else value
        return add(query, query_index), add(key, token_index), value
    if kind == "sincos":

        def enc(index: Tensor) -> Tensor:
            return positional.sincos(grid, index, key.shape[-1], key.dtype)
    else:
        if pos_table is None:
            raise ValueError("positional_encoding='learned' needs pos_table (dim, H0, W0)")

        def enc(index: Tensor) -> Tensor:
            return positional.learned(grid, index, pos_table)

    return query + enc(query_index), key + enc(token_index), value


def _is_attention(opts: ConvNNOptions, k: int, num_tokens: int) -> bool:
    """k = N, softmax(dot) and the sum kernel: exactly scaled dot-product attention."""
    return (
        opts.candidates == "all"
        and k == num_tokens
        and opts.weighting == "softmax"
        and opts.score_for_weights == "dot"
        and opts.kernel == "sum"
    )


def convnn(
    value: Tensor,
    query: Tensor | None = None,
    key: Tensor | None = None,
    *,
    options: ConvNNOptions,
    weight: Tensor | None = None,
    pointwise_weight: Tensor | None = None,
    bias: Tensor | None = None,
    grid: Grid | None = None,
    query_index: Tensor | None = None,
    pos_table: Tensor | None = None,
    sample: Tensor | None = None,
    generator: torch.Generator | None = None,
    training: bool = False,
    dropout_p: float = 0.0,
    backend: str | None = None,
) -> Tensor:
    """Convolutional nearest neighbors on tokens.

    Args:
        value: ``(*, N, C)`` values aggregated from the neighbors (``*``: any batch dims).
        query: ``(*, Nq, D)`` selection features of the queries; default: ``key``
            at ``query_index`` (identity features, the convolution-style layer).
        key: ``(*, N, D)`` selection features of the candidates; default ``value``.
        options: the operator's choices (:class:`ConvNNOptions`).
        weight, pointwise_weight, bias: aggregation kernel parameters
            (layouts in :mod:`convnn.aggregation`).
        grid: token layout (prefix tokens + H x W map); needed by spatial options.
        query_index: ``(Nq,)`` tokens that are queries (e.g. a strided sub-grid);
            default all ``N`` tokens.
        pos_table: ``(D, H0, W0)`` table of ``positional_encoding='learned'``.
        sample: ``(r,)`` fixed candidate tokens for ``candidates='random'``.
        generator: RNG of fresh ``random`` draws in training.
        training: draws fresh random candidates and applies ``dropout_p`` to the weights.
        backend: overrides ``options.backend``.
    Returns:
        ``(*, Nq, O)`` aggregated outputs.
    """
    opts = options
    key = value if key is None else key
    N = value.shape[-2]
    if query_index is None:
        query_index = torch.arange(N, device=value.device)
    query = key[..., query_index, :] if query is None else query
    weight_channels = None
    if opts.kernel in ("standard", "separable") and weight is not None:
        weight_channels = weight.shape[1] if opts.kernel == "standard" else weight.shape[0]
        weight_channels -= (
            2 if opts.positional_encoding == "coords" and opts.coords_to_values else 0
        )
    _check_inputs(opts, value, query, key, grid, query_index, weight_channels)
    k = opts.k if opts.k is not None else opts.max_k(N)
    use = resolve_backend(backend or opts.backend)  # type: ignore[arg-type]

    query, key, value = encode_positions(opts, query, key, value, grid, query_index, pos_table)
    if use == "fast" and _is_attention(opts, k, N) and query.shape[-2] == N:
        out = F.scaled_dot_product_attention(
            query, key, value, dropout_p=dropout_p if training else 0.0
        )
        return out if bias is None else out + bias

    table = candidate_table(opts, N, query_index, grid, sample, training, generator)
    if use == "fast" and dense_path.applies(opts, value, query):
        drop = dropout_p if training else 0.0
        out = dense_path.dense_small(opts, query, key, value, table, k, drop)
        return out if bias is None else out + bias
    spatial = {opts.similarity, opts.score_for_weights} & {"location", "mixed"}
    distance = chebyshev_distance(query_index, table, grid) if spatial else None  # type: ignore
    index, slots, known = select_neighbors(opts, query, key, table, distance, k, use)
    weights = None
    if opts.weighting != "none":
        scores = neighbor_scores(opts, query, key, table, distance, index, slots, known)
        weights = scores.softmax(-1) if opts.weighting == "softmax" else scores
        if dropout_p and training:
            weights = F.dropout(weights, dropout_p)
    if use == "fast" and opts.kernel == "sum":
        w = weights if weights is not None else value.new_ones(index.shape)
        out = weighted_gather_sum(value, index, w, table.has_null)  # (*, Nq, C)
        return out if bias is None else out + bias
    neighbors = gather_tokens(value, index, table.has_null)  # (*, Nq, k, C)
    return aggregate(neighbors, weights, opts.kernel, weight, pointwise_weight, bias)


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
    pos_table: Tensor | None = None,
    generator: torch.Generator | None = None,
    training: bool = False,
    backend: str | None = None,
) -> Tensor:
    """ConvNN on a feature map ``(B, C, H, W)`` -> ``(B, O, Ho, Wo)``.

    The output grid is that of ``nn.Conv2d`` with the same ``kernel_size``,
    ``stride`` and ``padding``: each query sits at the centre of a convolution
    window. The map is zero-padded by ``padding`` and the padding tokens are
    candidates, except for shifted windows (NATTEN), which stay inside the input, and
    ``random``/``spatial`` samples, which are drawn from the input's own tokens only
    (so the sampling grid is not skewed by padding).
    """
    B, C, H, W = x.shape
    if resolve_backend(backend or options.backend) == "fast":  # type: ignore[arg-type]
        options = location_as_window(options, kernel_size)
        if is_convolution(options, kernel_size):
            return as_convolution(
                x, options, weight, pointwise_weight, bias, kernel_size, stride, padding
            )
        out_channels = C if weight is None else weight.shape[0]
        if options.kernel == "separable":
            out_channels = pointwise_weight.shape[0]  # type: ignore[union-attr]
        if window_attention_applies(options, kernel_size, stride, padding, out_channels, C):
            return window_attention(x, kernel_size, bias)
        if shifts_apply(options, kernel_size, out_channels, C):
            return window_by_shifts(
                x, options, weight, pointwise_weight, bias, kernel_size, stride, padding, training
            )
    real_only = options.draws_from_input_only
    grid, query_index, (Ho, Wo) = conv_queries(H, W, kernel_size, stride, padding, not real_only)
    if not real_only and any(padding):
        x = F.pad(x, (padding[1], padding[1], padding[0], padding[0]))
    tokens = x.flatten(2).transpose(1, 2)  # (B, Hp*Wp, C)
    out = convnn(
        tokens,
        options=options,
        weight=weight,
        pointwise_weight=pointwise_weight,
        bias=bias,
        grid=grid,
        query_index=query_index.to(x.device),
        pos_table=pos_table,
        generator=generator,
        training=training,
        backend=backend,
    )  # (B, Ho*Wo, O)
    return out.transpose(1, 2).reshape(B, -1, Ho, Wo)
