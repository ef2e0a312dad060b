"""The fixed eval sample of ``random`` candidates is per layer and reproducible.

In training every ConvNN layer draws its own candidates; in eval each converted layer now
hashes its fixed sample from ``sample_seed + layer index`` (docs/random_candidates.md: one
sample shared by every layer hid the same tokens from all of them and cost accuracy).
"""

from __future__ import annotations

import dataclasses

import timm
import torch

import convnn  # noqa: F401  (registers the models)
from convnn.modules.attention import ConvNNAttention
from convnn.ops.geometry import hashed_sample

TINY = dict(img_size=16, patch_size=4, embed_dim=32, depth=3, num_heads=2, num_classes=2)
RANDOM = dict(layer="convnn", k=4, candidates="random", num_samples=6)


def _layers(model: torch.nn.Module) -> list[ConvNNAttention]:
    return [m for m in model.modules() if isinstance(m, ConvNNAttention)]


def _vit(**options) -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model("convnn_vit_tiny_patch4_32", **TINY, **RANDOM, **options).eval()


def test_each_converted_layer_has_its_own_eval_sample() -> None:
    layers = _layers(_vit())
    assert [m.options.sample_seed for m in layers] == [0, 1, 2]
    samples = [tuple(hashed_sample(16, 6, m.options.sample_seed, "cpu").tolist()) for m in layers]
    assert len(set(samples)) == 3, samples  # three different token subsets


def test_the_users_sample_seed_offsets_every_layer() -> None:
    assert [m.options.sample_seed for m in _layers(_vit(sample_seed=5))] == [5, 6, 7]


def test_other_candidates_keep_the_users_options() -> None:
    torch.manual_seed(0)
    model = timm.create_model("convnn_vit_tiny_patch4_32", **TINY, layer="convnn", k=4)
    assert [m.options.sample_seed for m in _layers(model)] == [0, 0, 0]


def test_eval_is_reproducible_across_builds_and_calls() -> None:
    x = torch.randn(3, 3, 16, 16)
    a, b = _vit(), _vit()
    with torch.no_grad():
        first = a(x)
        assert torch.equal(first, a(x))
        assert torch.equal(first, b(x))


def test_per_layer_samples_change_the_eval_function() -> None:
    """The same weights evaluated with one sample shared by every layer differ from the
    per-layer samples: the layers really read different tokens."""
    x = torch.randn(3, 3, 16, 16)
    model = _vit()
    with torch.no_grad():
        per_layer = model(x)
        for m in _layers(model):
            m.options = dataclasses.replace(m.options, sample_seed=0)
        shared = model(x)
    assert not torch.allclose(per_layer, shared)
