"""How every command ends on bad input: one line, ``<prog>: error: <message>``, exit status 2.

Written once for ``convnn`` (each subcommand) and ``convnn-ablate``: :func:`run_command` runs
a command's body and turns any :class:`~convnn.errors.ConvNNError` (bad input: an option, a
file, a checkpoint, data, a grid) into that line on stderr and a :class:`CommandError`. Other
exceptions are bugs and keep their traceback. Imports nothing heavy.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from convnn.errors import ConvNNError, OptionError, UsageError, error_line, root_cause

__all__ = [
    "USAGE_STATUS",
    "CommandError",
    "as_user_error",
    "cli_message",
    "config_key",
    "keyed_error",
    "run_command",
]

USAGE_STATUS = 2
"""Exit status of a command stopped by bad input (as argparse's usage errors)."""

T = TypeVar("T")


class CommandError(SystemExit):
    """The exit of a command stopped by bad input: ``code`` is :data:`USAGE_STATUS`, the text
    (``str(error)``) the one line already printed on stderr."""

    def __init__(self, line: str) -> None:
        super().__init__(USAGE_STATUS)
        self.line = line

    def __str__(self) -> str:
        return self.line


def as_user_error(err: BaseException) -> ConvNNError:
    """The suite error to show for ``err``: the outermost :class:`ConvNNError` in its chain of
    causes (its message is written for the user), else a :class:`UsageError` with the root
    cause's line (a library's ``ValueError`` that jsonargparse or Lightning wrapped)."""
    current: BaseException | None = err
    while current is not None:
        if isinstance(current, ConvNNError):
            return current
        current = current.__cause__
    return UsageError(error_line(root_cause(err)))


def config_key(config: Mapping[str, Any], name: str, prefix: str = "") -> str | None:
    """The first dotted key of ``config`` (nested mappings, depth first) whose last part is
    ``name``: the key a user sets for a parameter, e.g. ``lr`` -> ``model.init_args.lr``."""
    for part, value in config.items():
        key = f"{prefix}{part}"
        if part == name:
            return key
        if isinstance(value, Mapping) and (found := config_key(value, name, f"{key}.")):
            return found
    return None


def keyed_error(err: ConvNNError, config: Mapping[str, Any]) -> ConvNNError:
    """``err`` naming the config key of the parameter it is about (an :class:`OptionError`
    with ``key="lr"``): ``lr=-0.01 is not allowed`` -> ``model.init_args.lr=-0.01 is not
    allowed``, as the parser writes a wrong value, or ``<key>: <message>`` when the message
    has no ``lr=``. The key is looked up under ``data`` first (the linked ``image_size``,
    ``num_classes`` and ``in_chans`` are set there), then ``model``; ``err`` itself when
    neither sets it."""
    key = getattr(err, "key", None)
    sections = [(s, config.get(s)) for s in ("data", "model")]
    paths = [
        config_key(value, key, f"{section}.")
        for section, value in sections
        if isinstance(key, str) and isinstance(value, Mapping)
    ]
    path = next((p for p in paths if p), None)
    if path is None:
        return err
    line = error_line(err)
    named, found = re.subn(rf"(?<![\w.]){re.escape(key)}=", f"{path}=", line, count=1)
    return OptionError(named if found else f"{path}: {line}", key=path)


def cli_message(prog: str, err: BaseException) -> str:
    """``"<prog>: error: <one line>"`` for ``err`` (its first suite error, see
    :func:`as_user_error`)."""
    return f"{prog}: error: {error_line(as_user_error(err))}"


def run_command(prog: str, body: Callable[[], T]) -> T:
    """``body()``; a :class:`ConvNNError` it raises is printed as one line on stderr and ends
    the command with :class:`CommandError` (exit status 2)."""
    try:
        return body()
    except ConvNNError as err:
        line = cli_message(prog, err)
        print(line, file=sys.stderr, flush=True)
        raise CommandError(line) from None
