"""One generic image classifier: any timm model name, cross-entropy, top-1/top-5 metrics.

The network is built by ``timm.create_model(model, num_classes=..., in_chans=...,
**model_kwargs)``, so every ``convnn_*`` model (``import convnn`` registers them) and
every timm baseline trains the same way; the module has no ConvNN special cases.
Batches are ``(images (B, C, H, W), labels (B,))``; the logits are ``(B, num_classes)``.
"""

from __future__ import annotations

import difflib
import math
from typing import Any, Literal, get_args

import lightning as L
import timm
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_warn
from timm.data import Mixup
from timm.loss import BinaryCrossEntropy
from timm.utils import ModelEmaV3
from torch import Tensor, nn
from torch.optim.lr_scheduler import LambdaLR
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy

import convnn  # noqa: F401  (registers the convnn_* models in timm)
from convnn.errors import OptionError, UsageError
from convnn.models.size_check import CONVNN_LAYERS, check_sizes
from convnn.validation import check_choice, check_number

from .checkpoint_io import check_state_dict
from .init_weights import load_initial_weights
from .notes import note
from .optim import (
    LRSchedule,
    OptimizerName,
    SchedulerName,
    build_optimizer,
    check_layer_decay,
)
from .seeding import run_seed, seed_all, step_seed

__all__ = ["ImageClassifier"]

SPLITS = ("train", "val", "test")
_RESERVED = ("num_classes", "in_chans")


def _create_model(name: str, num_classes: int, in_chans: int, kwargs: dict[str, Any]) -> nn.Module:
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.8)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise OptionError(f"model={name!r} is not a timm model{hint}", key="model")
    clash = [k for k in _RESERVED if k in kwargs]
    if clash:
        raise OptionError(
            f"model_kwargs may not set {clash}: they come from the DataModule", key="model_kwargs"
        )
    return timm.create_model(name, num_classes=num_classes, in_chans=in_chans, **kwargs)


def _pretrained_cfg(name: str) -> Any:
    """timm's pretrained config of the model ``name``, or ``None``."""
    try:
        return timm.models.get_pretrained_cfg(name)
    except (RuntimeError, ValueError, KeyError):
        return None


def fixed_input_size(name: str) -> bool:
    """Whether the timm model ``name`` takes inputs of one size only, set by its ``img_size``
    argument (``fixed_input_size`` in its pretrained config: every ViT, ``convnn_vit_*``
    included, whose position embedding is sized for one patch grid)."""
    cfg = _pretrained_cfg(name)
    return bool(cfg is not None and cfg.fixed_input_size)


def _square(size: Any) -> int | None:
    if isinstance(size, (list, tuple)) and len(size) == 2 and size[0] == size[1]:
        size = size[0]
    return size if isinstance(size, int) and not isinstance(size, bool) else None


def input_size(name: str, image_size: int | None, model_kwargs: dict[str, Any]) -> int | None:
    """The side of the inputs the network takes: ``image_size`` (linked from the data) or,
    without it, ``model_kwargs['img_size']`` or the model's default input size."""
    if image_size is not None:
        return image_size
    own = _square(model_kwargs.get("img_size"))
    if own is not None:
        return own
    cfg = _pretrained_cfg(name)
    return _square(tuple(cfg.input_size[-2:])) if cfg is not None and cfg.input_size else None


def _follow_image_size(
    name: str, image_size: int | None, model_kwargs: dict[str, Any]
) -> tuple[int, dict[str, Any], str | None]:
    """``(input side, model kwargs, note)``: a model with a fixed input size is built for
    ``image_size`` (its ``img_size`` follows the data, replacing ``model_kwargs['img_size']``:
    ``note`` says so, to be printed once the model is known to fit); other models take any
    size."""
    size = input_size(name, image_size, model_kwargs) or 32
    kwargs = dict(model_kwargs)
    line = None
    if image_size is not None and fixed_input_size(name):
        given = kwargs.get("img_size")
        if given is not None and _square(given) != image_size:
            line = (
                f"{name} is built for {image_size}x{image_size} inputs, the data's image_size "
                f"(model_kwargs img_size {given} replaced)"
            )
        kwargs["img_size"] = image_size
    return size, kwargs, line


def check_input_size(name: str, size: int | None, data_size: int, what: str) -> None:
    """:class:`UsageError` when the model ``name``, built for ``size`` x ``size`` inputs and
    unable to take others (a ViT), meets data of another size; ``what`` names the weights."""
    if size is None or size == data_size or not fixed_input_size(name):
        return
    raise UsageError(
        f"{what} holds a {name} for {size}x{size} images (image_size {size}), but the data "
        f"gives {data_size}x{data_size} (image_size {data_size}); its position embedding "
        f"fits one size only: use data with image_size {size}"
    )


def check_decay_left(
    warmup_epochs: float,
    cooldown_epochs: float,
    max_epochs: int | None,
    warmup_steps: float | None = None,
    cooldown_steps: float | None = None,
    total_steps: float | None = None,
) -> None:
    """Refuse a warm-up plus cool-down that leaves no step of decay, naming ``cooldown_epochs``.

    In epochs before the run (``convnn fit`` checks it before the run directory exists), and
    in steps once the loader's length is known (``max_steps`` runs, rounding)."""
    if not cooldown_epochs:
        return
    if total_steps is None:
        warmup_steps, cooldown_steps, total_steps = warmup_epochs, cooldown_epochs, max_epochs
    if total_steps is None or total_steps < 0 or math.isinf(total_steps):
        return
    if warmup_steps + cooldown_steps >= total_steps:  # type: ignore[operator]
        raise OptionError(
            f"cooldown_epochs={cooldown_epochs} and warmup_epochs={warmup_epochs} "
            f"leave no epoch of decay in a run of {max_epochs} epochs; use "
            "cooldown_epochs + warmup_epochs < max_epochs",
            key="cooldown_epochs",
        )


def check_patch_grid(net: nn.Module, name: str, image_size: int) -> None:
    """:class:`OptionError` (``key="image_size"``) when ``image_size`` is not a multiple of
    the patch size of ``net``'s patch embedding (a ViT's): its strided convolution would
    drop the last rows and columns of pixels without a word."""
    embed = getattr(net, "patch_embed", None)
    patch = _square(tuple(getattr(embed, "patch_size", None) or ()))
    if not patch or image_size % patch == 0 or getattr(embed, "dynamic_img_pad", False):
        return
    rest = image_size % patch
    raise OptionError(
        f"image_size={image_size} is not a multiple of the patch size {patch} of {name}: its "
        f"patch embedding would drop the last {rest} rows and columns of pixels; use "
        f"image_size {image_size - rest} or {image_size - rest + patch}",
        key="image_size",
    )


def _check_sizes(
    net: nn.Module, name: str, input_size: tuple[int, int, int], kwargs: dict[str, Any] | None
) -> None:
    """ConvNN options against the token counts of ``input_size`` inputs, before any work
    (:func:`convnn.models.check_sizes`: one shape-only pass, on a meta-device copy unless
    ``net`` is already there)."""
    if not any(isinstance(m, CONVNN_LAYERS) for m in net.modules()):
        return
    meta = next(net.parameters()).is_meta
    extra = {"num_classes": 1, "in_chans": input_size[0], **(kwargs or {})}
    check_sizes(net if meta else name, input_size, **({} if meta else extra))


class ImageClassifier(L.LightningModule):
    """Image classification with a timm network.

    Args:
        model: timm model name, e.g. ``convnn_resnet18_cifar`` or ``resnet50``.
        model_kwargs: keyword arguments of the model (``layer``, ``branch_ratio``, ConvNN
            options such as ``k``, ``candidates``, ``num_samples``; timm ones such as
            ``drop_path_rate`` or ``depth``). Plain YAML types only.
        num_classes, image_size, in_chans: linked from the DataModule by the CLI. A model
            with a fixed input size (every ViT) is built for ``image_size`` (its ``img_size``
            follows the data; ``None``: ``model_kwargs['img_size']`` or the model's default).
        label_smoothing: of the training loss (passed to Mixup when it is on).
        loss: ``ce`` (cross-entropy) or ``bce`` (timm's binary cross-entropy, the
            ResNet-strikes-back recipes); validation and test always report cross-entropy.
        bce_target_threshold: binarize soft (mixed) targets at this value for ``bce``.
        mixup, cutmix: Beta-distribution alphas of timm's Mixup/CutMix (0 disables each);
            ``mixup_prob`` the chance per batch, ``mixup_switch_prob`` of CutMix when both.
        ema: keep timm's ``ModelEmaV3`` of the weights; validation, test, prediction and
            ``convnn evaluate`` then use the EMA weights.
        ema_decay, ema_warmup: EMA decay and timm's decay warm-up.
        optimizer: ``adamw``, ``sgd`` (Nesterov) or ``lamb``; no weight decay on norms,
            biases, position embeddings and class tokens.
        lr: base learning rate; with ``lr_base_batch_size`` it is scaled by
            ``global batch / lr_base_batch_size`` (global batch = per-device batch x devices
            x gradient accumulation), e.g. DeiT's ``5e-4 * batch / 512``.
        weight_decay, momentum: optimizer settings (``momentum`` for SGD).
        scheduler: per-step ``cosine`` (to ``min_lr_ratio * lr``), ``step`` (``gamma``
            every ``step_size`` epochs) or ``none``, each after ``warmup_epochs`` of linear
            warm-up.
        cooldown_epochs: the last epochs of the run at the minimum rate (``cosine``: the
            decay ends ``cooldown_epochs`` before ``max_epochs``; timm's cool-down).
        layer_decay: layer-wise learning-rate decay (fine-tuning): the parameters at depth
            ``i`` of ``L`` (timm's ``group_matcher``; the head is the last) learn at
            ``lr * layer_decay ** (L - 1 - i)``. ``None``: one rate.
        channels_last: keep a CNN's weights and inputs in ``torch.channels_last`` memory
            format (faster convolutions on GPUs with tensor cores; the same numbers).
        compile: ``torch.compile`` the network (in place; checkpoint keys unchanged).
        init_from: start from these weights, not from scratch (fine-tuning; not a resume:
            the optimizer, schedule and epoch start afresh): a Lightning checkpoint, a
            safetensors or torch state-dict file, or an exported directory, of this model
            or of its timm baseline. A head of another class count is re-initialised, a ViT
            position embedding resampled to ``image_size``, each said in one line; weights
            of another architecture are an error naming the keys
            (:mod:`lightning_modules.init_weights`).
    """

    def __init__(
        self,
        model: str = "convnn_resnet18_cifar",
        model_kwargs: dict[str, Any] | None = None,
        num_classes: int = 10,
        image_size: int | None = None,
        in_chans: int = 3,
        label_smoothing: float = 0.0,
        loss: Literal["ce", "bce"] = "ce",
        bce_target_threshold: float | None = None,
        mixup: float = 0.0,
        cutmix: float = 0.0,
        mixup_prob: float = 1.0,
        mixup_switch_prob: float = 0.5,
        ema: bool = False,
        ema_decay: float = 0.9999,
        ema_warmup: bool = False,
        optimizer: OptimizerName = "adamw",
        lr: float = 1e-3,
        lr_base_batch_size: int | None = None,
        weight_decay: float = 0.05,
        momentum: float = 0.9,
        scheduler: SchedulerName = "cosine",
        warmup_epochs: float = 0.0,
        min_lr_ratio: float = 0.0,
        step_size: int = 30,
        gamma: float = 0.1,
        cooldown_epochs: float = 0.0,
        layer_decay: float | None = None,
        channels_last: bool = False,
        compile: bool = False,
        init_from: str | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        check_choice("loss", loss, ("ce", "bce"))
        check_choice("optimizer", optimizer, get_args(OptimizerName))
        check_choice("scheduler", scheduler, get_args(SchedulerName))
        check_number("label_smoothing", label_smoothing, "in [0, 1)", lambda p: 0 <= p < 1)
        # checked here, not first by torch.optim when training starts
        check_number("lr", lr, ">= 0", lambda v: v >= 0)
        check_number("weight_decay", weight_decay, ">= 0", lambda v: v >= 0)
        check_number("cooldown_epochs", cooldown_epochs, ">= 0", lambda v: v >= 0)
        kwargs = dict(model_kwargs or {})
        image_size, model_kwargs, size_note = _follow_image_size(model, image_size, kwargs)
        self.image_size = image_size  # the side of the inputs the network takes
        self.model = _create_model(model, num_classes, in_chans, model_kwargs)
        check_patch_grid(self.model, model, image_size)
        if init_from is not None:
            self.model = load_initial_weights(
                self.model,
                init_from,
                rebuild=lambda file, classes: _create_model(
                    model,
                    num_classes,
                    in_chans,
                    {
                        **model_kwargs,
                        "pretrained": True,
                        "pretrained_cfg_overlay": {"file": file}
                        | ({} if classes is None else {"num_classes": classes}),
                    },
                ),
            )
        _check_sizes(self.model, model, (in_chans, image_size, image_size), model_kwargs)
        if size_note:
            note(size_note)
        if layer_decay is not None:
            check_layer_decay(self.model, layer_decay)
        if channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.ema = None
        if ema:
            self.ema = ModelEmaV3(self.model, decay=ema_decay, use_warmup=ema_warmup)
            self.ema.requires_grad_(False)  # updated by ``update``, never by the optimizer
            self.ema.module.train()  # follows the LightningModule's mode like any child
        if compile:
            self.model.compile()
        self.mixup_fn = None
        if mixup > 0 or cutmix > 0:
            self.mixup_fn = Mixup(
                mixup_alpha=mixup, cutmix_alpha=cutmix, prob=mixup_prob,
                switch_prob=mixup_switch_prob, label_smoothing=label_smoothing,
                num_classes=num_classes,
            )  # fmt: skip
        self.bce = (
            BinaryCrossEntropy(smoothing=label_smoothing, target_threshold=bce_target_threshold)
            if loss == "bce"
            else None
        )
        top5 = min(5, num_classes)
        for split in SPLITS:
            accuracy = {
                "acc1": MulticlassAccuracy(num_classes, top_k=1, average="micro"),
                "acc5": MulticlassAccuracy(num_classes, top_k=top5, average="micro"),
            }
            setattr(self, f"{split}_metrics", MetricCollection(accuracy, prefix=f"{split}/"))
        self.train_loss, self.val_loss, self.test_loss = MeanMetric(), MeanMetric(), MeanMetric()
        self.example_input_array = torch.zeros(1, in_chans, image_size, image_size)
        self._hparams_logged = False

    @property
    def eval_model(self) -> nn.Module:
        """The network used for validation, test and prediction (the EMA one when on)."""
        return self.ema.module if self.ema is not None else self.model

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, H, W) -> (B, num_classes)`` logits."""
        if self.hparams.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return (self.model if self.training else self.eval_model)(x)

    def _train_loss(self, logits: Tensor, targets: Tensor) -> Tensor:
        if self.bce is not None:
            return self.bce(logits, targets)
        smoothing = self.hparams.label_smoothing if targets.ndim == 1 else 0.0
        return F.cross_entropy(logits, targets, label_smoothing=smoothing)

    def _step(self, batch: tuple[Tensor, Tensor], split: str) -> Tensor:
        """Shared by train/val/test. Train accuracy is against the unmixed labels."""
        x, y = batch
        targets = y
        if split == "train" and self.mixup_fn is not None and len(x) % 2 == 0:
            x, targets = self.mixup_fn(x, y)  # targets: (B, num_classes) soft labels
        logits = self(x)  # (B, num_classes)
        if split == "train":
            loss = self._train_loss(logits, targets)
            self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True)
        else:
            loss = F.cross_entropy(logits, y)
        loss_metric = getattr(self, f"{split}_loss")  # exact mean over processes at epoch end
        loss_metric.update(loss.detach(), weight=len(y))
        name = "train/loss_epoch" if split == "train" else f"{split}/loss"
        self.log(name, loss_metric, on_step=False, on_epoch=True)
        metrics = getattr(self, f"{split}_metrics")
        metrics.update(logits.detach(), y)
        self.log_dict(metrics, on_step=False, on_epoch=True, prog_bar=split == "val")
        return loss

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        """Reseed every generator from ``(seed, rank, epoch, batch)``: see ``seeding``."""
        seed = run_seed()
        if seed is not None:
            seed_all(step_seed(seed, self.global_rank, self.current_epoch, batch_idx))

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self._step(batch, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self._step(batch, "test")

    def predict_step(self, batch: Any, batch_idx: int) -> Tensor:
        """Class probabilities ``(B, num_classes)``; batches may carry labels or not."""
        x = batch[0] if isinstance(batch, (list, tuple)) else batch
        return self(x).softmax(dim=-1)

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        super().optimizer_step(*args, **kwargs)
        if self.ema is not None:
            self.ema.update(self.model, step=self.global_step)

    def configure_optimizers(self) -> dict[str, Any]:
        hp, trainer = self.hparams, self.trainer
        total = trainer.estimated_stepping_batches  # also sets up the train DataLoader
        if hp.scheduler != "none" and math.isinf(total):
            raise OptionError(
                f"scheduler={hp.scheduler!r} needs trainer.max_epochs or max_steps",
                key="scheduler",
            )
        batches = trainer.num_training_batches
        per_epoch = 1 if math.isinf(batches) else int(batches) // trainer.accumulate_grad_batches
        per_epoch = max(1, per_epoch)
        optimizer = build_optimizer(
            self.model, hp.optimizer, self._scaled_lr(), hp.weight_decay, hp.momentum,
            layer_decay=hp.layer_decay,
        )  # fmt: skip
        warmup, cooldown = (
            round(hp.warmup_epochs * per_epoch),
            round(hp.cooldown_epochs * per_epoch),
        )
        check_decay_left(
            hp.warmup_epochs, hp.cooldown_epochs, trainer.max_epochs, warmup, cooldown, total
        )
        schedule = LRSchedule(
            kind=hp.scheduler,
            total_steps=0 if math.isinf(total) else int(total),
            steps_per_epoch=per_epoch,
            warmup_steps=warmup,
            cooldown_steps=cooldown,
            min_lr_ratio=hp.min_lr_ratio,
            step_size=hp.step_size,
            gamma=hp.gamma,
        )
        self._schedule_plan = dict(vars(schedule))  # a resumed run restores the saved one
        scheduler = {"scheduler": LambdaLR(optimizer, schedule), "interval": "step"}
        return {"optimizer": optimizer, "lr_scheduler": scheduler}

    def _follow_schedule_plan(self) -> None:
        """Resuming restores the checkpoint's :class:`LRSchedule` (``LambdaLR`` saves its
        fields), planned for the checkpoint's ``max_epochs``: a cosine that had ended would
        continue at its final rate. The schedule follows this run's length instead (as if
        it had been planned so from the start), with a one-line note when that changes it."""
        plan = getattr(self, "_schedule_plan", None)
        if not plan or self.trainer is None:
            return
        for config in self.trainer.lr_scheduler_configs:
            scheduler = config.scheduler
            functions = getattr(scheduler, "lr_lambdas", [])
            changed = False
            for group, base, schedule in zip(
                scheduler.optimizer.param_groups, scheduler.base_lrs, functions, strict=False
            ):
                if not isinstance(schedule, LRSchedule) or vars(schedule) == plan:
                    continue
                changed = True
                saved, before = schedule.total_steps, group["lr"]
                schedule.__dict__.update(plan)
                group["lr"] = base * schedule(scheduler.last_epoch)
                if schedule.kind != "none" and group is scheduler.optimizer.param_groups[0]:
                    note(
                        f"resumed at step {scheduler.last_epoch}: the {schedule.kind} schedule "
                        f"now spans {schedule.total_steps} steps (max_epochs "
                        f"{self.trainer.max_epochs}) instead of the checkpoint's {saved}; "
                        f"learning rate {before:.3g} -> {group['lr']:.3g}"
                    )
            if changed:
                scheduler._last_lr = [group["lr"] for group in scheduler.optimizer.param_groups]

    def _scaled_lr(self) -> float:
        base = self.hparams.lr_base_batch_size
        if not base:
            return self.hparams.lr
        batch = getattr(self.trainer.train_dataloader, "batch_size", None)
        if batch is None:
            raise OptionError(
                f"lr_base_batch_size={base} needs a train DataLoader with a batch_size",
                key="lr_base_batch_size",
            )
        trainer = self.trainer
        return self.hparams.lr * batch * trainer.world_size * trainer.accumulate_grad_batches / base

    # -- TensorBoard HParams ---------------------------------------------------------------

    def _log_hparams(self, split: str) -> None:
        """Write hyper-parameters to every logger, with the ``hp/<split>_*`` metrics that
        TensorBoard's HParams view compares runs by for a TensorBoard logger."""
        if self._hparams_logged or not self.loggers:
            return
        self._hparams_logged = True
        params = {k: v for k, v in self.hparams.items() if not k.startswith("_")}
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is not None:
            params["data"] = type(datamodule).__name__
            dm_params = getattr(datamodule, "hparams", {})
            params |= {f"data/{k}": v for k, v in dm_params.items() if not k.startswith("_")}
        names = ("acc1", "acc5", "loss")
        for logger in self.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.log_hyperparams(params, {f"hp/{split}_{n}": 0.0 for n in names})
            else:
                logger.log_hyperparams(params)

    def _log_final(self, split: str) -> None:
        values = getattr(self, f"{split}_metrics").compute()
        values[f"{split}/loss"] = getattr(self, f"{split}_loss").compute()
        hp = {"hp/" + k.replace("/", "_"): v for k, v in values.items()}
        self.log_dict(hp, sync_dist=True)  # already synced: the same value on every process

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Record the DataModule's class for ``convnn evaluate`` (the CLI also saves its
        arguments as ``datamodule_hyper_parameters``)."""
        datamodule = getattr(self._trainer, "datamodule", None)
        if datamodule is not None:
            cls = type(datamodule)
            checkpoint["datamodule_class_path"] = f"{cls.__module__}.{cls.__qualname__}"

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuse, naming the mismatch, a checkpoint whose weights do not fit this model."""
        trainer = self._trainer
        path = getattr(trainer, "ckpt_path", None) or "checkpoint"
        check_state_dict(self, checkpoint["state_dict"], path)

    def on_fit_start(self) -> None:
        self._log_hparams("val")

    def on_train_start(self) -> None:
        self._follow_schedule_plan()  # after a resume has restored the scheduler

    def on_test_start(self) -> None:
        self._log_hparams("test")

    def on_validation_start(self) -> None:
        self._warn_if_padded()
        if self.trainer.state.fn == "validate":
            self._log_hparams("val")

    def on_validation_epoch_end(self) -> None:
        if not self.trainer.sanity_checking:
            self._log_final("val")

    def on_test_epoch_end(self) -> None:
        self._log_final("test")

    def _warn_if_padded(self) -> None:
        world = self.trainer.world_size
        loaders = self.trainer.val_dataloaders
        dataset = getattr(loaders, "dataset", None)
        if world > 1 and dataset is not None and len(dataset) % world:
            rank_zero_warn(
                f"{len(dataset)} validation images do not split evenly over {world} processes: "
                "DistributedSampler repeats a few, so val metrics are slightly off; "
                "`convnn evaluate` on one device gives the exact numbers."
            )
