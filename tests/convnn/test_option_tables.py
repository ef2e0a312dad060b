"""One table per option value: every value of ``similarity``, ``weighting`` and ``kernel``
(read from the options' ``Literal`` types, never written out here) has its table entry, and
every path that reads the table accepts the value and equals the reference.

Adding a value to a ``Literal`` without its entry (or an entry without a path's formula)
fails at import; :func:`test_adding_a_value_without_its_entry_fails` shows the checks fail.
"""

from __future__ import annotations

import dataclasses
from typing import get_args

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import convnn
from convnn.errors import OptionError
from convnn.ops import aggregation, scores, similarity
from convnn.options import (
    FeatureSimilarity,
    Kernel,
    Similarity,
    Weighting,
    check_option_table,
)
from convnn.tools.profile import convnn_flops

F64 = torch.float64
SIMILARITIES = get_args(Similarity)
FEATURES = get_args(FeatureSimilarity)
WEIGHTINGS = get_args(Weighting)
KERNELS = get_args(Kernel)
WEIGHTED = [w for w in WEIGHTINGS if scores.WEIGHTINGS[w].weighted]
# (selection, weighting similarity, mixed_feature): every pair, every mixed_feature for mixed
SCORE_CASES = [
    (kind, by, feature)
    for kind in SIMILARITIES
    for by in SIMILARITIES
    for feature in (FEATURES if "mixed" in (kind, by) else FEATURES[:1])
]

TABLES = {
    "similarity": (similarity.SIMILARITIES, SIMILARITIES, similarity.similarity_spec),
    "weighting": (scores.WEIGHTINGS, WEIGHTINGS, scores.weighting_spec),
    "kernel": (aggregation.KERNELS, KERNELS, aggregation.kernel_spec),
}


@pytest.mark.parametrize("option", sorted(TABLES))
def test_every_value_has_its_entry(option: str) -> None:
    table, values, lookup = TABLES[option]
    assert set(table) == set(values)
    for value in values:
        assert lookup(value) is table[value] and table[value].name == value
    check_option_table(option, table, values)


def test_feature_entries_are_the_feature_literal() -> None:
    assert similarity.FEATURE_SIMILARITIES == FEATURES
    for kind in SIMILARITIES:
        spec = similarity.SIMILARITIES[kind]
        layouts = (spec.dense, spec.gathered, spec.window, spec.pair_flops)
        assert spec.feature == (kind in FEATURES)
        assert all(f is not None for f in layouts) == spec.feature, kind
    similarity.check_similarity_table(similarity.SIMILARITIES)


@pytest.mark.parametrize("option", sorted(TABLES))
def test_unknown_value_raises_option_error(option: str) -> None:
    table, values, lookup = TABLES[option]
    with pytest.raises(OptionError, match=rf"{option}='hamming'.*{values[0]!r}") as err:
        lookup("hamming")
    assert err.value.key == option
    for value in values:
        assert repr(value) in str(err.value)


def test_non_feature_similarity_is_refused_where_a_feature_one_is_needed() -> None:
    q = torch.randn(1, 3, 4)
    for kind in set(SIMILARITIES) - set(FEATURES):
        with pytest.raises(OptionError, match="is not allowed") as err:
            similarity.feature_scores(kind, q, q)
        assert err.value.key == "similarity"


def test_adding_a_value_without_its_entry_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    """The import-time checks fail for a value on one side only, or an incomplete entry."""
    table = similarity.SIMILARITIES
    with pytest.raises(TypeError, match=r"similarity table.*no entry for \['hamming'\]"):
        similarity.check_similarity_table(table, (*SIMILARITIES, "hamming"))
    cosine = table["cosine"]
    # a new feature similarity whose author forgot the gathered (blocked) formula
    partial = dict(table, hamming=dataclasses.replace(cosine, name="hamming", gathered=None))
    with pytest.raises(TypeError, match=r"'hamming' has no \['gathered'\]"):
        similarity.check_similarity_table(
            partial, (*SIMILARITIES, "hamming"), (*FEATURES, "hamming")
        )
    # an entry without a value in the literal
    monkeypatch.setitem(similarity.SIMILARITIES, "hamming", cosine)
    with pytest.raises(TypeError, match=r"entries for no value \['hamming'\]"):
        similarity.check_similarity_table(similarity.SIMILARITIES)
    for option in ("weighting", "kernel"):
        values = (*TABLES[option][1], "hamming")
        with pytest.raises(TypeError, match=rf"{option} table.*no entry for \['hamming'\]"):
            check_option_table(option, TABLES[option][0], values)


# --- every path takes every value and equals the reference (float64) ---------------------


def _tokens(backend: str, x: torch.Tensor, **settings) -> list[torch.Tensor]:
    """Output and gradients of a ConvNNAttention under ``backend`` (same parameters)."""
    torch.manual_seed(0)
    layer = convnn.ConvNNAttention(16, 2, num_prefix_tokens=0, backend=backend, **settings)
    layer = layer.double()
    leaf = x.detach().requires_grad_(True)
    y = layer(leaf)
    return [y, *torch.autograd.grad(y.square().sum(), [leaf, *layer.parameters()])]


def _map(backend: str, x: torch.Tensor, **settings) -> list[torch.Tensor]:
    """Output and gradients of a 3x3 ConvNN2d whose selection is its whole window."""
    torch.manual_seed(0)
    layer = convnn.ConvNN2d(4, 4, 3, padding=1, candidates="window", backend=backend, **settings)
    layer = layer.double()
    leaf = x.detach().requires_grad_(True)
    y = layer(leaf)
    return [y, *torch.autograd.grad(y.square().sum(), [leaf, *layer.parameters()])]


def _assert_same(got: list[torch.Tensor], expected: list[torch.Tensor]) -> None:
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=0)


def _x(*shape: int) -> torch.Tensor:
    return torch.randn(shape, dtype=F64, generator=torch.Generator().manual_seed(1)) + 0.5


@pytest.mark.parametrize(("kind", "weighted_by", "mixed_feature"), SCORE_CASES)
def test_blocked_equals_reference(kind: str, weighted_by: str, mixed_feature: str) -> None:
    """Selection by ``kind``, weights by ``weighted_by`` (gathered scores), each value."""
    settings = dict(
        k=3,
        similarity=kind,
        weighting="similarity",
        weighting_similarity=weighted_by,
        mixed_feature=mixed_feature,
    )
    x = _x(2, 9, 16)
    _assert_same(_tokens("blocked", x, **settings), _tokens("reference", x, **settings))


@pytest.mark.parametrize("weighting", WEIGHTINGS)
@pytest.mark.parametrize("weighted_by", FEATURES)
@pytest.mark.parametrize("kind", FEATURES)
def test_dense_equals_reference(kind: str, weighted_by: str, weighting: str) -> None:
    settings = dict(
        k=3, similarity=kind, weighting=weighting, weighting_similarity=weighted_by, kernel="sum"
    )
    x = _x(2, 9, 16)
    _assert_same(_tokens("dense", x, **settings), _tokens("reference", x, **settings))


@pytest.mark.parametrize("weighting", WEIGHTED)
@pytest.mark.parametrize(
    ("weighted_by", "mixed_feature"), sorted({case[1:] for case in SCORE_CASES})
)
def test_window_scores_equal_reference(weighted_by: str, mixed_feature: str, weighting: str):
    """The ``shifts`` map path (window scores of every tap) for each weighting similarity."""
    settings = dict(
        similarity="location",
        weighting=weighting,
        weighting_similarity=weighted_by,
        mixed_feature=mixed_feature,
        kernel="depthwise",
    )
    x = _x(2, 4, 5, 6)
    _assert_same(_map("shifts", x, **settings), _map("reference", x, **settings))


@pytest.mark.parametrize("kernel", KERNELS)
def test_each_kernel_on_every_path(kernel: str) -> None:
    """Gathered (blocked), as a convolution (conv) and, where it applies, by shifts."""
    x = _x(2, 9, 16)
    settings = dict(k=3, similarity="euclidean", weighting="softmax", kernel=kernel)
    _assert_same(_tokens("blocked", x, **settings), _tokens("reference", x, **settings))
    xm = _x(2, 4, 5, 6)
    for backend, weighting in (("conv", "none"), ("shifts", WEIGHTED[0])):
        settings = dict(similarity="location", weighting=weighting, kernel=kernel)
        if backend == "shifts" and kernel == "standard":
            continue  # shifts has no standard kernel (it needs a per-tap weight)
        _assert_same(_map(backend, xm, **settings), _map("reference", xm, **settings))


@pytest.mark.parametrize("weighted_by", [None, *SIMILARITIES])
@pytest.mark.parametrize("kind", SIMILARITIES)
def test_profiler_counts_each_similarity(kind: str, weighted_by: str | None) -> None:
    """``2 Nq M D`` per score of a similarity that reads features, 0 for location; scores
    of the weights again (``k`` neighbors, or all ``M`` candidates when standardized)."""
    settings = dict(similarity=kind, weighting="softmax", weighting_similarity=weighted_by)
    layer = convnn.ConvNN2d(4, 8, 3, padding=1, k=5, **settings)
    flops = convnn_flops(layer, (2, 4, 6, 6))
    nq, m, d, k = 2 * 36, 8 * 8, 4, 5  # queries, padded map tokens, channels, neighbors
    reads = similarity.similarity_spec(kind).feature_kind("cosine") is not None
    assert flops["similarity"] == (2 * nq * m * d if reads else 0)
    again = weighted_by or kind
    spec = similarity.similarity_spec(again)
    extra = 0
    if again != kind and spec.feature_kind("cosine") is not None:
        extra = 2 * nq * (m if spec.over_candidates else k) * d
    assert flops["weighting"] == nq * k * 4 + extra


@pytest.mark.parametrize("kernel", KERNELS)
def test_profiler_kernel_flops_match_the_convolution(kernel: str) -> None:
    """The kernel's FLOPs equal what the counter counts for its ``F.conv2d`` (kernels with
    weights), or half of it (a weightless kernel only adds)."""
    spec = aggregation.KERNELS[kernel]
    B, C, O, H, W = 2, 4, 8, 5, 6
    O = O if spec.shapes(C, O, 9) else C
    shapes = spec.shapes(C, O, 9)
    params = {name: torch.randn(shape) for name, shape in shapes.items()}
    x = torch.randn(B, C, H, W)
    counter = FlopCounterMode(display=False)
    with counter:
        spec.conv2d(
            x, params.get("weight"), params.get("pointwise_weight"), None, (3, 3), (1, 1), (1, 1)
        )
    counted = counter.get_total_flops()
    layer = convnn.ConvNN2d(C, O, 3, padding=1, candidates="window", kernel=kernel)
    agg = convnn_flops(layer, (B, C, H, W))["aggregation"]
    assert agg == (counted if shapes else counted // 2)
