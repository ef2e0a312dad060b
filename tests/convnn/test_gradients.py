"""Gradients of the ConvNN operator (docs/method.md §1: gradients flow into values, weighting
scores and kernels; the selected indices are not differentiable).

``gradcheck`` in float64 on small random inputs (continuous, so no tie changes the
selection under the finite-difference perturbation), and the ``fast`` backend
against the ``reference`` backend on every option combination of ``test_options.py``.
"""

from __future__ import annotations

import importlib.util
from functools import partial
from pathlib import Path

import pytest
import torch
from torch.autograd import gradcheck

import convnn
from convnn import ConvNNOptions, Grid
from convnn.functional import candidate_table, select_neighbors
from convnn.ops.geometry import chebyshev_distance

_spec = importlib.util.spec_from_file_location(
    "convnn_test_options", Path(__file__).with_name("test_options.py")
)
test_options = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(test_options)

H, W, C, K = 3, 3, 3, 3
N = H * W
BACKENDS = ["reference", "fast"]
SIMILARITIES = ["dot", "cosine", "euclidean", "location", "mixed"]
WEIGHTINGS = ["none", "similarity", "softmax"]
KERNELS = ["standard", "depthwise", "separable", "sum"]


def kernel_params(kernel: str, k: int, channels: int, gen: torch.Generator) -> dict:
    """Random float64 kernel parameters (layouts of :mod:`convnn.ops.aggregation`) and a bias."""
    out = {"standard": 2, "depthwise": 2 * channels, "separable": 2, "sum": channels}[kernel]
    shapes = {
        "standard": {"weight": (out, channels, k)},
        "depthwise": {"weight": (out, k)},
        "separable": {"weight": (channels, k), "pointwise_weight": (out, channels)},
        "sum": {},
    }[kernel]
    shapes["bias"] = (out,)
    return {n: torch.randn(s, generator=gen, dtype=torch.float64) for n, s in shapes.items()}


def features_matter(opts: ConvNNOptions) -> bool:
    """Whether query and key reach the output: only through non-location weighting scores."""
    return opts.weighting != "none" and opts.score_for_weights != "location"


def check(opts: ConvNNOptions, backend: str, channels: int = C, seed: int = 0) -> None:
    """``gradcheck`` w.r.t. value, (query, key when they matter) and every kernel parameter
    (and the learned positional table), on ``channels`` feature channels."""
    gen = torch.Generator().manual_seed(seed)
    tensors = {
        name: torch.randn(1, N, channels, generator=gen, dtype=torch.float64)
        for name in ("value", "query", "key")
    }
    value_channels = channels + 2 * opts.coords_to_values
    tensors.update(kernel_params(opts.kernel, opts.k or N, value_channels, gen))
    if opts.positional_encoding == "learned":
        tensors["pos_table"] = torch.randn(channels, 2, 2, generator=gen, dtype=torch.float64)
    if not features_matter(opts):
        constants = {n: tensors.pop(n) for n in ("query", "key", "pos_table") if n in tensors}
    else:
        constants = {}
    names = list(tensors)

    def fn(*args: torch.Tensor) -> torch.Tensor:
        kwargs = dict(zip(names, args, strict=True)) | constants
        return convnn.convnn(options=opts, grid=Grid(H, W), backend=backend, **kwargs)

    inputs = tuple(t.requires_grad_() for t in tensors.values())
    assert gradcheck(fn, inputs, eps=1e-6, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("weighting", WEIGHTINGS)
@pytest.mark.parametrize("similarity", SIMILARITIES)
def test_gradcheck(similarity: str, weighting: str, kernel: str, backend: str) -> None:
    """Analytic gradients match finite differences for every similarity/weighting/kernel."""
    check(ConvNNOptions(k=K, similarity=similarity, weighting=weighting, kernel=kernel), backend)


EXTRA = [
    {"candidates": "window", "window_size": 3, "similarity": "dot", "weighting": "softmax"},
    {"candidates": "window", "window_size": 3, "window_border": "shift", "weighting": "similarity"},
    {"candidates": "random", "num_samples": 6, "similarity": "cosine", "weighting": "similarity"},
    {"candidates": "spatial", "num_samples": 9, "similarity": "euclidean", "weighting": "softmax"},
    {"similarity": "location", "weighting": "softmax", "weighting_similarity": "dot"},
    {"similarity": "dot", "weighting": "softmax", "weighting_similarity": "mixed", "lam": 0.3},
    {"similarity": "dot", "weighting": "softmax", "kernel": "sum", "k": None},
    {"weighting": "softmax", "positional_encoding": "coords", "coords_to_values": True},
    {"weighting": "softmax", "similarity": "dot", "positional_encoding": "learned"},
    {"weighting": "similarity", "similarity": "dot", "positional_encoding": "sincos", "k": 4},
    {"weighting": "similarity", "similarity": "dot", "positional_encoding": "rope", "k": 4},
    {"weighting": "softmax", "order": "offset", "kernel": "depthwise"},
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("extra", EXTRA, ids=lambda e: "-".join(map(str, e.values())))
def test_gradcheck_candidates_and_encodings(extra: dict, backend: str) -> None:
    """gradcheck for the other candidate sets, split scores, positional encodings and orders."""
    opts = ConvNNOptions(**({"k": K, "kernel": "standard"} | extra))
    check(opts, backend, channels=4 if opts.positional_encoding in ("sincos", "rope") else C)


def _materialize(grad: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(like) if grad is None else grad


@pytest.mark.parametrize("case", test_options.CASES, ids=test_options.case_id)
def test_fast_matches_reference(case: dict) -> None:
    """The fast backend equals the reference backend, forward and backward, in float64."""
    results = {}
    for backend in BACKENDS:
        inputs = test_options.case_inputs(case, dtype=torch.float64, seed=2)
        fn = partial(test_options.run_case, case, inputs, backend)
        results[backend] = (inputs, *test_options.forward_backward(fn, inputs))
    (inputs, ref_out, ref_grads), (_, fast_out, fast_grads) = results.values()
    torch.testing.assert_close(fast_out, ref_out, rtol=1e-10, atol=1e-10)
    for name, like in inputs.items():
        torch.testing.assert_close(
            _materialize(fast_grads[name], like),
            _materialize(ref_grads[name], like),
            rtol=1e-10,
            atol=1e-10,
            msg=lambda m, name=name: f"gradient of {name}: {m}",
        )


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("similarity", SIMILARITIES)
def test_selected_indices_carry_no_gradient(similarity: str, backend: str) -> None:
    """The selected indices are integer tensors outside autograd, and with weighting 'none'
    the query and key (which only drive the selection) receive no gradient."""
    value, query, key = (torch.randn(2, N, C, requires_grad=True) for _ in range(3))
    opts = ConvNNOptions(k=K, similarity=similarity, weighting="softmax")
    grid, query_index = Grid(H, W), torch.arange(N)
    table = candidate_table(opts, N, query_index, grid)
    distance = chebyshev_distance(query_index, table, grid)
    index, slots, _ = select_neighbors(opts, query, key, table, distance, K, backend)
    for t in (index, slots):
        assert t.dtype == torch.long and not t.requires_grad and t.grad_fn is None

    opts = ConvNNOptions(k=K, similarity=similarity, weighting="none", kernel="sum")
    out = convnn.convnn(value, query, key, options=opts, grid=grid, backend=backend)
    grads = torch.autograd.grad(out.sum(), (value, query, key), allow_unused=True)
    assert grads[0] is not None
    assert all(g is None or not g.any() for g in grads[1:])
