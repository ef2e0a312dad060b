"""Changing a config's ``class_path`` (``data.class_path: datamodules.ImageNetDataModule`` on a
base that uses ``DigitsDataModule``): the old class's ``init_args`` the new class does not
take are dropped, with one line naming them, as a user expects.

Used by the ablation grid merge (:func:`ablations.grid.merged_config`), which would otherwise
refuse with ``Option 'seed' is not accepted``, and by the ``convnn`` CLI, where jsonargparse
drops them without a word (:func:`dropped_by_parser`).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml

from convnn.validation import init_parameter_names

__all__ = ["drop_foreign_init_args", "dropped_by_parser", "load_class", "switch_line"]

SECTIONS = ("model", "data")
"""The config sections whose ``class_path`` a user switches."""


def load_class(class_path: str) -> type | None:
    """The class a dotted ``class_path`` names (``None`` when it cannot be imported)."""
    module, _, name = str(class_path).rpartition(".")
    try:
        found = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return None
    return found if isinstance(found, type) else None


def drop_foreign_init_args(node: dict[str, Any], keep: Iterable[str] = ()) -> list[str]:
    """Remove from ``node["init_args"]`` the arguments ``node["class_path"]`` does not take,
    except the names in ``keep`` (set on purpose: the class refuses them, naming them);
    return the removed names. Nothing is removed when the class cannot be imported (its
    own error follows)."""
    cls = load_class(node.get("class_path", ""))
    init_args = node.get("init_args")
    if cls is None or not isinstance(init_args, dict):
        return []
    accepted, kept = set(init_parameter_names(cls)), set(keep)
    dropped = [name for name in init_args if name not in accepted and name not in kept]
    for name in dropped:
        del init_args[name]
    return dropped


def switch_line(key: str, class_path: str, dropped: Sequence[str], old: str | None) -> str:
    """The one line that says what a ``class_path`` switch dropped."""
    was = f" (from {old})" if old else ""
    names = ", ".join(dropped)
    name = str(class_path).rpartition(".")[2]
    return f"{key} is {class_path}{was}: dropped init_args {names}, which {name} does not take"


def _config_files(argv: Sequence[str]) -> list[Path]:
    files = []
    for i, arg in enumerate(argv):
        if arg in ("-c", "--config") and i + 1 < len(argv):
            files.append(Path(argv[i + 1]))
        elif arg.startswith("--config="):
            files.append(Path(arg.split("=", 1)[1]))
    return files


def _same_class(a: str | None, b: str | None) -> bool:
    if a is None or b is None or a == b:
        return True
    found_a, found_b = load_class(a), load_class(b)
    return found_a is not None and found_a is found_b


def dropped_by_parser(argv: Sequence[str], config: Any) -> list[str]:
    """One :func:`switch_line` per section whose ``class_path`` the parsed ``config`` (a
    jsonargparse namespace of one subcommand) has from the command line rather than from
    the ``-c`` files of ``argv``, for the files' ``init_args`` that the parser dropped."""
    lines = []
    for section in SECTIONS:
        class_path, names = None, set()
        for path in _config_files(argv):
            try:
                data = yaml.safe_load(path.read_text()) or {}
            except (OSError, yaml.YAMLError):
                continue
            node = data.get(section) if isinstance(data, dict) else None
            if not isinstance(node, dict):
                continue
            if node.get("class_path") is not None and node["class_path"] != class_path:
                class_path, names = node["class_path"], set()
            names |= set(node.get("init_args") or {})
        final = getattr(config, section, None)
        final_path = getattr(final, "class_path", None)
        if class_path is None or _same_class(class_path, final_path):
            continue
        init_args = getattr(final, "init_args", None)
        as_dict = getattr(init_args, "as_dict", None)
        present = set(as_dict() if as_dict else init_args or {})
        dropped = sorted(names - present)
        if dropped:
            lines.append(switch_line(f"{section}.class_path", final_path, dropped, class_path))
    return lines
