"""Named regressions of issue 21: defects at the edges of the option space that every
path-against-path comparison missed, because the paths share the code that was wrong.

Each test states the expected result independently (shapes from the layer's definition,
exact distances from ``torch.cdist``, ``nn.Conv2d`` and timm's own baseline)."""

from __future__ import annotations

import threading

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import convnn
from convnn import ConvNNOptions
from convnn.errors import OptionError
from convnn.functional import convnn2d, select2d
from convnn.modules import BranchingConv2d, ConvNN1d, ConvNN2d, ConvNNAttention
from convnn.modules.branching import convnn_share
from convnn.ops.geometry import hashed_sample


@pytest.mark.parametrize("scope", ["example", "head"])
@pytest.mark.parametrize("training", [True, False])
def test_one_output_position_keeps_its_channels(scope, training):
    """A per-example table with one query row is per query, not shared (it used to give
    ``(2, 8, 1, 1)``: every example scored against every other example's candidates)."""
    torch.manual_seed(0)
    layer = ConvNN2d(4, 4, 3, candidates="random", num_samples=5, k=3, sample_scope=scope)
    assert layer.train(training)(torch.randn(2, 4, 3, 3)).shape == (2, 4, 1, 1)
    seq = ConvNN1d(4, 4, 3, candidates="random", num_samples=2, k=2, sample_scope=scope)
    assert seq.train(training)(torch.randn(2, 4, 3)).shape == (2, 4, 1)


def test_one_row_blocks_of_per_example_tables():
    """Blocks of one query row in the blocked selection (a tiny budget) keep the layout."""
    torch.manual_seed(0)
    attn = ConvNNAttention(
        16, 2, k=3, candidates="random", num_samples=6, sample_scope="example",
        selection_budget_mb=1e-5,
    ).train()  # fmt: skip
    assert attn(torch.randn(2, 17, 16)).shape == (2, 17, 16)
    conv = ConvNN2d(
        4, 4, 3, padding=1, candidates="random", num_samples=5, k=3, sample_scope="example",
        selection_budget_mb=1e-5,
    ).train()  # fmt: skip
    assert conv(torch.randn(2, 4, 5, 5)).shape == (2, 4, 5, 5)


def test_one_row_block_of_a_window_table_is_not_every_token():
    """A one-row block of a window table with as many slots as tokens is not the
    every-token table (query 0 used to select the zero padding token over itself)."""
    x = torch.tensor([[[[0.6614, 0.2669, 0.0617]]]], dtype=torch.float64)
    weight = torch.ones(1, 1, 1, dtype=torch.float64)
    outs = []
    for budget in (None, 1e-5):
        opts = ConvNNOptions(
            k=1, similarity="dot", candidates="window", window_size=(1, 3), sequence=True,
            selection_budget_mb=budget,
        )  # fmt: skip
        assert select2d(x, (1, 1), options=opts).index[0, :, 0].tolist() == [0, 0, 1]
        outs.append(convnn2d(x, options=opts, kernel_size=(1, 1), weight=weight))
    torch.testing.assert_close(outs[1], outs[0], rtol=0, atol=0)
    torch.testing.assert_close(outs[0].flatten(), x.flatten()[[0, 0, 1]])


@pytest.mark.parametrize("backend", ["reference", "fast"])
def test_float32_euclidean_with_zero_padding_selects_exactly(backend):
    """Features with a common offset on a zero-padded map: selection equals the exact
    distances of the same float32 inputs and the weights are within float32 rounding."""
    torch.manual_seed(0)
    x = torch.randn(1, 8, 10, 10) + 1000
    opts = ConvNNOptions(k=9, similarity="euclidean", weighting="similarity", backend=backend)
    sel = select2d(x, (3, 3), (1, 1), (1, 1), options=opts)
    tokens = F.pad(x, (1, 1, 1, 1)).double().flatten(2).transpose(1, 2)[0]  # (144, 8)
    exact_mode = "donot_use_mm_for_euclid_dist"
    dist = torch.cdist(tokens[sel.query_index], tokens, compute_mode=exact_mode)  # (100, 144)
    exact = dist.sort(dim=-1, stable=True).indices[:, :9].sort(-1).values
    assert torch.equal(sel.index[0].sort(-1).values, exact)
    expected = -(dist.gather(-1, sel.index[0]).square() + 1e-8).sqrt()
    assert (sel.weights[0].double() - expected).abs().max() < 1e-5


def test_reference_euclidean_weights_are_the_exact_ones():
    """The reference scores the selected neighbors directly (a query's distance to itself
    is sqrt(eps), not a matmul's rounding): float32 reference within 1e-5 of float64."""
    torch.manual_seed(0)
    x = torch.randn(2, 8, 10, 10) * 3 + 5
    kw = dict(padding=1, similarity="euclidean", weighting="similarity", kernel="depthwise")
    layer = ConvNN2d(8, 8, 3, backend="reference", **kw)
    exact = ConvNN2d(8, 8, 3, backend="reference", **kw).double()
    exact.load_state_dict(layer.state_dict())
    assert (layer(x).double() - exact(x.double())).abs().max() < 1e-4


def test_location_refuses_a_non_square_kernel():
    """Chebyshev's nearest positions are a square: a 3x5 kernel would get other
    neighbors than its window, so it is refused with the alternative named."""
    with pytest.raises(OptionError, match="candidates='window'") as info:
        ConvNN2d(3, 5, (3, 5), padding=(1, 2), similarity="location", candidates="all")
    assert info.value.key == "similarity"
    opts = ConvNNOptions(k=15, similarity="location", candidates="all")
    with pytest.raises(OptionError, match="not square"):
        convnn2d(torch.randn(1, 3, 8, 11), options=opts, kernel_size=(3, 5), padding=(1, 2),
                 weight=torch.randn(5, 3, 15))  # fmt: skip
    conv = nn.Conv2d(3, 5, (3, 5), padding=(1, 2))
    layer = ConvNN2d.from_conv2d(conv)  # the window: exact
    x = torch.randn(2, 3, 8, 11)
    torch.testing.assert_close(layer(x), conv(x), rtol=1e-5, atol=1e-5)
    seq = ConvNN1d(3, 5, 3, padding=1, similarity="location", candidates="all")  # one row
    assert seq(torch.randn(1, 3, 9)).shape == (1, 5, 9)


def test_vit_with_a_non_square_patch_grid_uses_its_grid():
    """A 4x16 patch grid is laid out as 4x16 (it used to be 8x8, with neighbors up to 10
    cells away): location neighbors of an inner patch lie within Chebyshev distance 1, of a
    border patch within 2."""
    timm = pytest.importorskip("timm")
    model = timm.create_model(
        "convnn_vit_tiny_patch16_224", img_size=(16, 64), patch_size=4, similarity="location",
        k=9, depth=1,
    ).eval()  # fmt: skip
    with convnn.record_selection(model) as record:
        model(torch.randn(1, 3, 16, 64))
    sel = record["blocks.0.attn"]
    assert (sel.grid.height, sel.grid.width) == (4, 16)
    q = sel.grid.positions(sel.query_index)[1:]  # the patches (query 0 is the class token)
    pos = sel.grid.positions(sel.index[0, 0, 1:])
    dist = (pos - q[:, None]).abs().amax(-1)
    border = ((q[:, 0] % 3 == 0) | (q[:, 1] % 15 == 0))[:, None]
    assert (dist <= torch.where(border, 2, 1)).all()
    odd = timm.create_model(
        "convnn_vit_tiny_patch16_224", img_size=(16, 60), patch_size=4, similarity="location",
        k=9, depth=1,
    )  # fmt: skip
    assert odd(torch.randn(1, 3, 16, 60)).shape == (1, 1000)


def test_attention_grid_size_mismatch_is_named():
    layer = ConvNNAttention(16, 2, k=3, similarity="location", grid_size=(2, 8))
    assert layer(torch.randn(1, 17, 16)).shape == (1, 17, 16)
    with pytest.raises(OptionError, match="2, 8") as info:
        layer(torch.randn(1, 26, 16))
    assert info.value.key == "grid_size"


def test_hashed_sample_has_no_int64_overflow():
    """Every intermediate of the eval sample's hash stays below 2**63 (inductor need not
    wrap int64 overflow as eager does): the same computation in float64-exact integers."""
    for n, r, seed in [(17, 7, 0), (37, 7, 0), (197, 32, 5), (64, 9, 7919 * 3 + 11)]:
        got = hashed_sample(n, r, seed, torch.device("cpu"))
        assert got.shape == (r,) and got.unique().numel() == r and (got < n).all()
        mask = 2**32 - 1
        zs = []
        for t in range(n):  # Python integers: no overflow anywhere
            z = (t + (seed & mask) * 0x61C88647 + 1) & mask
            for shift, mult in ((16, 0x7FEB352D), (15, 0x2C1B3C6D), (16, 0x297A2D39)):
                assert (z ^ (z >> shift)) * mult < 2**63
                z = ((z ^ (z >> shift)) * mult) & mask
            zs.append(z ^ (z >> 16))
        assert got.tolist() == sorted(sorted(range(n), key=zs.__getitem__)[:r])


@pytest.mark.parametrize(
    "ratio,total,share", [(0.29, 50, 15), (0.58, 25, 15), (0.7, 45, 32), (0.57, 50, 29)]
)
def test_branching_share_rounds_decimal_halves_up(ratio, total, share):
    assert convnn_share(ratio, total, "channels") == share


def test_ratio_zero_branching_loads_the_baseline_state_dict():
    conv = nn.Conv2d(4, 6, 3, padding=1)
    layer = BranchingConv2d(4, 6, 3, padding=1, ratio=0)
    layer.load_state_dict(conv.state_dict())
    x = torch.randn(2, 4, 5, 5)
    torch.testing.assert_close(layer(x), conv(x), rtol=0, atol=0)


def test_record_selection_ignores_other_threads():
    net = nn.Sequential(ConvNN2d(4, 4, 3, padding=1, similarity="cosine"))
    with convnn.record_selection(net) as record:
        worker = threading.Thread(target=lambda: [net(torch.randn(1, 4, 6, 6)) for _ in range(5)])
        worker.start()
        worker.join()
        assert len(record) == 0
        net(torch.randn(1, 4, 6, 6))
    assert len(record.calls["0"]) == 1


def test_compiled_random_scopes_follow_new_shapes_and_the_eager_eval_sample():
    """Per-example and per-head draws compile at a second token count (they used to fail
    at ``torch.rand`` with symbolic sizes), and compiled eval uses eager's fixed sample
    (inductor used to change the hash, or abort at 37 tokens)."""
    torch.manual_seed(0)
    layer = ConvNNAttention(16, 2, k=3, candidates="random", num_samples=7, sample_scope="head")
    compiled = torch.compile(layer)
    for n in (17, 26):
        assert compiled.train()(torch.randn(2, n, 16)).shape == (2, n, 16)
    for n in (17, 37):
        x = torch.randn(2, n, 16)
        torch.testing.assert_close(compiled.eval()(x), layer.eval()(x), rtol=1e-5, atol=1e-5)
