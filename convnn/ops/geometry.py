"""Token positions and candidate tables.

Tokens are ``(B, N, C)`` with ``N = P + H * W``: ``P`` prefix tokens (class or
register tokens, which have no position) followed by an ``H x W`` map in raster
order. A *candidate table* lists, for each query, the tokens it may choose from,
always in raster order, so that a stable sort breaks ties by the lower token index
and "offset order" is simply ascending slot order.

Index ``N`` in a table stands for a zero "null" token: the zero padding outside
the map used by zero-padded windows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from ..errors import OptionError
from ..options import ConvNNOptions


@dataclass(frozen=True)
class Grid:
    """Layout of ``P + H * W`` tokens: ``num_prefix`` position-less tokens, then an H x W map.

    ``padding`` ``(ph, pw)``: the map is an input of ``(H - 2 ph) x (W - 2 pw)`` zero-padded
    by ``ph`` rows and ``pw`` columns (a convolution's padding). Positional encodings use
    positions in the input; padding tokens, like prefix tokens, get none.
    """

    height: int
    width: int
    num_prefix: int = 0
    padding: tuple[int, int] = (0, 0)

    @classmethod
    def square_patches(cls, num_tokens: int, num_prefix: int) -> Grid | None:
        """``num_prefix`` prefix tokens then the other tokens as a square map (a ViT's
        patches), or ``None`` when they are not a square."""
        patches = num_tokens - num_prefix
        # not math.isqrt: it rejects the symbolic sizes of torch.compile(dynamic=True)
        side = int(math.sqrt(patches) + 0.5) if patches > 0 else 0
        return cls(side, side, num_prefix) if side and side * side == patches else None

    @property
    def input_size(self) -> tuple[int, int]:
        """``(H, W)`` of the input map inside the padding."""
        return self.height - 2 * self.padding[0], self.width - 2 * self.padding[1]

    def input_positions(self, index: Tensor) -> tuple[Tensor, Tensor]:
        """``(row, col)`` of tokens ``index`` in the input map, ``(*index.shape, 2)`` long,
        and whether each token has one: ``(*index.shape,)`` bool, False for prefix and
        padding tokens (their position is then ``(0, 0)``)."""
        pos = self.positions(index) - torch.tensor(self.padding, device=index.device)
        size = torch.tensor(self.input_size, device=index.device)
        inside = ((pos >= 0) & (pos < size)).all(-1) & ~self.is_prefix(index)
        return torch.where(inside[..., None], pos, 0), inside

    @property
    def num_tokens(self) -> int:
        return self.num_prefix + self.height * self.width

    @property
    def far(self) -> int:
        """Distance used between a prefix token and any other token: beyond every map distance."""
        return max(self.height, self.width)

    def positions(self, index: Tensor) -> Tensor:
        """``(row, col)`` of token ``index`` (any shape) -> ``(*index.shape, 2)`` long.

        Prefix tokens get ``(0, 0)``; callers mask them with :meth:`is_prefix`.
        """
        t = (index - self.num_prefix).clamp(min=0)
        return torch.stack((t // self.width, t % self.width), dim=-1)

    def is_prefix(self, index: Tensor) -> Tensor:
        return index < self.num_prefix


@dataclass
class CandidateTable:
    """Candidate tokens of every query.

    Attributes:
        index: ``(Q, M)`` long token indices, ``Q`` is 1 (shared by all queries) or
            ``Nq``; the value ``N`` is the zero null token.
        position: ``(Q, M, 2)`` long ``(row, col)`` of each candidate, also for null
            tokens (their out-of-map position), or ``None`` without a grid.
        has_null: whether the null token may occur (zero-padded windows).
        forced_self: if True, slot 0 holds the query itself and must be selected;
            other slots equal to the query are duplicates and must not be selected.
        every_token: the table is ``(1, N)``: every token, in order (``candidates='all'``).
    """

    index: Tensor
    position: Tensor | None
    forced_self: bool = False
    has_null: bool = False
    every_token: bool = False

    @property
    def size(self) -> int:
        return self.index.shape[-1]

    @property
    def shared(self) -> bool:
        """One row for every query (``index`` is ``(1, M)``); otherwise a row per query,
        ``(..., Nq, M)``, also when there is one query. Per-example tables are per query."""
        return self.index.dim() == 2 and self.index.shape[0] == 1

    def duplicates(self) -> Tensor:
        """``(..., Q, M)`` bool: sampled slots that repeat the forced query of slot 0."""
        dup = self.index[..., 1:] == self.index[..., :1]
        return torch.cat((torch.zeros_like(dup[..., :1]), dup), dim=-1)

    def distinct(self) -> Tensor | None:
        """``(..., Q, M)`` bool mask of the distinct candidates, ``None`` when all are."""
        return ~self.duplicates() if self.forced_self else None


def all_candidates(num_tokens: int, grid: Grid | None, device: torch.device) -> CandidateTable:
    """Every token is a candidate of every query: a shared ``(1, N)`` table."""
    index = torch.arange(num_tokens, device=device).unsqueeze(0)
    position = grid.positions(index) if grid is not None else None
    return CandidateTable(index, position, every_token=True)


def window_candidates(
    query_index: Tensor, grid: Grid, window_shape: tuple[int, int], border: str
) -> CandidateTable:
    """The ``sh x sw`` window around each query, in raster order: ``(Nq, sh*sw)``.

    ``border="pad"``: the window is centred on the query and positions outside the
    map are the zero null token (like a zero-padded convolution).
    ``border="shift"``: the window is shifted inward to lie inside the map, as in
    neighborhood attention (NATTEN); needs ``s <= H`` and ``s <= W``.
    """
    qpos = grid.positions(query_index)  # (Nq, 2)
    axes = []
    for axis, (s, size) in enumerate(zip(window_shape, (grid.height, grid.width), strict=True)):
        r = s // 2
        start = qpos[:, axis : axis + 1] - r
        if border == "shift":
            start = start.clamp(min=0).clamp(max=size - s)
        axes.append(start + torch.arange(s, device=query_index.device))  # (Nq, s)
    sh, sw = window_shape
    rows = axes[0][:, :, None].expand(-1, sh, sw)
    cols = axes[1][:, None, :].expand(-1, sh, sw)
    position = torch.stack((rows, cols), dim=-1).reshape(-1, sh * sw, 2)
    inside = (
        (position[..., 0] >= 0)
        & (position[..., 0] < grid.height)
        & (position[..., 1] >= 0)
        & (position[..., 1] < grid.width)
    )
    index = grid.num_prefix + position[..., 0] * grid.width + position[..., 1]
    index = torch.where(inside, index, torch.full_like(index, grid.num_tokens))
    return CandidateTable(index, position, has_null=border == "pad")


class ConvWindow(NamedTuple):
    """Where a convolution's windows sit on a map, per axis ``(h, w)``: their size, their
    step and the zero padding around the map (``nn.Conv2d``'s ``kernel_size``, ``stride``,
    ``padding``)."""

    kernel_size: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """``(Ho, Wo)``: ``nn.Conv2d``'s output size on a ``height x width`` map."""
        sizes = zip((height, width), self.kernel_size, self.stride, self.padding, strict=True)
        Ho, Wo = (conv_output_size(*axis) for axis in sizes)
        return Ho, Wo


def conv_queries(
    height: int,
    width: int,
    kernel_size: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    materialize_padding: bool,
) -> tuple[Grid, Tensor, tuple[int, int]]:
    """Queries of a ConvNN layer sit at the centres of the matching convolution's windows.

    Args:
        materialize_padding: if True the map is zero-padded (the caller pads the
            input) and padding tokens are candidates; if False the map is the input
            itself and the centres must lie inside it.
    Returns:
        ``(grid, query_index (Ho*Wo,), (Ho, Wo))``.
    """
    out, centres = [], []
    for size, ks, st, pad in zip((height, width), kernel_size, stride, padding, strict=True):
        n = conv_output_size(size, ks, st, pad)
        if n < 1:
            raise OptionError(
                f"input size {height}x{width} is smaller than kernel_size "
                f"{kernel_size} with padding {padding}",
                key="input",
            )
        first = ks // 2 if materialize_padding else ks // 2 - pad
        out.append(n)
        centres.append(first + torch.arange(n) * st)
    pad = (0, 0)
    if materialize_padding:
        height, width, pad = height + 2 * padding[0], width + 2 * padding[1], padding
    index = (centres[0][:, None] * width + centres[1][None, :]).reshape(-1)
    return Grid(height, width, 0, pad), index, (out[0], out[1])


def spatial_sample(grid: Grid, num_samples: int, device: torch.device) -> Tensor:
    """An evenly spaced ``s x s`` grid of map tokens (``s = floor(sqrt(r))``) including
    the border rows and columns: ``(s*s,)`` long token indices in raster order.
    On a one-row map (sequences) it is ``r`` evenly spaced tokens."""
    sh, sw = (1, num_samples) if grid.height == 1 else (math.isqrt(num_samples),) * 2

    def spaced(n: int, size: int) -> Tensor:
        return torch.linspace(0, size - 1, n, device=device, dtype=torch.float64).round().long()

    rows, cols = spaced(sh, grid.height), spaced(sw, grid.width)
    return grid.num_prefix + (rows[:, None] * grid.width + cols[None, :]).reshape(-1)


def random_sample(
    num_tokens: int,
    num_samples: int,
    device: torch.device,
    generator: torch.Generator | None = None,
    shape: tuple[int, ...] = (),
) -> Tensor:
    """``r`` distinct tokens drawn uniformly, sorted into raster order: ``(*shape, r)`` long,
    an independent draw for every index of ``shape``.

    Draws from ``generator`` (on its own device) or, when ``None``, from the global RNG.
    """
    gen_device = generator.device if generator is not None else device
    # no generator keyword unless one is given: torch.compile cannot trace rand with
    # generator=None at symbolic sizes
    rng = {} if generator is None else {"generator": generator}
    if not shape:
        perm = torch.randperm(num_tokens, device=gen_device, **rng)
    else:
        keys = torch.rand(*shape, num_tokens, device=gen_device, **rng)
        perm = keys.argsort(-1)
    return perm[..., :num_samples].sort(-1).values.to(device)


_U32 = 0xFFFFFFFF


def hashed_sample(
    num_tokens: int, num_samples: int, seed: int | Tensor, device: torch.device
) -> Tensor:
    """A fixed pseudo-random choice of ``r`` distinct tokens for evaluation, sorted:
    ``(*seed.shape, r)``, one choice per seed.

    A 32-bit hash of ``(token, seed)`` ranks the tokens: the same on every call and
    device, with no ``torch.Generator`` (so it compiles without graph breaks). Every
    intermediate stays below ``2**63`` (32-bit values times 31-bit odd multipliers, masked),
    so compiled code, which need not wrap int64 overflow as eager does, computes the same
    sample; each step is a bijection of 32-bit values, so tokens never tie.
    """
    seed = torch.as_tensor(seed, device=device, dtype=torch.int64)[..., None] & _U32
    z = (torch.arange(num_tokens, device=device, dtype=torch.int64) + seed * 0x61C88647 + 1) & _U32
    for shift, multiplier in ((16, 0x7FEB352D), (15, 0x2C1B3C6D), (16, 0x297A2D39)):
        z = ((z ^ (z >> shift)) * multiplier) & _U32
    z = z ^ (z >> 16)
    return z.argsort(-1)[..., :num_samples].sort(-1).values


def sampled_candidates(sample: Tensor, query_index: Tensor, grid: Grid | None) -> CandidateTable:
    """The sample ``(..., r)`` plus the query itself in slot 0: ``(..., Nq, 1 + r)``
    (leading dims of a per-example or per-head sample broadcast over the batch dims)."""
    Nq = query_index.shape[0]
    own = query_index[:, None].expand(*sample.shape[:-1], Nq, 1)
    index = torch.cat((own, sample[..., None, :].expand(*sample.shape[:-1], Nq, -1)), dim=-1)
    position = grid.positions(index) if grid is not None else None
    return CandidateTable(index, position, forced_self=True)


def sample_shape(scope: str, batch: tuple[int, ...], training: bool) -> tuple[int, ...]:
    """Leading dims of the ``random`` sample for a call with batch dims ``batch`` (e.g.
    ``(B, heads)``): ``()`` one for the call (``batch`` scope); ``(B, 1, ...)`` one per
    example; ``batch`` one per example and head. In eval a sample is the fixed hashed one,
    the same for every example: ``(1, heads...)`` for the ``head`` scope, else ``()``."""
    if scope == "batch" or not batch or (scope == "example" and not training):
        return ()
    if scope == "example":
        return (batch[0],) + (1,) * (len(batch) - 1)
    return tuple(batch) if training else (1, *batch[1:])


def chebyshev_distance(query_index: Tensor, table: CandidateTable, grid: Grid) -> Tensor:
    """Chebyshev distance from each query to each candidate: ``(Nq or 1, M)`` long.

    With it the ``s*s`` nearest positions are exactly the ``s x s`` window for every
    odd ``s``. Prefix tokens (no position) are at distance 0 from themselves and
    ``max(H, W)`` (beyond every map distance) from every other token.
    """
    qpos = grid.positions(query_index)[:, None, :]  # (Nq, 1, 2)
    assert table.position is not None
    dist = (qpos - table.position).abs().amax(dim=-1)  # (Nq, M)
    q_prefix = grid.is_prefix(query_index)[:, None]
    c_prefix = grid.is_prefix(table.index)
    same = query_index[:, None] == table.index
    prefix_dist = torch.where(same, 0, grid.far)
    return torch.where(q_prefix | c_prefix, prefix_dist, dist)


def candidate_table(
    opts: ConvNNOptions,
    num_tokens: int,
    query_index: Tensor,
    grid: Grid | None,
    sample: Tensor | None = None,
    training: bool = False,
    generator: torch.Generator | None = None,
    batch: tuple[int, ...] = (),
) -> CandidateTable:
    """The candidate table for ``opts.candidates``: ``index`` ``(..., Q, M)``.

    ``random``: ``sample`` if given; else, in training, a fresh draw from
    ``generator`` (or the global RNG) and, in eval, a fixed draw seeded by
    ``opts.sample_seed`` so that evaluation is reproducible; one draw per call, per
    example or per example and head of the batch dims ``batch`` (``opts.sample_scope``).
    """
    device = query_index.device
    if opts.candidates == "all":
        return all_candidates(num_tokens, grid, device)
    if opts.candidates == "window":
        return window_candidates(query_index, grid, opts.window_shape, opts.window_border)  # type: ignore
    if opts.candidates == "spatial":
        return sampled_candidates(spatial_sample(grid, opts.num_samples, device), query_index, grid)  # type: ignore
    shape = sample_shape(opts.sample_scope, batch, training)
    if sample is None and training:
        sample = random_sample(num_tokens, opts.num_samples, device, generator, shape)  # type: ignore
    elif sample is None:
        heads = torch.arange(math.prod(shape), device=device).view(shape)  # one seed per head
        seed = opts.sample_seed + 7919 * heads
        sample = hashed_sample(num_tokens, opts.num_samples, seed, device)  # type: ignore
    return sampled_candidates(sample, query_index, grid)


def conv_output_size(size: int, kernel_size: int, stride: int, padding: int) -> int:
    """Output length of a convolution along one axis (``nn.Conv2d``'s formula)."""
    return (size + 2 * padding - kernel_size) // stride + 1
