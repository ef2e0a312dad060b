"""The recipe options of :class:`ImageClassifier` as a fit uses them: layer-wise learning-rate
decay (the rate actually set per group), the cool-down phase of the schedule, channels_last
CNNs (the same numbers as the default memory format)."""

from __future__ import annotations

import re

import lightning as L
import pytest
import timm
import torch
from torch import nn

import convnn  # noqa: F401  (registers the convnn_* models)
from convnn.errors import OptionError
from datamodules import SyntheticDataModule
from lightning_modules import ImageClassifier
from lightning_modules.callbacks import EpochLog
from lightning_modules.optim import LRSchedule, build_optimizer

VIT = {"img_size": 16, "patch_size": 4, "embed_dim": 16, "depth": 3, "num_heads": 2, "k": 5}


def fit(module: ImageClassifier, tmp_path, **trainer) -> L.Trainer:
    """A short CPU fit of ``module`` on 64 synthetic 16x16 images (batch 16, 4 steps/epoch)."""
    data = SyntheticDataModule(
        num_classes=4, image_size=16, num_train=64, num_val=16, batch_size=16, num_workers=0
    )
    run = L.Trainer(
        accelerator="cpu", devices=1, default_root_dir=tmp_path, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        **trainer,
    )  # fmt: skip
    run.fit(module, datamodule=data)
    return run


def group_by_parameter(optimizer: torch.optim.Optimizer, model: nn.Module) -> dict[str, dict]:
    """``parameter name -> its optimizer group`` (learning rate, weight decay, ...)."""
    group_of = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    return {name: group_of[id(p)] for name, p in model.named_parameters()}


def lr_by_parameter(optimizer: torch.optim.Optimizer, model: nn.Module) -> dict[str, float]:
    """``parameter name -> learning rate`` of ``optimizer``, as it stands."""
    return {name: g["lr"] for name, g in group_by_parameter(optimizer, model).items()}


def test_layer_decay_sets_the_rate_of_each_depth_during_a_fit(tmp_path):
    """A 3-block ConvNN ViT with layer_decay 0.5 after one step (no schedule): the head at
    the base rate, each block half the rate of the next, the patch embedding below block 0."""
    module = ImageClassifier(
        "convnn_vit_tiny_patch4_32", VIT, num_classes=4, image_size=16, lr=0.01,
        scheduler="none", layer_decay=0.5,
    )  # fmt: skip
    run = fit(module, tmp_path, max_steps=1)
    lrs = lr_by_parameter(run.optimizers[0], module.model)
    assert lrs["head.weight"] == pytest.approx(0.01)
    blocks = [lrs[f"blocks.{i}.mlp.fc1.weight"] for i in range(3)]
    assert blocks == pytest.approx([0.01 * 0.5**3, 0.01 * 0.5**2, 0.01 * 0.5])
    assert lrs["patch_embed.proj.weight"] == pytest.approx(0.01 * 0.5**4)
    # every parameter of a block (ConvNN-attention's included) learns at the block's rate
    for name, lr in lrs.items():
        match = re.match(r"blocks\.(\d)\.", name)
        if match:
            assert lr == blocks[int(match[1])], name
    # the progress line shows the schedule's rate (the head's), not the lowest layer's
    assert "lr 1.00e-02" in EpochLog().line(run)
    # the same model without layer_decay: one rate
    plain = ImageClassifier("convnn_vit_tiny_patch4_32", VIT, num_classes=4, image_size=16,
                            lr=0.01, scheduler="none")  # fmt: skip
    assert set(
        lr_by_parameter(fit(plain, tmp_path, max_steps=1).optimizers[0], plain.model).values()
    ) == {0.01}


def test_layer_decay_is_monotone_in_depth_for_a_resnet():
    model = timm.create_model("convnn_resnet18_cifar", num_classes=4, layer="convnn")
    optimizer = build_optimizer(model, "sgd", 0.1, 5e-4, layer_decay=0.8)
    lrs = lr_by_parameter(optimizer, model)
    order = ["conv1.weight", "layer1.0.conv1.weight", "layer2.0.conv1.weight",
             "layer3.0.conv1.weight", "layer4.1.conv2.weight", "fc.weight"]  # fmt: skip
    rates = [lrs[name] for name in order]
    assert rates == sorted(rates) and rates[0] < rates[-1] == pytest.approx(0.1)
    # decay groups keep their weight decay (no decay for norms and biases)
    by_name = group_by_parameter(optimizer, model)
    assert by_name["layer1.0.bn1.weight"]["weight_decay"] == 0.0
    assert by_name["layer1.0.conv1.weight"]["weight_decay"] == 5e-4


@pytest.mark.parametrize("bad", [0.0, 1.5, -0.1])
def test_layer_decay_outside_0_1_is_refused_naming_it(bad):
    with pytest.raises(OptionError, match=r"layer_decay.*\(0, 1\]") as error:
        ImageClassifier("convnn_vit_tiny_patch4_32", VIT, image_size=16, layer_decay=bad)
    assert error.value.key == "layer_decay"


def test_layer_decay_needs_a_model_with_layers():
    with pytest.raises(OptionError, match="group_matcher") as error:
        build_optimizer(nn.Sequential(nn.Linear(2, 2)), "adamw", 1e-3, 0.05, layer_decay=0.7)
    assert error.value.key == "layer_decay"


def test_the_cooldown_holds_the_minimum_rate_for_its_last_steps():
    schedule = LRSchedule("cosine", total_steps=100, steps_per_epoch=10, warmup_steps=10,
                          min_lr_ratio=0.1, cooldown_steps=20)  # fmt: skip
    assert schedule(10) == pytest.approx(1.0)
    assert schedule(45) == pytest.approx(0.1 + 0.9 * 0.5)  # half-way through 10..80
    assert [schedule(s) for s in (80, 90, 99)] == pytest.approx([0.1, 0.1, 0.1])
    assert 0.1 < schedule(79) < 0.1 + 1e-3
    no_cooldown = LRSchedule("cosine", total_steps=100, steps_per_epoch=10, min_lr_ratio=0.1)
    assert no_cooldown(80) > 0.1


def test_a_fit_with_cooldown_ends_its_decay_early(tmp_path):
    """4 epochs of 4 steps, 1 epoch of cool-down: the rate reaches the minimum after step
    12 and stays there."""
    module = ImageClassifier("convnn_vit_tiny_patch4_32", VIT, num_classes=4, image_size=16,
                             lr=0.01, min_lr_ratio=0.1, cooldown_epochs=1)  # fmt: skip
    seen: list[float] = []

    class Rates(L.Callback):
        def on_train_batch_start(self, trainer, *_):
            seen.append(trainer.optimizers[0].param_groups[0]["lr"])

    fit(module, tmp_path, max_epochs=4, callbacks=[Rates()])
    assert len(seen) == 16
    assert seen[0] == pytest.approx(0.01)
    assert all(a > b for a, b in zip(seen[:12], seen[1:12], strict=False))
    assert seen[12:] == pytest.approx([0.001] * 4)


def test_a_cooldown_longer_than_the_run_is_refused(tmp_path):
    module = ImageClassifier("convnn_vit_tiny_patch4_32", VIT, num_classes=4, image_size=16,
                             warmup_epochs=1, cooldown_epochs=1)  # fmt: skip
    with pytest.raises(OptionError, match="cooldown_epochs=1.*max_epochs") as error:
        fit(module, tmp_path, max_epochs=2)
    assert error.value.key == "cooldown_epochs"
    with pytest.raises(OptionError, match="cooldown_epochs"):
        ImageClassifier(cooldown_epochs=-1)


@pytest.mark.parametrize(
    "model, kwargs",
    [
        ("convnn_resnet18_cifar", {"layer": "convnn", "k": 5}),
        ("convnn_vgg_mini", {"layer": "branching", "branch_ratio": 0.5, "similarity": "cosine"}),
    ],
)
def test_channels_last_gives_the_same_outputs_and_gradients(model, kwargs):
    """float64: a channels_last classifier and a default one with the same weights agree
    on logits and on every gradient; the weights of its convolutions are channels_last."""
    torch.manual_seed(0)
    plain = ImageClassifier(model, kwargs, num_classes=4, image_size=16).double()
    fast = ImageClassifier(model, kwargs, num_classes=4, image_size=16, channels_last=True)
    fast.load_state_dict(plain.state_dict())
    fast.double()
    convs = [m.weight for m in fast.model.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    out_plain, out_fast = plain(x), fast(x)
    torch.testing.assert_close(out_fast, out_plain, rtol=1e-10, atol=1e-10)
    out_plain.square().sum().backward()
    out_fast.square().sum().backward()
    grads = dict(fast.model.named_parameters())
    for name, p in plain.model.named_parameters():
        torch.testing.assert_close(grads[name].grad, p.grad, rtol=1e-9, atol=1e-10, msg=name)


def test_a_channels_last_cnn_learns(tmp_path):
    module = ImageClassifier("convnn_vgg_mini", {"layer": "branching", "branch_ratio": 0.5},
                             num_classes=4, image_size=16, lr=3e-3, channels_last=True)  # fmt: skip
    run = fit(module, tmp_path, max_epochs=6)
    assert run.callback_metrics["val/acc1"] > 0.6


def test_layer_decay_groups_a_vgg_by_convolution_block():
    """A branching VGG-11: 8 blocks (each convolution or ConvNN layer with its batch norm)
    and the head, each block at half the rate of the next."""
    model = timm.create_model("convnn_vgg11", num_classes=4, layer="branching")
    optimizer = build_optimizer(model, "adamw", 1.0, 0.05, layer_decay=0.5)
    lrs = lr_by_parameter(optimizer, model)
    convs = [i for i, m in enumerate(model.features) if isinstance(m, nn.BatchNorm2d)]
    for block, bn in enumerate(convs):
        expected = 0.5 ** (len(convs) - block)
        in_block = [n for n in lrs if n.startswith((f"features.{bn - 1}.", f"features.{bn}."))]
        assert len(in_block) > 2 and {lrs[n] for n in in_block} == {expected}, in_block
    assert lrs["head.fc.weight"] == 1.0
