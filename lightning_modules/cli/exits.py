"""How every command ends on bad input: one line, ``<prog>: error: <message>``, exit status 2.

Written once for ``convnn`` (each subcommand) and ``convnn-ablate``: :func:`run_command` runs
a command's body and turns any :class:`~convnn.errors.ConvNNError` (bad input: an option, a
file, a checkpoint, data, a grid) into that line on stderr and a :class:`CommandError`. Other
exceptions are bugs and keep their traceback. Imports nothing heavy.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TypeVar

from convnn.errors import ConvNNError, UsageError, error_line, root_cause

__all__ = ["USAGE_STATUS", "CommandError", "as_user_error", "cli_message", "run_command"]

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
