"""Share a trained model the timm way: ``timm.models.save_for_hf`` a ``convnn_*`` model
(branching layers, so its state dict has keys its timm baseline does not), then
``timm.create_model("local-dir:DIR", pretrained=True)`` gives identical logits."""

from __future__ import annotations

import pytest
import timm
import torch
from timm.models._hub import save_for_hf

import convnn  # noqa: F401  (registers the models)
from convnn.models import MODEL_NAMES

SMALL = {  # timm arguments that keep each model small; inputs of the size in the tuple
    "convnn_vit_base_patch16_224": ({"depth": 1, "img_size": 64}, 64),
    "convnn_vit_small_patch16_224": ({"depth": 1, "img_size": 64}, 64),
    "convnn_vit_tiny_patch16_224": ({"depth": 1, "img_size": 64}, 64),
    "convnn_vit_tiny_patch4_32": ({"depth": 1}, 32),
    "convnn_vgg_mini": ({}, 16),
    "convnn_vgg11_mlp": ({"head_hidden_size": 16}, 32),
}


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_saved_model_reloads_with_identical_logits(name, tmp_path) -> None:
    model_args, size = SMALL.get(name, ({}, 64 if "cifar" not in name else 32))
    model_args = {**model_args, "layer": "branching", "branch_ratio": 0.25, "num_classes": 7}
    torch.manual_seed(0)
    model = timm.create_model(name, **model_args).eval()
    save_for_hf(model, tmp_path, model_args=model_args)
    reloaded = timm.create_model(f"local-dir:{tmp_path}", pretrained=True).eval()
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(x), model(x), rtol=0, atol=0)
    assert type(reloaded) is type(model)


def test_baseline_weights_still_load_before_conversion(tmp_path) -> None:
    """timm's own weights (a baseline's state dict) warm-start a converted model as before:
    where ConvNN is the exact special case (k = all, softmax(dot), sum kernel) the logits
    are the baseline's."""
    args = {"img_size": 32, "patch_size": 8, "depth": 2, "num_classes": 5}
    torch.manual_seed(0)
    baseline = timm.create_model("convnn_vit_tiny_patch4_32", layer="attention", **args).eval()
    save_for_hf(baseline, tmp_path, model_args={**args, "layer": "attention"})
    converted = timm.create_model(
        f"local-dir:{tmp_path}", pretrained=True, layer="convnn", k="all"
    ).eval()
    assert type(converted.blocks[0].attn).__name__ == "ConvNNAttention"
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(converted.double()(x), baseline.double()(x), rtol=0, atol=1e-12)
