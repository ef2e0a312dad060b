"""The table of ``convnn``'s subcommands, from which the help and the dispatch are both built
(:func:`lightning_modules.cli.main`). Imports nothing heavy."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass

__all__ = ["COMMANDS", "DESCRIPTION", "HELP", "PROG", "Command"]

PROG = "convnn"


@dataclass(frozen=True)
class Command:
    """One subcommand: the module of this package that runs it and its line of help.

    ``module`` names ``lightning_modules.cli.<module>``, whose ``main(argv)`` gets the
    arguments after the subcommand's name (``lightning`` gets them with the name: Lightning's
    CLI parses the subcommand itself). ``roots``: for ``lightning``, the first part of every
    ``--option`` of the subcommand's parser, checked before Lightning is imported
    (:mod:`lightning_modules.cli.early`; kept equal to the parser's by
    ``tests/cli/test_front_door_errors.py``)."""

    module: str
    help: str
    roots: tuple[str, ...] = ()


_LIGHTNING_ROOTS = (
    "checkpoint", "ckpt_path", "config", "data", "help", "last_checkpoint", "model",
    "preemption", "print_config", "seed_everything", "trainer", "weights_only",
)  # fmt: skip


COMMANDS: dict[str, Command] = {
    "fit": Command(
        "lightning",
        "Train: the run directory, its best and last checkpoints.",
        _LIGHTNING_ROOTS,
    ),
    "validate": Command(
        "lightning",
        "One evaluation epoch over the validation set.",
        (*_LIGHTNING_ROOTS, "verbose"),
    ),
    "test": Command(
        "lightning",
        "One evaluation epoch over the test set.",
        (*_LIGHTNING_ROOTS, "verbose"),
    ),
    "predict": Command(
        "lightning",
        "Class predictions of the test split: predictions.csv.",
        (*_LIGHTNING_ROOTS, "return_predictions"),
    ),
    "evaluate": Command(
        "evaluate",
        "Top-1/top-5, loss, params, GFLOPs and images/s of a checkpoint (JSON).",
    ),
    "inspect": Command(
        "inspect",
        "Which neighbors each ConvNN layer selects: pictures and locality.json.",
    ),
    "export": Command(
        "export",
        "A checkpoint's network for timm: model.safetensors, config.json, model card.",
    ),
    "doctor": Command("doctor", "Versions, devices, backend paths and the Triton self-check."),
}
"""Every subcommand of ``convnn``, in the order ``--help`` lists them."""

DESCRIPTION = (
    "Train, evaluate and inspect ConvNN image classifiers. Subcommands: "
    + ", ".join(COMMANDS)
    + " (`convnn <subcommand> --help` lists the options of one)."
)

HELP = (
    f"""usage: {PROG} [-h] [-c CONFIG] {{{",".join(COMMANDS)}}} ...

{textwrap.fill(DESCRIPTION, 88)}

subcommands (`{PROG} <subcommand> --help` lists every option of one; it imports Lightning
and timm, a few seconds):
"""
    + "".join(f"  {name:<10}{command.help}\n" for name, command in COMMANDS.items())
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
