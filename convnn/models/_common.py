"""The shared body of the ``convnn_*`` model functions of :mod:`.resnet`, :mod:`.vgg` and
:mod:`.vit` (timm's ``_create_<family>`` pattern): the model keyword arguments in, a built
and converted model out.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from ._builder import build_convnn_model

__all__ = ["create_convnn_model"]


def create_convnn_model(
    create_baseline: Callable[..., nn.Module],
    variant: str,
    pretrained: bool,
    kwargs: dict[str, Any],
    *,
    baseline: str,
    include: Sequence[str],
) -> nn.Module:
    """Build ``variant`` from the keyword arguments of its ``convnn_*`` function.

    ``kwargs`` holds ``layer`` (``baseline``, ``"convnn"`` (the default) or
    ``"branching"``), ``branch_ratio`` (default 0.5), for convolution models ``mix``
    (default ``False``), the ConvNN options and timm's model arguments.

    Args:
        create_baseline: ``create_baseline(variant, pretrained, **kwargs)`` builds the
            timm baseline.
        baseline: the baseline's ``layer``, ``"conv"`` or ``"attention"``.
        include: module-name patterns of the layers to convert.
    """
    # the defaults of the ``convnn_*`` functions; ``mix`` (1x1 mixing after a branching
    # conv) is no attention option: a ViT leaves it to timm, which rejects it
    return build_convnn_model(
        create_baseline,
        variant,
        pretrained,
        layer=kwargs.pop("layer", "convnn"),
        baseline=baseline,
        branch_ratio=kwargs.pop("branch_ratio", 0.5),
        mix=kwargs.pop("mix", False) if baseline == "conv" else False,
        include=include,
        kwargs=kwargs,  # what the pops leave: timm's model arguments and ConvNN options
    )
