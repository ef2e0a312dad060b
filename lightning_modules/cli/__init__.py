"""The ``convnn`` command: one table of subcommands, from which ``--help`` and the dispatch are
both built.

``convnn fit --config configs/quickstart.yaml`` trains; several ``--config`` files merge in
order, so an experiment is a small override on a complete default. Model and data are in
subclass mode (``--model ImageClassifier``, ``--data CIFAR10DataModule``); ``num_classes``,
``image_size`` and ``in_chans`` of the model are linked from the DataModule. Every run gets
its own TensorBoard version directory (``runs/<name>/version_<n>``) holding the merged
``config.yaml``, ``code_version.json``, the checkpoints (``checkpoint``: the best
``val/acc1``; ``last_checkpoint``: ``last.ckpt``, rewritten after every validation)
and the event files; an existing ``config.yaml`` there is an error, never overwritten.

The package is the command-line layer only (argv, printing, exit statuses); what a run *is*
lives beside it in ``lightning_modules`` and imports nothing from here:

* this module: :func:`main`, dispatching by the table of ``commands.py``; it imports neither
  Lightning nor timm, so ``convnn --help`` answers at once, and ``early.py`` refuses an
  unknown subcommand or option and a missing file before the heavy imports;
* ``lightning.py``: ``fit``, ``validate``, ``test``, ``predict`` (:class:`ConvNNCLI`);
* ``evaluate.py``, ``inspect.py``, ``doctor.py``: one module per other subcommand, each with
  ``main(argv)``;
* ``exits.py``: the one-line error and exit status of every command (``convnn-ablate`` too);
* ``parser.py``: jsonargparse's parse errors condensed to one line.

Adding a subcommand is one module with ``main(argv: list[str])`` plus one row of
``commands.COMMANDS`` (docs/architecture.md).
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

from .commands import COMMANDS, DESCRIPTION, HELP, PROG, Command
from .early import check_before_import
from .exits import USAGE_STATUS, run_command

__all__ = ["COMMANDS", "DESCRIPTION", "PROG", "Command", "main"]  # and ConvNNCLI (__getattr__)


def __getattr__(name: str) -> Any:
    """A command module, or one of the Lightning CLI's names (``ConvNNCLI``,
    ``TRAINER_DEFAULTS``, ...) imported on first use from :mod:`lightning_modules.cli.lightning`."""
    if name.startswith("__"):
        raise AttributeError(name)
    try:  # a command module (``from lightning_modules.cli import doctor``)
        return importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as err:
        if err.name != f"{__name__}.{name}":
            raise
    lightning = importlib.import_module(f"{__name__}.lightning")
    try:
        return getattr(lightning, name)
    except AttributeError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None


def main(args: list[str] | None = None) -> None:
    """Entry point of the ``convnn`` console script: the subcommand's ``main``."""
    argv = sys.argv[1:] if args is None else list(args)
    if argv in ([], ["-h"], ["--help"]):
        # the subcommand list needs neither Lightning nor timm (seconds of imports)
        (sys.stdout if argv else sys.stderr).write(HELP)
        if not argv:
            names = ", ".join(COMMANDS)
            sys.stderr.write(f"{PROG}: error: a subcommand is required ({names})\n")
            raise SystemExit(USAGE_STATUS)
        return
    name = argv[0]
    own = name in COMMANDS and COMMANDS[name].module != "lightning"
    prog = f"{PROG} {name}" if own else PROG

    def body() -> Any:
        command = check_before_import(argv, COMMANDS)  # before Lightning and timm
        module = importlib.import_module(f"{__name__}.{command.module}")
        if own:
            return module.main(argv[1:])
        # Lightning's CLI reads sys.argv itself (and warns when given it as ``args`` too)
        return module.main(None if args is None else argv)

    result = run_command(prog, body)
    if isinstance(result, int) and not isinstance(result, bool):
        raise SystemExit(result)  # doctor's status; a console script exits 0 on None
