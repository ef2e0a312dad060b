"""Preemption: a signalled ``convnn fit`` saves where it is and exits, and resumes there.

A scheduler that takes a job's machine back first sends a signal (SLURM ``--signal=USR1@120``,
submitit's ``USR2``, ``SIGTERM`` before a kill) and kills the job a grace period later.
:class:`PreemptionCheckpoint`, which ``convnn fit`` always adds (options under
``preemption:``), turns that signal into a checkpoint at the next training step:

* the signal handler only sets a flag; at the end of the next training batch that completes
  an optimizer step, every process agrees (one signalled process stops them all), the run's
  ``last.ckpt`` is written (to a temporary file, then renamed over the old one) and the
  process exits with :data:`PREEMPTED` (``convnn fit``'s exit status: "preempted, resume
  from last.ckpt", not "failed"). A signal at an epoch's last batch lets the epoch finish
  (its validation and epoch-end checkpoints), writes ``last.ckpt`` at its end and stops
  before the next epoch's first batch; one during validation stops after the next batch.
* ``every_n_train_steps``: ``last.ckpt`` is also written every that many optimizer steps, so
  a run killed without warning (SIGKILL, a lost node) loses at most that many steps.

A run resumed from such a checkpoint (``--ckpt_path .../last.ckpt``) goes on at the next
batch and ends as an uninterrupted run would: Lightning's fit loop progress records the
batch; the training loader (:class:`datamodules.base.ResumableDataLoader`) reads the rest of
that epoch's batches; the classifier reseeds its generators per batch
(:mod:`lightning_modules.seeding`); and the checkpoint carries the torchmetrics states of the
epoch so far (``metric_states``, one entry per process), so the epoch's train metrics count
every batch of it. Bit for bit when the data's transforms draw no random numbers in loader
workers (random crops drawn in workers depend on the workers' seeds, which a resumed run
draws anew).

Signal handlers: ``convnn fit`` installs :meth:`PreemptionCheckpoint.catching` around the whole
run (a signal during start-up or the sanity check is not lost); during training the
callback's handler also replaces Lightning's ``SIGTERM`` handler, which would stop the run
with exit status 0 and no checkpoint at an arbitrary point (mid-validation); the previous
handlers are restored at the end of training and of the run.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torchmetrics import Metric

from convnn.errors import OptionError

from .callbacks import run_directory
from .files import PREEMPTED
from .notes import report

__all__ = ["PREEMPTED", "SIGNALS", "Preempted", "PreemptionCheckpoint"]


SIGNALS = ("SIGTERM", "SIGUSR1", "SIGUSR2")
"""Signals that preempt by default: SLURM's ``--signal`` choice, submitit's ``USR2``, a kill."""


class Preempted(SystemExit):
    """Raised in the training loop to stop a preempted run; exits with :data:`PREEMPTED`."""

    def __init__(self) -> None:
        super().__init__(PREEMPTED)


def _signal_numbers(names: list[str] | tuple[str, ...]) -> list[signal.Signals]:
    numbers = []
    for name in names:
        key = name.upper() if name.upper().startswith("SIG") else f"SIG{name.upper()}"
        if not hasattr(signal, key):
            raise OptionError(
                f"preemption.signals: unknown signal {name!r} (e.g. SIGUSR1)", key="signals"
            )
        numbers.append(signal.Signals[key])
    return numbers


class PreemptionCheckpoint(L.Callback):
    """On a preemption signal, write ``last.ckpt`` at the next training step and exit with
    :data:`PREEMPTED`; optionally write it every ``every_n_train_steps`` steps too (see the
    module's docstring for when exactly and what a resumed run gets).

    Args:
        every_n_train_steps: also write ``last.ckpt`` every this many optimizer steps (0: only
            on a signal; epoch ends keep their own ``last_checkpoint``). Not at an epoch's last
            batch, whose epoch-end checkpoint follows.
        signals: names of the signals that preempt (default :data:`SIGNALS`).
        filename: the checkpoint's name in the run's checkpoint directory (``last``: the file
            a resume looks for, ``last_checkpoint``'s).
    """

    def __init__(
        self,
        every_n_train_steps: int = 0,
        signals: list[str] | None = None,
        filename: str = "last",
    ) -> None:
        if every_n_train_steps < 0:
            raise OptionError(
                f"preemption.every_n_train_steps={every_n_train_steps} is not allowed; "
                "expected an integer >= 0",
                key="every_n_train_steps",
            )
        self.every_n_train_steps = every_n_train_steps
        self.signals = _signal_numbers(signals if signals is not None else SIGNALS)
        self.filename = filename
        self.received: int | None = None  # the first preemption signal received
        self.saved: Path | None = None  # the last checkpoint this callback wrote
        self._stop_after_epoch = False
        self._displaced: dict[int, Any] = {}

    # -- signals --------------------------------------------------------------------------

    def handle(self, signum: int, frame: FrameType | None = None) -> None:
        """The signal handler: remember the signal; the training loop acts on it."""
        if self.received is None:
            self.received = signum

    def _install(self) -> dict[int, Any]:
        """Install :meth:`handle` for every preemption signal; the handlers it replaced."""
        if threading.current_thread() is not threading.main_thread():
            return {}  # Python sets handlers in the main thread only
        previous = {}
        for signum in self.signals:
            previous[signum] = signal.getsignal(signum)
            signal.signal(signum, self.handle)
        return previous

    @staticmethod
    def _restore(previous: dict[int, Any]) -> None:
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)

    @contextlib.contextmanager
    def catching(self) -> Iterator[None]:
        """Catch the preemption signals for the duration (the whole ``convnn fit`` run), then
        restore the previous handlers."""
        previous = self._install()
        try:
            yield
        finally:
            self._restore(previous)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Lightning's SIGTERM handler, installed as the fit began, is set aside: it would end
        # the run with exit status 0 and no checkpoint wherever the loop next looks at it
        if trainer.received_sigterm and self.received is None:
            self.received = signal.SIGTERM
        self._displaced = self._install()

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore(self._displaced)
        self._displaced = {}
        self.received, self._stop_after_epoch = None, False  # the training ended first

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        self._restore(self._displaced)
        self._displaced = {}

    # -- stopping and saving --------------------------------------------------------------

    def _signalled(self, trainer: L.Trainer) -> bool:
        """Whether any process has received a preemption signal (a collective under DDP:
        every process calls it at the same steps)."""
        if trainer.world_size > 1:
            return trainer.strategy.reduce_boolean_decision(self.received is not None, all=False)
        return self.received is not None

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        progress = trainer.fit_loop.epoch_loop.batch_progress
        last = progress.is_last_batch or progress.current.ready >= trainer.num_training_batches
        if not last and (batch_idx + 1) % trainer.accumulate_grad_batches:
            return  # gradients are accumulating: no optimizer step ends here
        if self._signalled(trainer):
            if last:  # the epoch ends first: its validation and epoch-end checkpoints
                self._stop_after_epoch = True
                return
            self._save(trainer)
            self._stop(trainer)
        every = self.every_n_train_steps
        if every and not last and trainer.global_step % every == 0:
            self._save(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._stop_after_epoch:
            self._save(trainer)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._stop_after_epoch:
            self._stop(trainer)

    def checkpoint_path(self, trainer: L.Trainer) -> Path:
        """Where ``last.ckpt`` goes: the directory of the run's ``ModelCheckpoint`` named
        ``filename`` (else of the first one), else ``<run directory>/checkpoints``."""
        callbacks = [c for c in trainer.checkpoint_callbacks if isinstance(c, ModelCheckpoint)]
        named = [c for c in callbacks if c.filename == self.filename]
        for callback in named + callbacks:
            if callback.dirpath:
                return Path(callback.dirpath) / f"{self.filename}{callback.FILE_EXTENSION}"
        directory = Path(run_directory(trainer) or ".") / "checkpoints"
        return directory / f"{self.filename}{ModelCheckpoint.FILE_EXTENSION}"

    def _save(self, trainer: L.Trainer) -> None:
        """Write the checkpoint to a temporary file beside it, then rename it over the old one
        (every process takes part; global rank zero renames). Not under ``fast_dev_run``,
        which writes no checkpoint."""
        if trainer.fast_dev_run:
            return
        path = self.checkpoint_path(trainer)
        if "://" in str(path):  # a remote store: Lightning's own save
            trainer.save_checkpoint(path, weights_only=False)
        else:
            tmp = path.with_name(f".{path.name}.preempt.tmp")
            trainer.save_checkpoint(tmp, weights_only=False)
            if trainer.is_global_zero:
                os.replace(tmp, path)
            trainer.strategy.barrier("PreemptionCheckpoint")
        self.saved = path

    def _stop(self, trainer: L.Trainer) -> None:
        name = signal.Signals(self.received).name if self.received else "a signal to another rank"
        saved = f"wrote {self.saved}; resume with --ckpt_path {self.saved}"
        if trainer.is_global_zero:
            report(f"preempted by {name} at step {trainer.global_step}: {saved}", "fit")
        raise Preempted()

    # -- the epoch's metric states ----------------------------------------------------------

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        """Mid-epoch: the states of the module's torchmetrics (the epoch's train metrics so
        far), ``checkpoint["metric_states"][rank]``, gathered from every process."""
        if not _mid_epoch(trainer):
            return
        states = _metric_states(pl_module)
        if trainer.world_size > 1 and torch.distributed.is_initialized():
            gathered: list[Any] = [None] * trainer.world_size
            torch.distributed.all_gather_object(gathered, states)
        else:
            gathered = [states]
        checkpoint["metric_states"] = dict(enumerate(gathered))

    def on_load_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        saved = checkpoint.get("metric_states")
        if saved and len(saved) == trainer.world_size and trainer.state.fn == "fit":
            _load_metric_states(pl_module, saved.get(trainer.global_rank) or {})


def _mid_epoch(trainer: L.Trainer) -> bool:
    """Whether a checkpoint saved now resumes inside a training epoch."""
    loop = trainer.fit_loop
    epochs, batches = loop.epoch_progress.current, loop.epoch_loop.batch_progress.current
    inside = epochs.started > epochs.processed  # an epoch has started and not ended
    return inside and 0 < batches.processed < trainer.num_training_batches


def _metric_states(module: torch.nn.Module) -> dict[str, dict[str, Any]]:
    """``{metric's module name: {state name: tensor or list of tensors}}`` on the CPU."""
    out = {}
    for name, metric in module.named_modules():
        if isinstance(metric, Metric):
            out[name] = {
                key: [t.detach().cpu() for t in value]
                if isinstance(value, list)
                else value.detach().cpu()
                for key, value in metric.metric_state.items()
            }
    return out


def _load_metric_states(module: torch.nn.Module, states: dict[str, dict[str, Any]]) -> None:
    """Set the states :func:`_metric_states` took (on each metric's device)."""
    for name, metric in module.named_modules():
        if isinstance(metric, Metric) and name in states:
            device = metric.device
            for key, value in states[name].items():
                if isinstance(value, list):
                    setattr(metric, key, [t.to(device) for t in value])
                else:
                    setattr(metric, key, value.to(device))
