"""The checklists of docs/architecture.md, kept true by tests.

* Adding an option: every :class:`ConvNNOptions` field is accepted by name by every
  layer, by ``convert`` and by the timm models; a misspelled name gets a close match.
* Adding a path: every registered path has a name in the ``Backend`` literal, says what
  it needs, runs by name where it can (and equals the reference there, forward and
  backward in float64) and refuses clearly where it cannot; ``fast`` logs its choice.
"""

from __future__ import annotations

import logging
from typing import get_args

import pytest
import timm
import torch

import convnn
from convnn import backends
from convnn.errors import BackendError, ConvNNError, OptionError
from convnn.options import OPTION_NAMES, Backend, ConvNNOptions

F64 = torch.float64
DEFAULTS = ConvNNOptions()

LAYERS = {
    "ConvNN2d": lambda **kw: convnn.ConvNN2d(4, 4, 3, padding=1, **kw),
    "ConvNN1d": lambda **kw: convnn.ConvNN1d(4, 4, 3, padding=1, **kw),
    "ConvNNAttention": lambda **kw: convnn.ConvNNAttention(16, 2, **kw),
    "BranchingConv2d": lambda **kw: convnn.BranchingConv2d(4, 8, **kw),
    "BranchingAttention": lambda **kw: convnn.BranchingAttention(16, 2, **kw),
}


@pytest.mark.parametrize("layer", sorted(LAYERS))
@pytest.mark.parametrize("name", sorted(OPTION_NAMES))
def test_every_option_is_accepted_by_every_layer(layer: str, name: str) -> None:
    """Each field of ConvNNOptions, passed by name, reaches the layer's options."""
    value = getattr(DEFAULTS, name)
    if name == "k":
        value = 3
    if name == "sequence":
        value = True  # ConvNN1d always sets it
    module = LAYERS[layer](**{name: value})
    options = getattr(module, "options", None) or module.convnn.options
    assert getattr(options, name) == value


@pytest.mark.parametrize("layer", sorted(LAYERS))
def test_options_object_and_overrides(layer: str) -> None:
    """``options=`` sets everything at once; overrides replace single fields."""
    opts = ConvNNOptions(k=4, similarity="euclidean", weighting="softmax", kernel="sum")
    module = LAYERS[layer](options=opts, lam=0.25)
    got = getattr(module, "options", None) or module.convnn.options
    assert (got.k, got.similarity, got.weighting, got.lam) == (4, "euclidean", "softmax", 0.25)


@pytest.mark.parametrize("layer", sorted(LAYERS))
def test_misspelled_option_suggests_the_name(layer: str) -> None:
    with pytest.raises(OptionError, match=r"unknown ConvNN options \['simlarity'\].*'similarity'"):
        LAYERS[layer](simlarity="dot")


def test_every_option_is_accepted_by_convert_and_models() -> None:
    """``convert`` and the registered timm models take every option by name."""
    values = {name: getattr(DEFAULTS, name) for name in OPTION_NAMES}
    values["k"] = 9
    model = timm.create_model("convnn_resnet18_cifar", layer="convnn", **values)
    layers = [m for m in model.modules() if isinstance(m, convnn.ConvNN2d)]
    assert layers and all(m.options.similarity == DEFAULTS.similarity for m in layers)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1))
    assert isinstance(convnn.convert(net, **values)[0], convnn.ConvNN2d)
    with pytest.raises(OptionError, match="did you mean 'num_samples'"):
        timm.create_model("convnn_resnet18_cifar", layer="convnn", num_sample=4)


def test_errors_share_one_root() -> None:
    assert issubclass(OptionError, ConvNNError) and issubclass(OptionError, ValueError)
    assert issubclass(BackendError, OptionError)


def test_every_path_is_named_and_documented() -> None:
    assert set(backends.PATHS) == set(get_args(Backend)) - {"auto", "fast"}
    assert list(backends.PATHS)[-2:] == ["blocked", "reference"]  # they run everything
    for path in backends.PATHS.values():
        assert path.level in ("map", "tokens") and path.requires


def _map_case(**kw):
    base = dict(in_channels=4, out_channels=4, kernel_size=3, padding=1)
    return "map", {**base, **kw}


# One configuration each path runs; a new path without a case fails the test below.
PATH_CASES = {
    "conv": _map_case(candidates="window", similarity="location"),
    "window_attention": _map_case(
        candidates="window", similarity="dot", weighting="softmax", kernel="sum"
    ),
    "shifts": _map_case(
        candidates="window", similarity="cosine", weighting="softmax", kernel="depthwise"
    ),
    "sdpa": ("tokens", dict(k=None, similarity="dot", weighting="softmax", kernel="sum")),
    "dense": ("tokens", dict(k=3, similarity="cosine", weighting="softmax", kernel="sum")),
    "blocked": ("tokens", dict(k=3, similarity="euclidean", weighting="similarity")),
    "reference": ("tokens", dict(k=3, similarity="mixed", kernel="depthwise")),
}


def _run(level: str, settings: dict, backend: str, inputs: list[torch.Tensor]):
    """Output and gradients of one case under ``backend`` (same parameters every time)."""
    torch.manual_seed(0)
    if level == "map":
        layer = convnn.ConvNN2d(backend=backend, **settings).double()
    else:
        layer = convnn.ConvNNAttention(16, 2, num_prefix_tokens=0, backend=backend, **settings)
        layer = layer.double()
    leaves = [t.detach().requires_grad_(True) for t in inputs]
    y = layer(*leaves)
    return (y, *torch.autograd.grad(y.square().sum(), [*leaves, *layer.parameters()]))


@pytest.mark.parametrize("name", sorted(backends.PATHS))
def test_each_path_runs_by_name_and_equals_the_reference(name: str) -> None:
    assert name in PATH_CASES, f"add a case for the new path {name!r}"
    level, settings = PATH_CASES[name]
    shape = (2, 4, 5, 6) if level == "map" else (2, 9, 16)
    x = torch.randn(shape, dtype=F64, generator=torch.Generator().manual_seed(1))
    got, expected = _run(level, settings, name, [x]), _run(level, settings, "reference", [x])
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=0)


@pytest.mark.parametrize("name", sorted(set(backends.PATHS) - {"blocked", "reference"}))
def test_a_path_that_cannot_run_says_what_it_needs(name: str) -> None:
    level, _ = PATH_CASES[name]
    other = dict(k=3, similarity="euclidean", weighting="similarity", kernel="depthwise")
    if level == "map":
        layer = convnn.ConvNN2d(4, 4, 3, padding=1, backend=name, **other)
        x = torch.randn(1, 4, 5, 5)
    else:
        layer = convnn.ConvNNAttention(16, 2, backend=name, **other)
        x = torch.randn(1, 10, 16)
    with pytest.raises(BackendError, match=rf"backend='{name}' cannot run these options: it needs"):
        layer(x)


def test_a_map_path_on_tokens_is_refused() -> None:
    opts = ConvNNOptions(k=3, kernel="sum", backend="conv")
    with pytest.raises(BackendError, match="backend='conv' runs on feature maps"):
        convnn.convnn(torch.randn(1, 9, 4), options=opts)


def test_fast_logs_its_choice(caplog: pytest.LogCaptureFixture) -> None:
    layer = convnn.ConvNNAttention(16, 2, k=None, num_prefix_tokens=0)
    with caplog.at_level(logging.DEBUG, logger="convnn.backends"):
        layer(torch.randn(1, 9, 16))
        convnn.ConvNN2d(4, 4, 3, padding=1, candidates="window", similarity="location")(
            torch.randn(1, 4, 5, 5)
        )
    messages = [r.getMessage() for r in caplog.records]
    assert "convnn tokens path: sdpa (backend=fast)" in messages
    assert "convnn map path: conv (backend=fast)" in messages


def test_public_names_resolve_lazily_to_their_modules() -> None:
    """``import convnn`` imports its names on first use; each is the object of its module."""
    import importlib

    import convnn

    assert set(convnn.__all__) == {*convnn._SOURCES, "functional"}
    for name, source in convnn._SOURCES.items():
        module = importlib.import_module(source, "convnn")
        assert getattr(convnn, name) is getattr(module, name), name
    with pytest.raises(AttributeError, match="no attribute 'ConvNN3d'"):
        convnn.ConvNN3d  # noqa: B018


# Call keywords: written once, in functional.SelectionArgs / MapSelectionArgs; each one reaches
# the call (a case per keyword, where leaving it out gives another selection or an error).
def _tokens(n: int = 9, c: int = 4) -> torch.Tensor:
    return torch.randn(2, n, c, dtype=F64, generator=torch.Generator().manual_seed(0))


def _grid_case() -> None:
    opts = ConvNNOptions(k=3, similarity="location")
    with pytest.raises(OptionError, match="grid"):
        convnn.functional.select(_tokens(), options=opts)
    chosen = convnn.functional.select(_tokens(), options=opts, grid=convnn.functional.Grid(3, 3))
    assert chosen.position is not None


def _query_index_case() -> None:
    out = convnn.functional.convnn(
        _tokens(), options=ConvNNOptions(k=3, kernel="sum"), query_index=torch.arange(4)
    )
    assert out.shape == (2, 4, 4)


def _pos_table_case() -> None:
    opts = ConvNNOptions(k=3, positional_encoding="learned")
    grid, x = convnn.functional.Grid(3, 3), _tokens()
    zero = convnn.functional.select(
        x, options=opts, grid=grid, pos_table=torch.zeros(4, 3, 3, dtype=F64)
    )
    table = 10 * torch.randn(4, 3, 3, dtype=F64, generator=torch.Generator().manual_seed(1))
    assert not torch.equal(
        zero.index, convnn.functional.select(x, options=opts, grid=grid, pos_table=table).index
    )


def _sample_case() -> None:
    opts = ConvNNOptions(k=2, candidates="random", num_samples=3)
    chosen = convnn.functional.select(_tokens(), options=opts, sample=torch.tensor([1, 4, 7]))
    for query, row in enumerate(chosen.index[0].tolist()):  # the sample and the query itself
        assert set(row) <= {1, 4, 7, query}


def _generator_case() -> None:
    opts = ConvNNOptions(k=2, candidates="random", num_samples=3)

    def draw(seed: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        x = _tokens(64)
        return convnn.functional.select(x, options=opts, training=True, generator=generator).index

    assert torch.equal(draw(0), draw(0)) and not torch.equal(draw(0), draw(1))


def _training_case() -> None:
    kw = dict(options=ConvNNOptions(k=3, weighting="softmax", kernel="sum"), dropout_p=0.5)
    torch.manual_seed(0)
    x = _tokens()
    assert torch.equal(convnn.functional.convnn(x, **kw), convnn.functional.convnn(x, **kw))
    assert not torch.equal(
        convnn.functional.convnn(x, **kw), convnn.functional.convnn(x, training=True, **kw)
    )


def _backend_case() -> None:
    opts = ConvNNOptions(k=3, similarity="cosine", kernel="sum")
    with pytest.raises(BackendError, match="sdpa"):
        convnn.functional.convnn(_tokens(), options=opts, backend="sdpa")
    torch.testing.assert_close(
        convnn.functional.convnn(_tokens(), options=opts, backend="reference"),
        convnn.functional.convnn(_tokens(), options=opts, backend="blocked"),
        rtol=1e-12, atol=1e-12,
    )  # fmt: skip


SUM = ConvNNOptions(k=3, kernel="sum")

KEYWORD_CASES = {
    "grid": _grid_case,
    "query_index": _query_index_case,
    "pos_table": _pos_table_case,
    "sample": _sample_case,
    "generator": _generator_case,
    "training": _training_case,
    "backend": _backend_case,
}


def test_every_call_keyword_has_a_case() -> None:
    from convnn.functional import MapSelectionArgs, SelectionArgs

    assert set(KEYWORD_CASES) == SelectionArgs.__optional_keys__
    assert MapSelectionArgs.__optional_keys__ < SelectionArgs.__optional_keys__


@pytest.mark.parametrize("name", sorted(KEYWORD_CASES))
def test_every_call_keyword_reaches_the_call(name: str) -> None:
    KEYWORD_CASES[name]()


@pytest.mark.parametrize(
    "call",
    [
        lambda **kw: convnn.functional.convnn(_tokens(), options=SUM, **kw),
        lambda **kw: convnn.functional.select(_tokens(), options=SUM, **kw),
        lambda **kw: convnn.functional.convnn2d(
            torch.randn(1, 4, 5, 5), options=SUM, kernel_size=(3, 3), **kw
        ),
        lambda **kw: convnn.functional.select2d(torch.randn(1, 4, 5, 5), (3, 3), options=SUM, **kw),
    ],
    ids=["convnn", "select", "convnn2d", "select2d"],
)
def test_misspelled_call_keyword_suggests_the_name(call) -> None:
    with pytest.raises(OptionError, match=r"unknown \w+\(\) keywords \['trainng'\].*'training'"):
        call(trainng=True)
