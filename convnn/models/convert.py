"""``convnn.convert``: swap the convolutions and attention layers of any model for ConvNN.

Selected ``nn.Conv2d`` modules become :class:`~convnn.ConvNN2d` (``layer="convnn"``)
or :class:`~convnn.BranchingConv2d` (``layer="branching"``); selected timm
``Attention`` modules become :class:`~convnn.ConvNNAttention` or
:class:`~convnn.BranchingAttention`. With no options every converted layer is the
exact special case of the layer it replaces (docs/method.md §2) and keeps its weights, so the
converted model computes what the original did; options move away from it::

    model = timm.create_model("resnet50", pretrained=True)
    convnn.convert(model, include=["layer*"], similarity="cosine", candidates="all")

Weights are kept wherever their shapes fit (exact for the special cases, a warm
start otherwise); layers whose shapes differ start from their own initialization.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from fnmatch import fnmatchcase
from typing import Any, Literal

import torch
from timm.layers import Attention
from torch import nn

from ..errors import OptionError
from ..modules import BranchingAttention, BranchingConv2d, ConvNN1d, ConvNN2d, ConvNNAttention
from ..modules.conv_layers import conv2d_issue, exact_conv_settings
from ..options import OPTION_NAMES
from ..validation import check_choice, check_names, check_ratio

__all__ = ["ATTENTION_OPTIONS", "CONV_OPTIONS", "convert"]

Layer = Literal["convnn", "branching"]

CONV_OPTIONS = OPTION_NAMES | {"pos_grid_size"}
"""Options that ``convert`` passes to converted convolutions."""

ATTENTION_OPTIONS = OPTION_NAMES | {"pos_grid_size", "grid_size", "num_prefix_tokens"}
ATTENTION_OPTIONS |= {"kernel_init"}
"""Options that ``convert`` passes to converted attention."""

_CONVNN_MODULES = (ConvNN1d, ConvNN2d, ConvNNAttention, BranchingConv2d)


def _conv_issue(conv: nn.Conv2d, layer: str) -> str | None:
    """Why ``conv`` cannot be converted, or ``None``."""
    if layer == "branching" and conv.groups > 1:
        return f"groups={conv.groups} (allowed: 1)"
    return conv2d_issue(conv)


def _target_kind(module: nn.Module) -> str | None:
    """``"conv"`` for a spatial ``nn.Conv2d``, ``"attention"`` for timm ``Attention``."""
    if type(module) is nn.Conv2d and module.kernel_size != (1, 1):
        return "conv"
    if isinstance(module, Attention):
        return "attention"
    return None


def _selected(name: str, include: Sequence[str] | None, exclude: Sequence[str]) -> bool:
    if include is not None and not any(fnmatchcase(name, p) for p in include):
        return False
    return not any(fnmatchcase(name, p) for p in exclude)


def _fits_conv(conv: nn.Conv2d, settings: dict[str, Any]) -> bool:
    """Whether ``conv``'s weight has the layout of the ConvNN kernel built from ``settings``."""
    taps = conv.kernel_size[0] * conv.kernel_size[1]
    coords = settings.get("positional_encoding") == "coords" and settings.get("coords_to_values")
    kernel = "depthwise" if conv.groups > 1 else "standard"
    return settings["kernel"] == kernel and settings.get("k") in (None, taps) and not coords


def _convnn_conv(conv: nn.Conv2d, settings: dict[str, Any]) -> ConvNN2d:
    settings = {**exact_conv_settings(conv), **settings}
    if _fits_conv(conv, settings):
        return ConvNN2d.from_conv2d(conv, **settings)
    dd = {"device": conv.weight.device, "dtype": conv.weight.dtype}
    return ConvNN2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        conv.stride,
        conv.padding,
        conv.bias is not None,
        **settings,
        **dd,
    )


def _branching_conv(
    conv: nn.Conv2d, ratio: float, mix: bool, settings: dict[str, Any]
) -> BranchingConv2d:
    """ConvNN gets the first ``round(ratio * out)`` filters of ``conv``, Conv2d the rest."""
    settings = {**exact_conv_settings(conv), **settings}
    layer = BranchingConv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,  # type: ignore[arg-type]
        conv.stride,  # type: ignore[arg-type]
        conv.padding,  # type: ignore[arg-type]
        conv.bias is not None,
        ratio=ratio,
        mix=mix,
        device=conv.weight.device,
        dtype=conv.weight.dtype,
        **settings,
    )
    c = layer.convnn_channels
    with torch.no_grad():
        if layer.convnn is not None and _fits_conv(conv, settings):
            layer.convnn.weight.copy_(conv.weight[:c].flatten(2))  # type: ignore[union-attr]
            if conv.bias is not None:
                layer.convnn.bias.copy_(conv.bias[:c])  # type: ignore[union-attr]
        if layer.conv is not None:
            layer.conv.weight.copy_(conv.weight[c:])
            if conv.bias is not None:
                layer.conv.bias.copy_(conv.bias[c:])  # type: ignore[union-attr]
    return layer


def _token_layout(modules: dict[str, nn.Module], name: str) -> dict[str, Any]:
    """``num_prefix_tokens`` and the patch grid of the nearest ViT-like ancestor of ``name``."""
    parts = name.split(".")
    for i in range(len(parts) - 1, -1, -1):
        owner = modules.get(".".join(parts[:i]))
        if owner is not None and hasattr(owner, "num_prefix_tokens"):
            layout = {"num_prefix_tokens": int(owner.num_prefix_tokens)}
            grid = getattr(getattr(owner, "patch_embed", None), "grid_size", None)
            if grid is not None:
                layout["pos_grid_size"] = layout["grid_size"] = tuple(int(g) for g in grid)
            return layout
    return {}


def _convert_attention(
    attn: nn.Module, layer: str, ratio: float, settings: dict[str, Any]
) -> ConvNNAttention:
    settings = dict(settings)
    k = settings.pop("k", None)
    if layer == "branching":
        return BranchingAttention.from_attention(attn, k=k, ratio=ratio, **settings)
    return ConvNNAttention.from_attention(attn, k=k, **settings)


def _issue(module: nn.Module, kind: str, layer: str) -> str | None:
    """Why ``module`` cannot be converted, or ``None``."""
    if kind == "conv":
        return _conv_issue(module, layer)  # type: ignore[arg-type]
    return "gated attention" if getattr(module, "gate", None) is not None else None


def _new_layer(
    module: nn.Module,
    kind: str,
    name: str,
    layer: str,
    ratio: float,
    mix: bool,
    settings: dict[str, dict[str, Any]],
    modules: dict[str, nn.Module],
) -> nn.Module | None:
    """The ConvNN replacement of ``module`` (``None`` if it cannot be converted)."""
    if _issue(module, kind, layer) is not None:
        return None
    if kind == "attention":
        options = {**_token_layout(modules, name), **settings["attention"]}
        return _convert_attention(module, layer, ratio, options)
    if layer == "branching":
        return _branching_conv(module, ratio, mix, settings["conv"])  # type: ignore[arg-type]
    return _convnn_conv(module, settings["conv"])  # type: ignore[arg-type]


def _layer_settings(settings: dict[str, dict[str, Any]], index: int) -> dict[str, dict[str, Any]]:
    """The settings of the ``index``-th converted layer: with ``random`` candidates its fixed
    eval sample is hashed from ``sample_seed + index``, so that each layer evaluates with its
    own sample as it trains with its own draws (one sample shared by every layer hides the
    same tokens from all of them, which costs accuracy: docs/random_candidates.md)."""
    own = {}
    for kind, values in settings.items():
        if values.get("candidates") == "random":
            values = {**values, "sample_seed": values.get("sample_seed", 0) + index}
        own[kind] = values
    return own


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name), child, new)


def convert(
    model: nn.Module,
    layer: Layer = "convnn",
    *,
    include: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
    branch_ratio: float = 0.5,
    mix: bool = False,
    **options: Any,
) -> nn.Module:
    """Replace the selected convolutions and attention layers of ``model`` in place.

    Args:
        model: any ``nn.Module``; its spatial ``nn.Conv2d`` (kernel larger than 1x1,
            odd, dilation 1) and timm ``Attention`` modules are the candidates.
        layer: ``"convnn"`` (ConvNN2d / ConvNNAttention) or ``"branching"``
            (BranchingConv2d / BranchingAttention with ``branch_ratio``).
        include: ``fnmatch`` patterns of module names to convert (``"layer*.*.conv2"``);
            ``None`` converts every candidate.
        exclude: patterns of module names to leave alone.
        branch_ratio: share of output channels (convolutions) or heads (attention)
            computed by ConvNN when ``layer="branching"``.
        mix: add the optional 1x1 mixing projection after a branching convolution.
        **options: ConvNN options (:data:`CONV_OPTIONS`, :data:`ATTENTION_OPTIONS`)
            overriding the exact special case; each goes to the layer kinds that
            accept it. ``k`` defaults to the kernel size (convolutions) and to all
            tokens (attention); ``num_prefix_tokens`` and ``pos_grid_size`` default to
            those of the enclosing ViT.
    Returns:
        ``model`` (or the new module when ``model`` itself is converted).
    Raises:
        OptionError: for an unknown layer, ratio or option, or when ``include`` matches
            nothing that can be converted (``key`` names the parameter).
    """
    check_choice("layer", layer, Layer)
    check_ratio("branch_ratio", branch_ratio)
    check_names("ConvNN options", options, CONV_OPTIONS | ATTENTION_OPTIONS)
    settings = {
        "conv": {n: v for n, v in options.items() if n in CONV_OPTIONS},
        "attention": {n: v for n, v in options.items() if n in ATTENTION_OPTIONS},
    }
    modules = dict(model.named_modules())
    inside = [n for n, m in modules.items() if isinstance(m, _CONVNN_MODULES)]
    converted: list[str] = []
    result = model
    for name, module in modules.items():
        kind = _target_kind(module)
        if kind is None or not _selected(name, include, exclude):
            continue
        if any(n != name and (not n or name.startswith(n + ".")) for n in inside):
            continue  # already part of a ConvNN layer
        own = _layer_settings(settings, len(converted))
        new = _new_layer(module, kind, name, layer, branch_ratio, mix, own, modules)
        if new is None:
            if include is not None:
                reason = _issue(module, kind, layer)
                warnings.warn(f"convert: {name!r} left unchanged: {reason}", stacklevel=2)
            continue
        new.train(module.training)
        if name:
            _replace(model, name, new)
        else:
            result = new
        converted.append(name)
    if include is not None and not converted:
        raise OptionError(
            f"include={list(include)} matched no convertible module of the model", key="include"
        )
    return result
