"""ConvNN ViTs (SPEC §3): timm's ``VisionTransformer`` with the attention of every
block replaced by ConvNN-attention or branching attention.

``layer="attention"`` is the unmodified ViT; ``"convnn"`` uses
:class:`~convnn.ConvNNAttention` (default: each query aggregates its ``k=9`` most
similar tokens, ``softmax(dot)`` weights, ``sum`` kernel; ``k="all"`` is exactly
self-attention); ``"branching"`` makes ``round(branch_ratio * num_heads)`` heads ConvNN
heads (:class:`~convnn.BranchingAttention`). Parameter names stay timm's, so timm
ViT checkpoints load.
"""

from __future__ import annotations

from typing import Any

from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn

from ._builder import baseline_cfg, build_convnn_model, cifar_cfg

__all__: list[str] = []

_BLOCK_ATTENTION = ["blocks.*.attn", "*.blocks.*.attn"]


def _create(variant: str, pretrained: bool, **kwargs: Any) -> VisionTransformer:
    out_indices = kwargs.pop("out_indices", 3)
    return build_model_with_cfg(
        VisionTransformer,
        variant,
        pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(out_indices=out_indices, feature_cls="getter"),
        **kwargs,
    )


def _vit(
    variant: str,
    pretrained: bool,
    model_args: dict[str, Any],
    layer: str,
    branch_ratio: float,
    kwargs: dict[str, Any],
) -> VisionTransformer:
    return build_convnn_model(  # type: ignore[return-value]
        _create,
        variant,
        pretrained,
        layer=layer,
        baseline="attention",
        branch_ratio=branch_ratio,
        include=_BLOCK_ATTENTION,
        kwargs={**model_args, **kwargs},
    )


default_cfgs = generate_default_cfgs(
    {
        "convnn_vit_base_patch16_224.augreg2_in21k_ft_in1k": baseline_cfg(
            "vit_base_patch16_224.augreg2_in21k_ft_in1k"
        ),
        "convnn_vit_small_patch16_224.augreg_in21k_ft_in1k": baseline_cfg(
            "vit_small_patch16_224.augreg_in21k_ft_in1k"
        ),
        "convnn_vit_tiny_patch16_224.augreg_in21k_ft_in1k": baseline_cfg(
            "vit_tiny_patch16_224.augreg_in21k_ft_in1k"
        ),
        "convnn_vit_tiny_patch4_32": cifar_cfg(
            mean=(0.5, 0.5, 0.5),
            std=(0.5, 0.5, 0.5),
            first_conv="patch_embed.proj",
            classifier="head",
            fixed_input_size=True,
        ),
    }
)


@register_model
def convnn_vit_base_patch16_224(
    pretrained: bool = False, layer: str = "convnn", branch_ratio: float = 0.5, **kwargs: Any
) -> VisionTransformer:
    """ViT-B/16 with ConvNN (``layer="convnn"``), branching or plain (``"attention"``) attention.

    ``pretrained=True`` loads timm's ViT-B/16 weights before conversion. ConvNN
    options are keyword arguments (see :class:`convnn.ConvNNAttention`).
    """
    args = dict(patch_size=16, embed_dim=768, depth=12, num_heads=12)
    return _vit("convnn_vit_base_patch16_224", pretrained, args, layer, branch_ratio, kwargs)


@register_model
def convnn_vit_small_patch16_224(
    pretrained: bool = False, layer: str = "convnn", branch_ratio: float = 0.5, **kwargs: Any
) -> VisionTransformer:
    """ViT-S/16 with ConvNN, branching or plain attention."""
    args = dict(patch_size=16, embed_dim=384, depth=12, num_heads=6)
    return _vit("convnn_vit_small_patch16_224", pretrained, args, layer, branch_ratio, kwargs)


@register_model
def convnn_vit_tiny_patch16_224(
    pretrained: bool = False, layer: str = "convnn", branch_ratio: float = 0.5, **kwargs: Any
) -> VisionTransformer:
    """ViT-Ti/16 with ConvNN, branching or plain attention."""
    args = dict(patch_size=16, embed_dim=192, depth=12, num_heads=3)
    return _vit("convnn_vit_tiny_patch16_224", pretrained, args, layer, branch_ratio, kwargs)


@register_model
def convnn_vit_tiny_patch4_32(
    pretrained: bool = False, layer: str = "convnn", branch_ratio: float = 0.5, **kwargs: Any
) -> VisionTransformer:
    """ViT-Ti with 4x4 patches for 32x32 inputs (CIFAR: 64 patches + class token, 10 classes)."""
    args = dict(img_size=32, patch_size=4, embed_dim=192, depth=12, num_heads=3)
    return _vit("convnn_vit_tiny_patch4_32", pretrained, args, layer, branch_ratio, kwargs)
