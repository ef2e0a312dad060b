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
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback

from convnn.errors import cli_error
from datamodules import DataError, ImageClassificationDataModule

from .checkpoint_io import SafeCheckpointIO, check_state_dict, load_checkpoint
from .classifier import ImageClassifier
from .files import UsageError, check_writable

__all__ = ["ConvNNCLI", "main"]

PROG = "convnn"
DESCRIPTION = (
    "Train and evaluate ConvNN image classifiers. Subcommands: fit, validate, test, predict "
    "(Lightning's CLI) and evaluate (`convnn evaluate --help`: metrics, parameters, GFLOPs "
    "and throughput of a checkpoint)."
)

TRAINER_DEFAULTS: dict[str, Any] = {
    "logger": {
        "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
        "init_args": {"save_dir": "runs", "name": "convnn", "default_hp_metric": False},
    },
}

CALLBACK_DEFAULTS: list[dict[str, Any]] = [
    {"class_path": "lightning.pytorch.callbacks.RichProgressBar"},
    {"class_path": "lightning.pytorch.callbacks.RichModelSummary", "init_args": {"max_depth": 1}},
    {
        "class_path": "lightning.pytorch.callbacks.LearningRateMonitor",
        "init_args": {"logging_interval": "step"},
    },
]

CHECKPOINT_DEFAULTS: dict[str, Any] = {
    "checkpoint.monitor": "val/acc1",
    "checkpoint.mode": "max",
    "checkpoint.filename": "best-epoch{epoch:03d}-acc1={val/acc1:.4f}",
    "checkpoint.auto_insert_metric_name": False,
    # Lightning >= 2.6 refreshes a monitored callback's last.ckpt only when the metric
    # improves, so the last epoch has its own unmonitored callback, rewritten every epoch.
    "last_checkpoint.filename": "last",
    "last_checkpoint.save_top_k": 1,
    "last_checkpoint.enable_version_counter": False,
}


def _git(*args: str) -> str | None:
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def code_version() -> dict[str, Any]:
    """Git commit and dirty state of the code, and the versions of the main packages."""
    packages = {}
    for name in ("convnn", "torch", "lightning", "timm", "torchmetrics"):
        try:
            packages[name] = version(name)
        except PackageNotFoundError:
            packages[name] = None
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": bool(status) if status is not None else None,
        "packages": packages,
        "python": sys.version.split()[0],
        "command": sys.argv,
    }


class SaveConfigAndVersion(SaveConfigCallback):
    """Lightning's merged ``config.yaml`` plus ``code_version.json`` in the run directory."""

    def save_config(self, trainer: Any, pl_module: Any, stage: str) -> None:
        # rank zero only: ``trainer.log_dir`` would broadcast and hang the other ranks
        logger = trainer.logger
        log_dir = getattr(logger, "log_dir", None) or getattr(logger, "save_dir", None)
        log_dir = log_dir or trainer.default_root_dir
        if log_dir is None:
            return
        path = os.path.join(log_dir, "code_version.json")
        with open(path, "w") as f:
            json.dump(code_version(), f, indent=2)


class ConvNNCLI(LightningCLI):
    """LightningCLI with ConvNN defaults: see the module docstring."""

    def __init__(self, args: Any = None, run: bool = True, **kwargs: Any) -> None:
        kwargs.setdefault("seed_everything_default", 0)
        kwargs.setdefault("trainer_defaults", TRAINER_DEFAULTS)
        kwargs.setdefault("parser_kwargs", {"description": DESCRIPTION})
        super().__init__(
            ImageClassifier,
            ImageClassificationDataModule,
            save_config_callback=SaveConfigAndVersion,
            subclass_mode_model=True,
            subclass_mode_data=True,
            auto_configure_optimizers=False,
            args=args,
            run=run,
            **kwargs,
        )

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.add_lightning_class_args(ModelCheckpoint, "last_checkpoint")
        parser.set_defaults(CHECKPOINT_DEFAULTS)
        parser.set_defaults({"trainer.callbacks": CALLBACK_DEFAULTS})
        for name in ("num_classes", "image_size", "in_chans"):
            parser.link_arguments(f"data.{name}", f"model.init_args.{name}", apply_on="instantiate")

    def before_instantiate_classes(self) -> None:
        """``--trainer.enable_progress_bar false`` also drops the default rich progress bar
        (Lightning would refuse a progress bar callback with the bar disabled)."""
        config = self.config[self.subcommand] if self.subcommand else self.config
        trainer = config.trainer
        if trainer.enable_progress_bar is False and trainer.callbacks:
            trainer.callbacks = [
                c
                for c in trainer.callbacks
                if not str(getattr(c, "class_path", "")).endswith("RichProgressBar")
            ]

    def instantiate_classes(self) -> None:
        """As Lightning's, with a bad model or data argument as a one-line error."""
        try:
            super().instantiate_classes()
        except (ValueError, FileNotFoundError) as err:
            raise cli_error(PROG, err) from err

    def _parse_ckpt_path(self) -> None:
        """Lightning reads ``--ckpt_path``'s hyper-parameters into the model's config (they win
        over the config files); here a file that is not a safe checkpoint is a one-line error
        first. Its state dict stays memory-mapped for the check in ``_run_subcommand``."""
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        self.resume_from: tuple[str, dict[str, Any]] | None = None
        if ckpt_path and ckpt_path not in ("last", "best", "hpc", "registry"):
            try:
                state = load_checkpoint(ckpt_path, mmap=True)["state_dict"]
            except UsageError as err:
                raise cli_error(PROG, err, cause=False) from None
            self.resume_from = (ckpt_path, state)
        super()._parse_ckpt_path()

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """As Lightning's, with :class:`SafeCheckpointIO` unless another CheckpointIO is set."""
        trainer = super().instantiate_trainer(**kwargs)
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
            trainer.strategy.checkpoint_io = SafeCheckpointIO()
        return trainer

    def output_dirs(self) -> dict[str, str]:
        """Directories this run writes to, keyed by the argument that sets them."""
        trainer = self.trainer
        dirs = {"trainer.default_root_dir": trainer.default_root_dir}
        for logger in trainer.loggers:
            if getattr(logger, "save_dir", None):
                dirs[f"{type(logger).__name__} save_dir"] = logger.save_dir
        for callback in trainer.checkpoint_callbacks:
            if getattr(callback, "dirpath", None):
                dirs["ModelCheckpoint dirpath"] = callback.dirpath
        return dirs

    def _run_subcommand(self, subcommand: str) -> None:
        """Check that the output directories can be written and that ``--ckpt_path`` fits the
        model, then run; bad input found here or while running is a one-line error."""
        try:
            for what, directory in self.output_dirs().items():
                check_writable(directory, what)
            if self.resume_from is not None:
                ckpt_path, state = self.resume_from
                check_state_dict(self.model, state, ckpt_path)
                self.resume_from = state = None  # unmap the file before the restore reads it
            super()._run_subcommand(subcommand)
        except (UsageError, DataError) as err:
            raise cli_error(PROG, err, cause=False) from None


def main(args: list[str] | None = None) -> None:
    """Entry point of the ``convnn`` console script."""
    argv = sys.argv[1:] if args is None else list(args)
    if argv and argv[0] == "evaluate":
        from .evaluate import main as evaluate_main

        evaluate_main(argv[1:])
        return
    ConvNNCLI(args=args)


if __name__ == "__main__":
    main()
