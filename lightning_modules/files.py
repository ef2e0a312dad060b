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
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

__all__ = [
    "UsageError",
    "atomic_write",
    "atomic_write_json",
    "atomic_write_text",
    "check_writable",
    "first_line",
    "one_line",
    "root_cause",
]


class UsageError(Exception):
    """Bad user input (a path, a file, an argument); the message is one line for the CLI."""


def root_cause(err: BaseException) -> BaseException:
    """The innermost ``__cause__`` of ``err``: the class's own error that jsonargparse (or
    another wrapper) raised ``from``."""
    while err.__cause__ is not None:
        err = err.__cause__
    return err


def first_line(err: BaseException) -> str:
    """The first line of ``err``'s message, or its type's name when the message is empty."""
    message = str(err).strip()
    return message.splitlines()[0] if message else type(err).__name__


def one_line(err: Exception) -> str:
    """The message of ``err``; for one re-raised from a DataLoader worker (the worker's
    traceback in the message), its original last line without the exception's name."""
    lines = str(err).strip().splitlines() or [type(err).__name__]
    if len(lines) == 1:
        return lines[0]
    return lines[-1].split(": ", 1)[-1]


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
