"""``convnn fit|validate|test|predict``: the suite's LightningCLI.

:mod:`lightning_modules.cli` dispatches here (importing Lightning and timm) only for these
subcommands, so ``convnn --help`` answers at once; its docstring says what a run writes.
Bad input is raised as the suite's errors, which :func:`~lightning_modules.cli.exits.run_command`
prints as one line.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.utilities.exceptions import SIGTERMException

from convnn.errors import UsageError
from datamodules import ImageClassificationDataModule

from ..callbacks import EpochLog, PredictionWriter, RunReport
from ..checkpoint_io import SafeCheckpointIO, check_state_dict, load_checkpoint
from ..class_switch import dropped_by_parser
from ..classifier import ImageClassifier, check_decay_left, check_input_size, input_size
from ..files import EVALUATE_ENV, check_writable
from ..notes import note
from ..preemption import PREEMPTED, PreemptionCheckpoint
from .commands import DESCRIPTION
from .exits import as_user_error, keyed_error
from .parser import OneLineErrors

__all__ = [
    "CALLBACK_DEFAULTS",
    "CHECKPOINT_DEFAULTS",
    "TRAINER_DEFAULTS",
    "ConvNNArgumentParser",
    "ConvNNCLI",
    "main",
]

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


def _model_of(config: Any) -> tuple[str | None, dict[str, Any]]:
    """``(model name, model_kwargs)`` of a parsed ``model`` config (``(None, {})``: none)."""
    if config is None:
        return None, {}
    init = config.get("init_args") if hasattr(config, "get") else None
    if init is None:
        return None, {}
    kwargs = init.get("model_kwargs") or {}
    return init.get("model"), dict(kwargs.as_dict() if hasattr(kwargs, "as_dict") else kwargs)


def _data_image_size(config: Any) -> int | None:
    """The ``image_size`` a parsed ``data`` config gives, when it says (``None``: unknown)."""
    init = config.get("init_args") if hasattr(config, "get") else None
    size = init.get("image_size") if hasattr(init, "get") else None
    return size if isinstance(size, int) else None


def model_difference(
    config: tuple[str | None, dict[str, Any]], checkpoint: tuple[str | None, dict[str, Any]]
) -> str | None:
    """How the checkpoint's model differs from the config's (``None``: the same model)."""
    (name, kwargs), (ckpt_name, ckpt_kwargs) = config, checkpoint
    if name is None or ckpt_name is None:
        return None
    if name != ckpt_name:
        return f"a {ckpt_name}, not the config's {name}"
    keys = sorted(set(kwargs) | set(ckpt_kwargs), key=str)
    changed = [k for k in keys if kwargs.get(k) != ckpt_kwargs.get(k)]
    if not changed:
        return None
    shown = ", ".join(
        f"{k}={ckpt_kwargs.get(k, '(unset)')} (config: {kwargs.get(k, '(unset)')})"
        for k in changed[:4]
    )
    more = f" and {len(changed) - 4} more" if len(changed) > 4 else ""
    return f"{name} with model_kwargs {shown}{more}"


class ConvNNArgumentParser(OneLineErrors, LightningArgumentParser):
    """Lightning's parser for ``convnn fit/validate/test/predict``, with one-line errors
    (:class:`~lightning_modules.cli.parser.OneLineErrors`): ``convnn: error: ...``."""


class ConvNNCLI(LightningCLI):
    """LightningCLI with ConvNN defaults: see :mod:`lightning_modules.cli`."""

    def __init__(self, args: Any = None, run: bool = True, **kwargs: Any) -> None:
        kwargs.setdefault("seed_everything_default", 0)
        kwargs.setdefault("trainer_defaults", TRAINER_DEFAULTS)
        kwargs.setdefault("parser_kwargs", {"description": DESCRIPTION, "allow_abbrev": False})
        kwargs.setdefault("parser_class", ConvNNArgumentParser)
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
        # last.ckpt on SIGTERM/SIGUSR1/SIGUSR2 and every n steps: lightning_modules.preemption
        parser.add_lightning_class_args(PreemptionCheckpoint, "preemption")
        parser.set_defaults(CHECKPOINT_DEFAULTS)
        parser.set_defaults({"trainer.callbacks": CALLBACK_DEFAULTS})
        # image_size also sets the img_size of a model with a fixed input size (ViTs)
        for name in ("num_classes", "image_size", "in_chans"):
            parser.link_arguments(f"data.{name}", f"model.init_args.{name}", apply_on="instantiate")

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """As Lightning's, then one note per ``class_path`` switched on the command line
        whose config-file ``init_args`` the new class does not take (jsonargparse drops them
        silently): :func:`lightning_modules.class_switch.dropped_by_parser`."""
        super().parse_arguments(parser, args)
        if isinstance(args, dict) or not hasattr(self.config, "get"):
            return
        subcommand = self.config.get("subcommand")
        config = self.config[subcommand] if subcommand else self.config
        for line in dropped_by_parser(list(sys.argv[1:] if args is None else args), config):
            note(line)

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
        """As Lightning's, with a bad model, data or trainer argument as a one-line error
        naming its key (``model.init_args.lr=-0.01 is not allowed; ...``), before the run
        directory exists (:func:`~lightning_modules.cli.exits.keyed_error`); so is a cool-down
        that leaves no epoch of decay."""
        try:
            super().instantiate_classes()
            if self.subcommand == "fit" and isinstance(self.model, ImageClassifier):
                hp = self.model.hparams
                check_decay_left(hp.warmup_epochs, hp.cooldown_epochs, self.trainer.max_epochs)
        except (ValueError, FileNotFoundError, MisconfigurationException) as err:
            config = self.config[self.subcommand] if self.subcommand else self.config
            raise keyed_error(as_user_error(err), config.as_dict()) from err

    def _parse_ckpt_path(self) -> None:
        """Lightning reads ``--ckpt_path``'s hyper-parameters into the model's config (they win
        over the config files); here a file that is not a safe checkpoint is a one-line error
        first, and a checkpoint of another model than the config's is said in one line. Its
        state dict stays memory-mapped for the check in ``_run_subcommand``."""
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        self.resume_from: tuple[str, dict[str, Any], dict[str, Any]] | None = None
        if ckpt_path and ckpt_path not in ("last", "best", "hpc", "registry"):
            ckpt = load_checkpoint(ckpt_path, mmap=True)
            hparams = dict(ckpt.get("hyper_parameters") or {})
            self.resume_from = (ckpt_path, ckpt["state_dict"], hparams)
            config = self.config[subcommand]
            given = _model_of(config.get("model"))
            saved = (hparams.get("model"), dict(hparams.get("model_kwargs") or {}))
            if given[0] is not None and saved[0] is not None and given[0] != saved[0]:
                raise UsageError(
                    f"--ckpt_path {ckpt_path} holds a {saved[0]}, not the config's {given[0]}: "
                    f"give the config of that model, or --model.init_args.model {saved[0]} "
                    "to use the checkpoint's model"
                )
            # before the model is built: a ViT's weights fit one image size only
            trained = input_size(saved[0] or "", hparams.get("image_size"), saved[1])
            data_size = _data_image_size(config.get("data"))
            if saved[0] and data_size is not None:
                check_input_size(saved[0], trained, data_size, ckpt_path)
            difference = model_difference(given, saved)
            if difference:
                note(
                    f"{ckpt_path} holds {difference}: {subcommand} uses the checkpoint's model "
                    "(its hyper-parameters win over the config)"
                )
        super()._parse_ckpt_path()

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """As Lightning's, with :class:`SafeCheckpointIO` unless another CheckpointIO is set,
        and the callbacks that report the run (:mod:`lightning_modules.callbacks`)."""
        trainer = super().instantiate_trainer(**kwargs)
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
            trainer.strategy.checkpoint_io = SafeCheckpointIO()
        if self.subcommand == "fit":
            trainer.callbacks += [EpochLog(), RunReport()]
        elif self.subcommand == "predict":
            trainer.callbacks.append(PredictionWriter())
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
        model and the data, then run; bad input found here or while running is one line.
        ``fit`` runs with the preemption signals caught (:mod:`lightning_modules.preemption`);
        one that stops it before training (Lightning's own ``SIGTERM`` handling) exits with
        :data:`~lightning_modules.preemption.PREEMPTED` too, not 0. A grid cell's ``fit`` then
        evaluates its ``last.ckpt`` (:mod:`lightning_modules.cell_evaluation`)."""
        try:
            for what, directory in self.output_dirs().items():
                check_writable(directory, what)
            if self.resume_from is not None:
                ckpt_path, state, hparams = self.resume_from
                trained = input_size(
                    hparams.get("model", ""),
                    hparams.get("image_size"),
                    dict(hparams.get("model_kwargs") or {}),
                )
                data_size = getattr(self.datamodule, "image_size", None)
                if data_size is not None:
                    check_input_size(self.model.hparams.model, trained, data_size, ckpt_path)
                check_state_dict(self.model, state, ckpt_path)
                self.resume_from = state = None  # unmap the file before the restore reads it
            preemption = [c for c in self.trainer.callbacks if isinstance(c, PreemptionCheckpoint)]
            catching = preemption[0].catching() if subcommand == "fit" and preemption else None
            with catching or contextlib.nullcontext():
                super()._run_subcommand(subcommand)
            if subcommand == "fit" and os.environ.get(EVALUATE_ENV):
                from ..cell_evaluation import evaluate_after_fit  # a grid cell's evaluation

                evaluate_after_fit(self.trainer)
        except SIGTERMException:  # a SystemExit(None): exit status 0, as if it had finished
            raise SystemExit(PREEMPTED) from None


def main(argv: list[str] | None = None) -> None:
    """``convnn fit|validate|test|predict ...`` (``argv`` starts with the subcommand;
    ``None``: ``sys.argv[1:]``)."""
    ConvNNCLI(args=argv)
