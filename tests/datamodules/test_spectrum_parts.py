"""The spectrum study's parts (docs/results.md): the ViT layer presets are the published
layers they name (float64, against masked softmax attention written here), ``kernel_init``,
``convnn_vgg_mini``'s receptive field, and the generated tasks are what they promise."""

from __future__ import annotations

import copy
import math

import pytest
import timm
import torch
from torch import Tensor, nn

import convnn  # noqa: F401  (registers the convnn_* models)
from convnn.errors import OptionError
from datamodules import MarkersDataModule, TextureDataModule
from datamodules.structure import MARKER, MIN_CELLS, ORIENTATIONS, marker_images, texture_images

VIT = "convnn_vit_tiny_patch4_32"


def vit(layer: str, grid: int = 4, **options) -> nn.Module:
    """A 2-block ViT of ``grid x grid`` tokens (2x2 patches), no class token, float64."""
    torch.manual_seed(0)
    model = timm.create_model(
        VIT,
        layer=layer,
        img_size=2 * grid,
        patch_size=2,
        embed_dim=16,
        depth=2,
        num_heads=2,
        class_token=False,
        global_pool="avg",
        num_classes=3,
        **options,
    )
    return model.double().eval()


class MaskedAttention(nn.Module):
    """timm ``Attention``'s function with keys outside ``allowed(scores)`` (bool, like the
    scores ``(B, h, N, N)``) at ``-inf`` before the softmax."""

    def __init__(self, attn: nn.Module, allowed) -> None:
        super().__init__()
        self.attn, self.allowed = attn, allowed

    def forward(self, x: Tensor, *args, **kwargs) -> Tensor:
        a = self.attn
        B, N, _ = x.shape
        q, k, v = a.qkv(x).reshape(B, N, 3, a.num_heads, a.head_dim).permute(2, 0, 3, 1, 4)
        scores = q @ k.transpose(-2, -1) / math.sqrt(a.head_dim)
        scores = scores.masked_fill(~self.allowed(scores), float("-inf"))
        out = (scores.softmax(-1) @ v).transpose(1, 2).reshape(B, N, -1)
        return a.proj(out)


def masked_reference(baseline: nn.Module, allowed) -> nn.Module:
    reference = copy.deepcopy(baseline)
    for block in reference.blocks:
        block.attn = MaskedAttention(block.attn, allowed)
    return reference


def top_k(kk: int):
    def allowed(scores: Tensor) -> Tensor:
        keep = torch.zeros_like(scores, dtype=torch.bool)
        return keep.scatter_(-1, scores.topk(kk, dim=-1).indices, True)

    return allowed


def window(side: int, s: int):
    """NATTEN's mask: key (a, b) in the ``s x s`` window of query (i, j), shifted inward."""
    start = (torch.arange(side) - s // 2).clamp(0, side - s)
    inside = (torch.arange(side)[None, :] >= start[:, None]) & (
        torch.arange(side)[None, :] < start[:, None] + s
    )  # (queries, keys) along one axis
    mask = (inside[:, None, :, None] & inside[None, :, None, :]).reshape(side**2, side**2)
    return lambda scores: mask.expand_as(scores)


def _same_function(model: nn.Module, reference: nn.Module, grid: int) -> None:
    x = torch.randn(3, 3, 2 * grid, 2 * grid, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), rtol=0, atol=1e-10)


@pytest.mark.parametrize("kk", [1, 3, 9])
def test_kvt_preset_is_top_k_attention(kk) -> None:
    baseline = vit("attention")
    model = vit("kvt", k=kk)
    model.load_state_dict(baseline.state_dict())
    _same_function(model, masked_reference(baseline, top_k(kk)), 4)


@pytest.mark.parametrize(("grid", "size"), [(4, 3), (5, 3), (5, 5)])
def test_neighborhood_preset_is_natten(grid, size) -> None:
    baseline = vit("attention", grid)
    model = vit("neighborhood", grid, window_size=size)
    assert model.blocks[0].attn.options.k == size * size
    model.load_state_dict(baseline.state_dict())
    _same_function(model, masked_reference(baseline, window(grid, size)), grid)


@pytest.mark.parametrize(
    ("layer", "options", "key"),
    [
        ("kvt", {"similarity": "cosine"}, "similarity"),
        ("kvt", {"candidates": "window", "window_size": 3}, "candidates"),
        ("neighborhood", {"k": 5}, "k"),
        ("neighborhood", {"window_size": (3, 5)}, "window_size"),
    ],
)
def test_a_preset_refuses_options_it_fixes(layer, options, key) -> None:
    with pytest.raises(OptionError, match=f"layer='{layer}'") as err:
        vit(layer, **options)
    assert err.value.key == key


def test_presets_are_for_attention_models_only() -> None:
    with pytest.raises(OptionError, match=r"layer='kvt'.*'conv', 'convnn', 'branching'"):
        timm.create_model("convnn_vgg_mini", layer="kvt")


def test_depthwise_kernel_initialised_to_ones_starts_as_the_sum_kernel() -> None:
    ones = vit("convnn", k=5, kernel="depthwise", kernel_init="ones")
    summed = vit("convnn", k=5)
    assert all(torch.equal(b.attn.weight, torch.ones_like(b.attn.weight)) for b in ones.blocks)
    assert "kernel_init='ones'" in repr(ones.blocks[0].attn)
    summed.load_state_dict(ones.state_dict(), strict=False)
    _same_function(ones, summed, 4)
    drawn = vit("convnn", k=5, kernel="depthwise")  # the default draws it
    assert not torch.equal(drawn.blocks[0].attn.weight, ones.blocks[0].attn.weight)


@pytest.mark.parametrize(
    ("options", "match"),
    [({"kernel_init": "zeros"}, "kernel_init"), ({"kernel_init": "ones"}, "depthwise")],
)
def test_kernel_init_refusals_name_the_parameter(options, match) -> None:
    with pytest.raises(OptionError, match=match) as err:
        vit("convnn", k=5, **options)
    assert err.value.key == "kernel_init"


def test_vgg_mini_sees_a_7x7_window() -> None:
    """What makes the markers task long-range for it: no output position of the convolutions
    depends on pixels more than 3 away."""
    model = timm.create_model("convnn_vgg_mini", layer="conv", num_classes=2).eval()
    x = torch.randn(1, 3, 16, 16, requires_grad=True)
    model.forward_features(x)[0, :, 8, 8].sum().backward()
    rows, cols = (x.grad.abs().sum((0, 1)) > 0).nonzero().unbind(1)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (5, 11, 5, 11)


def test_texture_label_is_the_majority_orientation() -> None:
    images, labels = texture_images(400, 16, seed=3)
    assert images.shape == (400, 1, 16, 16) and torch.bincount(labels).tolist() == [100] * 4
    bright = images[:, 0] >= 0.7  # segment pixels; the background is below 0.35
    counts = []
    for dy, dx in ORIENTATIONS:  # pixels whose neighbours along the orientation are bright
        centre = bright[:, 1:-1, 1:-1]
        before = bright[:, 1 - dy : 15 - dy, 1 - dx : 15 - dx]
        after = bright[:, 1 + dy : 15 + dy, 1 + dx : 15 + dx]
        counts.append((centre & before & after).sum((1, 2)))
    agree = (torch.stack(counts, 1).argmax(1) == labels).float().mean()
    assert agree > 0.9  # crossing segments make a few spurious triplets


def test_markers_are_far_apart_and_the_label_is_same_colour() -> None:
    images, labels = marker_images(300, 16, seed=5)
    assert images.shape == (300, 3, 16, 16) and torch.bincount(labels).tolist() == [150, 150]
    cells = images.unfold(2, MARKER, MARKER).unfold(3, MARKER, MARKER)  # (N, 3, 4, 4, 4, 4)
    cells = cells.reshape(300, 3, 4, 4, MARKER * MARKER)
    spread = cells.amax(1) - cells.amin(1)  # colour saturation; noise is grey
    marked = (spread > 0.3).all(-1)  # (N, 4, 4): cells filled with one colour
    for i in range(300):
        where = marked[i].nonzero()
        assert len(where) == 2, i
        assert (where[0] - where[1]).abs().max() >= MIN_CELLS
        a, b = (cells[i, :, r, c, 0] for r, c in where.tolist())
        assert torch.equal(a, b) == bool(labels[i]), i


@pytest.mark.parametrize("module", [TextureDataModule, MarkersDataModule])
def test_generated_tasks_are_fixed_by_their_seed(module) -> None:
    def batch(seed: int) -> tuple[Tensor, Tensor]:
        data = module(num_train=64, num_val=32, seed=seed, batch_size=16, num_workers=0)
        data.setup("fit")
        return next(iter(data.val_dataloader()))

    (x, y), (x2, y2), (x3, _) = batch(0), batch(0), batch(1)
    assert x.shape == (16, 3, 16, 16) and y.max() < module.num_classes
    assert torch.equal(x, x2) and torch.equal(y, y2) and not torch.equal(x, x3)
    assert abs(float(x.mean())) < 0.5  # normalised with the module's mean and std
