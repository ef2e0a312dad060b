"""A weights-only start (``ImageClassifier(init_from=PATH)``): fine-tune from a checkpoint
instead of resuming it.

``PATH`` is a Lightning checkpoint of an ``ImageClassifier`` (its EMA weights when the run
kept them: the ones its validation numbers are of), a ``.safetensors`` or torch state-dict
file, or a directory holding ``model.safetensors`` or ``pytorch_model.bin`` (timm's
``save_for_hf``, ``convnn export``). The weights go into the freshly built model:

- a classifier head whose class count differs is left at its initialization, with one line
  saying so;
- an absolute position embedding of another patch grid is resampled to the model's (timm's
  ``resample_abs_pos_embed``), so a ViT trained at 16 px continues at 32 px;
- a timm baseline's weights load into its ConvNN variant: the ConvNN layers' own new
  parameters (a depthwise kernel, a branch's second weight) keep their initialization,
  each named in one line;
- anything else that does not fit (another architecture) is an error listing the keys,
  raised before any training starts.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from convnn.errors import UsageError

from .notes import note

__all__ = ["load_initial_weights", "read_weights"]

_FILES = ("model.safetensors", "pytorch_model.bin", "model.pt", "model.pth")


def read_weights(path: str | Path) -> dict[str, Tensor]:
    """The model state dict stored at ``path`` (see the module docstring for the formats)."""
    path = Path(path)
    if path.is_dir():
        found = [path / name for name in _FILES if (path / name).is_file()]
        if not found:
            raise UsageError(f"init_from={str(path)!r}: the directory holds none of {_FILES}")
        path = found[0]
    if not path.is_file():
        raise UsageError(f"init_from={str(path)!r} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(path)
    state: Any = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:  # a Lightning checkpoint
        weights = state["state_dict"]
        prefix = "ema.module." if any(k.startswith("ema.module.") for k in weights) else "model."
        return {k.removeprefix(prefix): v for k, v in weights.items() if k.startswith(prefix)}
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]  # DeiT-style {"model": state_dict, ...}
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise UsageError(f"init_from={str(path)!r} holds no state dict of tensors")
    return dict(state)


def _head_keys(model: nn.Module) -> set[str]:
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    if head is None:
        return set()
    for name, module in model.named_modules():
        if module is head:
            return {f"{name}.{k}" for k in head.state_dict()}
    return set()


def _resample_position_embedding(model: nn.Module, state: dict[str, Tensor]) -> str | None:
    own = getattr(model, "pos_embed", None)
    given = state.get("pos_embed")
    if own is None or given is None or given.shape == own.shape:
        return None
    from timm.layers import resample_abs_pos_embed

    prefix = 0 if getattr(model, "no_embed_class", False) else model.num_prefix_tokens
    grid = tuple(model.patch_embed.grid_size)
    state["pos_embed"] = resample_abs_pos_embed(given, new_size=grid, num_prefix_tokens=prefix)
    tokens = f"{grid[0] * grid[1]} tokens ({grid[0]}x{grid[1]})"
    return f"position embedding resampled from {given.shape[1] - prefix} to {tokens}"


def _misfit(own: dict[str, Tensor], state: dict[str, Tensor], head: set[str]) -> str | None:
    """What keeps ``state`` from loading into a model whose state dict is ``own`` (a head of
    another class count aside), or ``None``."""
    wrong = sorted(
        k for k in state if k in own and state[k].shape != own[k].shape and k not in head
    )
    unexpected = sorted(k for k in state if k not in own)
    missing = sorted(k for k in own if k not in state)
    parts = [
        f"{what}: {keys[:6]}{f' and {len(keys) - 6} more' if len(keys) > 6 else ''}"
        for what, keys in (
            ("shapes differ", wrong),
            ("not in the model", unexpected),
            ("missing", missing),
        )
        if keys
    ]
    return "; ".join(parts) or None


def load_initial_weights(
    model: nn.Module,
    path: str | Path,
    rebuild: Callable[[str, int | None], nn.Module] | None = None,
) -> nn.Module:
    """The model with the weights at ``path``: ``model`` itself, loaded in place, when they
    fit it (a classifier head of another class count is left as initialised, a position
    embedding resampled); else ``rebuild(file, classes)``, which builds the model from them
    as its timm baseline's weights (``file``: a temporary copy of them, ``classes``: the
    class count of their head). Each adaptation is one line; weights that fit neither raise a
    ``UsageError`` naming the keys."""
    stored = read_weights(path)
    state = dict(stored)  # adapted below; ``stored`` goes to ``rebuild`` as read
    lines = []
    resampled = _resample_position_embedding(model, state)
    if resampled:
        lines.append(resampled)
    own = model.state_dict()
    head = _head_keys(model)
    misfit = _misfit(own, state, head)
    if misfit is None:
        changed = [k for k in head if k in state and state[k].shape != own[k].shape]
        for key in changed:
            del state[key]
        if changed:
            classes = getattr(model, "num_classes", "?")
            lines.append(f"classifier head re-initialised for {classes} classes")
        model.load_state_dict(state, strict=False)
    elif rebuild is not None:
        weights = [k for k in sorted(head) if k.endswith("weight") and k in state]
        classes = int(state[weights[0]].shape[0]) if weights else None
        try:
            with tempfile.TemporaryDirectory() as tmp:
                file = Path(tmp) / "weights.pth"
                torch.save(stored, file)
                built = rebuild(str(file), classes)
        except (RuntimeError, KeyError, ValueError) as err:  # nor does the baseline
            raise UsageError(
                f"init_from={str(path)!r} does not fit model {type(model).__name__}: {misfit}"
            ) from err
        new = [k for k in built.state_dict() if k not in state and not _derived(k, state)]
        lines.append("loaded as the baseline's weights, then converted")
        if classes is not None and classes != getattr(built, "num_classes", classes):
            lines.append(f"classifier head re-initialised for {built.num_classes} classes")
        if new:
            lines.append(f"ConvNN parameters not in them keep their initialization: {new}")
        model = built
    else:
        raise UsageError(
            f"init_from={str(path)!r} does not fit model {type(model).__name__}: {misfit}"
        )
    for line in lines:
        note(f"init_from {path}: {line}")
    return model


def _derived(key: str, state: dict[str, Tensor]) -> bool:
    """Whether ``convert`` made the parameter ``key`` from one of ``state`` (a branching
    layer's ``convnn`` and ``conv`` weights split the convolution's filters)."""
    for part in (".convnn.", ".conv."):
        if part in key and key.replace(part, ".", 1) in state:
            return True
    return False
