"""Shared builder of the ``convnn_*`` models: a timm baseline, then :func:`convnn.convert`.

Every variant is built by timm exactly as its baseline (so parameter counts,
initialization and ``pretrained=True`` are timm's: weights load into the baseline
first) and its selected layers are then converted. Weights saved from a converted model
(``timm.models.save_for_hf``, ``convnn export``), whose keys the baseline does not have,
load into the converted model instead. The ConvNN options default to
those of :class:`~convnn.ConvNN2d` (convolution models) and
:class:`~convnn.ConvNNAttention` (ViTs).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from timm.models import get_pretrained_cfg, load_pretrained
from torch import nn

from ..errors import OptionError
from ..modules.attention import ATTENTION_DEFAULTS
from ..options import ConvNNOptions, option_values
from ..validation import check_choice, check_ratio, suggestion
from .convert import ATTENTION_OPTIONS, CONV_OPTIONS, convert

__all__ = [
    "ATTENTION_PRESETS",
    "OPTION_NAMES",
    "baseline_cfg",
    "build_convnn_model",
    "cifar_cfg",
    "pop_options",
]

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)

OPTION_NAMES = CONV_OPTIONS | ATTENTION_OPTIONS
"""Every ConvNN keyword a ``convnn_*`` model accepts."""

CONV_DEFAULTS = {**option_values(ConvNNOptions()), "k": None}
"""Options of converted convolutions: :class:`~convnn.ConvNN2d`'s defaults (``k=None``:
the kernel's taps), not the exact special case that ``convert`` starts from."""

ATTENTION_DEFAULTS_ALL = {**option_values(ConvNNOptions()), **ATTENTION_DEFAULTS}
"""Options of converted attention: :class:`~convnn.ConvNNAttention`'s defaults."""


ATTENTION_PRESETS: dict[str, dict[str, Any]] = {
    "kvt": dict(similarity="dot", weighting="softmax", kernel="sum", candidates="all"),
    "neighborhood": dict(
        similarity="dot",
        weighting="softmax",
        kernel="sum",
        candidates="window",
        window_border="shift",
    ),
}
"""``layer`` values of the ViTs that name a published attention variant (docs/method.md §2), each a
ConvNN-attention with these options fixed:

- ``"kvt"``: KVT top-k attention (scores outside each query's ``k`` highest set to
  ``-inf``, then softmax attention); ``k`` is free (default 9).
- ``"neighborhood"``: neighborhood attention (NATTEN): each query attends to the
  ``window_size x window_size`` window around it (default 3), shifted inward at borders;
  ``k = window_size**2``.

An option the preset fixes may be given only with the preset's value."""


def preset_options(layer: str, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` with the settings of the attention preset ``layer`` (see
    :data:`ATTENTION_PRESETS`); an option given with another value is an ``OptionError``."""
    fixed = dict(ATTENTION_PRESETS[layer])
    if layer == "neighborhood":
        size = options.get("window_size", 3)
        side = size if isinstance(size, int) else None
        if side is None:
            raise OptionError(
                f"layer='neighborhood' takes an int window_size (a square window), got {size!r}",
                key="window_size",
            )
        fixed.update(window_size=side, k=side * side)
    for name, value in fixed.items():
        if name in options and options[name] != value:
            raise OptionError(
                f"layer={layer!r} fixes {name}={value!r} (got {name}={options[name]!r}); "
                f"leave it out or use layer='convnn'",
                key=name,
            )
    return {**options, **fixed}


def pop_options(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Move the ConvNN options out of ``kwargs`` (the rest goes to timm).

    ``k="all"`` stands for ``k=None`` (every token), which ``timm.create_model``
    would drop as an unset argument.
    """
    options = {name: kwargs.pop(name) for name in list(kwargs) if name in OPTION_NAMES}
    if options.get("k") == "all":
        options["k"] = None
    return options


def baseline_cfg(name_with_tag: str, **overrides: Any) -> dict[str, Any]:
    """The pretrained cfg of a timm baseline (its weights load before conversion)."""
    cfg = get_pretrained_cfg(name_with_tag).to_dict()
    for key in ("architecture", "tag"):
        cfg.pop(key, None)
    return {**cfg, **overrides}


def cifar_cfg(**overrides: Any) -> dict[str, Any]:
    """Pretrained cfg of a CIFAR model: 32x32 inputs, 10 classes, no weights."""
    cfg = dict(
        url="",
        num_classes=10,
        input_size=(3, 32, 32),
        crop_pct=1.0,
        interpolation="bilinear",
        mean=CIFAR10_MEAN,
        std=CIFAR10_STD,
    )
    return {**cfg, **overrides}


def build_convnn_model(
    create_baseline: Any,
    variant: str,
    pretrained: bool,
    *,
    layer: str,
    baseline: str,
    branch_ratio: float,
    mix: bool = False,
    include: Sequence[str] | None = None,
    kwargs: dict[str, Any],
) -> nn.Module:
    """Build the baseline with ``create_baseline(variant, pretrained, **kwargs)`` and convert it.

    Args:
        layer: ``baseline`` (``"conv"`` or ``"attention"``: the unmodified model),
            ``"convnn"``, ``"branching"`` or, for attention, a preset of
            :data:`ATTENTION_PRESETS` (``"kvt"``, ``"neighborhood"``).
        branch_ratio: ConvNN share of each branching layer (channels or heads).
        include: module-name patterns to convert (``None``: every candidate).
        kwargs: timm model arguments and ConvNN options together.
    """
    presets = list(ATTENTION_PRESETS) if baseline == "attention" else []
    check_choice("layer", layer, [baseline, "convnn", "branching", *presets])
    check_ratio("branch_ratio", branch_ratio)
    options = pop_options(kwargs)
    if layer in presets:
        options, layer = preset_options(layer, options), "convnn"
    defaults = ATTENTION_DEFAULTS_ALL if baseline == "attention" else CONV_DEFAULTS
    settings = {**defaults, **options}

    def converted(model: nn.Module) -> nn.Module:
        if layer == baseline:
            return model
        return convert(
            model,
            layer,  # type: ignore[arg-type]
            include=include,
            branch_ratio=branch_ratio,
            mix=mix,
            **settings,
        )

    try:
        return converted(_baseline(create_baseline, variant, pretrained, kwargs))
    except RuntimeError as err:  # weights saved from a converted model: its keys, not timm's
        if not (pretrained and layer != baseline and "state_dict" in str(err)):
            raise
    model = converted(_baseline(create_baseline, variant, False, kwargs))
    load_pretrained(
        model,
        pretrained_cfg=model.pretrained_cfg,
        num_classes=model.num_classes,
        in_chans=kwargs.get("in_chans", 3),
    )
    return model


def _baseline(create_baseline: Any, variant: str, pretrained: bool, kwargs: dict) -> nn.Module:
    """``create_baseline(variant, pretrained, **kwargs)``; a keyword neither timm nor ConvNN
    knows is an ``OptionError`` naming it."""
    try:
        return create_baseline(variant, pretrained, **kwargs)
    except TypeError as err:
        name = re.search(r"unexpected keyword argument '(\w+)'", str(err))
        if name is None:
            raise
        hint = suggestion(name[1], OPTION_NAMES) or " (not a timm argument of this model)"
        raise OptionError(f"unknown ConvNN options [{name[1]!r}]{hint}", key=name[1]) from err
