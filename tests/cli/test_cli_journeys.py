"""The first commands a user types, as the user types them: ``convnn`` in a fresh process on
tiny data (issue 12).

Each journey is one subprocess (a few seconds of imports each), checked for its exit status
and for what it prints: the run directory and checkpoints of ``fit``, one line per epoch in a
log, ``predictions.csv`` of ``predict``, errors of at most a few lines with a close match,
the model following the data's image size, a checkpoint of another model named, a resumed
cosine schedule following the new length, and ``convnn --help`` without Lightning or timm.
"""

from __future__ import annotations

import csv
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from training_helpers import tiny_config, write_config

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = str(ROOT / "configs" / "quickstart.yaml")
EPOCHS = 2
TRACEBACK = "Traceback (most recent call last)"


def convnn(args: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """``convnn ARGS`` in a fresh single-threaded process, as from a shell (not a terminal)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    cmd = [sys.executable, "-m", "lightning_modules.cli", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def error_lines(done: subprocess.CompletedProcess) -> list[str]:
    """The lines a failed command printed on stderr, Lightning's start-up chatter aside."""
    skip = ("Seed set to", "GPU available", "TPU available", "💡")
    return [ln for ln in done.stderr.splitlines() if ln.strip() and not ln.startswith(skip)]


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """``convnn fit`` of the tiny config for 2 epochs, progress bar off, output to a pipe."""
    tmp = tmp_path_factory.mktemp("journey")
    config = tiny_config(tmp / "runs")
    config["trainer"]["max_epochs"] = EPOCHS
    path = write_config(tmp / "tiny.yaml", config)
    done = convnn(["fit", "-c", str(path)], cwd=tmp)
    assert done.returncode == 0, done.stderr[-3000:]
    run = tmp / "runs" / "tiny" / "version_0"
    return {"tmp": tmp, "config": path, "run": run, "out": done.stdout, "err": done.stderr}


# -- 5, 6: fit says where its run went, one line per epoch --------------------------------


def test_fit_prints_run_directory_checkpoints_and_one_line_per_epoch(fitted):
    out, run = fitted["out"], fitted["run"]
    lines = out.splitlines()
    start = lines.index(f"convnn fit: run directory {run}")
    epochs = [ln for ln in lines if ln.startswith("epoch ")]
    assert len(epochs) == EPOCHS, out
    pattern = (
        r"epoch {e}/{n}  train/acc1 [\d.]+%  train/acc5 [\d.]+%  train/loss [\d.]+  "
        r"val/acc1 [\d.]+%  val/acc5 [\d.]+%  val/loss [\d.]+  lr [\d.e+-]+  [\d.]+s"
    )
    for e, line in enumerate(epochs, 1):
        assert re.fullmatch(pattern.format(e=e, n=EPOCHS), line), line
        assert lines.index(line) > start
    (best,) = (run / "checkpoints").glob("best-*.ckpt")
    assert re.search(rf"convnn fit: best val/acc1 [\d.]+%: {re.escape(str(best))}\n", out), out
    assert f"convnn fit: last checkpoint: {run / 'checkpoints' / 'last.ckpt'}\n" in out


# -- 5: predict writes predictions.csv ---------------------------------------------------------


def test_predict_writes_top5_csv_in_its_run_directory(fitted):
    last = fitted["run"] / "checkpoints" / "last.ckpt"
    done = convnn(["predict", "-c", str(fitted["config"]), "--ckpt_path", str(last)], fitted["tmp"])
    assert done.returncode == 0, done.stderr[-3000:]
    match = re.search(r"convnn predict: wrote 32 predictions to (\S+)", done.stdout)
    assert match, done.stdout
    path = Path(match[1])
    assert path.name == "predictions.csv" and path.parent.parent == fitted["run"].parent
    rows = list(csv.DictReader(path.open()))
    assert [int(r["index"]) for r in rows] == list(range(32))  # num_val of the tiny data
    header = ["index", "label"] + [f"{c}_{j}" for j in range(1, 6) for c in ("class", "prob")]
    assert list(rows[0]) == header
    for row in rows:
        probs = [float(row[f"prob_{j}"]) for j in range(1, 6)]
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-5
        assert len({row[f"class_{j}"] for j in range(1, 6)}) == 5
    labels = [int(r["label"]) for r in rows]
    assert set(labels) <= set(range(10)) and len(set(labels)) > 1


# -- 1: the model's input size follows the data ------------------------------------------------


def test_quickstart_at_image_size_32_trains(tmp_path):
    """Before: ``AssertionError: Input height (32) doesn't match model (16)`` after 90 lines."""
    args = ["fit", "-c", QUICKSTART, "--data.image_size", "32", "--trainer.fast_dev_run", "1"]
    done = convnn([*args, "--trainer.enable_progress_bar", "false"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "convnn: note: convnn_vit_tiny_patch4_32 is built for 32x32 inputs" in done.stderr


ERR_TAIL = "; its position embedding fits one size only: use data with image_size 16"


def test_checkpoint_of_16x16_images_on_32x32_data_is_one_line(fitted, tmp_path):
    last = str(fitted["run"] / "checkpoints" / "last.ckpt")
    validate = ["validate", "-c", str(fitted["config"]), "--ckpt_path", last]
    done = convnn([*validate, "--data.image_size", "32"], cwd=tmp_path)
    expected = (
        f"convnn: error: {last} holds a convnn_vit_tiny_patch4_32 for 16x16 images "
        "(image_size 16), but the data gives 32x32 (image_size 32)"
    )
    assert done.returncode != 0 and TRACEBACK not in done.stderr
    assert error_lines(done)[-1].startswith(expected), done.stderr[-3000:]
    # before the model is built: no note that it is built for 32x32 inputs, then an error
    assert "note:" not in done.stderr, done.stderr[-3000:]
    data = "{class_path: datamodules.SyntheticDataModule, init_args: {image_size: 32}}"
    done = convnn(["evaluate", "--ckpt", last, "--data", data], cwd=tmp_path)
    assert done.returncode != 0 and TRACEBACK not in done.stderr
    assert error_lines(done) == [expected.replace("convnn:", "convnn evaluate:", 1) + ERR_TAIL]


# -- 2: parser errors are a line or two, with a close match -------------------------------------


def test_wrong_value_is_two_lines_with_the_allowed_values(tmp_path):
    """Before: 90 lines of usage and union-type errors."""
    done = convnn(["fit", "-c", QUICKSTART, "--model.init_args.optimizer", "adam2"], tmp_path)
    assert done.returncode == 2
    assert error_lines(done) == [
        "convnn: error: model.init_args.optimizer='adam2' is not allowed; expected one of "
        "['adamw', 'sgd', 'lamb']; did you mean 'adamw'?",
        "(convnn fit --help lists every option)",
    ]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--trainer.max_epohcs", "3"], "unrecognized arguments: --trainer.max_epohcs 3; "
         "did you mean '--trainer.max_epochs'?"),
        (["--model.init_args.lrr", "0.1"], "model.init_args.lrr: ImageClassifier has no "
         "argument 'lrr'; did you mean 'lr'?"),
        (["--data.init_args.batch_sise", "8"], "data.init_args.batch_sise: DigitsDataModule "
         "has no argument 'batch_sise'; did you mean 'batch_size'?"),
        (["--trainer.max_epochs", "abc"], "trainer.max_epochs='abc' is not allowed; expected "
         "int or None"),
        (["--data", "CIFAR11DataModule"], "data: no class 'CIFAR11DataModule'; choose one of"),
        (["--trainer.precision", "16-mixd"], "trainer.precision='16-mixd' is not allowed; "
         "expected one of ['transformer-engine'"),
        (["--model.init_args.model_kwargs.simlarity", "dot"], "model.init_args.model_kwargs."
         "simlarity: unknown ConvNN options ['simlarity']; did you mean 'similarity'?"),
    ],
)  # fmt: skip
def test_misspelled_keys_and_values_are_one_line(args, expected, capsys, monkeypatch):
    """In-process (the parser is the one of the subprocess above): each error is one
    ``convnn: error:`` line and a pointer to ``--help``, nothing else."""
    from lightning_modules.cli import main

    monkeypatch.setattr(sys, "argv", ["convnn"])
    with pytest.raises(SystemExit) as exit_:
        main(["fit", "-c", QUICKSTART, *args])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln and not ln.startswith("Seed set")]
    if not isinstance(exit_.value.code, int):  # raised as SystemExit("convnn: error: ...")
        lines.append(str(exit_.value.code))
    errors = [ln for ln in lines if ln.startswith("convnn: error: ")]
    assert len(errors) == 1 and errors[0].startswith(f"convnn: error: {expected}"), lines
    assert len(lines) <= 2, lines


@pytest.mark.parametrize(
    "args, expected",
    [
        (["evaluate", "--cpkt", "x"], "convnn evaluate: error: unrecognized arguments: "
         "--cpkt x; did you mean '--ckpt'?"),
        (["evaluate", "--ckpt", "x", "--split", "vall"], "convnn evaluate: error: "
         "split='vall' is not allowed; expected one of ['val', 'test']; did you mean 'val'?"),
        (["inspect", "--ckpt", "x", "--out", "y", "--imagse", "2"], "convnn inspect: error: "
         "unrecognized arguments: --imagse 2; did you mean '--images'?"),
    ],
)  # fmt: skip
def test_checkpoint_commands_report_a_typo_in_one_line(args, expected, capsys):
    """``convnn evaluate`` / ``inspect`` (one parser, ``checkpoint_parser``): the error and
    a pointer to ``--help``, not the usage."""
    from lightning_modules.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(args)
    assert exit_.value.code == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines == [expected, f"(convnn {args[0]} --help lists every option)"]


def test_misspelled_key_in_a_config_file_is_one_line(tmp_path, capsys, monkeypatch):
    from lightning_modules.cli import main

    config = yaml.safe_load(Path(QUICKSTART).read_text())
    config["trainer"]["max_epoch"] = 3
    path = write_config(tmp_path / "typo.yaml", config)
    monkeypatch.setattr(sys, "argv", ["convnn"])
    with pytest.raises(SystemExit):
        main(["fit", "-c", str(path)])
    assert capsys.readouterr().err.splitlines() == [
        "convnn: error: unknown key 'trainer.max_epoch'; did you mean 'trainer.max_epochs'?",
        "(convnn fit --help lists every option)",
    ]


# -- 3: a checkpoint of another model is named -------------------------------------------------


def test_validate_names_a_checkpoint_of_another_model(fitted, tmp_path):
    last = str(fitted["run"] / "checkpoints" / "last.ckpt")
    args = ["validate", "-c", QUICKSTART, "--ckpt_path", last]
    done = convnn([*args, "--trainer.logger.init_args.save_dir", str(tmp_path)], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    notes = [ln for ln in done.stderr.splitlines() if ln.startswith("convnn: note:")]
    assert len(notes) == 1, done.stderr[-3000:]
    assert notes[0].startswith(f"convnn: note: {last} holds convnn_vit_tiny_patch4_32 with ")
    assert "depth=1 (config: 4)" in notes[0] and "embed_dim=32 (config: 64)" in notes[0]
    assert notes[0].endswith(
        "validate uses the checkpoint's model (its hyper-parameters win over the config)"
    )


def test_checkpoint_of_another_model_than_the_config_is_refused(fitted, tmp_path):
    """Before: a note, then the checkpoint's ViT trained instead of the config's network."""
    last = str(fitted["run"] / "checkpoints" / "last.ckpt")
    args = ["fit", "-c", str(fitted["config"]), "--ckpt_path", last]
    done = convnn([*args, "--model.init_args.model", "convnn_resnet18_cifar"], cwd=tmp_path)
    assert done.returncode == 2 and TRACEBACK not in done.stderr
    assert error_lines(done) == [
        f"convnn: error: --ckpt_path {last} holds a convnn_vit_tiny_patch4_32, not the "
        "config's convnn_resnet18_cifar: give the config of that model, or "
        "--model.init_args.model convnn_vit_tiny_patch4_32 to use the checkpoint's model"
    ]


def test_model_difference_names_the_model_and_changed_kwargs():
    from lightning_modules.cli.lightning import model_difference

    config = ("convnn_vit_tiny_patch4_32", {"k": 9, "depth": 4})
    assert model_difference(config, config) is None
    assert model_difference(config, ("convnn_resnet18_cifar", {})) == (
        "a convnn_resnet18_cifar, not the config's convnn_vit_tiny_patch4_32"
    )
    assert model_difference(config, (config[0], {"k": 5, "depth": 4})) == (
        "convnn_vit_tiny_patch4_32 with model_kwargs k=5 (config: 9)"
    )
    assert model_difference((None, {}), config) is None  # no model in the config: nothing to say


# -- 4: resuming with more epochs continues the schedule ---------------------------------------


def test_resume_with_more_epochs_follows_the_new_schedule(fitted, tmp_path):
    """Before: the restored cosine (planned for 2 epochs) had ended, so epochs 3 and 4 ran at
    learning rate 0 without a word."""
    last = fitted["run"] / "checkpoints" / "last.ckpt"
    saved = torch.load(last, weights_only=True)["lr_schedulers"][0]
    assert set(saved["_last_lr"]) == {0.0}  # the 2-epoch cosine ended at 0 (both groups)
    args = ["fit", "-c", str(fitted["config"]), "--ckpt_path", str(last)]
    done = convnn([*args, "--trainer.max_epochs", "4"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    from lightning_modules import LRSchedule

    # 128 images / batch 16 = 8 steps per epoch, warm-up 0.5 epoch: the 4-epoch plan
    plan = LRSchedule("cosine", total_steps=32, steps_per_epoch=8, warmup_steps=4)
    notes = [ln for ln in done.stderr.splitlines() if ln.startswith("convnn: note:")]
    assert notes == [
        "convnn: note: resumed at step 16: the cosine schedule now spans 32 steps "
        f"(max_epochs 4) instead of the checkpoint's 16; learning rate 0 -> {0.003 * plan(16):.3g}"
    ], done.stderr[-2000:]
    lrs = [float(m[1]) for m in re.finditer(r"^epoch \d/4 .* lr (\S+)", done.stdout, re.M)]
    assert lrs == pytest.approx([0.003 * plan(24), 0.003 * plan(32)], rel=1e-2), done.stdout
    assert lrs[0] > 1e-4


# -- 7: convnn --help without Lightning or timm ------------------------------------------------


def test_top_level_help_lists_subcommands_without_heavy_imports(tmp_path):
    code = (
        "import sys\nfrom lightning_modules.cli import main\nmain(['--help'])\n"
        "heavy = [m for m in ('torch', 'lightning', 'timm') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    for name in ("fit", "validate", "test", "predict", "evaluate"):
        assert re.search(rf"^  {name} +\S", done.stdout, re.M), done.stdout


@pytest.mark.parametrize("timm_first", [False, True])
def test_import_convnn_costs_torch_only_and_timm_still_knows_the_models(timm_first):
    """``import convnn`` imports neither timm nor Lightning; timm imported afterwards (or
    before) knows the ``convnn_*`` models all the same."""
    code = (
        "import sys\nimport convnn\nconvnn.ConvNN2d(2, 3, k=4, padding=1)\n"
        "print(sorted(m for m in ('lightning', 'timm') if m in sys.modules))\n"
        "import timm\nprint(timm.list_models('convnn_vgg1*'))\n"
        "print(type(timm.create_model('convnn_vgg11', num_classes=3)).__name__)\n"
    )
    code = "import timm\n" * timm_first + code
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "['timm']" if timm_first else "[]",
        "['convnn_vgg11', 'convnn_vgg11_mlp', 'convnn_vgg13', 'convnn_vgg16', 'convnn_vgg19']",
        "CifarVGG",
    ]


def test_help_lists_every_subcommand_of_the_cli():
    from lightning_modules.cli import COMMANDS, ConvNNCLI

    lightning = {name for name, command in COMMANDS.items() if command.module == "lightning"}
    assert lightning == set(ConvNNCLI.subcommands())  # the other rows: tests/cli/test_commands


def test_epoch_log_number_format():
    from lightning_modules.callbacks import _number

    assert _number("val/acc1", 0.8861) == "88.6%"
    assert _number("val/loss", 0.39123) == "0.391"
    assert _number("lr", 0.0) == "0"
    assert not math.isnan(float(_number("train/loss", 2.5)))
