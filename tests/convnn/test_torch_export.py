"""``torch.export`` of every registered ``convnn_*`` model (docs/gpu.md, "torch.export,
torch.compile and the FLOP counter").

Each model name comes from ``timm.list_models("convnn_*")``, so a newly registered model is
exported here too. The models are shrunk where their family allows it (one block per stage,
narrow widths, one ViT block) and take their smallest input; each is exported in eval mode
with ConvNN layers (``layer="convnn"``: ConvNN2d in the CNNs, ConvNN-attention in the ViTs)
and, for one CNN and one ViT, branching layers. The exported program must equal the eager
model in float64. On the CPU the program holds PyTorch's gathers (tests/convnn/test_custom_ops.py
checks the Triton operators that a GPU export holds instead).
"""

from __future__ import annotations

import pytest
import timm
import torch

import convnn.models  # noqa: F401  (registers the models)

MODELS = timm.list_models("convnn_*")
BRANCHING = [name for name in ("convnn_vgg_mini", "convnn_vit_tiny_patch4_32") if name in MODELS]
CASES = [(name, "convnn") for name in MODELS] + [(name, "branching") for name in BRANCHING]


def _small(name: str) -> tuple[dict, int]:
    """Keyword arguments that shrink the model ``name`` and the side of its smallest input."""
    if "_vit_" in name:  # one block; 6 x 6 patches + the class token: more than 2 * head_dim,
        patch = 4 if "patch4" in name else 16  # so ConvNN-attention takes the blocked path
        return dict(depth=1, embed_dim=48, num_heads=3, img_size=6 * patch), 6 * patch
    if "resnet" in name:  # one block per stage; layer4 sees a 1 x 1 map
        return dict(layers=(1, 1, 1, 1), channels=(8, 16, 32, 64)), 32
    if "vgg" in name:  # five 2 x 2 pools need 32 x 32; vgg_mini has none
        small_head = dict(head_hidden_size=16) if "mlp" in name else {}
        return small_head, 8 if name.endswith("_mini") else 32
    return {}, 32


def test_every_registered_model_is_covered():
    assert len(MODELS) >= 12 and {"convnn_resnet50", "convnn_vit_base_patch16_224"} <= set(MODELS)


@pytest.mark.parametrize(("name", "layer"), CASES)
def test_exported_model_equals_eager(name, layer):
    kwargs, side = _small(name)
    torch.manual_seed(0)
    model = timm.create_model(name, layer=layer, num_classes=5, **kwargs).double().eval()
    x = torch.randn(2, 3, side, side, dtype=torch.float64)
    with torch.no_grad():
        want = model(x)
    exported = torch.export.export(model, (x,))
    with torch.no_grad():
        got = exported.module()(x)
    assert got.shape == want.shape == (2, 5)
    torch.testing.assert_close(got, want, atol=1e-12 * want.abs().max().item(), rtol=0)
