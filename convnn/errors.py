"""The suite's one error root and the one-line form every command prints.

Every error raised on purpose for bad input derives from :class:`ConvNNError`; its
message is a single line for the user. Layers and options raise :class:`OptionError`
(also a ``ValueError``), which records the offending parameter in ``key`` so that
callers such as the ablation planner can report it without parsing the text.
The data, grid, checkpoint and usage errors of the other packages derive from it too.
"""

from __future__ import annotations

__all__ = [
    "BackendError",
    "ConvNNError",
    "OptionError",
    "UsageError",
    "cli_error",
    "cli_message",
    "error_line",
    "first_line",
    "root_cause",
]


class ConvNNError(Exception):
    """Root of the suite's errors: bad input, reported as one line."""


class OptionError(ConvNNError, ValueError):
    """An argument outside its allowed values; ``key`` names the parameter (or ``None``)."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


class BackendError(OptionError):
    """A backend or path was asked for by name but cannot run the given options."""


class UsageError(ConvNNError):
    """Bad user input to a command (a path, a file, an argument)."""


def root_cause(err: BaseException) -> BaseException:
    """The innermost ``__cause__`` of ``err``: the class's own error that jsonargparse (or
    another wrapper) raised ``from``."""
    while err.__cause__ is not None:
        err = err.__cause__
    return err


def error_line(err: BaseException) -> str:
    """One line for ``err``: its message, or for a message of several lines (an error
    re-raised from a DataLoader worker, with the worker's traceback) the original last
    line without the exception's name; the type's name when the message is empty."""
    lines = str(err).strip().splitlines()
    if not lines:
        return type(err).__name__
    if len(lines) == 1:
        return lines[0]
    return lines[-1].split(": ", 1)[-1]


def first_line(err: BaseException) -> str:
    """The first line of ``err``'s message (its headline: torch's and jsonargparse's
    messages put details below it), or its type's name when the message is empty."""
    message = str(err).strip()
    return message.splitlines()[0] if message else type(err).__name__


def cli_message(prog: str, err: BaseException, cause: bool = True) -> str:
    """``"<prog>: error: <one line>"`` for ``err``'s root cause or, with ``cause=False``,
    for ``err`` itself (a suite error raised ``from`` the error it explains, whose own
    message is the one for the user)."""
    return f"{prog}: error: {error_line(root_cause(err) if cause else err)}"


def cli_error(prog: str, err: BaseException, cause: bool = True) -> SystemExit:
    """The ``SystemExit`` a command raises for ``err`` (message: :func:`cli_message`)."""
    return SystemExit(cli_message(prog, err, cause))
