"""Property-based tests (hypothesis) of ConvNN over shapes, ``k`` and every option.

* ``ConvNN2d`` on any map, kernel, stride, padding and option set has
  ``nn.Conv2d``'s output shape, and finite outputs and gradients;
* the ``fast`` backend equals the ``reference`` backend (float64, forward and
  backward, like ``test_gradients.py``);
* all-candidate attention (feature similarity, no positional encoding) is
  permutation equivariant: permuting the tokens permutes the outputs;
* window ConvNN, which contains convolution, and location selection among all
  tokens are translation equivariant away from the borders: rolling the input map
  by ``(dy, dx)`` shifts the interior outputs by ``(dy, dx)``.

Examples are derandomized and no example database is kept (``database=None``), so
every run (and CI) checks the same cases; each test runs in a few seconds.
"""

from __future__ import annotations

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import convnn
from convnn import ConvNN2d, ConvNNOptions

F64 = torch.float64
SIMILARITIES = ["dot", "cosine", "euclidean", "location", "mixed"]
FEATURE_SIMILARITIES = ["dot", "cosine", "euclidean"]
WEIGHTINGS = ["none", "similarity", "softmax"]
KERNELS = ["standard", "depthwise", "separable", "sum"]
ORDERS = ["auto", "rank", "offset"]
TOL = {"rtol": 1e-10, "atol": 1e-10}


def examples(n: int):
    """Reproducible hypothesis settings: ``n`` derandomized examples, no database."""
    return settings(
        max_examples=n,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )


@st.composite
def kernel_options(draw, value_channels: int) -> dict:
    """Weighting, kernel and output channels valid for ``value_channels`` values."""
    kernel = draw(st.sampled_from(KERNELS))
    out = {
        "standard": draw(st.integers(1, 4)),
        "separable": draw(st.integers(1, 4)),
        "depthwise": value_channels * draw(st.integers(1, 2)),
        "sum": value_channels,
    }[kernel]
    return {
        "kernel": kernel,
        "out_channels": out,
        "weighting": draw(st.sampled_from(WEIGHTINGS)),
        "weighting_similarity": draw(st.sampled_from([None, *SIMILARITIES])),
        "mixed_feature": draw(st.sampled_from(FEATURE_SIMILARITIES)),
        "lam": draw(st.sampled_from([0.0, 0.3, 1.0])),
    }


@st.composite
def conv_configs(draw, candidates: list[str] | None = None, any_padding: bool = False) -> dict:
    """A valid ``ConvNN2d`` configuration and input shape: every option, ``k`` from 1 to
    the number of candidates, kernel 1-5 (even ones too), stride 1-2, maps from 1x1 to
    7x7, padding up to ``kernel_size // 2``; where candidates come from the input only,
    up to ``(kernel_size - 1) // 2`` (query centres inside the map) unless ``any_padding``."""
    ks = draw(st.sampled_from([1, 2, 3, 5]))
    stride = draw(st.integers(1, 2))
    kind = draw(st.sampled_from(candidates or ["all", "random", "spatial", "window"]))
    border = draw(st.sampled_from(["pad", "shift"])) if kind == "window" else None
    inside_only = kind in ("random", "spatial") or border == "shift"
    padding = draw(st.integers(0, ks // 2 if any_padding or not inside_only else (ks - 1) // 2))
    height = draw(st.integers(max(1, ks - 2 * padding), 7))
    width = draw(st.integers(max(1, ks - 2 * padding), 7))
    channels = draw(st.sampled_from([1, 2, 4]))
    encodings = ["none", "coords", "learned"] + (["sincos", "rope"] if channels % 4 == 0 else [])
    encoding = draw(st.sampled_from(encodings))
    coords_to_values = encoding == "coords" and draw(st.booleans())
    opts: dict = {"candidates": kind}
    inside = height * width  # tokens of the input map
    if kind == "all":
        available = (height + 2 * padding) * (width + 2 * padding)  # zero padding included
    elif kind == "random":
        opts["num_samples"] = available = draw(st.integers(1, inside))
    elif kind == "spatial":
        side = draw(st.integers(1, min(height, width)))
        extra = draw(st.integers(0, min(2 * side, inside - side * side)))
        opts["num_samples"] = side * side + extra
        available = side * side
    else:
        sizes = [s for s in (1, 3, 5) if border == "pad" or s <= min(height, width)]
        size = draw(st.sampled_from(sizes))
        opts |= {"window_size": size, "window_border": border}
        available = size * size
    opts |= {
        "k": draw(st.integers(1, min(available, 12))),
        "similarity": draw(st.sampled_from(SIMILARITIES)),
        "order": draw(st.sampled_from(ORDERS)),
        "positional_encoding": encoding,
        "coords_to_values": coords_to_values,
        **draw(kernel_options(channels + 2 * coords_to_values)),
    }
    return {
        "layer": {
            "in_channels": channels,
            "kernel_size": ks,
            "stride": stride,
            "padding": padding,
            "bias": draw(st.booleans()),
            **opts,
        },
        "shape": (draw(st.integers(1, 2)), channels, height, width),
    }


def match_value_channels(layer: dict) -> None:
    """Output channels of the ``sum`` and ``depthwise`` kernels follow the value channels."""
    values = layer["in_channels"] + 2 * layer["coords_to_values"]
    if layer["kernel"] == "sum" or (
        layer["kernel"] == "depthwise" and layer["out_channels"] % values
    ):
        layer["out_channels"] = values


@st.composite
def map_path_configs(draw) -> dict:
    """Configurations that the fast backend computes on the map itself (``F.conv2d``,
    shifted windows, fused window attention, location selection on a window table):
    whole zero-padded windows (``k = s*s``) or location selection among all tokens, in
    offset order and without positional encoding."""
    config = draw(conv_configs(candidates=["window", "all"]))
    layer = config["layer"]
    ks = layer["kernel_size"]
    order = draw(st.sampled_from(["auto", "offset"]))
    layer |= {"positional_encoding": "none", "coords_to_values": False, "order": order}
    if layer["candidates"] == "all":
        layer["similarity"] = "location"
    else:
        size = ks if ks % 2 and draw(st.booleans()) else layer["window_size"]
        layer |= {"window_size": size, "window_border": "pad", "k": size * size}
        if size == ks and draw(st.booleans()):  # neighborhood attention: fused
            attention = {"similarity": "dot", "weighting": "softmax", "kernel": "sum"}
            layer |= attention | {"weighting_similarity": None, "stride": 1, "padding": ks // 2}
    match_value_channels(layer)
    return config


def build(config: dict, backend: str, dtype=torch.float32, seed: int = 0) -> ConvNN2d:
    """The layer of ``config`` in eval mode (random candidates: the fixed eval draw)."""
    torch.manual_seed(seed)
    layer = ConvNN2d(**config["layer"], backend=backend).to(dtype).eval()
    if layer.pos_table is not None:  # a non-zero learned table, so that it matters
        torch.nn.init.normal_(layer.pos_table)
    return layer


def forward_backward(layer: torch.nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The output, and the gradients of a random projection of it w.r.t. the input and
    every parameter (zeros where a parameter does not reach the output)."""
    leaves = {"x": x.detach().requires_grad_(), **dict(layer.named_parameters())}
    out = layer(leaves["x"])
    proj = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=out.dtype)
    grads = torch.autograd.grad((out * proj).sum(), list(leaves.values()), allow_unused=True)
    named = zip(leaves.items(), grads, strict=True)
    return {"output": out} | {
        f"grad {n}": torch.zeros_like(t) if g is None else g for (n, t), g in named
    }


@examples(300)
@given(config=conv_configs(any_padding=True), backend=st.sampled_from(["reference", "fast"]))
def test_shape_and_finite(config: dict, backend: str) -> None:
    """``nn.Conv2d``'s output shape and finite outputs and gradients, or a padding that
    would put query centres outside the map rejected when the layer is built."""
    try:
        layer = build(config, backend)
    except ValueError as err:
        assert "query centres inside the map" in str(err)
        return
    x = torch.randn(config["shape"], generator=torch.Generator().manual_seed(0))
    results = forward_backward(layer, x)
    cfg = config["layer"]
    conv = torch.nn.Conv2d(cfg["in_channels"], cfg["out_channels"], cfg["kernel_size"],
                           cfg["stride"], cfg["padding"])  # fmt: skip
    assert results["output"].shape == conv(x).shape
    for name, t in results.items():
        assert torch.isfinite(t).all(), name


@examples(400)
@given(config=st.one_of(conv_configs(), map_path_configs()))
def test_fast_matches_reference(config: dict) -> None:
    """Both backends compute the same function, forward and backward (float64), also
    where the fast backend takes one of its map paths."""
    x = torch.randn(config["shape"], generator=torch.Generator().manual_seed(0), dtype=F64)
    fast = forward_backward(build(config, "fast", F64), x)
    ref = forward_backward(build(config, "reference", F64), x)
    assert fast.keys() == ref.keys()
    for name in ref:
        torch.testing.assert_close(fast[name], ref[name], **TOL, msg=lambda m, n=name: f"{n}: {m}")


@st.composite
def attention_configs(draw) -> dict:
    """All-candidate ConvNN over ``N`` tokens with feature similarities and no positional
    encoding: any ``k`` (``None``: every token; often with softmax(dot), i.e. exactly
    attention), weighting and kernel. Offset order (the raster order of the neighbors)
    is position dependent, so it comes with the ``sum`` kernel only."""
    num_tokens = draw(st.integers(2, 12))
    dim = draw(st.integers(2, 6))  # one channel: cosine is +-1, ties go by token index
    config = draw(kernel_options(dim))
    all_tokens = config["kernel"] == "sum" and draw(st.booleans())
    orders = ORDERS if config["kernel"] == "sum" else ["auto", "rank"]
    config |= {
        "k": None if all_tokens else draw(st.integers(1, num_tokens)),
        "similarity": draw(st.sampled_from(FEATURE_SIMILARITIES)),
        "weighting_similarity": draw(st.sampled_from([None, *FEATURE_SIMILARITIES])),
        "order": draw(st.sampled_from(orders)),
        "shape": (draw(st.integers(1, 2)), num_tokens, dim),
    }
    if all_tokens and draw(st.booleans()):
        config |= {"similarity": "dot", "weighting": "softmax", "weighting_similarity": None}
    return config


def attention_case(config: dict) -> tuple[ConvNNOptions, dict[str, torch.Tensor]]:
    """The options of an :func:`attention_configs` draw and random float64 leaves: value,
    query and key tokens, kernel parameters (layouts of :mod:`convnn.ops.aggregation`), bias."""
    config = dict(config)
    shape, out = config.pop("shape"), config.pop("out_channels")
    opts = ConvNNOptions(**config)
    g = torch.Generator().manual_seed(0)
    k = opts.k or shape[1]
    shapes = {"value": shape, "query": shape, "key": shape, "bias": (out,)}
    shapes |= convnn.ops.aggregation.weight_shapes(opts.kernel, shape[-1], out, k)
    leaves = {n: torch.randn(s, generator=g, dtype=F64).requires_grad_() for n, s in shapes.items()}
    return opts, leaves


@examples(200)
@given(config=attention_configs(), backend=st.sampled_from(["reference", "fast"]))
def test_attention_permutation_equivariance(config: dict, backend: str) -> None:
    """Permuting the tokens of all-candidate attention permutes its outputs."""
    opts, leaves = attention_case(config)
    perm = torch.randperm(leaves["value"].shape[1], generator=torch.Generator().manual_seed(1))

    def run(**tokens: torch.Tensor) -> torch.Tensor:
        return convnn.convnn(options=opts, backend=backend, **(leaves | tokens))

    with torch.no_grad():
        expected = run()[:, perm]
        actual = run(**{n: leaves[n][:, perm] for n in ("value", "query", "key")})
    torch.testing.assert_close(actual, expected, **TOL)


@examples(200)
@given(config=attention_configs())
def test_attention_fast_matches_reference(config: dict) -> None:
    """Token-level agreement of the backends, forward and backward (float64), also on the
    fast backend's small-N dense path and its exact-attention path."""
    opts, leaves = attention_case(config)
    results = {}
    for backend in ("fast", "reference"):
        out = convnn.convnn(options=opts, backend=backend, **leaves)
        proj = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=F64)
        grads = torch.autograd.grad((out * proj).sum(), list(leaves.values()), allow_unused=True)
        pairs = zip(grads, leaves.values(), strict=True)
        results[backend] = [out] + [torch.zeros_like(t) if g is None else g for g, t in pairs]
    for name, a, b in zip(["output", *leaves], *results.values(), strict=True):
        torch.testing.assert_close(a, b, **TOL, msg=lambda m, n=name: f"{n}: {m}")


@st.composite
def translation_configs(draw) -> dict:
    """Stride-1 "same" ConvNN2d whose neighbors depend on relative positions only:
    zero-padded windows (any similarity, weighting and kernel; no or rotary positional
    encoding) or location selection among all tokens (the convolution special case);
    and a shift ``(dy, dx)`` with an interior left to compare."""
    config = draw(conv_configs(candidates=["window", "all"]))
    layer = config["layer"]
    ks = draw(st.sampled_from([1, 3, 5]))
    size = draw(st.sampled_from([1, 3, 5]))
    k_max = size * size if layer["candidates"] == "window" else ks * ks
    channels = layer["in_channels"]
    encodings = ["none", "rope"] if channels % 4 == 0 else ["none"]
    layer |= {
        "kernel_size": ks,
        "stride": 1,
        "padding": ks // 2,
        "k": draw(st.integers(1, k_max)),
        "positional_encoding": draw(st.sampled_from(encodings)),
        "coords_to_values": False,
    }
    if layer["candidates"] == "window":
        layer |= {"window_size": size, "window_border": "pad"}
    else:  # mixed weights would standardize over the whole map, which is not relative
        layer["similarity"] = "location"
        if layer["weighting_similarity"] == "mixed":
            layer["weighting_similarity"] = None
    match_value_channels(layer)
    radius = max(ks, size) // 2
    dy, dx = draw(st.integers(-2, 2)), draw(st.integers(-2, 2))
    height = draw(st.integers(2 * radius + 1 + abs(dy), 2 * radius + 3 + abs(dy)))
    width = draw(st.integers(2 * radius + 1 + abs(dx), 2 * radius + 3 + abs(dx)))
    config["shape"] = (config["shape"][0], channels, height, width)
    return config | {"shift": (dy, dx), "radius": radius}


def interior(size: int, shift: int, radius: int) -> tuple[slice, slice]:
    """Positions ``p`` (and ``p + shift``) whose windows of ``radius`` lie inside a map of
    ``size``, before and after the shift: their outputs see no border and no wrap."""
    start, stop = radius + max(0, -shift), size - radius - max(0, shift)
    return slice(start, stop), slice(start + shift, stop + shift)


@examples(200)
@given(config=translation_configs(), backend=st.sampled_from(["reference", "fast"]))
def test_translation_equivariance(config: dict, backend: str) -> None:
    """Rolling the input by ``(dy, dx)`` shifts the outputs away from the borders alike."""
    layer = build(config, backend, F64)
    x = torch.randn(config["shape"], generator=torch.Generator().manual_seed(0), dtype=F64)
    (dy, dx), radius = config["shift"], config["radius"]
    with torch.no_grad():
        out = layer(x)
        shifted = layer(torch.roll(x, (dy, dx), dims=(2, 3)))
    (rows, rows_shifted), (cols, cols_shifted) = (
        interior(x.shape[2], dy, radius),
        interior(x.shape[3], dx, radius),
    )
    assert rows.stop > rows.start and cols.stop > cols.start
    torch.testing.assert_close(
        shifted[..., rows_shifted, cols_shifted], out[..., rows, cols], **TOL
    )


def test_strategies_cover_every_option() -> None:
    """The strategies draw every value of every option axis (so no axis is left out)."""
    seen: dict[str, set] = {}

    @examples(300)
    @given(config=conv_configs())
    def collect(config: dict) -> None:
        for name, value in config["layer"].items():
            seen.setdefault(name, set()).add(value)

    collect()
    expected = {
        "candidates": {"all", "random", "spatial", "window"},
        "similarity": set(SIMILARITIES),
        "weighting": set(WEIGHTINGS),
        "weighting_similarity": {None, *SIMILARITIES},
        "kernel": set(KERNELS),
        "order": set(ORDERS),
        "positional_encoding": {"none", "coords", "sincos", "learned", "rope"},
        "window_border": {"pad", "shift"},
        "coords_to_values": {False, True},
    }
    for name, values in expected.items():
        assert values <= seen[name], (name, values - seen[name])
    assert seen["kernel_size"] == {1, 2, 3, 5} and seen["stride"] == {1, 2}
    assert seen["k"] == set(range(1, 13))
