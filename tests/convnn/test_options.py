"""Every ConvNN option runs forward and backward with finite results (docs/method.md §1, §3).

The functional cases form a pairwise covering array over the option axes (every
pair of values of two axes occurs in some case); ``test_gradients.py`` reuses
``CASES`` to compare the two backends on exactly these combinations.
"""

from __future__ import annotations

from itertools import combinations
from typing import get_args

import pytest
import torch

import convnn
from convnn import (
    BranchingAttention,
    BranchingConv2d,
    ConvNN1d,
    ConvNN2d,
    ConvNNAttention,
    ConvNNOptions,
    Grid,
)
from convnn.functional import candidate_table, select_neighbors
from convnn.ops.geometry import chebyshev_distance
from convnn.options import (
    Candidates,
    Kernel,
    Order,
    PositionalEncoding,
    Similarity,
    Weighting,
    WindowBorder,
)

# Every value of every option axis, read from its Literal (window candidates once per
# border, coords once more with coords_to_values).
SAMPLED = {"random": {"num_samples": 8}, "spatial": {"num_samples": 9}}
CANDIDATES: dict[str, dict] = {}
for _c in get_args(Candidates):
    if _c == "window":
        for _border in get_args(WindowBorder):
            CANDIDATES[f"window_{_border}"] = {"window_size": 3, "window_border": _border}
    else:
        CANDIDATES[_c] = SAMPLED.get(_c, {})
POSITIONAL = [
    v for pe in get_args(PositionalEncoding) for v in (pe, "coords_values")[: 1 + (pe == "coords")]
]
AXES = {
    "candidates": list(CANDIDATES),
    "similarity": list(get_args(Similarity)),
    "weighting": list(get_args(Weighting)),
    "weighting_similarity": [None, *get_args(Similarity)],
    "kernel": list(get_args(Kernel)),
    "positional_encoding": POSITIONAL,
    "order": list(get_args(Order)),
}
B, H, W, C, K = 2, 4, 5, 4, 3
BACKENDS = ["reference", "fast"]


def pairwise(axes: dict[str, list]) -> list[dict]:
    """Greedy all-pairs covering array over ``axes`` (deterministic)."""
    names, sizes = list(axes), [len(v) for v in axes.values()]

    def key(m: int, a: int, n: int, b: int) -> tuple[int, int, int, int]:
        return (m, a, n, b) if m < n else (n, b, m, a)

    todo = {
        (i, a, j, b)
        for i, j in combinations(range(len(names)), 2)
        for a in range(sizes[i])
        for b in range(sizes[j])
    }
    rows = []
    while todo:
        i, a, j, b = min(todo)
        row = {i: a, j: b}
        for m in range(len(names)):
            if m not in row:
                row[m] = max(
                    range(sizes[m]),
                    key=lambda v, m=m: sum(key(m, v, n, w) in todo for n, w in row.items()),
                )
        todo -= {key(m, row[m], n, row[n]) for m, n in combinations(range(len(names)), 2)}
        rows.append({names[m]: axes[names[m]][v] for m, v in sorted(row.items())})
    return rows


# k=None (every token) with softmax and the sum kernel; with dot it is the attention case.
CASES = pairwise(AXES) + [
    {"candidates": "all", "similarity": s, "weighting": "softmax", "kernel": "sum", "k": None}
    for s in ("dot", "cosine")
]


def case_id(case: dict) -> str:
    return "-".join(str(v) for v in case.values())


def case_options(case: dict) -> ConvNNOptions:
    """The :class:`ConvNNOptions` of one covering-array row."""
    pe = case.get("positional_encoding", "none")
    return ConvNNOptions(
        k=case.get("k", K),
        similarity=case["similarity"],
        weighting=case["weighting"],
        weighting_similarity=case.get("weighting_similarity"),
        candidates=case["candidates"].split("_")[0],
        kernel=case["kernel"],
        positional_encoding="coords" if pe == "coords_values" else pe,
        coords_to_values=pe == "coords_values",
        order=case.get("order", "auto"),
        **CANDIDATES[case["candidates"]],
    )


def case_inputs(case: dict, dtype=torch.float32, seed: int = 0) -> dict[str, torch.Tensor]:
    """Leaf tensors (requires_grad) for :func:`run_case`: value, query, key and kernel params."""
    opts = case_options(case)
    g = torch.Generator().manual_seed(seed)
    k = opts.k or H * W
    cv = C + 2 * opts.coords_to_values  # value channels
    out = {"standard": 3, "depthwise": 2 * cv, "separable": 3, "sum": cv}[opts.kernel]
    shapes = {"value": (B, H * W, C), "query": (B, H * W, C), "key": (B, H * W, C)}
    shapes["bias"] = (out,)
    if opts.kernel == "standard":
        shapes["weight"] = (out, cv, k)
    elif opts.kernel == "depthwise":
        shapes["weight"] = (out, k)
    elif opts.kernel == "separable":
        shapes.update(weight=(cv, k), pointwise_weight=(out, cv))
    if opts.positional_encoding == "learned":
        shapes["pos_table"] = (C, 3, 3)
    return {
        name: torch.randn(shape, generator=g, dtype=dtype).requires_grad_()
        for name, shape in shapes.items()
    }


def run_case(case: dict, inputs: dict[str, torch.Tensor], backend: str) -> torch.Tensor:
    """The functional ConvNN of ``case`` on ``inputs`` (eval mode: fixed random sample)."""
    return convnn.convnn(
        **inputs, options=case_options(case), grid=Grid(H, W), backend=backend, training=False
    )


def forward_backward(fn, inputs: dict[str, torch.Tensor]):
    """``fn()``, then the gradients of a random projection of it w.r.t. every input."""
    out = fn()
    proj = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=out.dtype)
    grads = torch.autograd.grad((out * proj).sum(), list(inputs.values()), allow_unused=True)
    return out, dict(zip(inputs, grads, strict=True))


def assert_finite(out: torch.Tensor, grads: dict) -> None:
    assert torch.isfinite(out).all()
    for name, grad in grads.items():
        assert grad is None or torch.isfinite(grad).all(), name


def test_covering_array_covers_every_value() -> None:
    """Each option value occurs in at least one case."""
    for name, values in AXES.items():
        assert {case[name] for case in CASES if name in case} == set(values), name


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_option_combination(case: dict, backend: str) -> None:
    """Forward and backward run with finite outputs and gradients; values get a gradient."""
    inputs = case_inputs(case)
    out, grads = forward_backward(lambda: run_case(case, inputs, backend), inputs)
    assert out.shape == (B, H * W, inputs["bias"].shape[0])
    assert_finite(out, grads)
    assert grads["value"] is not None and grads["value"].abs().sum() > 0


EDGE_CASES = [(sim, weighting) for sim in get_args(Similarity) for weighting in get_args(Weighting)]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("scale", [1.0, 1e4])
@pytest.mark.parametrize(("similarity", "weighting"), EDGE_CASES)
def test_degenerate_inputs(similarity: str, weighting: str, scale: float, backend: str) -> None:
    """A zero token, duplicate tokens (zero distances) and 1e4 magnitudes stay finite."""
    x = torch.randn(B, H * W, C, generator=torch.Generator().manual_seed(0)) * scale
    x[:, 0] = 0.0
    x[:, 2] = x[:, 1]
    x[:, 3] = x[:, 1]
    x.requires_grad_()
    weight = torch.randn(3, C, K, requires_grad=True)
    opts = ConvNNOptions(k=K, similarity=similarity, weighting=weighting, kernel="standard")
    inputs = {"x": x, "weight": weight}

    def fn():
        return convnn.convnn(x, options=opts, weight=weight, grid=Grid(H, W), backend=backend)

    out, grads = forward_backward(fn, inputs)
    assert_finite(out, grads)
    assert grads["x"] is not None


def assert_all_parameters_have_grad(module: torch.nn.Module) -> None:
    """Every parameter of ``module`` received a finite gradient."""
    for name, p in module.named_parameters():
        assert p.grad is not None, f"{name} has no gradient"
        assert torch.isfinite(p.grad).all(), name


@pytest.mark.parametrize(
    ("stride", "padding", "kwargs"),
    [
        (1, "same", {}),
        (2, "same", {"similarity": "location"}),
        (2, 1, {"candidates": "window", "weighting": "softmax", "weighting_similarity": "dot"}),
        (1, 1, {"candidates": "spatial", "num_samples": 16, "kernel": "separable"}),
        (1, 0, {"positional_encoding": "learned", "similarity": "dot", "weighting": "softmax"}),
    ],
)
def test_convnn2d_any_size(stride: int, padding, kwargs: dict) -> None:
    """One ConvNN2d takes maps of any size and matches nn.Conv2d's output shape."""
    layer = ConvNN2d(3, 6, 3, stride, padding, **kwargs)
    pad = 1 if padding == "same" else padding
    conv = torch.nn.Conv2d(3, 6, 3, stride, pad)
    for h, w in [(8, 8), (5, 11), (12, 7)]:
        layer.zero_grad()
        x = torch.randn(2, 3, h, w)
        out = layer(x)
        assert out.shape == conv(x).shape
        out.square().mean().backward()
        assert_all_parameters_have_grad(layer)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"similarity": "euclidean"},
        {"candidates": "window", "similarity": "location", "kernel": "depthwise"},
        {"candidates": "spatial", "num_samples": 5, "weighting": "softmax"},
        {"candidates": "random", "num_samples": 6, "positional_encoding": "coords"},
    ],
)
def test_convnn1d_shape(kwargs: dict) -> None:
    """ConvNN1d maps (B, C, L) to nn.Conv1d's output shape, and every parameter learns."""
    out_channels = 6 if kwargs.get("kernel") == "depthwise" else 5
    layer = ConvNN1d(3, out_channels, kernel_size=3, stride=2, padding="same", **kwargs)
    for length in (16, 9):
        layer.zero_grad()
        x = torch.randn(2, 3, length)
        out = layer(x)
        assert out.shape == torch.nn.Conv1d(3, out_channels, 3, 2, 1)(x).shape
        out.sum().backward()
        assert_all_parameters_have_grad(layer)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"kernel": "standard", "positional_encoding": "learned"},
        {"similarity": "location", "kernel": "depthwise", "positional_encoding": "rope"},
        {"candidates": "spatial", "num_samples": 9, "positional_encoding": "sincos"},
        {"candidates": "random", "num_samples": 12, "kernel": "separable"},
    ],
)
def test_attention_with_class_token(kwargs: dict) -> None:
    """ConvNNAttention with a class token handles 1+16 then 1+25 tokens."""
    layer = ConvNNAttention(16, num_heads=2, k=5, **kwargs)
    for n in (1 + 16, 1 + 25):
        layer.zero_grad()
        out = layer(torch.randn(2, n, 16))
        assert out.shape == (2, n, 16)
        out.square().mean().backward()
        assert_all_parameters_have_grad(layer)


@pytest.mark.parametrize("ratio", [0.0, 0.5, 1.0])
def test_branching_conv2d(ratio: float) -> None:
    """Branching conv: expected shape, only the used branches exist, all parameters learn."""
    layer = BranchingConv2d(3, 8, ratio=ratio, mix=True, similarity="dot", weighting="softmax")
    assert (layer.convnn is None) == (ratio == 0)
    assert (layer.conv is None) == (ratio == 1)
    out = layer(torch.randn(2, 3, 6, 7))
    assert out.shape == (2, 8, 6, 7)
    out.square().mean().backward()
    assert_all_parameters_have_grad(layer)


@pytest.mark.parametrize("ratio", [0.0, 0.5, 1.0])
def test_branching_attention(ratio: float) -> None:
    """Branching attention: expected shape, ConvNN heads only where used, all parameters learn."""
    layer = BranchingAttention(16, num_heads=2, ratio=ratio, k=4, kernel="standard")
    assert layer.convnn_heads == round(2 * ratio)
    assert (layer.weight is None) == (ratio == 0)
    out = layer(torch.randn(2, 17, 16))
    assert out.shape == (2, 17, 16)
    out.square().mean().backward()
    assert_all_parameters_have_grad(layer)


def random_layer() -> ConvNN2d:
    return ConvNN2d(4, 4, 3, padding=1, k=3, candidates="random", num_samples=8)


def test_random_candidates_eval_is_reproducible() -> None:
    """In eval mode two calls on the same input give identical outputs."""
    layer, x = random_layer().eval(), torch.randn(2, 4, 8, 8)
    torch.testing.assert_close(layer(x), layer(x), rtol=0, atol=0)


def test_random_candidates_training_draws_fresh_samples() -> None:
    """In training mode two calls differ; the same global seed makes them equal."""
    layer, x = random_layer().train(), torch.randn(2, 4, 8, 8)
    assert not torch.equal(layer(x), layer(x))
    torch.manual_seed(3)
    first = layer(x)
    torch.manual_seed(3)
    torch.testing.assert_close(layer(x), first, rtol=0, atol=0)


def test_random_candidates_generator_is_reproducible() -> None:
    """The functional with ``generator`` seeded alike draws the same candidates."""
    x = torch.randn(1, 64, 4)
    opts = ConvNNOptions(k=3, candidates="random", num_samples=8, kernel="sum")

    def call():
        gen = torch.Generator().manual_seed(0)
        return convnn.convnn(x, options=opts, training=True, generator=gen)

    torch.testing.assert_close(call(), call(), rtol=0, atol=0)


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize(
    "candidates",
    [{"candidates": "random", "num_samples": 8}, {"candidates": "spatial", "num_samples": 9}],
)
@pytest.mark.parametrize("similarity", ["dot", "euclidean", "location"])
def test_query_is_its_own_neighbor(candidates: dict, similarity: str, training: bool) -> None:
    """With k=1 and the standard kernel the output is the query's own value times the weight."""
    x, weight = torch.randn(2, 64, 4), torch.randn(5, 4, 1)
    opts = ConvNNOptions(k=1, similarity=similarity, kernel="standard", **candidates)
    out = convnn.convnn(x, options=opts, weight=weight, grid=Grid(8, 8), training=training)
    torch.testing.assert_close(out, x @ weight[..., 0].t())


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("order", ["rank", "offset"])
@pytest.mark.parametrize("similarity", get_args(Similarity))
@pytest.mark.parametrize("candidates", list(SAMPLED))
def test_selection_holds_query_once(candidates: str, similarity: str, order: str, backend) -> None:
    """Random and spatial selections contain the query exactly once and no token twice,
    also when the query is itself one of the sampled tokens."""
    opts = ConvNNOptions(
        k=9, similarity=similarity, candidates=candidates, num_samples=16, order=order
    )
    x, grid, query_index = torch.randn(2, 36, 4), Grid(6, 6), torch.arange(36)
    table = candidate_table(opts, 36, query_index, grid)
    distance = chebyshev_distance(query_index, table, grid)
    index, _, _ = select_neighbors(opts, x, x, table, distance, 9, backend)
    assert ((index == query_index[:, None]).sum(-1) == 1).all()
    assert (index.sort(-1).values.diff(dim=-1) > 0).all()
