"""Bad input as one-line errors, and files written so that a crash or a full disk never
destroys what was there before.

``atomic_write`` writes into a hidden temporary file next to the target, flushes it to disk
and only then renames it over the target (``os.replace`` is atomic on POSIX file systems).
A failure at any point (``ENOSPC``, ``EACCES``, a kill) leaves the previous file untouched
and removes the partial temporary file where the process is still alive to do so.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from convnn.errors import CheckpointError, UsageError

__all__ = [
    "EVALUATE_ENV",
    "PREEMPTED",
    "PROGRESS_FILE_ENV",
    "atomic_write",
    "atomic_write_json",
    "atomic_write_text",
    "check_checkpoint_file",
    "check_input_file",
    "check_writable",
    "saved_by_torch",
]

ZIP_MAGIC = b"PK\x03\x04"
"""The first bytes of a file in ``torch.save``'s format (a zip archive)."""
PICKLE_MAGIC = b"\x80"
"""The first byte of a file in its older format (a pickle, protocol 2 or later)."""


PROGRESS_FILE_ENV = "CONVNN_PROGRESS_FILE"
"""Environment variable: a file where ``convnn fit`` writes each finished epoch as JSON."""

EVALUATE_ENV = "CONVNN_EVALUATE_TO"
"""Environment variable: a JSON file where a one-process ``convnn fit`` writes the metrics of
the ``last.ckpt`` it trained, evaluated after training (a grid cell's evaluation,
:mod:`lightning_modules.cell_evaluation`)."""

PREEMPTED = 99
"""Exit status of a ``convnn fit`` that a preemption signal stopped after it wrote its
``last.ckpt`` (:mod:`lightning_modules.preemption`): resume from it, it did not fail. Here,
free of torch, for the ablation runner."""


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], Any]) -> None:
    """Call ``write(f)`` on a temporary binary file, then atomically replace ``path`` with it."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """``path.write_text(text)``, atomically."""
    atomic_write(path, lambda f: f.write(text.encode()))


def atomic_write_json(path: str | Path, data: Any) -> None:
    """Indented JSON (non-JSON values as ``str``), atomically."""
    atomic_write_text(path, json.dumps(data, indent=2, default=str) + "\n")


def check_writable(directory: str | Path, what: str) -> None:
    """Create ``directory`` if needed and write a probe file there; ``UsageError`` otherwise.

    A real write, not ``os.access``: that reports "writable" to root and on read-only mounts.
    """
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise UsageError(f"{what} '{directory}' cannot be written: {reason}") from None


def check_input_file(path: str | Path, option: str) -> Path:
    """``path`` as a :class:`Path`; :class:`UsageError` naming ``option`` when it does not
    exist or is not a file."""
    path = Path(path)
    if not path.exists():
        raise UsageError(f"{option} '{path}' does not exist")
    if not path.is_file():
        raise UsageError(f"{option} '{path}' is not a file")
    return path


def check_new_directory(path: str | Path, option: str) -> Path:
    """``path`` does not exist or is an empty directory (what is there is never overwritten);
    ``UsageError`` naming ``option`` otherwise."""
    path = Path(path)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise UsageError(f"{option} {str(path)!r} exists and is not empty; choose a new directory")
    return path


def check_checkpoint_file(path: str | Path, option: str) -> None:
    """Before torch is imported: ``path`` exists and ``torch.save`` wrote it
    (:func:`check_input_file`, :func:`saved_by_torch`)."""
    saved_by_torch(check_input_file(path, option))


def saved_by_torch(path: str | Path) -> bool:
    """Whether ``path`` is in ``torch.save``'s zip format (``False``: its older pickle
    format); :class:`CheckpointError` when it is neither (an image, a text file, ...)."""
    path = Path(path)
    with path.open("rb") as f:
        head = f.read(4)
    if head == ZIP_MAGIC:
        if not zipfile.is_zipfile(path):
            raise CheckpointError(f"{path} is a truncated or damaged checkpoint (zip archive)")
        return True
    if head[:1] == PICKLE_MAGIC:
        return False
    raise CheckpointError(
        f"{path} is not a checkpoint: torch.save did not write it (it is neither a zip "
        "archive nor a pickle)"
    )
