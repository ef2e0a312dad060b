"""ConvNN ViTs (docs/method.md §3): timm's ``VisionTransformer`` with the attention of every
block replaced by ConvNN-attention or branching attention.

``layer="attention"`` is the unmodified ViT; ``"convnn"`` uses
:class:`~convnn.ConvNNAttention` (default: each query aggregates its ``k=9`` most
similar tokens, ``softmax(dot)`` weights, ``sum`` kernel; ``k="all"`` is exactly
self-attention); ``"branching"`` makes ``round(branch_ratio * num_heads)`` heads ConvNN
heads (:class:`~convnn.BranchingAttention`). Parameter names stay timm's, so timm
ViT checkpoints load.

Each ``convnn_vit_*`` takes ``layer`` (``"convnn"``, the default), ``branch_ratio`` (0.5)
and every ConvNN-attention option (see :class:`convnn.ConvNNAttention`) as keyword
arguments.
"""

from __future__ import annotations

from typing import Any

from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn

from ._builder import baseline_cfg, cifar_cfg
from ._common import create_convnn_model

__all__: list[str] = []

_BLOCK_ATTENTION = ["blocks.*.attn", "*.blocks.*.attn"]


def _create_baseline(variant: str, pretrained: bool, **kwargs: Any) -> VisionTransformer:
    out_indices = kwargs.pop("out_indices", 3)
    return build_model_with_cfg(
        VisionTransformer,
        variant,
        pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(out_indices=out_indices, feature_cls="getter"),
        **kwargs,
    )


def _create_vit(variant: str, pretrained: bool, **kwargs: Any) -> VisionTransformer:
    return create_convnn_model(  # type: ignore[return-value]
        _create_baseline,
        variant,
        pretrained,
        kwargs,
        baseline="attention",
        include=_BLOCK_ATTENTION,
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
def convnn_vit_base_patch16_224(pretrained: bool = False, **kwargs: Any) -> VisionTransformer:
    """ViT-B/16 with ConvNN (``layer="convnn"``), branching or plain (``"attention"``) attention.

    ``pretrained=True`` loads timm's ViT-B/16 weights before conversion. ConvNN
    options are keyword arguments (see :class:`convnn.ConvNNAttention`).
    """
    model_args = dict(patch_size=16, embed_dim=768, depth=12, num_heads=12)
    return _create_vit("convnn_vit_base_patch16_224", pretrained, **dict(model_args, **kwargs))


@register_model
def convnn_vit_small_patch16_224(pretrained: bool = False, **kwargs: Any) -> VisionTransformer:
    """ViT-S/16 with ConvNN, branching or plain attention (timm's ViT-S/16 weights)."""
    model_args = dict(patch_size=16, embed_dim=384, depth=12, num_heads=6)
    return _create_vit("convnn_vit_small_patch16_224", pretrained, **dict(model_args, **kwargs))


@register_model
def convnn_vit_tiny_patch16_224(pretrained: bool = False, **kwargs: Any) -> VisionTransformer:
    """ViT-Ti/16 with ConvNN, branching or plain attention (timm's ViT-Ti/16 weights)."""
    model_args = dict(patch_size=16, embed_dim=192, depth=12, num_heads=3)
    return _create_vit("convnn_vit_tiny_patch16_224", pretrained, **dict(model_args, **kwargs))


@register_model
def convnn_vit_tiny_patch4_32(pretrained: bool = False, **kwargs: Any) -> VisionTransformer:
    """ViT-Ti with 4x4 patches for 32x32 inputs (CIFAR: 64 patches + class token, 10 classes)."""
    model_args = dict(img_size=32, patch_size=4, embed_dim=192, depth=12, num_heads=3)
    return _create_vit("convnn_vit_tiny_patch4_32", pretrained, **dict(model_args, **kwargs))
