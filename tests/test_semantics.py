"""Semantics that tests of the operator against itself cannot catch (issue: independent
audit). Each test compares with an independent dense float64 computation written here,
not with the library's own reference backend.

* ``mixed`` similarity standardizes over the *distinct* candidates of a query (a sampled
  table lists the query twice when the sample also holds it).
* ``euclidean`` selection in float32 is exact for tokens sharing a large common offset.
* Positional encodings use positions in the input map, whatever the padding; padding
  tokens get none (they stay zero tokens).
* Branching ratios: ``floor(ratio * total + 0.5)`` ConvNN channels or heads; a ratio in
  (0, 1) that leaves a branch empty is an error.
* ``ConvNN1d`` with ``spatial`` candidates allows ``k`` up to ``num_samples``.
* ``torch.compile`` of ConvNNAttention with grid options serves new token counts.
"""

from __future__ import annotations

import pytest
import torch

import convnn
from convnn import ConvNNOptions, Grid
from convnn.errors import OptionError

F64 = torch.float64
BACKENDS = ["reference", "fast"]


def _standardize(x: torch.Tensor) -> torch.Tensor:
    """Population z-scores of a 1-D tensor (zeros for a constant one)."""
    std = x.std(unbiased=False)
    return (x - x.mean()) / std if std > 0 else torch.zeros_like(x)


def _mixed_sampled_reference(x, grid, sample, k, lam):
    """Dense mixed(cosine, location) selection and softmax weights over {query} + sample,
    each candidate once; ``x`` ``(N, C)``. Returns per-query sets and outputs ``(N, C)``."""
    N = x.shape[0]
    unit = torch.nn.functional.normalize(x, dim=-1)
    pos = torch.stack((torch.arange(N) // grid.width, torch.arange(N) % grid.width), -1)
    sets, out = [], torch.zeros_like(x)
    for q in range(N):
        cand = torch.tensor(sorted({q, *sample.tolist()}))
        feat = unit[cand] @ unit[q]
        loc = -(pos[cand] - pos[q]).abs().amax(-1).to(F64)
        score = lam * _standardize(feat) + (1 - lam) * _standardize(loc)
        rest = cand != q  # the query takes one slot; the rest by score, ties to lower index
        order = torch.sort(score[rest], descending=True, stable=True).indices[: k - 1]
        chosen = torch.cat((torch.tensor([q]), cand[rest][order]))
        s = torch.cat((score[cand == q], score[rest][order]))
        sets.append(sorted(chosen.tolist()))
        out[q] = (s.softmax(0)[:, None] * x[chosen]).sum(0)
    return sets, out


@pytest.mark.parametrize("backend", BACKENDS)
def test_mixed_statistics_over_distinct_candidates(backend: str) -> None:
    g = torch.Generator().manual_seed(3)
    grid, N = Grid(4, 4), 16
    x = torch.randn(N, 6, dtype=F64, generator=g)
    sample = torch.tensor([0, 2, 5, 7, 8, 13])  # holds several queries (0, 2, 5, ...)
    opts = ConvNNOptions(k=4, similarity="mixed", lam=0.5, candidates="random",
                         num_samples=6, weighting="softmax", kernel="sum")  # fmt: skip
    sets, expected = _mixed_sampled_reference(x, grid, sample, 4, 0.5)
    out = convnn.convnn(x[None], options=opts, grid=grid, sample=sample, backend=backend)[0]
    torch.testing.assert_close(out, expected, atol=1e-10, rtol=0)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("offset", [1e2, 1e3])
def test_euclidean_float32_selection_with_common_offset(backend: str, offset: float) -> None:
    """64 tokens, 16 channels, spread 0.1 around a common offset: float32 selects exactly
    the float64 nearest neighbours, and its distance weights ``-sqrt(d^2 + 1e-8)`` are
    within 1e-3 (the |q|^2 + |k|^2 - 2 q.k expansion leaves about sqrt(float32 eps) x the
    spread near d = 0)."""
    g = torch.Generator().manual_seed(0)
    x = (offset + 0.1 * torch.randn(1, 64, 16, generator=g)).float()
    opts = ConvNNOptions(k=5, similarity="euclidean", weighting="similarity", kernel="sum")
    dist = torch.cdist(x[0].double(), x[0].double())  # exact reference on the same inputs
    nearest = torch.sort(dist, dim=-1, stable=True).indices[:, :5]
    weight = -(dist.gather(-1, nearest).square() + 1e-8).sqrt()
    expected = torch.zeros(64, 64, dtype=F64).scatter(1, nearest, weight)
    identity = torch.eye(64)[None]  # identity values: output row i lists i's weights
    weights = convnn.convnn(identity, x, x, options=opts, backend=backend)[0]
    assert torch.equal((weights != 0).nonzero()[:, 1].view(64, 5), nearest.sort(-1).values)
    torch.testing.assert_close(weights.double(), expected, atol=1e-3, rtol=0)


def _coords_reference(x: torch.Tensor, padding: int, k: int) -> torch.Tensor:
    """ConvNN2d(3x3 queries, padding, cosine over all tokens, coords on the selection
    features, sum kernel) by hand: ``x`` ``(C, H, W)`` -> ``(C, H, W)``."""
    C, H, W = x.shape
    xp = torch.nn.functional.pad(x, (padding,) * 4)
    Hp, Wp = xp.shape[1:]
    rows, cols = torch.meshgrid(torch.arange(Hp), torch.arange(Wp), indexing="ij")
    r, c = rows - padding, cols - padding
    inside = (r >= 0) & (r < H) & (c >= 0) & (c < W)
    xy = torch.stack((2 * c / (W - 1) - 1, 2 * r / (H - 1) - 1)).to(F64) * inside  # (2, Hp, Wp)
    feats = torch.cat((xp, xy)).flatten(1).t()  # (Hp*Wp, C + 2): padding tokens all zero
    values = xp.flatten(1).t()
    unit = feats / feats.norm(dim=-1, keepdim=True).clamp(min=1e-300)
    unit[feats.norm(dim=-1) == 0] = 0
    out = torch.zeros(C, H, W, dtype=F64)
    for i in range(H):
        for j in range(W):
            q = (i + padding) * Wp + (j + padding)  # the query: centre of its window
            score = unit @ unit[q]
            chosen = torch.sort(score, descending=True, stable=True).indices[:k]
            out[:, i, j] = values[chosen].sum(0)
    return out


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("padding", [1, 2])
def test_coords_are_input_positions_and_padding_stays_zero(backend: str, padding: int) -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 3, 5, 6, dtype=F64, generator=g)
    kernel = 2 * padding + 1  # "same" output size
    layer = convnn.ConvNN2d(3, 3, kernel, padding=padding, bias=False, k=7, kernel="sum",
                            positional_encoding="coords", backend=backend)  # fmt: skip
    expected = _coords_reference(x[0], padding, 7)
    torch.testing.assert_close(layer(x)[0], expected, atol=1e-10, rtol=0)


@pytest.mark.parametrize("kind", ["coords", "sincos"])
def test_encoding_of_input_pixel_is_independent_of_padding(kind: str) -> None:
    """Input pixel (0, 0): (-1, -1) coords / the same sincos row for any padding and for
    the unpadded grid of sampled candidates; padding tokens: zeros."""
    from convnn.ops import positional
    from convnn.ops.geometry import conv_queries

    rows = []
    for padding, materialize in ((1, True), (2, True), (1, False)):
        grid, _, _ = conv_queries(5, 6, (3, 3), (1, 1), (padding, padding), materialize)
        pad = grid.padding[0]
        pixel = torch.tensor([pad * grid.width + pad, 0])  # input (0, 0); first padded token
        enc = (
            positional.coords(grid, pixel, F64)
            if kind == "coords"
            else positional.sincos(grid, pixel, 8, F64)
        )
        rows.append(enc[0])
        if materialize:
            assert not enc[1].any()  # a padding token stays a zero token
    assert all(torch.equal(r, rows[0]) for r in rows)
    if kind == "coords":
        assert rows[0].tolist() == [-1.0, -1.0]


@pytest.mark.parametrize(
    ("ratio", "total", "share"), [(0.25, 2, 1), (0.5, 5, 3), (0.5, 7, 4), (0.5, 3, 2), (0.75, 4, 3)]
)
def test_branching_share_rounds_halves_up(ratio: float, total: int, share: int) -> None:
    conv = convnn.BranchingConv2d(4, total, ratio=ratio)
    assert conv.convnn_channels == share and conv.convnn.out_channels == share
    attn = convnn.BranchingAttention(8 * total, num_heads=total, ratio=ratio)
    assert attn.convnn_heads == share


@pytest.mark.parametrize(("ratio", "total"), [(0.1, 4), (0.9, 4), (0.2, 2)])
def test_branching_ratio_leaving_a_branch_empty_is_an_error(ratio: float, total: int) -> None:
    with pytest.raises(OptionError, match=rf"ratio={ratio} of {total} output channels"):
        convnn.BranchingConv2d(4, total, ratio=ratio)
    with pytest.raises(OptionError, match=rf"ratio={ratio} of {total} heads"):
        convnn.BranchingAttention(8 * total, num_heads=total, ratio=ratio)


@pytest.mark.parametrize("backend", BACKENDS)
def test_conv1d_spatial_allows_k_up_to_num_samples(backend: str) -> None:
    """A sequence has ``num_samples`` spatial candidates (evenly spaced), not isqrt(r)^2;
    with k = r + 1 every query aggregates itself and all r samples."""
    x = torch.randn(2, 3, 20, dtype=F64)
    layer = convnn.ConvNN1d(3, 3, 3, padding=1, bias=False, candidates="spatial", k=8,
                            num_samples=8, kernel="sum", backend=backend).double()  # fmt: skip
    samples = torch.linspace(0, 19, 8, dtype=F64).round().long()
    for q, out in enumerate(layer(x).unbind(-1)):
        chosen = [q] + [s for s in samples.tolist() if s != q][:7]
        if q in samples.tolist():  # k - 1 = 7 slots for the 7 other samples
            torch.testing.assert_close(out, x[..., chosen].sum(-1), atol=1e-10, rtol=0)
    with pytest.raises(ValueError, match=r"k=9 .*k <= 8"):
        convnn.ConvNN1d(3, 3, 3, candidates="spatial", num_samples=8, k=9)


GRID_OPTIONS = {
    "location": dict(similarity="location"),
    "mixed": dict(similarity="mixed"),
    "spatial": dict(candidates="spatial", num_samples=9),
    "window": dict(candidates="window", window_size=3, num_prefix_tokens=0),
    "sincos": dict(positional_encoding="sincos"),
}


@pytest.mark.parametrize("name", sorted(GRID_OPTIONS))
def test_compiled_attention_serves_new_token_counts(name: str) -> None:
    torch._dynamo.reset()
    layer = convnn.ConvNNAttention(16, 2, k=4, **GRID_OPTIONS[name]).eval()
    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
    prefix = layer.num_prefix_tokens
    for side in (4, 5, 6):
        x = torch.randn(2, prefix + side * side, 16)
        torch.testing.assert_close(compiled(x), layer(x), atol=1e-5, rtol=1e-5)
