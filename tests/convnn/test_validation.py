"""Bad arguments raise ``ValueError`` naming the parameter, its value and what is allowed
(STYLE: validate once, at construction; shape-dependent checks at forward, before any
computation)."""

from __future__ import annotations

import re

import pytest
import torch

import convnn
from convnn import (
    BranchingAttention,
    BranchingConv2d,
    ConvNN2d,
    ConvNNAttention,
    ConvNNOptions,
    Grid,
)

# (parameter, bad value, one allowed value the message must list)
BAD_CHOICES = [
    ("similarity", "manhattan", "cosine"),
    ("weighting", "sigmoid", "softmax"),
    ("kernel", "dilated", "depthwise"),
    ("candidates", "strided", "spatial"),
    ("positional_encoding", "alibi", "rope"),
    ("order", "reverse", "offset"),
    ("window_border", "reflect", "shift"),
    ("backend", "cuda", "reference"),
    ("weighting_similarity", "l1", "dot"),
    ("mixed_feature", "location", "euclidean"),
]


def choice_pattern(name: str, value: str, allowed: str) -> str:
    """``name='value'`` ... the allowed set containing ``allowed``."""
    return rf"{re.escape(name)}={re.escape(repr(value))}.*{re.escape(repr(allowed))}"


@pytest.mark.parametrize(("name", "value", "allowed"), BAD_CHOICES)
def test_unknown_choice_in_options(name: str, value: str, allowed: str) -> None:
    """ConvNNOptions rejects an unknown option name, listing the allowed ones."""
    with pytest.raises(ValueError, match=choice_pattern(name, value, allowed)):
        ConvNNOptions(**{name: value})


@pytest.mark.parametrize(
    "layer", ["ConvNN2d", "ConvNNAttention", "BranchingConv2d", "BranchingAttention"]
)
@pytest.mark.parametrize(("name", "value", "allowed"), BAD_CHOICES)
def test_unknown_choice_in_layers(layer: str, name: str, value: str, allowed: str) -> None:
    """The layer constructors reject an unknown option name the same way."""
    build = {
        "ConvNN2d": lambda **kw: ConvNN2d(4, 4, **kw),
        "ConvNNAttention": lambda **kw: ConvNNAttention(16, num_heads=2, **kw),
        "BranchingConv2d": lambda **kw: BranchingConv2d(4, 8, **kw),
        "BranchingAttention": lambda **kw: BranchingAttention(16, num_heads=2, **kw),
    }[layer]
    with pytest.raises(ValueError, match=choice_pattern(name, value, allowed)):
        build(**{name: value})


def test_k_larger_than_window() -> None:
    """k > s*s window candidates is rejected at construction, with the allowed range."""
    with pytest.raises(ValueError, match=r"k=10 .*candidates='window'.*k <= 9"):
        ConvNNOptions(k=10, candidates="window", window_size=3)
    with pytest.raises(ValueError, match=r"k=10 .*k <= 9"):
        ConvNN2d(4, 4, 3, k=10, candidates="window")


@pytest.mark.parametrize(
    ("candidates", "num_samples", "limit"), [("random", 8, 8), ("spatial", 10, 9)]
)
def test_k_larger_than_samples(candidates: str, num_samples: int, limit: int) -> None:
    """k larger than the sampled candidates is rejected at construction."""
    with pytest.raises(ValueError, match=rf"k=12 .*k <= {limit}"):
        ConvNNOptions(k=12, candidates=candidates, num_samples=num_samples)


def test_k_larger_than_tokens_at_forward() -> None:
    """With all tokens as candidates, k > N is rejected at forward."""
    opts = ConvNNOptions(k=10, kernel="sum")
    with pytest.raises(ValueError, match=r"k=10 .*N=9.*k <= 9"):
        convnn.convnn(torch.randn(1, 9, 4), options=opts)
    layer = ConvNNAttention(16, num_heads=2, k=20)
    with pytest.raises(ValueError, match=r"k=20 .*N=17.*k <= 17"):
        layer(torch.randn(1, 17, 16))


@pytest.mark.parametrize("candidates", ["random", "spatial"])
def test_num_samples_required(candidates: str) -> None:
    """random and spatial candidates need num_samples."""
    with pytest.raises(ValueError, match=rf"num_samples.*candidates='{candidates}'"):
        ConvNNOptions(k=3, candidates=candidates)
    with pytest.raises(ValueError, match=rf"num_samples.*candidates='{candidates}'"):
        ConvNN2d(4, 4, candidates=candidates)


@pytest.mark.parametrize("num_samples", [0, -3, 2.5])
def test_num_samples_not_positive_int(num_samples) -> None:
    """num_samples must be a positive integer."""
    with pytest.raises(ValueError, match=rf"num_samples={num_samples!r}.*positive integer"):
        ConvNNOptions(k=1, candidates="random", num_samples=num_samples)


@pytest.mark.parametrize("candidates", ["random", "spatial"])
def test_num_samples_larger_than_tokens_at_forward(candidates: str) -> None:
    """num_samples > N is rejected at forward, with the allowed range."""
    opts = ConvNNOptions(k=3, candidates=candidates, num_samples=25, kernel="sum")
    with pytest.raises(ValueError, match=r"num_samples=25 .*N=16.*<= 16"):
        convnn.convnn(torch.randn(1, 16, 4), options=opts, grid=Grid(4, 4))


@pytest.mark.parametrize("ratio", [-0.1, 1.5])
def test_ratio_outside_unit_interval(ratio: float) -> None:
    """Branching ratios must lie in [0, 1]."""
    pattern = rf"ratio={ratio!r}.*\[0, 1\]"
    with pytest.raises(ValueError, match=pattern):
        BranchingConv2d(4, 8, ratio=ratio)
    with pytest.raises(ValueError, match=pattern):
        BranchingAttention(16, num_heads=2, ratio=ratio)


@pytest.mark.parametrize("lam", [-0.5, 1.01])
def test_lam_outside_unit_interval(lam: float) -> None:
    """The mixed-similarity weight lam must lie in [0, 1]."""
    pattern = rf"lam={lam!r}.*\[0, 1\]"
    with pytest.raises(ValueError, match=pattern):
        ConvNNOptions(similarity="mixed", lam=lam)
    with pytest.raises(ValueError, match=pattern):
        ConvNN2d(4, 4, similarity="mixed", lam=lam)
    with pytest.raises(ValueError, match=pattern):
        ConvNNAttention(16, num_heads=2, similarity="mixed", lam=lam)


def test_wrong_input_channels() -> None:
    """ConvNN2d.forward rejects an input whose channel count differs from in_channels."""
    layer = ConvNN2d(4, 6, padding=1)
    with pytest.raises(ValueError, match=r"input has 3 channels.*in_channels=4"):
        layer(torch.randn(2, 3, 8, 8))


def test_wrong_kernel_channels_in_functional() -> None:
    """The functional rejects a standard weight whose input channels differ from the values."""
    opts = ConvNNOptions(k=3)
    with pytest.raises(ValueError, match=r"input has 4 channels.*in_channels=5"):
        convnn.convnn(torch.randn(1, 9, 4), options=opts, weight=torch.randn(2, 5, 3))


@pytest.mark.parametrize("window_size", [2, 4, (3, 4)])
def test_even_window_size(window_size) -> None:
    """Window sizes must be odd (the query sits at the centre)."""
    with pytest.raises(ValueError, match=rf"window_size={re.escape(str(window_size))}.*odd"):
        ConvNNOptions(k=1, candidates="window", window_size=window_size)


def test_even_window_size_in_layers() -> None:
    """The layers pass window_size on and reject an even one."""
    with pytest.raises(ValueError, match=r"window_size=4.*odd"):
        ConvNN2d(4, 4, 3, k=1, candidates="window", window_size=4)
    with pytest.raises(ValueError, match=r"window_size=4.*odd"):
        ConvNNAttention(16, num_heads=2, k=1, candidates="window", window_size=4)


@pytest.mark.parametrize("value", [0, -1, True, 2.0])
def test_k_not_positive_int(value) -> None:
    """k must be a positive integer (or None for every candidate)."""
    with pytest.raises(ValueError, match=rf"k={value!r}.*positive integer or None"):
        ConvNNOptions(k=value)


def test_unknown_backend_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    """CONVNN_BACKEND with an unknown value is rejected when backend='auto' reads it."""
    monkeypatch.setenv("CONVNN_BACKEND", "triton")
    opts = ConvNNOptions(k=3, kernel="sum")
    with pytest.raises(ValueError, match=r"CONVNN_BACKEND='triton'.*'reference'.*'fast'"):
        convnn.convnn(torch.randn(1, 9, 4), options=opts)
    with pytest.raises(ValueError, match=r"CONVNN_BACKEND='triton'"):
        ConvNN2d(4, 4, padding=1)(torch.randn(1, 4, 5, 5))


@pytest.mark.parametrize("backend", ["reference", "fast"])
def test_explicit_backend_overrides_environment(monkeypatch: pytest.MonkeyPatch, backend) -> None:
    """An explicit backend wins over CONVNN_BACKEND, valid or not."""
    monkeypatch.setenv("CONVNN_BACKEND", "triton")
    opts = ConvNNOptions(k=3, kernel="sum", backend=backend)
    assert convnn.convnn(torch.randn(1, 9, 4), options=opts).shape == (1, 9, 4)


def test_unknown_backend_argument_at_forward() -> None:
    """An unknown ``backend=`` override of the functional is rejected with the allowed set."""
    with pytest.raises(ValueError, match=r"backend='cuda'.*'fast'"):
        convnn.convnn(
            torch.randn(1, 9, 4), options=ConvNNOptions(k=3, kernel="sum"), backend="cuda"
        )


@pytest.mark.parametrize("encoding", ["sincos", "rope"])
def test_encoding_needs_dim_divisible_by_4(encoding: str) -> None:
    """sincos and rope name the encoding and the offending feature dimension."""
    opts = ConvNNOptions(k=3, kernel="sum", positional_encoding=encoding)
    with pytest.raises(ValueError, match=rf"positional_encoding='{encoding}'.*divisible by 4.*6"):
        convnn.convnn(torch.randn(1, 9, 6), options=opts, grid=Grid(3, 3))


def test_checks_run_before_computation(monkeypatch: pytest.MonkeyPatch) -> None:
    """Forward-time size checks fire before any candidate selection is attempted."""
    import convnn.functional as functional

    def fail(*args, **kwargs):
        raise AssertionError("selection ran before validation")

    monkeypatch.setattr(functional, "choose_backend", fail)
    monkeypatch.setattr(functional, "encode_positions", fail)
    with pytest.raises(ValueError, match=r"k=10"):
        convnn.convnn(torch.randn(1, 9, 4), options=ConvNNOptions(k=10, kernel="sum"))
    opts = ConvNNOptions(k=3, candidates="random", num_samples=25, kernel="sum")
    with pytest.raises(ValueError, match=r"num_samples=25"):
        convnn.convnn(torch.randn(1, 16, 4), options=opts)


@pytest.mark.parametrize(
    "kernel, given, missing",
    [
        ("standard", {}, "weight"),
        ("depthwise", {}, "weight"),
        ("separable", {"weight": torch.randn(4, 3)}, "pointwise_weight"),
    ],
)
def test_functional_call_without_its_kernel_weights_names_them(kernel, given, missing) -> None:
    """The functional operator names a missing kernel parameter (not an assertion deep in
    the aggregation), on tokens and on maps, before any computation."""
    options = ConvNNOptions(k=3, kernel=kernel)
    pattern = rf"kernel='{kernel}' needs {missing} .*only kernel='sum' needs none"
    with pytest.raises(convnn.OptionError, match=pattern) as err:
        convnn.functional.convnn(torch.randn(1, 5, 4), options=options, **given)
    assert err.value.key == missing
    with pytest.raises(convnn.OptionError, match=pattern):
        x = torch.randn(1, 4, 5, 5)
        convnn.functional.convnn2d(x, options=options, kernel_size=(3, 3), **given)
