"""Training stack: fit -> checkpoint -> `convnn evaluate`, DDP, bf16, run directories, errors.

Every run is tiny (a 1-block ViT on 16x16 synthetic images) and on the CPU. The CLI runs
in-process where possible; the console script and DDP run as subprocesses.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest
import torch
import yaml
from timm.optim import Lamb
from torch import nn
from training_helpers import TINY_VIT, events, final_scalars, tiny_config, write_config

from convnn.errors import EvaluationError, OptionError, UsageError
from lightning_modules import ImageClassifier, LRSchedule, build_optimizer
from lightning_modules.cli import ConvNNCLI, main
from lightning_modules.evaluation import evaluate


@pytest.fixture(autouse=True)
def _plain_argv(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["convnn"])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One `fit` run with EMA and Mixup/CutMix: the run directory and its last val metrics."""
    tmp = tmp_path_factory.mktemp("fit")
    config = write_config(
        tmp / "tiny.yaml", tiny_config(tmp / "runs", ema=True, ema_decay=0.9, mixup=0.8, cutmix=1.0)
    )
    sys_argv, sys.argv = sys.argv, ["convnn"]
    try:
        cli = ConvNNCLI(args=["fit", "--config", str(config)])
    finally:
        sys.argv = sys_argv
    metrics = {k: float(v) for k, v in cli.trainer.callback_metrics.items()}
    return {"config": config, "run": Path(cli.trainer.log_dir), "metrics": metrics, "tmp": tmp}


def test_run_directory_holds_config_version_and_checkpoints(trained):
    run = trained["run"]
    assert run.name == "version_0"
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["model"]["init_args"]["model_kwargs"] == TINY_VIT
    version = json.loads((run / "code_version.json").read_text())
    assert {"git_commit", "git_dirty", "packages"} <= version.keys()
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert "last.ckpt" in names and any(n.startswith("best-epoch") for n in names)


def test_checkpoint_loads_with_weights_only(trained):
    ckpt = torch.load(trained["run"] / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["hyper_parameters"]["model"] == "convnn_vit_tiny_patch4_32"
    assert ckpt["hyper_parameters"]["num_classes"] == 10  # linked from the DataModule
    assert ckpt["datamodule_hyper_parameters"]["_class_path"] == "datamodules.SyntheticDataModule"
    assert any(k.startswith("ema.module.") for k in ckpt["state_dict"])


def test_evaluate_matches_validate_at_end_of_fit(trained):
    ckpt = trained["run"] / "checkpoints" / "last.ckpt"
    results = evaluate(ckpt, progress=False)
    assert trained["metrics"]["val/acc1"] > 0.2  # learned something: not a chance-level tie
    assert results["top1"] == pytest.approx(100 * trained["metrics"]["val/acc1"], abs=1e-6)
    assert results["top5"] == pytest.approx(100 * trained["metrics"]["val/acc5"], abs=1e-6)
    assert results["loss"] == pytest.approx(trained["metrics"]["val/loss"], rel=1e-5)
    assert results["num_images"] == 32
    assert results["params"] > 0 and results["gflops"] > 0 and results["images_per_second"] > 0


def test_evaluate_on_another_datamodule(trained, tmp_path):
    config = tiny_config(tmp_path)
    config["data"]["init_args"] |= {"num_val": 48, "seed": 1}
    ckpt = trained["run"] / "checkpoints" / "last.ckpt"
    from_yaml = evaluate(ckpt, str(write_config(tmp_path / "run.yaml", config)), progress=False)
    inline = evaluate(ckpt, yaml.safe_dump(config["data"], default_flow_style=True), progress=False)
    assert from_yaml["num_images"] == inline["num_images"] == 48
    assert from_yaml["top1"] == inline["top1"]


def test_validate_test_predict_subcommands(trained):
    ckpt = str(trained["run"] / "checkpoints" / "last.ckpt")
    args = ["--config", str(trained["config"]), "--ckpt_path", ckpt]
    cli = ConvNNCLI(args=["validate", *args])
    assert float(cli.trainer.callback_metrics["val/acc1"]) == trained["metrics"]["val/acc1"]
    cli = ConvNNCLI(args=["test", *args])
    assert float(cli.trainer.callback_metrics["test/acc1"]) == trained["metrics"]["val/acc1"]
    cli = ConvNNCLI(args=["predict", *args, "--return_predictions", "true"], run=True)
    assert cli.trainer.predict_loop.predictions[0].shape == (16, 10)


def test_tensorboard_hparams_and_final_metrics(trained):
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    scalars_of = events(trained["run"])
    scalars = set(scalars_of.Tags()["scalars"])
    assert {"hp/val_acc1", "hp/val_acc5", "hp/val_loss", "val/acc1", "train/loss"} <= scalars
    start = scalars_of.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = HParamsPluginData.FromString(start).session_start_info.hparams
    assert hparams["model"].string_value == "convnn_vit_tiny_patch4_32"
    assert hparams["data"].string_value == "SyntheticDataModule"
    assert hparams["model_kwargs/embed_dim"].number_value == 32
    final = scalars_of.Scalars("hp/val_acc1")[-1].value
    assert final == pytest.approx(trained["metrics"]["val/acc1"])


def test_second_run_gets_its_own_version_and_reused_version_is_an_error(trained):
    config = str(trained["config"])
    # `mode min` on a rising top-1: the best stays epoch 0, last.ckpt must follow every epoch
    cli = ConvNNCLI(args=["fit", "--config", config, "--checkpoint.mode", "min"])
    run = Path(cli.trainer.log_dir)
    assert run.parent == trained["run"].parent and run.name != "version_0"
    assert (run / "config.yaml").is_file()
    (best,) = (run / "checkpoints").glob("best-*.ckpt")
    assert torch.load(best, weights_only=True)["epoch"] == 0
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 2
    first = trained["run"] / "checkpoints" / "last.ckpt"
    assert torch.load(first, weights_only=True)["epoch"] == 2  # untouched by the second run
    with pytest.raises(RuntimeError, match="to NOT exist"):
        ConvNNCLI(args=["fit", "--config", config, "--trainer.logger.init_args.version", "0"])


def _console_script() -> str:
    if not entry_points(group="console_scripts", name="convnn"):
        pytest.skip("console script `convnn` not installed ([project.scripts] in pyproject.toml)")
    path = shutil.which("convnn", path=str(Path(sys.executable).parent))
    if path is None:
        pytest.skip("console script `convnn` not found next to the interpreter")
    return path


def test_console_script_evaluate_writes_json(trained, tmp_path):
    ckpt = trained["run"] / "checkpoints" / "last.ckpt"
    out = tmp_path / "eval.json"
    cmd = [_console_script(), "evaluate", "--ckpt", str(ckpt), "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads(out.read_text())
    assert results["top1"] == pytest.approx(100 * trained["metrics"]["val/acc1"], abs=1e-6)
    assert {"top5", "loss", "params", "gflops", "images_per_second"} <= results.keys()
    assert "top-1" in done.stdout  # the rich table


def test_ddp_two_cpu_processes_match_single_process(tmp_path):
    """DDP (gloo, 2 processes): the synced val top-1 equals one process on the same weights."""
    config = write_config(tmp_path / "tiny.yaml", tiny_config(tmp_path / "runs"))
    cmd = [sys.executable, "-m", "lightning_modules.cli", "fit", "--config", str(config)]
    cmd += ["--trainer.devices", "2", "--trainer.strategy", "ddp"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    run = tmp_path / "runs" / "tiny" / "version_0"
    ddp = final_scalars(run)
    ckpt = str(run / "checkpoints" / "last.ckpt")
    single = ConvNNCLI(args=["validate", "--config", str(config), "--ckpt_path", ckpt])
    metrics = single.trainer.callback_metrics
    assert 0.2 < ddp["val/acc1"] < 1  # a trained model: a miscount would change the value
    assert float(metrics["val/acc1"]) == pytest.approx(ddp["val/acc1"], abs=1e-7)
    assert float(metrics["val/loss"]) == pytest.approx(ddp["val/loss"], rel=1e-5)


def test_progress_bar_can_be_switched_off(tmp_path):
    config = tiny_config(tmp_path / "runs")
    del config["trainer"]["callbacks"]  # the defaults, rich progress bar included
    path = write_config(tmp_path / "tiny.yaml", config)
    args = ["fit", "--config", str(path), "--trainer.fast_dev_run", "1"]
    cli = ConvNNCLI(args=[*args, "--trainer.enable_progress_bar", "false"])
    assert cli.trainer.progress_bar_callback is None
    names = [type(c).__name__ for c in cli.trainer.callbacks]
    assert "RichModelSummary" in names and "LearningRateMonitor" in names


def test_bf16_mixed_precision_on_cpu(tmp_path):
    config = write_config(tmp_path / "tiny.yaml", tiny_config(tmp_path / "runs"))
    cli = ConvNNCLI(
        args=["fit", "--config", str(config), "--trainer.precision", "bf16-mixed"]
        + ["--trainer.fast_dev_run", "2", "--model.init_args.lr_base_batch_size", "32"]
    )
    assert str(cli.trainer.precision) == "bf16-mixed"
    # lr 0.003 is for a batch of 32: scaled to the actual 16 x 1 process
    assert cli.model.optimizers().param_groups[0]["initial_lr"] == pytest.approx(0.0015)
    assert math.isfinite(float(cli.trainer.callback_metrics["train/loss_epoch"]))


# -- bad input --------------------------------------------------------------------------------


def test_misspelled_config_key_is_a_clear_error(tmp_path, capsys):
    config = tiny_config(tmp_path / "runs")
    config["model"]["init_args"]["lrr"] = 0.1
    path = write_config(tmp_path / "typo.yaml", config)
    with pytest.raises(SystemExit):
        main(["fit", "--config", str(path)])
    assert "lrr" in capsys.readouterr().err


def test_unknown_model_name_is_a_clear_error(tmp_path):
    path = write_config(tmp_path / "tiny.yaml", tiny_config(tmp_path / "runs"))
    args = ["fit", "--config", str(path), "--model.init_args.model", "convnn_resnet51"]
    expected = (
        "^convnn: error: model.init_args.model='convnn_resnet51' is not a timm model; "
        "did you mean convnn_resnet50"
    )
    with pytest.raises(SystemExit, match=expected):
        main(args)


def test_missing_dataset_is_a_one_line_error(tmp_path):
    config = str(Path(__file__).resolve().parents[2] / "configs" / "cifar10.yaml")
    args = ["fit", "--config", config, "--data.init_args.root", str(tmp_path / "none")]
    with pytest.raises(SystemExit, match="^convnn: error: CIFAR-10 not found") as err:
        main(args)
    assert "\n" not in str(err.value) and "download: true" in str(err.value)


def test_checkpoint_of_another_model_is_a_clear_error(trained, tmp_path):
    ckpt = torch.load(trained["run"] / "checkpoints" / "last.ckpt", weights_only=True)
    ckpt["hyper_parameters"]["model_kwargs"] = {**TINY_VIT, "embed_dim": 48}
    torch.save(ckpt, tmp_path / "other.ckpt")
    with pytest.raises(UsageError, match="does not fit.*shape"):
        evaluate(tmp_path / "other.ckpt", progress=False)
    with pytest.raises(SystemExit, match="^convnn evaluate: error: .*does not fit") as err:
        main(["evaluate", "--ckpt", str(tmp_path / "other.ckpt")])
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("class_path", "message"),
    [("antigravity.Fly", "refusing to import"), ("collections.OrderedDict", "not a ImageClass")],
)
def test_checkpoint_class_path_is_restricted(trained, tmp_path, class_path, message):
    ckpt = torch.load(trained["run"] / "checkpoints" / "last.ckpt", weights_only=True)
    ckpt["hyper_parameters"]["_class_path"] = class_path
    torch.save(ckpt, tmp_path / "odd.ckpt")
    with pytest.raises(EvaluationError, match=message):
        evaluate(tmp_path / "odd.ckpt", progress=False)
    assert "antigravity" not in sys.modules


class _Payload:
    pass


@pytest.mark.parametrize("content", ["text", "pickle"])
def test_non_checkpoint_file_is_a_clear_error(tmp_path, content):
    path = tmp_path / "bad.ckpt"
    if content == "text":
        path.write_text("not a checkpoint\n")
    else:
        torch.save({"state_dict": {}, "hyper_parameters": _Payload()}, path)
    with pytest.raises(UsageError, match="not a checkpoint"):
        evaluate(path, progress=False)


# -- module, optimizer and schedule -----------------------------------------------------------


def test_no_weight_decay_on_norms_biases_and_position_embeddings():
    module = ImageClassifier(
        "convnn_vit_tiny_patch4_32", {**TINY_VIT, "positional_encoding": "learned"}, image_size=16
    )
    optimizer = build_optimizer(module.model, "adamw", 1e-3, 0.05)
    decayed = {id(p) for g in optimizer.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    names = {n for n, p in module.model.named_parameters() if id(p) in decayed}
    assert "blocks.0.attn.qkv.weight" in names and "head.weight" in names
    excluded = [n for n, _ in module.model.named_parameters() if n not in names]
    assert {"pos_embed", "cls_token", "blocks.0.norm1.weight", "head.bias"} <= set(excluded)
    assert any(n.endswith("pos_table") for n in excluded)
    assert isinstance(build_optimizer(nn.Linear(2, 2), "lamb", 1e-3, 0.01), Lamb)


def test_lr_schedule_warmup_cosine_and_step():
    cosine = LRSchedule("cosine", total_steps=110, steps_per_epoch=10, warmup_steps=10)
    assert cosine(0) == pytest.approx(0.01) and cosine(5) < cosine(10) == pytest.approx(1.0)
    assert cosine(60) == pytest.approx(0.5) and cosine(110) == pytest.approx(0.0)
    step = LRSchedule("step", total_steps=100, steps_per_epoch=10, step_size=2, gamma=0.5)
    assert [step(s) for s in (0, 19, 20, 45)] == [1.0, 1.0, 0.5, 0.25]
    with pytest.raises(OptionError, match="scheduler='linear'"):
        LRSchedule("linear", total_steps=1, steps_per_epoch=1)


def test_bad_classifier_arguments_name_the_parameter():
    with pytest.raises(OptionError, match="optimizer='adam'"):
        ImageClassifier("convnn_vgg11", optimizer="adam")
    with pytest.raises(OptionError, match="model_kwargs may not set") as err:
        ImageClassifier("convnn_vgg11", {"num_classes": 3})
    assert err.value.key == "model_kwargs"
    with pytest.raises(OptionError, match=r"label_smoothing=1\.5 is not allowed") as err:
        ImageClassifier("convnn_vgg11", label_smoothing=1.5)
    assert err.value.key == "label_smoothing"
    with pytest.raises(OptionError, match="model='convnn_vgg1' is not a timm model") as err:
        ImageClassifier("convnn_vgg1")
    assert err.value.key == "model"
