"""Optimizer and learning-rate schedule factories of :class:`~lightning_modules.ImageClassifier`.

Weight decay skips normalization weights, biases (every 1-D parameter), the names a
timm model lists in ``no_weight_decay()`` (position embeddings, class token) and the
ConvNN layers' learned position tables, via timm's ``param_groups_weight_decay``.
With ``layer_decay`` the groups are also split by depth (timm's
``param_groups_layer_decay``, the BEiT/DeiT-III fine-tuning recipe): a parameter at depth ``i``
of ``L`` learns at ``lr * layer_decay ** (L - 1 - i)``, set in its group's ``lr`` (timm's own
schedulers read ``lr_scale``; ``LambdaLR`` multiplies each group's initial ``lr``).
The schedule is one ``LambdaLR`` stepped every optimizer step, so warm-up and cosine
decay are smooth within epochs; its state is plain numbers, so checkpoints load with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, get_args

import torch
from timm.optim import create_optimizer_v2, param_groups_layer_decay, param_groups_weight_decay
from torch import nn

from convnn.errors import OptionError
from convnn.validation import check_choice, check_number

__all__ = [
    "NO_WEIGHT_DECAY", "LRSchedule", "OptimizerName", "SchedulerName", "build_optimizer",
    "check_layer_decay",
]  # fmt: skip

OptimizerName = Literal["adamw", "sgd", "lamb"]
"""The optimizers :func:`build_optimizer` makes (the one list: the classifier's signature and
every check read it)."""
SchedulerName = Literal["cosine", "step", "none"]
"""The learning-rate schedules of :class:`LRSchedule`."""

NO_WEIGHT_DECAY = ("*pos_embed*", "*pos_table", "*cls_token", "*reg_token", "*dist_token")
"""Parameter-name patterns (``fnmatch``) that never get weight decay, besides 1-D ones."""


def build_optimizer(
    model: nn.Module,
    name: str,
    lr: float,
    weight_decay: float,
    momentum: float = 0.9,
    layer_decay: float | None = None,
) -> torch.optim.Optimizer:
    """AdamW, SGD (Nesterov momentum) or LAMB over ``model`` with the decay/no-decay groups;
    with ``layer_decay`` in (0, 1] each group's ``lr`` is ``lr * lr_scale``, ``lr_scale`` =
    ``layer_decay ** (layers - 1 - depth)`` (the head learns at ``lr``)."""
    check_choice("optimizer", name, get_args(OptimizerName))
    no_decay = set(NO_WEIGHT_DECAY)
    if hasattr(model, "no_weight_decay"):
        no_decay |= set(model.no_weight_decay())
    if layer_decay is None:
        groups = param_groups_weight_decay(model, weight_decay, no_weight_decay_list=no_decay)
    else:
        check_layer_decay(model, layer_decay)
        groups = param_groups_layer_decay(
            model, weight_decay, no_weight_decay_list=no_decay, layer_decay=layer_decay
        )
    kwargs = {"momentum": momentum} if name == "sgd" else {}
    optimizer = create_optimizer_v2(groups, opt=name, lr=lr, weight_decay=weight_decay, **kwargs)
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
    return optimizer


def check_layer_decay(model: nn.Module, layer_decay: float) -> None:
    """:class:`OptionError` naming ``layer_decay`` unless it is in (0, 1] and ``model`` says
    which layer each parameter is in (timm's ``group_matcher``)."""
    check_number("layer_decay", layer_decay, "in (0, 1]", lambda d: 0 < d <= 1)
    if not hasattr(model, "group_matcher"):
        raise OptionError(
            f"layer_decay={layer_decay} needs a model that says which layer each parameter is "
            f"in (timm's group_matcher); {type(model).__name__} has none",
            key="layer_decay",
        )


@dataclass
class LRSchedule:
    """Multiplier of the base learning rate at optimizer step ``step`` (for ``LambdaLR``).

    Linear warm-up from ``warmup_start`` over ``warmup_steps``, then ``cosine`` decay to
    ``min_lr_ratio`` at ``total_steps - cooldown_steps`` and ``min_lr_ratio`` for the last
    ``cooldown_steps`` (timm's cool-down epochs at the minimum rate), ``step`` decay by
    ``gamma`` every ``step_size`` epochs (counted from the start of training), or a constant
    (``none``).
    """

    kind: str
    total_steps: int
    steps_per_epoch: int
    warmup_steps: int = 0
    warmup_start: float = 0.01
    min_lr_ratio: float = 0.0
    step_size: int = 30
    gamma: float = 0.1
    cooldown_steps: int = 0

    def __post_init__(self) -> None:
        check_choice("scheduler", self.kind, get_args(SchedulerName))

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.warmup_start + (1 - self.warmup_start) * step / self.warmup_steps
        if self.kind == "cosine":
            span = max(1, self.total_steps - self.cooldown_steps - self.warmup_steps)
            progress = min(1.0, (step - self.warmup_steps) / span)
            cosine = 0.5 * (1 + math.cos(math.pi * progress))
            return self.min_lr_ratio + (1 - self.min_lr_ratio) * cosine
        if self.kind == "step":
            epoch = step // max(1, self.steps_per_epoch)
            return self.gamma ** (epoch // self.step_size)
        return 1.0
