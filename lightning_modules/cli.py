"""The ``convnn`` command: Lightning's CLI (``fit``, ``validate``, ``test``, ``predict``) and
``convnn evaluate``.

``convnn fit --config configs/quickstart.yaml`` trains; several ``--config`` files merge in
order, so an experiment is a small override on a complete default. Model and data are in
subclass mode (``--model ImageClassifier``, ``--data CIFAR10DataModule``); ``num_classes``,
``image_size`` and ``in_chans`` of the model are linked from the DataModule. Every run gets
its own TensorBoard version directory (``runs/<name>/version_<n>``) holding the merged
``config.yaml``, ``code_version.json``, the checkpoints (``checkpoint``: the best
``val/acc1``; ``last_checkpoint``: ``last.ckpt``, rewritten after every validation)
and the event files; an existing ``config.yaml`` there is an error, never overwritten.

This module only dispatches: ``convnn --help`` prints the subcommands without importing
Lightning or timm; the CLI itself (:class:`ConvNNCLI`) lives in
:mod:`lightning_modules.lightning_cli` and is imported on first use.
"""

from __future__ import annotations

import sys
import textwrap
from typing import Any

__all__ = ["DESCRIPTION", "PROG", "main"]  # and ConvNNCLI etc. (see __getattr__)

PROG = "convnn"
DESCRIPTION = (
    "Train and evaluate ConvNN image classifiers. Subcommands: fit, validate, test, predict "
    "(Lightning's CLI) and evaluate (`convnn evaluate --help`: metrics, parameters, GFLOPs "
    "and throughput of a checkpoint)."
)

SUBCOMMANDS = {
    "fit": "Train: the run directory, its best and last checkpoints are printed.",
    "validate": "One evaluation epoch over the validation set.",
    "test": "One evaluation epoch over the test set.",
    "predict": "Class predictions of the test split: predictions.csv in the run directory.",
    "evaluate": "Top-1/top-5, loss, params, GFLOPs and images/s of a checkpoint (JSON).",
    "doctor": "Versions, devices, backend paths and the Triton self-check of each GPU.",
    "inspect": "Which neighbors each ConvNN layer selects: pictures and locality.json.",
}

HELP = (
    f"""usage: {PROG} [-h] [-c CONFIG] {{{",".join(SUBCOMMANDS)}}} ...

{textwrap.fill(DESCRIPTION, 88)}

subcommands (`{PROG} <subcommand> --help` lists every option of one; it imports Lightning
and timm, a few seconds):
"""
    + "".join(f"  {name:<10}{text}\n" for name, text in SUBCOMMANDS.items())
    + f"""
options:
  -h, --help            Show this help message and exit.
  -c CONFIG, --config CONFIG
                        Path to a configuration file in json or yaml format.
  --print_config[=flags]
                        Print the configuration after applying all other
                        arguments and exit (flags: skip_default, skip_unset).

e.g. {PROG} fit -c configs/quickstart.yaml
"""
)


def __getattr__(name: str) -> Any:
    """The CLI's classes and defaults (``ConvNNCLI``, ``TRAINER_DEFAULTS``, ...), imported
    on first use from :mod:`lightning_modules.lightning_cli`."""
    if name.startswith("__"):
        raise AttributeError(name)
    from . import lightning_cli

    try:
        return getattr(lightning_cli, name)
    except AttributeError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None


def main(args: list[str] | None = None) -> None:
    """Entry point of the ``convnn`` console script."""
    argv = sys.argv[1:] if args is None else list(args)
    if argv in ([], ["-h"], ["--help"]):
        # the subcommand list needs neither Lightning nor timm (seconds of imports)
        (sys.stdout if argv else sys.stderr).write(HELP)
        if not argv:
            names = ", ".join(SUBCOMMANDS)
            sys.stderr.write(f"{PROG}: error: a subcommand is required ({names})\n")
            raise SystemExit(2)
        return
    if argv[0] == "evaluate":
        from .evaluate import main as evaluate_main

        evaluate_main(argv[1:])
        return
    if argv[0] == "doctor":  # needs neither Lightning nor timm
        from .doctor import main as doctor_main

        raise SystemExit(doctor_main(argv[1:]))
    if argv[0] == "inspect":
        from .inspect import main as inspect_main

        inspect_main(argv[1:])
        return
    from .lightning_cli import ConvNNCLI

    ConvNNCLI(args=args)


if __name__ == "__main__":
    main()
