"""Cells whose stored config is not the grid's: never reused, never pooled.

A cell's id is its axis values and seed; what it trained with is its ``config.yaml``. When
a grid is edited (its ``set:``, its base config, the data), finished or checkpointed cells
of the old config must not count as results of the new one: ``convnn-ablate run`` refuses
them (naming each changed key) unless ``--rerun`` retrains them, and ``report`` refuses to
pool cells of one setting that trained with different configs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

__all__ = ["changed_keys", "describe", "stale_cells", "unpooled_settings"]

RESULT_NEUTRAL = ("trainer.logger", "preemption")
"""Config keys that record a run without changing it (a logger writes into the cell; the
``preemption`` settings change which checkpoints are written, not what is trained)."""
SEED_KEYS = ("seed_everything",)
"""Keys in which the seeds of one setting differ by design."""


def _flat(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a.b": value}`` of a nested config (lists stay values)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(_flat(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def changed_keys(
    old: Mapping[str, Any], new: Mapping[str, Any], ignore: Iterable[str] = RESULT_NEUTRAL
) -> dict[str, tuple[Any, Any]]:
    """``{dotted key: (old value, new value)}`` of every key that differs (a missing key is
    ``None``), leaving out the keys under ``ignore``."""
    a, b = _flat(old), _flat(new)
    skip = tuple(ignore)
    changes = {}
    for key in sorted(a.keys() | b.keys()):
        if any(key == s or key.startswith(s + ".") for s in skip):
            continue
        if a.get(key) != b.get(key):
            changes[key] = (a.get(key), b.get(key))
    return changes


def describe(changes: Mapping[str, tuple[Any, Any]], limit: int = 4) -> str:
    """``trainer.max_epochs 4 -> 5, model.init_args.lr 0.004 -> 0.002 (and 3 more)``."""
    parts = [f"{key} {old!r} -> {new!r}" for key, (old, new) in list(changes.items())[:limit]]
    more = len(changes) - limit
    return ", ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def read_config(cell_dir: Path) -> dict[str, Any] | None:
    """The cell's stored ``config.yaml``, or ``None`` when it has none (or it is unreadable)."""
    try:
        config = yaml.safe_load((cell_dir / "config.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return None
    return config if isinstance(config, dict) else None


def has_trained(cell_dir: Path) -> bool:
    """Finished, or holding a checkpoint a run would resume from."""
    return (cell_dir / "result.json").exists() or any(cell_dir.glob("version_*/checkpoints/*.ckpt"))


def stale_cells(configs: Mapping[Path, Mapping[str, Any]]) -> dict[str, dict[str, tuple]]:
    """The cells among ``configs`` (cell dir -> the grid's merged config now) that trained,
    or began to, with another config: ``{cell name: changed keys}``."""
    stale = {}
    for cell_dir, config in configs.items():
        old = read_config(cell_dir)
        if old is not None and has_trained(cell_dir):
            changes = changed_keys(old, config)
            if changes:
                stale[cell_dir.name] = changes
    return stale


def unpooled_settings(cells: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """Settings whose finished cells trained with different configs (besides their seeds):
    ``{setting: what differs between which cells}``."""
    first: dict[str, tuple[str, dict[str, Any]]] = {}
    found: dict[str, str] = {}
    for cell in cells:
        if cell.get("status") != "done" or cell["setting"] in found:
            continue
        config = read_config(Path(cell["dir"]))
        if config is None:
            continue
        if cell["setting"] not in first:
            first[cell["setting"]] = (cell["id"], config)
            continue
        other, reference = first[cell["setting"]]
        changes = changed_keys(reference, config, RESULT_NEUTRAL + SEED_KEYS)
        if changes:
            found[cell["setting"]] = f"{other} vs {cell['id']}: {describe(changes)}"
    return found
