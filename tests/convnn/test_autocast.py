"""ConvNN under CPU autocast (float16 and bfloat16): finite results, float32 selection.

Every option combination of ``test_options.py`` (functional, both backends), the
same combinations and the map fast paths (``F.conv2d``, shifted windows, fused
window attention) as ``ConvNN2d`` layers, and the layers ``ConvNNAttention``,
``BranchingAttention`` and ``BranchingConv2d`` run forward and backward under
autocast on inputs with a zero token, duplicate tokens and entries of magnitude
1e4, and once more without autocast (float32) for comparison.

* **Finite.** Each output and gradient is finite under autocast whenever its
  float32 value fits the autocast dtype. bfloat16 has float32's range, so there
  every tensor must be finite. float16 ends at 65504, which values of magnitude
  1e4 exceed by themselves once a few are summed (the ``sum`` kernel), or raised to
  the third power (raw ``dot``/``euclidean`` similarity weights): tensors whose
  float32 values do not fit are let off, as for any float16 computation.
* **Selection in float32.** Every top-k selection goes through
  :func:`convnn.ops.topk.top_k`; a spy checks that it ranks float32 scores and that
  the selected index sets (per query, order-insensitive) equal those of the float32
  run on at least 99.9% of the queries.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from convnn import (
    BranchingAttention,
    BranchingConv2d,
    ConvNN2d,
    ConvNNAttention,
)
from convnn.backends import blocked_gather as gather_ops
from convnn.ops import topk

_spec = importlib.util.spec_from_file_location(
    "convnn_test_options", Path(__file__).with_name("test_options.py")
)
test_options = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(test_options)

dtypes = pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["f16", "bf16"])
backends = pytest.mark.parametrize("backend", test_options.BACKENDS)
SCALE = 1e4
MIN_MATCH = 0.999  # share of queries whose selected set must equal the float32 one


class SelectionSpy:
    """Stands in for :func:`~convnn.ops.topk.top_k`; records the dtype of the ranked
    scores and the selected token indices of every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[torch.dtype, torch.Tensor]] = []
        self._top_k = topk.top_k

    def __call__(self, scores: torch.Tensor, k: int, *args, **kwargs):
        index, slots = self._top_k(scores, k, *args, **kwargs)
        self.calls.append((scores.dtype, index))
        return index, slots

    def take(self) -> torch.Tensor | None:
        """The sets selected since the last ``take``: ``(queries, k)``, sorted per query
        (``None`` if nothing was selected); every one ranked float32 scores."""
        calls, self.calls = self.calls, []
        if not calls:
            return None
        for dtype, _ in calls:
            assert dtype == torch.float32, f"selection ranked {dtype} scores"
        return torch.cat([index.sort(-1).values.flatten(0, -2) for _, index in calls])


@pytest.fixture
def spy(monkeypatch) -> SelectionSpy:
    """Records every selection: the generic path and the small-N dense path."""
    recorder = SelectionSpy()
    monkeypatch.setattr(topk, "top_k", recorder)
    return recorder


def match_ratio(reference: torch.Tensor, actual: torch.Tensor) -> float:
    """Share of queries whose selected index sets are equal."""
    assert reference.shape == actual.shape
    return (reference == actual).all(-1).double().mean().item()


def degenerate(x: torch.Tensor, dim: int) -> torch.Tensor:
    """A leaf: ``x`` times 1e4, token 0 a zero vector, tokens 2 and 3 copies of token 1
    (tokens along ``dim``)."""
    x = x.detach() * SCALE
    x.select(dim, 0).zero_()
    for copy in (2, 3):
        x.select(dim, copy).copy_(x.select(dim, 1))
    return x.requires_grad_()


def run(fn: Callable[[], torch.Tensor], inputs: dict, dtype: torch.dtype | None) -> dict:
    """``fn()`` under autocast to ``dtype`` (``None``: no autocast), then the gradients
    w.r.t. ``inputs`` of a mean-like loss (a random projection over the output size)."""
    with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
        out = fn()
    proj = torch.randn(out.shape, generator=torch.Generator().manual_seed(1)) / out.numel()
    grads = torch.autograd.grad(
        (out.float() * proj).sum(), list(inputs.values()), allow_unused=True
    )
    return {"output": out} | {f"grad {n}": g for n, g in zip(inputs, grads, strict=True)}


def assert_finite(actual: dict, reference: dict, dtype: torch.dtype) -> list[str]:
    """Every tensor of ``actual`` whose float32 ``reference`` fits ``dtype`` (with a
    factor 2 to spare) is finite. Returns the names let off because they do not fit."""
    limit = torch.finfo(dtype).max / 2
    let_off = []
    for name, ref in reference.items():
        if ref is None:
            continue
        assert torch.isfinite(ref).all(), f"float32 {name} is not finite"
        if ref.abs().max() > limit:
            let_off.append(name)
        else:
            assert torch.isfinite(actual[name]).all(), f"{name} is not finite under {dtype}"
    assert dtype == torch.float16 or not let_off, let_off
    return let_off


def check_autocast(
    fn: Callable[[], torch.Tensor], inputs: dict, dtype: torch.dtype, spy: SelectionSpy
) -> torch.Tensor | None:
    """Run ``fn`` in float32 and under autocast: finite where representable, selection
    from float32 scores, at least 99.9% equal sets. Returns the float32 sets."""
    reference = run(fn, inputs, None)
    ref_sets = spy.take()
    actual = run(fn, inputs, dtype)
    sets = spy.take()
    assert_finite(actual, reference, dtype)
    assert (ref_sets is None) == (sets is None)
    if sets is not None:
        assert match_ratio(ref_sets, sets) >= MIN_MATCH
    return ref_sets


def case_inputs(case: dict) -> dict[str, torch.Tensor]:
    """Degenerate value/query/key; kernel weights with the standard deviation of
    ``nn.Conv2d``'s init, ``1/sqrt(3 fan_in)``, so outputs keep the inputs' scale."""
    inputs = test_options.case_inputs(case)
    for name, t in inputs.items():
        if name in ("value", "query", "key"):
            inputs[name] = degenerate(t, dim=1)
        elif name in ("weight", "pointwise_weight"):
            inputs[name] = (t.detach() / (3 * t[0].numel()) ** 0.5).requires_grad_()
    return inputs


@dtypes
@backends
@pytest.mark.parametrize("case", test_options.CASES, ids=test_options.case_id)
def test_functional_autocast(case: dict, backend: str, dtype, spy: SelectionSpy) -> None:
    """Every option combination of the functional operator."""
    inputs = case_inputs(case)
    sets = check_autocast(lambda: test_options.run_case(case, inputs, backend), inputs, dtype, spy)
    if sets is None:  # nothing to choose: k = N, every token is a neighbor
        assert test_options.case_options(case).k is None


LAYER_OPTIONS = (
    "similarity",
    "weighting",
    "weighting_similarity",
    "candidates",
    "num_samples",
    "window_border",
    "order",
    "kernel",
    "positional_encoding",
    "coords_to_values",
)


def conv_cases() -> dict[str, dict]:
    """``ConvNN2d`` keyword arguments: the covering array of ``test_options.py`` (k = 9
    for its k=None rows) and the map fast paths, which select whole 3x3 windows."""
    cases = {}
    for case in test_options.CASES:
        opts = test_options.case_options(case)
        kwargs = {name: getattr(opts, name) for name in LAYER_OPTIONS}
        cases[test_options.case_id(case)] = kwargs | {"k": opts.k or 9}
    window = {"candidates": "window", "k": 9}
    for kernel in test_options.AXES["kernel"]:
        cases[f"conv2d-{kernel}"] = window | {"similarity": "location", "kernel": kernel}
    for score in ("dot", "cosine", "euclidean", "location", "mixed"):
        for weighting in ("similarity", "softmax"):
            cases[f"shifts-{score}-{weighting}"] = window | {
                "similarity": "dot",
                "weighting": weighting,
                "weighting_similarity": score,
                "kernel": "separable",
            }
    cases["window-attention"] = window | {
        "similarity": "dot",
        "weighting": "softmax",
        "kernel": "sum",
    }
    return cases


CONV_CASES = conv_cases()


def map_input(channels: int, size: tuple[int, int] = (6, 7)) -> torch.Tensor:
    """A degenerate ``(2, C, H, W)`` map (tokens are the positions in raster order)."""
    x = torch.randn(2, channels, size[0] * size[1], generator=torch.Generator().manual_seed(0))
    return degenerate(x, dim=2).detach().view(2, channels, *size).requires_grad_()


def token_input(dim: int, prefix: int, side: int = 4) -> torch.Tensor:
    """Degenerate ``(2, prefix + side^2, dim)`` tokens: class tokens, then the patches."""
    x = torch.randn(2, prefix + side * side, dim, generator=torch.Generator().manual_seed(0))
    return degenerate(x, dim=1)


def check_layer(layer: nn.Module, x: torch.Tensor, dtype, spy: SelectionSpy) -> None:
    """:func:`check_autocast` with gradients w.r.t. the input and every parameter, in
    eval mode (random candidates are then the same fixed draw in both runs)."""
    layer.eval()
    check_autocast(lambda: layer(x), {"x": x, **dict(layer.named_parameters())}, dtype, spy)


@dtypes
@backends
@pytest.mark.parametrize("name", sorted(CONV_CASES))
def test_convnn2d_autocast(name: str, backend: str, dtype, spy: SelectionSpy) -> None:
    """ConvNN2d: every option combination and every map fast path."""
    kwargs = CONV_CASES[name] | {"backend": backend}
    value_channels = 4 + 2 * kwargs.get("coords_to_values", False)
    out = {"sum": value_channels, "depthwise": 2 * value_channels}.get(kwargs["kernel"], 6)
    torch.manual_seed(0)
    check_layer(ConvNN2d(4, out, 3, padding=1, **kwargs), map_input(4), dtype, spy)


MODULE_CASES = {
    "attention-dot": lambda: ConvNNAttention(16, 2, k=5),
    "attention-cosine-rope": lambda: ConvNNAttention(
        16, 2, k=5, similarity="cosine", positional_encoding="rope"
    ),
    "attention-euclidean-random-standard": lambda: ConvNNAttention(
        16, 2, k=4, similarity="euclidean", candidates="random", num_samples=8, kernel="standard"
    ),
    "attention-mixed-window-sincos": lambda: ConvNNAttention(
        16,
        2,
        k=5,
        similarity="mixed",
        candidates="window",
        window_size=3,
        positional_encoding="sincos",
        num_prefix_tokens=0,
    ),  # fmt: skip
    "attention-location-cosine-learned": lambda: ConvNNAttention(
        16,
        2,
        k=5,
        similarity="location",
        weighting="similarity",
        weighting_similarity="cosine",
        kernel="depthwise",
        positional_encoding="learned",
    ),  # fmt: skip
    "attention-location-mixed": lambda: ConvNNAttention(
        16, 2, k=5, similarity="location", weighting_similarity="mixed", mixed_feature="dot"
    ),
    "attention-all-tokens": lambda: ConvNNAttention(16, 2, k=None),
    "branching-attention": lambda: BranchingAttention(
        16, 4, ratio=0.5, k=3, similarity="cosine", kernel="separable"
    ),
    "branching-conv2d": lambda: BranchingConv2d(
        4, 8, ratio=0.5, mix=True, similarity="dot", weighting="softmax"
    ),
}


@dtypes
@pytest.mark.parametrize("name", sorted(MODULE_CASES))
def test_layers_autocast(name: str, dtype, spy: SelectionSpy) -> None:
    """ConvNNAttention (q/k from a learned projection), BranchingAttention, BranchingConv2d."""
    torch.manual_seed(0)
    layer = MODULE_CASES[name]()
    prefix = getattr(layer, "num_prefix_tokens", None)
    x = map_input(4) if prefix is None else token_input(16, prefix)
    check_layer(layer, x, dtype, spy)


@dtypes
@pytest.mark.parametrize("similarity", ["dot", "cosine", "euclidean", "mixed"])
def test_attention_selection_matches_float32(similarity: str, dtype, spy: SelectionSpy) -> None:
    """Selection by features of the learned q/k projection, which autocast would run in
    16 bits: of 8 x 2 heads x 257 queries (4112 index sets), at least 99.9% equal the
    float32 ones. (Rounded to 16 bits, q and k would change 0.5% to 7% of them.)"""
    torch.manual_seed(0)
    layer = ConvNNAttention(64, 2, k=9, similarity=similarity, positional_encoding="rope")
    x = torch.randn(8, 1 + 16 * 16, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        layer(x)
        ref_sets = spy.take()
        with torch.autocast("cpu", dtype=dtype):
            out = layer(x)
        sets = spy.take()
    assert ref_sets.shape[0] == 8 * 2 * 257
    assert match_ratio(ref_sets, sets) >= MIN_MATCH
    assert out.dtype == dtype  # the other projections still run in 16 bits
    layer.float32_selection = False  # the documented speed switch: 16-bit q and k select
    with torch.no_grad(), torch.autocast("cpu", dtype=dtype):
        layer(x)
    assert match_ratio(ref_sets, spy.take()) < MIN_MATCH


def test_weighted_gather_sum_keeps_its_dtype() -> None:
    """The fast ``sum`` kernel is a weighted sum in the values' dtype: float32 values give
    the float32 result under autocast too (its blocked matmul is not autocast)."""
    g = torch.Generator().manual_seed(0)
    v, w = torch.randn(2, 30, 8, generator=g) * SCALE, torch.rand(2, 30, 9, generator=g)
    index = torch.randint(0, 30, (2, 30, 9), generator=g)
    expected = gather_ops.weighted_gather_sum(v, index, w)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = gather_ops.weighted_gather_sum(v, index, w)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, expected, rtol=1e-6, atol=0)
