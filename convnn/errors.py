"""The suite's errors, all defined here: one root for every error raised on purpose for bad
input, whose message is a single line for the user.

* :class:`OptionError` (also a ``ValueError``): an argument outside its allowed values; it
  records the offending parameter in ``key`` so that callers such as the ablation planner
  report it without parsing the text. :class:`BackendError`: a path asked for by name that
  cannot run the options.
* :class:`UsageError`: bad input to a command (a path, a file, an argument);
  :class:`CheckpointError` and :class:`EvaluationError` are its kinds for checkpoints.
* :class:`DataError`: a data set that is missing, empty, corrupt or inconsistent;
  :class:`DataNotFoundError` (also a ``FileNotFoundError``) is its kind for a data set or
  folder that does not exist.
* :class:`GridError`: an ablation grid file or its output directory.

The packages above ``convnn`` (``lightning_modules``, ``datamodules``, ``ablations``) import
their errors from here; how a command prints one (``<prog>: error: <line>``, exit status 2)
is ``lightning_modules.cli.exits``.
"""

from __future__ import annotations

__all__ = [
    "BackendError",
    "CheckpointError",
    "ConvNNError",
    "DataError",
    "DataNotFoundError",
    "EvaluationError",
    "GridError",
    "OptionError",
    "UsageError",
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


class CheckpointError(UsageError):
    """A file that is not a safe, readable checkpoint of this suite."""


class EvaluationError(UsageError):
    """A checkpoint or data set that ``convnn evaluate`` / ``inspect`` cannot use together."""


class DataError(ConvNNError, ValueError):
    """A data set that is missing, empty, corrupt or inconsistent (names the path)."""


class DataNotFoundError(DataError, FileNotFoundError):
    """A data set or data folder that does not exist (names the path and how to get it).

    Also a ``FileNotFoundError``, as these errors were before they had a class of their own:
    callers that catch that (``ablations.grid`` checks a cell with stand-in data when its
    data is absent) keep working."""


class GridError(ConvNNError, ValueError):
    """An ablation grid that is malformed or cannot run (names the file, cell or key)."""


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
