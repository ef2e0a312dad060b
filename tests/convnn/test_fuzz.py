"""Differential fuzzing of ConvNN against an independent implementation (issue 21).

Hypothesis draws whole configurations of ``ConvNN2d``, ``ConvNN1d`` and
``ConvNNAttention`` (similarity x candidates x weighting x weighting similarity x kernel
x positional encoding x order x sample scope x prefix tokens, non-square and even
kernels, strides, paddings, maps from 1x1 and 1xN up, one output position, batch sizes,
heads, float32 and float64, train and eval) and checks, against
:mod:`tests.fuzz_reference` (float64 loops written from docs/method.md, sharing no code with
``convnn``):

* the output shape (``nn.Conv2d``'s for the map layers);
* float64 outputs and selected indices to 1e-10;
* float32: every selected neighbour is within a small gap of the ``k``-th best exact
  score of the same float32 inputs (a near-tie), the weights are those of the exact
  scores, and where the selection is the exact one the outputs are close;
* finite gradients of the input and every parameter;
* every backend that accepts the call computes the same output;
* a refused configuration raises a :class:`~convnn.errors.ConvNNError` (an
  ``OptionError`` names its ``key``), never another exception;
* ``torch.compile`` (inductor) equals eager at two shapes, train and eval
  (``test_compile_*``; the hypothesis-driven one is marked ``extra``).

The random sample a call used is read from the call's own candidate table (the sample is
an input of the operator's contract, not under test here), then given to the reference.

Configurations whose difference is documented behaviour, not a defect, are excluded by
:data:`KNOWN_DEFECTS` (each a predicate over a configuration and the check;
``CONVNN_FUZZ_ALL=1`` turns them off).
Examples are derandomized, nothing is stored (``database=None``) and a failure prints a
reproducer blob (``print_blob=True``). ``-m extra`` runs many more examples.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
from collections.abc import Callable
from typing import Any
from unittest import mock

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from fuzz_reference import RefGrid, attention_reference, map_reference, tokens_reference
from hypothesis import HealthCheck, assume, event, given, note, seed, settings
from hypothesis import strategies as st

import convnn.selection
from convnn import ConvNN1d, ConvNN2d
from convnn.backends import TokenCall
from convnn.errors import BackendError, ConvNNError, OptionError
from convnn.modules.attention import ConvNNAttention

SIMILARITIES = ["dot", "cosine", "euclidean", "location", "mixed"]
FEATURES = ["dot", "cosine", "euclidean"]
CANDIDATES = ["all", "random", "spatial", "window"]
WEIGHTINGS = ["none", "similarity", "softmax"]
KERNELS = ["standard", "depthwise", "separable", "sum"]
ENCODINGS = ["none", "coords", "sincos", "rope", "learned"]
ORDERS = ["auto", "rank", "offset"]
SCOPES = ["batch", "example", "head"]
BACKENDS = ["reference", "fast", "dense", "blocked", "conv", "window_attention", "shifts", "sdpa"]
F64_TOL = {"rtol": 1e-10, "atol": 1e-10}
GAP = 1e-5  # float32 near-tie: within GAP * (1 + |k-th exact score|) of the k-th score


def fuzz_settings(n: int, derandomize: bool = True) -> Callable:
    """``n`` reproducible examples (derandomized, or from a fixed ``@seed``), no database,
    a reproducer blob on failure."""
    return settings(
        max_examples=n,
        deadline=None,
        derandomize=derandomize,
        database=None,
        print_blob=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )


# -------------------------------------------------------------------- known exclusions
# Each predicate takes a configuration dict and the check's name; a configuration it
# matches is not checked there. The defects the fuzzer found are fixed, each with a
# regression test in tests/convnn/test_edge_regressions.py; what stays is documented behaviour.


def _euclid_ties(c: dict, check: str) -> bool:
    """Exact euclidean distance ties (integer features) round 1 ulp apart in the centred
    expansion, so the tie goes by rounding, not to the lower token index (finding F1)."""
    o = c["options"]
    euclid = o.get("similarity") == "euclidean" or (
        o.get("similarity") == "mixed" and o.get("mixed_feature") == "euclidean"
    )
    padded = c["layer"] != "attention" and (
        any(c["padding"]) or c["options"].get("candidates") == "window"
    )
    return check == "ties" and euclid and (c["features"] == "integer" or padded)


KNOWN_DEFECTS: dict[str, Callable[[dict, str], bool]] = {
    # documented, not a defect (docs/precision.md, "Ties"): exactly tied euclidean
    # distances round apart in the centred expansion, so they are near-ties
    "euclidean exact ties round (float64)": _euclid_ties,
}


def known_defect(c: dict, check: str) -> str | None:
    """The known defect ``c`` hits in ``check``, or ``None``; ``CONVNN_FUZZ_ALL=1`` turns the
    exclusions off (to see which known defects the fuzzer still finds)."""
    if os.environ.get("CONVNN_FUZZ_ALL") == "1":
        return None
    for name, hit in KNOWN_DEFECTS.items():
        if hit(c, check):
            return name
    return None


# ------------------------------------------------------------------------ strategies


@st.composite
def option_draw(draw, taps_hint: int, prefix: bool = False) -> dict[str, Any]:
    """The operator options (without k and sizes)."""
    sim = draw(st.sampled_from(SIMILARITIES))
    o: dict[str, Any] = {
        "similarity": sim,
        "candidates": draw(st.sampled_from(CANDIDATES)),
        "weighting": draw(st.sampled_from(WEIGHTINGS)),
        "weighting_similarity": draw(st.sampled_from([None, None, *SIMILARITIES])),
        "kernel": draw(st.sampled_from(KERNELS)),
        "positional_encoding": draw(st.sampled_from(ENCODINGS)),
        "order": draw(st.sampled_from(ORDERS)),
        "sample_scope": draw(st.sampled_from(SCOPES)),
        "lam": draw(st.sampled_from([0.0, 0.5, 1.0])),
        "mixed_feature": draw(st.sampled_from(FEATURES)),
        "sample_seed": draw(st.integers(0, 3)),
    }
    if draw(st.integers(0, 5)) == 5:
        o["selection_budget_mb"] = draw(st.sampled_from([1e-5, 2e-4]))  # one-/few-row blocks
    if o["candidates"] == "window":
        o["window_border"] = draw(st.sampled_from(["pad", "shift"]))
        if draw(st.booleans()):
            o["window_size"] = draw(st.sampled_from([1, 3, 3, 5, (1, 3), (3, 1), (3, 5), 2]))
    if o["positional_encoding"] == "coords" and not prefix:
        o["coords_to_values"] = draw(st.booleans())
    return o


def _max_candidates(o: dict, n_tokens: int, taps: int, sequence: bool) -> int:
    c = o["candidates"]
    if c == "window":
        ws = o.get("window_size")
        if ws is None:
            return taps
        return ws * ws if isinstance(ws, int) else ws[0] * ws[1]
    if c in ("random", "spatial"):
        r = o["num_samples"]
        return r if (c == "random" or sequence) else math.isqrt(r) ** 2
    return n_tokens


@st.composite
def map_configs(draw, one_d: bool | None = None) -> dict[str, Any]:
    """A ConvNN2d / ConvNN1d configuration with an input shape (mostly valid)."""
    one_d = draw(st.booleans()) if one_d is None else one_d
    if one_d:
        ks = (1, draw(st.integers(1, 4)))
        stride = (1, draw(st.integers(1, 3)))
    else:
        ks = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
        stride = (draw(st.integers(1, 2)), draw(st.integers(1, 3)))
    o = draw(option_draw(ks[0] * ks[1]))
    if one_d and "window_size" in o:
        ws = o["window_size"]
        o["window_size"] = ws if isinstance(ws, int) else ws[1]
    inside = o["candidates"] in ("random", "spatial") or (
        o["candidates"] == "window" and o.get("window_border") == "shift"
    )
    wild = draw(st.integers(0, 9)) == 9  # sometimes a padding the layer must refuse
    pad = tuple(draw(st.integers(0, s // 2 if (wild or not inside) else (s - 1) // 2)) for s in ks)
    if one_d:
        pad = (0, pad[1])
    H = 1 if one_d else draw(st.integers(max(1, ks[0] - 2 * pad[0]), 6))
    W = draw(st.integers(max(1, ks[1] - 2 * pad[1]), 7))
    rotary = o["positional_encoding"] in ("sincos", "rope") and draw(st.integers(0, 5))
    C = 4 if rotary else draw(st.sampled_from([1, 2, 4]))
    vc = C + 2 * (o["positional_encoding"] == "coords" and o.get("coords_to_values", False))
    out = {
        "standard": draw(st.integers(1, 3)),
        "separable": draw(st.integers(1, 3)),
        "depthwise": vc * draw(st.integers(1, 2)),
        "sum": vc,
    }[o["kernel"]]
    n_real = H * W
    n_tokens = n_real if inside else (H + 2 * pad[0]) * (W + 2 * pad[1])
    if o["candidates"] in ("random", "spatial"):
        o["num_samples"] = draw(st.integers(1, max(1, n_real)))
    taps = ks[0] * ks[1]
    top = _max_candidates(o, n_tokens, taps, one_d)
    k = draw(st.integers(1, max(1, top)))
    if o["similarity"] == "location" and o["candidates"] == "all" and draw(st.booleans()):
        k = min(taps, top)  # the convolution special case (docs/method.md §2)
    if draw(st.integers(0, 12)) == 12:
        k = top + 1  # must be refused
    o["k"] = k
    Ho = (H + 2 * pad[0] - ks[0]) // stride[0] + 1
    Wo = (W + 2 * pad[1] - ks[1]) // stride[1] + 1
    return {
        "layer": "1d" if one_d else "2d",
        "options": o,
        "kernel_size": ks,
        "stride": stride,
        "padding": pad,
        "shape": (draw(st.integers(1, 2)), C, H, W),
        "out_channels": out,
        "bias": draw(st.booleans()),
        "dtype": draw(st.sampled_from([torch.float32, torch.float64])),
        "training": draw(st.booleans()),
        "features": draw(st.sampled_from(["normal", "normal", "integer", "offset"])),
        "num_queries": Ho * Wo,
        "seed": draw(st.integers(0, 2**16)),
    }


@st.composite
def attention_configs(draw) -> dict[str, Any]:
    """A ConvNNAttention configuration with an input shape (mostly valid)."""
    heads = draw(st.integers(1, 2))
    hd = draw(st.sampled_from([4, 8]))
    P = draw(st.integers(0, 2))
    S = draw(st.integers(1, 4))
    N = P + S * S
    o = draw(option_draw(9, prefix=True))
    o["window_border"] = o.get("window_border", "shift")
    if draw(st.integers(0, 15)) == 15:
        o["coords_to_values"] = True  # must be refused
    if o["candidates"] == "window" and "window_size" not in o:
        o["window_size"] = draw(st.sampled_from([1, 3]))
    if o["candidates"] in ("random", "spatial"):
        o["num_samples"] = draw(st.integers(1, N))
    top = _max_candidates(o, N, 9, False)
    if o["candidates"] == "all" and o["kernel"] == "sum" and draw(st.booleans()):
        k = None
    else:
        k = draw(st.integers(1, max(1, top)))
        if draw(st.integers(0, 12)) == 12:
            k = top + 1
    o["k"] = k
    return {
        "layer": "attention",
        "options": o,
        "heads": heads,
        "head_dim": hd,
        "num_prefix": P,
        "side": S,
        "shape": (draw(st.integers(1, 2)), N, heads * hd),
        "qkv_bias": draw(st.booleans()),
        "dtype": draw(st.sampled_from([torch.float32, torch.float64])),
        "training": draw(st.booleans()),
        "features": draw(st.sampled_from(["normal", "normal", "integer", "offset"])),
        "num_queries": N,
        "seed": draw(st.integers(0, 2**16)),
    }


# ------------------------------------------------------------------------ helpers


def build(c: dict) -> torch.nn.Module:
    o = {k: v for k, v in c["options"].items() if v is not None or k == "k"}
    dd = {"dtype": c["dtype"]}
    torch.manual_seed(c["seed"])
    if c["layer"] == "attention":
        S = c["side"]
        layer = ConvNNAttention(
            c["shape"][2], c["heads"], qkv_bias=c["qkv_bias"], num_prefix_tokens=c["num_prefix"],
            pos_grid_size=(S, S), **dd, **o,
        )  # fmt: skip
        if layer.pos_table is not None:
            with torch.no_grad():
                layer.pos_table.normal_()
    elif c["layer"] == "2d":
        _, C, H, W = c["shape"]
        layer = ConvNN2d(
            C, c["out_channels"], c["kernel_size"], c["stride"], c["padding"], c["bias"],
            pos_grid_size=(H, W), **dd, **o,
        )  # fmt: skip
    else:
        _, C, _, W = c["shape"]
        layer = ConvNN1d(
            C, c["out_channels"], c["kernel_size"][1], c["stride"][1], c["padding"][1],
            c["bias"], pos_grid_size=W, **dd, **o,
        )  # fmt: skip
    if getattr(layer, "pos_table", None) is not None:
        with torch.no_grad():
            layer.pos_table.normal_()
    return layer.train(c["training"])


def make_input(c: dict, shape: tuple | None = None) -> torch.Tensor:
    shape = shape or c["shape"]
    if c["layer"] == "1d":
        shape = (shape[0], shape[1], shape[3])
    g = torch.Generator().manual_seed(c["seed"] + 1)
    x = torch.randn(shape, generator=g, dtype=torch.float64)
    if c["features"] == "integer":  # exact ties
        x = torch.randint(-1, 2, shape, generator=g).double()
    elif c["features"] == "offset":
        x = x + 100
    return x.to(c["dtype"])


def expected_shape(c: dict, x: torch.Tensor) -> tuple:
    if c["layer"] == "attention":
        return tuple(x.shape)
    B = x.shape[0]
    H = 1 if c["layer"] == "1d" else x.shape[2]
    W = x.shape[-1]
    ks, st_, pad = c["kernel_size"], c["stride"], c["padding"]
    Ho = (H + 2 * pad[0] - ks[0]) // st_[0] + 1
    Wo = (W + 2 * pad[1] - ks[1]) // st_[1] + 1
    if c["layer"] == "1d":
        return (B, c["out_channels"], Wo)
    return (B, c["out_channels"], Ho, Wo)


@contextlib.contextmanager
def recorded_tables():
    """The candidate tables of the ConvNN calls inside the block (the sample a call used)."""
    tables: list = []
    original = TokenCall.table

    def table(self):
        t = original(self)
        tables.append(t)
        return t

    with mock.patch.object(TokenCall, "table", table):
        yield tables


@contextlib.contextmanager
def recorded_selections():
    """The :class:`~convnn.selection.Selection` of every ConvNN call inside the block."""
    seen: list = []
    with convnn.selection.listening(seen.append):
        yield seen


def run_layer(layer, x, c, backend: str | None = None):
    """``(out, sample)`` of one forward under ``backend`` (the layer's options otherwise),
    the global RNG seeded; ``sample``: the random sample of the call, as drawn."""
    original = layer.options
    if backend is not None:
        layer.options = dataclasses.replace(original, backend=backend)
    try:
        torch.manual_seed(c["seed"] + 2)
        with recorded_tables() as tables:
            out = layer(x)
    finally:
        layer.options = original
    sample = None
    if c["options"]["candidates"] == "random" and tables:
        samples = [t.index[..., 0, 1:] for t in tables]
        for s in samples[1:]:  # every table of one call holds the same draw
            assert torch.equal(s, samples[0]), "one call drew two different random samples"
        sample = samples[0]
    return out, sample


def params(layer) -> dict[str, np.ndarray | None]:
    def np_(p):
        return None if p is None else p.detach().double().numpy()

    out = {
        "weight": np_(getattr(layer, "weight", None)),
        "pointwise_weight": np_(getattr(layer, "pointwise_weight", None)),
    }
    if getattr(layer, "pos_table", None) is not None:
        out["pos_table"] = np_(layer.pos_table)
    return out


def layer_options(layer) -> dict[str, Any]:
    return dataclasses.asdict(layer.options)


def reference_of(layer, x, c, sample) -> dict:
    """The reference's result for ``layer`` on ``x`` (float64 of the same values)."""
    xs = x.detach().double().numpy()
    smp = None if sample is None else sample.cpu().numpy()
    p = params(layer)
    if c["layer"] == "attention":
        return attention_reference(
            xs, layer_options(layer), num_heads=c["heads"],
            qkv_weight=layer.qkv.weight.detach().double().numpy(),
            qkv_bias=None if layer.qkv.bias is None else layer.qkv.bias.detach().double().numpy(),
            proj_weight=layer.proj.weight.detach().double().numpy(),
            proj_bias=layer.proj.bias.detach().double().numpy(),
            num_prefix=c["num_prefix"], sample=smp, **p,
        )  # fmt: skip
    bias = None if layer.bias is None else layer.bias.detach().double().numpy()
    if c["layer"] == "1d":
        xs = xs[:, :, None, :]
    res = map_reference(
        xs, layer_options(layer), c["kernel_size"], c["stride"], c["padding"],
        sample=smp, bias=bias, **p,
    )  # fmt: skip
    if c["layer"] == "1d":
        res["out"] = res["out"][:, :, 0, :]
    return res


def selection_tokens_reference(layer, x, c, sample) -> dict:
    """The reference on exactly the selection inputs of the call (attention: the layer's
    own q, k, v, so that rounding in ``qkv`` cannot split ties; then its ``proj``), for
    the exact scores of the same inputs."""
    if c["layer"] != "attention":
        return reference_of(layer, x, c, sample)
    B, N, _ = x.shape
    h, hd = c["heads"], c["head_dim"]
    with torch.no_grad():
        qkv = layer.qkv(x).reshape(B, N, 3, h, hd).permute(2, 0, 3, 1, 4)
    q, k, v = (t.double().numpy() for t in qkv.unbind(0))
    o = layer_options(layer)
    S, P = c["side"], c["num_prefix"]
    needs = layer.options.needs_grid
    p = params(layer)
    res = tokens_reference(
        v, q, k, o, grid=RefGrid(S, S, P) if needs else None,
        sample=None if sample is None else sample.cpu().numpy(), k=o["k"] or N, **p,
    )  # fmt: skip
    merged = res["out"].transpose(0, 2, 1, 3).reshape(B, N, -1)  # (B, N, heads * hd)
    proj_bias = layer.proj.bias.detach().double().numpy()
    res["out"] = merged @ layer.proj.weight.detach().double().numpy().T + proj_bias
    return res


def check_refusal(err: BaseException, c: dict) -> None:
    """A refused configuration: a ConvNNError, an OptionError naming its key."""
    if not isinstance(err, ConvNNError):
        raise AssertionError(
            f"refused with {type(err).__name__} (not a ConvNNError): {err}"
        ) from err
    if isinstance(err, OptionError):
        assert err.key, f"OptionError without a key: {err}"


def rounding_splits_ties(c: dict) -> bool:
    """Exactly tied scores (integer features) that the float64 computation itself may
    split by an ulp, not a defect: cosine normalization, mixed standardization and the
    sincos/rope/coords/learned encodings round before the scores are formed."""
    o = c["options"]
    inexact = o.get("similarity") in ("cosine", "mixed") or o.get("positional_encoding") not in (
        None,
        "none",
    )
    return c["features"] == "integer" and inexact


def check_f64(out, sel, ref, c) -> bool:
    """Outputs, indices and weights against the reference; False when the selection is a
    different near-tie (a known defect's tolerance) and the values were not compared."""
    if sel is not None:
        index = sel.index.cpu().numpy()
        if not np.array_equal(index, ref["index"]) and (
            known_defect(c, "ties") or rounding_splits_ties(c)
        ):
            check_f32_selection(sel, ref, c, gap=1e-12)
            event("float64 near-tie selection accepted (known defect)")
            return False
        np.testing.assert_array_equal(index, ref["index"])
        weights = sel.weights.double().numpy()
        exact = _ref_weights(ref, c, index)
        np.testing.assert_allclose(weights, exact, rtol=1e-6, atol=1e-6)  # weights are float32
    np.testing.assert_allclose(out.detach().numpy(), ref["out"], **F64_TOL)
    return True


def _ref_weights(ref, c, index) -> np.ndarray:
    """Exact weights of the neighbours ``index`` (``(*, Nq, k)``) from the reference's
    weighting scores (the first slot holding each token, in order)."""
    wt = c["options"]["weighting"]
    flat = index.reshape(len(ref["details"]), -1, index.shape[-1])
    out = np.ones(flat.shape)
    if wt == "none":
        return out.reshape(index.shape)
    for b, row in enumerate(ref["details"]):
        for n, d in enumerate(row):
            used: set[int] = set()
            ws = []
            for t in flat[b, n]:
                s = _slot_of(d, int(t), used)
                used.add(s)
                ws.append(d.weight_scores[s])
            if wt == "softmax":
                top = max(ws)
                e = [math.exp(w - top) for w in ws]
                ws = [w / sum(e) for w in e]
            out[b, n] = ws
    return out.reshape(index.shape)


def _slot_of(d, token: int, used: set[int]) -> int:
    """The candidate slot of ``token`` (the reference's own choice among equal tokens,
    e.g. several null tokens, else the first unused one)."""
    for s in d.slots:
        if d.tokens[s] == token and s not in used:
            return s
    for s, t in enumerate(d.tokens):
        if t == token and s not in used and d.distinct[s]:
            return s
    raise AssertionError(f"token {token} is not a candidate of this query: {d.tokens}")


def check_f32_selection(sel, ref, c, gap: float = GAP) -> int:
    """Every selected neighbour is among the exact top-k up to a near-tie; returns the
    number of queries whose selection differs from the exact one (near-ties)."""
    index = sel.index.cpu().numpy()
    k = index.shape[-1]
    flat = index.reshape(len(ref["details"]), -1, k)
    differ = 0
    for b, row in enumerate(ref["details"]):
        for n, d in enumerate(row):
            chosen = [int(t) for t in flat[b, n]]
            exact = [d.tokens[s] for s in d.slots]
            if sorted(chosen) == sorted(exact):
                continue
            differ += 1
            free = [s for s in range(len(d.tokens)) if d.distinct[s] and not (d.forced and s == 0)]
            ranked = sorted((d.scores[s] for s in free), reverse=True)
            k_free = k - int(d.forced)
            kth = ranked[k_free - 1] if k_free else math.inf
            tol = (gap * (1 + abs(kth)) + gap / 10 * d.conditioning) if k_free else 0.0
            if d.forced:
                assert chosen.count(d.tokens[0]) == 1, f"query {d.tokens[0]} not selected once"
            for t in chosen:
                if d.forced and t == d.tokens[0]:
                    continue
                best = max(
                    d.scores[s] for s, tt in enumerate(d.tokens) if tt == t and d.distinct[s]
                )
                assert best >= kth - tol, (
                    f"batch row {b} query {n}: selected token {t} with exact score {best!r}, "
                    f"the k-th exact score is {kth!r} (gap {tol:.2e}); exact set {sorted(exact)}, "
                    f"selected {sorted(chosen)}"
                )
    return differ


def conv_special_case(c: dict, layer) -> bool:
    """docs/method.md §2: location (or window) selection of the whole zero-padded kernel window in
    offset order, no weighting, standard/depthwise kernel, ``padding = kernel // 2``."""
    if c["layer"] != "2d":
        return False
    o = layer.options
    ks = c["kernel_size"]
    return (
        True
        and all(s % 2 for s in ks)
        and tuple(c["padding"]) == (ks[0] // 2, ks[1] // 2)
        and o.similarity == "location"
        and o.candidates == "all"
        and o.k == ks[0] * ks[1]
        and o.resolved_order == "offset"
        and o.weighting == "none"
        and o.kernel in ("standard", "depthwise")
        and o.positional_encoding == "none"
    )


def check_conv(layer, x, out, c) -> None:
    w = layer.weight
    C = x.shape[1]
    ks = c["kernel_size"]
    if layer.options.kernel == "standard":
        ref = F.conv2d(x, w.reshape(w.shape[0], C, *ks), layer.bias, c["stride"], c["padding"])
    else:
        ref = F.conv2d(x, w.reshape(-1, 1, *ks), layer.bias, c["stride"], c["padding"], groups=C)
    tol = F64_TOL if x.dtype == torch.float64 else {"rtol": 1e-4, "atol": 1e-4}
    torch.testing.assert_close(out, ref, **tol)


# ---------------------------------------------------------------------- the property


def check_config(c: dict) -> None:
    note(repr(c))
    try:
        layer = build(c)
    except Exception as err:  # noqa: BLE001
        check_refusal(err, c)
        event(f"refused at construction: {getattr(err, 'key', None)}")
        return
    x = make_input(c)
    if c["dtype"] == torch.float64:
        x.requires_grad_(True)
    try:
        out, sample = run_layer(layer, x, c)
    except Exception as err:  # noqa: BLE001
        check_refusal(err, c)
        event(f"refused at call: {getattr(err, 'key', None)}")
        return
    assert tuple(out.shape) == expected_shape(c, x), (tuple(out.shape), expected_shape(c, x))
    if known_defect(c, "value"):
        event(f"known defect: {known_defect(c, 'value')}")
        return
    event(f"checked {c['dtype']}")
    torch.manual_seed(c["seed"] + 2)
    with recorded_selections() as sels:
        layer(x.detach())
    sel = sels[0] if sels else None
    if c["dtype"] == torch.float64:
        ref = selection_tokens_reference(layer, x, c, sample)
        if c["layer"] == "attention":  # the whole layer from x (qkv layout, heads, proj)
            whole = reference_of(layer, x, c, sample)
            if np.array_equal(whole["index"], ref["index"]):
                np.testing.assert_allclose(whole["out"], ref["out"], **F64_TOL)
        compared = check_f64(out, sel, ref, c)
        # gradients: finite for the input and every parameter
        g = torch.Generator().manual_seed(c["seed"])
        (out * torch.randn(out.shape, generator=g, dtype=out.dtype)).sum().backward()
        assert x.grad is not None and torch.isfinite(x.grad).all()
        for name, p in layer.named_parameters():
            if p.grad is not None:
                assert torch.isfinite(p.grad).all(), f"gradient of {name} is not finite"
        # every backend that accepts the call
        for name in BACKENDS:
            try:
                other, _ = run_layer(layer, x.detach(), c, backend=name)
            except BackendError:
                continue
            if not compared or (
                known_defect(c, "ties") and not np.allclose(other.detach().numpy(), ref["out"])
            ):
                continue
            np.testing.assert_allclose(
                other.detach().numpy(), ref["out"], **F64_TOL, err_msg=f"backend={name!r}"
            )
    else:
        ref = selection_tokens_reference(layer, x, c, sample)
        scale = 1 + float(np.abs(ref["out"]).max()) if ref["out"].size else 1.0
        cond = max((d.conditioning for row in ref["details"] for d in row), default=0.0)
        if sel is not None and not known_defect(c, "f32"):
            differ = check_f32_selection(sel, ref, c)
            if not differ:
                exact = _ref_weights(ref, c, sel.index.numpy())
                wtol = 1e-4 * (1 + np.abs(exact)) + 1e-6 * cond
                assert (np.abs(sel.weights.double().numpy() - exact) <= wtol).all(), (
                    "float32 weights differ from the exact weights of the same inputs"
                )
        same = sel is not None and np.array_equal(sel.index.numpy(), ref["index"]) and cond < 100
        # raw-score weights (z-scores, dot products) can sum to ~0 over values with a common
        # offset: float32 then rounds at the size of sum |w| |v|, not of the output
        magnitude = max((d.magnitude for row in ref["details"] for d in row), default=0.0)
        if c["layer"] == "attention":
            magnitude *= float(np.abs(layer.proj.weight.detach().double().numpy()).sum(1).max())
        if same and not known_defect(c, "f32"):
            for name in ("fast", "reference"):
                if name == "reference" and known_defect(c, "f32-reference"):
                    continue
                other, _ = run_layer(layer, x, c, backend=name)
                err = float(np.abs(other.detach().double().numpy() - ref["out"]).max())
                allowed = 1e-5 * scale + 1e-6 * magnitude
                assert err <= allowed, f"float32 backend={name!r} off by {err:.3g} > {allowed:.3g}"
    if conv_special_case(c, layer) and not known_defect(c, "conv"):
        check_conv(layer, x.detach(), out.detach(), c)


@fuzz_settings(400)
@given(map_configs())
def test_fuzz_map_layers(c):
    """ConvNN2d / ConvNN1d against the independent reference."""
    check_config(c)


@fuzz_settings(200)
@given(attention_configs())
def test_fuzz_attention(c):
    """ConvNNAttention (heads, prefix tokens) against the independent reference."""
    check_config(c)


@pytest.mark.extra
@seed(21)
@fuzz_settings(4000, derandomize=False)
@given(map_configs())
def test_fuzz_map_layers_extra(c):
    """Many more map-layer configurations (``-m extra``), another seed."""
    check_config(c)


@pytest.mark.extra
@seed(21)
@fuzz_settings(2000, derandomize=False)
@given(attention_configs())
def test_fuzz_attention_extra(c):
    """Many more attention configurations (``-m extra``), another seed."""
    check_config(c)


# ------------------------------------------------------------------------ compile


def compile_check(c: dict, shapes: list[tuple]) -> None:
    """Compiled equals eager at each shape, in train and eval (random training draws
    differ under inductor's RNG, so there only the shapes and finiteness are compared)."""
    layer = build(c)
    compiled = torch.compile(layer)
    for training in (True, False):
        layer.train(training)
        for shape in shapes:
            x = make_input(c, shape)
            torch.manual_seed(0)
            eager = layer(x)
            torch.manual_seed(0)
            got = compiled(x)
            assert got.shape == eager.shape
            assert torch.isfinite(got).all()
            if training and c["options"].get("candidates") == "random":
                continue
            tol = F64_TOL if c["dtype"] == torch.float64 else {"rtol": 1e-5, "atol": 1e-5}
            torch.testing.assert_close(got, eager, **tol, msg=lambda m, s=shape: f"{s}: {m}")


def test_compile_two_shapes():
    """A cheap fixed ConvNN2d configuration compiled at two shapes, train and eval."""
    torch._dynamo.reset()
    c2d = {
        "layer": "2d", "kernel_size": (3, 3), "stride": (1, 1), "padding": (1, 1),
        "out_channels": 3, "bias": True, "dtype": torch.float32, "training": True,
        "features": "normal", "seed": 0, "shape": (2, 2, 5, 5),
        "options": {"similarity": "cosine", "candidates": "all", "k": 4, "weighting": "softmax"},
    }  # fmt: skip
    compile_check(c2d, [(2, 2, 5, 5), (1, 2, 6, 7)])


@pytest.mark.extra
def test_compile_attention_two_shapes():
    """ConvNNAttention (prefix token, location, two heads) compiled at two token counts."""
    torch._dynamo.reset()
    attn = {
        "layer": "attention", "heads": 2, "head_dim": 4, "num_prefix": 1, "side": 3,
        "qkv_bias": True, "dtype": torch.float32, "training": True, "features": "normal",
        "seed": 0, "shape": (2, 10, 8),
        "options": {"similarity": "location", "candidates": "all", "k": 5, "kernel": "sum"},
    }  # fmt: skip
    compile_check(attn, [(2, 10, 8), (1, 17, 8)])


@pytest.mark.extra
@settings(
    max_examples=12, deadline=None, derandomize=True, database=None, print_blob=True,
    suppress_health_check=list(HealthCheck),
)  # fmt: skip
@given(st.one_of(map_configs(one_d=False), attention_configs()))
def test_compile_fuzz(c):
    """Drawn configurations compiled at two shapes (slow: ``-m extra``)."""
    note(repr(c))
    assume(not known_defect(c, "compile"))
    try:
        build(c)
    except ConvNNError:
        assume(False)
    if c["layer"] == "attention":
        B, N, D = c["shape"]
        P = c["num_prefix"]
        side = c["side"] + 1
        shapes = [(B, N, D), (B + 1, P + side * side, D)]
    else:
        B, C, H, W = c["shape"]
        shapes = [(B, C, H, W), (B + 1, C, H + 1, W + 2)]
    torch._dynamo.reset()
    try:
        compile_check(c, shapes)
    except ConvNNError as err:  # a size the options refuse (e.g. num_samples > N)
        check_refusal(err, c)
