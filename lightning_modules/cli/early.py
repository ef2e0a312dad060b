"""What ``convnn`` checks before it imports Lightning and timm (seconds of imports, tens of
seconds on a loaded machine), so that a mistake there is answered at once: the subcommand's
name and, for ``fit``/``validate``/``test``/``predict``, the first part of every
``--option`` (``--trainr.max_epochs``) and the input files (a config file exists; a
checkpoint exists and ``torch.save`` wrote it). Each mistake is a
:class:`~convnn.errors.UsageError` naming the option or the subcommand, with a close match
where there is one; the rest (values, the keys below the first part) is the parser's.
``evaluate`` and ``inspect`` parse their arguments before the heavy imports themselves, then
check ``--ckpt`` (:func:`~lightning_modules.files.check_checkpoint_file`). Imports nothing
heavy.
"""

from __future__ import annotations

from collections.abc import Mapping

from convnn.errors import UsageError
from convnn.validation import suggestion

from ..files import check_checkpoint_file, check_input_file
from .commands import Command

__all__ = [
    "CHECKPOINT_ALIASES",
    "LIGHTNING_FILES",
    "check_before_import",
    "check_files",
    "check_option_roots",
    "check_subcommand",
]

CHECKPOINT_ALIASES = ("last", "best", "hpc", "registry")
"""Names Lightning's ``--ckpt_path`` takes instead of a file."""

LIGHTNING_FILES = ("-c", "--config", "--ckpt_path")
"""The options of Lightning's CLI that name an input file."""

_HELP = ("-h", "--help")
_LONG_NAMES = {"-c": "--config"}


def _given_files(argv: list[str], options: tuple[str, ...]) -> list[tuple[str, str]]:
    """``(option, path)`` of each of ``options`` in ``argv`` (``--opt PATH`` or
    ``--opt=PATH``), the option by its long name."""
    found = []
    for i, arg in enumerate(argv):
        name, _, value = arg.partition("=")
        if name in options:
            value = value or (argv[i + 1] if i + 1 < len(argv) else "")
            if value:
                found.append((_LONG_NAMES.get(name, name), value))
    return found


def check_files(argv: list[str], options: tuple[str, ...]) -> None:
    """Every file that ``options`` name in ``argv`` exists and is a file, and a checkpoint
    (``--ckpt_path``) was written by ``torch.save``: ``UsageError`` naming the option
    otherwise. Inline configs (``{...}``) and Lightning's ``--ckpt_path last`` etc. are left
    to the parser."""
    for option, value in _given_files(argv, options):
        if value.lstrip().startswith(("{", "[")) or value in CHECKPOINT_ALIASES:
            continue
        if option == "--ckpt_path":
            check_checkpoint_file(value, option)
        else:
            check_input_file(value, option)


def check_option_roots(argv: list[str], roots: tuple[str, ...]) -> None:
    """Every ``--option`` in ``argv`` starts with one of ``roots`` (``--trainer.max_epochs``:
    ``trainer``), or is the start of one without a dot (argparse takes ``--seed`` for
    ``--seed_everything``); ``UsageError`` with a close match otherwise."""
    for arg in argv:
        if not arg.startswith("--") or arg == "--":
            continue
        name = arg.partition("=")[0]
        root, dot, rest = name[2:].partition(".")
        if root in roots or (not dot and any(r.startswith(root) for r in roots)):
            continue
        hint = suggestion(name, [f"--{r}{dot}{rest}" for r in roots])
        raise UsageError(f"unknown option {name!r}{hint}")


def check_subcommand(name: str, commands: Mapping[str, Command]) -> Command:
    """The subcommand ``name`` of ``commands`` (the table,
    :data:`~lightning_modules.cli.commands.COMMANDS`); ``UsageError`` with a close match
    when there is none."""
    if name not in commands:
        names = ", ".join(commands)
        raise UsageError(
            f"unknown subcommand {name!r}{suggestion(name, commands)} (choose from {names})"
        )
    return commands[name]


def check_before_import(argv: list[str], commands: Mapping[str, Command]) -> Command:
    """The subcommand of ``commands`` that ``argv`` (``[name, *options]``) runs, after the
    checks of this module (none of the options' with ``-h``/``--help``, which the
    subcommand answers). ``argv`` starting with an option (``-c CONFIG fit``) goes to
    Lightning's CLI with its files checked."""
    if argv[0].startswith("-"):
        check_files(argv, LIGHTNING_FILES)
        return commands["fit"]
    command = check_subcommand(argv[0], commands)
    if command.module != "lightning" or any(arg in _HELP for arg in argv[1:]):
        return command
    check_option_roots(argv[1:], command.roots)
    check_files(argv[1:], LIGHTNING_FILES)
    return command
