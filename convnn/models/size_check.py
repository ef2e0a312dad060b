"""Check a ConvNN model against the sizes it will see, before any work.

Options such as ``k``, ``num_samples`` or ``window_size`` are only meaningful against a
layer's token count, which depends on the input resolution and on where the layer sits
(a ViT's patch grid, a ResNet stage's map). :func:`check_sizes` builds the model on the
``meta`` device (no memory, no initialization cost) and runs one shape-only forward pass,
in which every ConvNN layer runs its usual input checks
(:func:`convnn.call_checks.check_call`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import timm
import torch
from torch import nn

from ..errors import OptionError
from ..modules import CONVNN_LAYERS

__all__ = ["CONVNN_LAYERS", "check_sizes"]


def check_sizes(model: str | nn.Module, input_size: Sequence[int], **kwargs: Any) -> None:
    """Raise an :class:`~convnn.errors.OptionError` naming the layer, the sizes it sees and
    the option (``key``) when an option does not fit the model's inputs.

    Args:
        model: a timm model name (built with ``kwargs`` on the meta device) or a model
            already on the meta device.
        input_size: ``(channels, height, width)`` of one input image.
    """
    if isinstance(model, str):
        with torch.device("meta"):
            model = timm.create_model(model, **kwargs)
    current: list[str] = []

    def enter(name: str):
        def hook(module: nn.Module, args: tuple) -> None:
            current[:] = [f"{name} (input {tuple(args[0].shape[1:])})"]

        return hook

    handles = [
        m.register_forward_pre_hook(enter(n)) for n, m in model.named_modules()
        if isinstance(m, CONVNN_LAYERS)
    ]  # fmt: skip
    training = model.training
    try:
        model.eval()(torch.empty(1, *input_size, device="meta"))
    except OptionError as err:
        where = current[0] if current else "the model"
        raise OptionError(f"layer {where}: {err}", key=err.key) from None
    finally:
        model.train(training)
        for handle in handles:
            handle.remove()
