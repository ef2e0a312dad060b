"""The front door's errors, tried as a new user would (issue 20, item 6): each mistake is one
line ``convnn: error: ...`` naming the key or the file, exit status 2, no traceback, before
any work; what can be checked without Lightning and timm is checked before they are imported.

Every case is the real command in a fresh process on tiny data (a 1-block ViT on synthetic
16x16 images, a folder of 16 PNG files written here).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image
from test_cli_journeys import ROOT, TRACEBACK, convnn, error_lines
from training_helpers import tiny_config, write_config

from lightning_modules.cli import COMMANDS


def one_error(done: subprocess.CompletedProcess, *words: str, prog: str = "convnn") -> str:
    """The single error line of a command stopped by bad input, which names ``words``."""
    lines = error_lines(done)
    assert done.returncode == 2, done.stderr[-3000:]
    assert TRACEBACK not in done.stderr, done.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), lines
    assert all(word in lines[0] for word in words), lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    """A 1-epoch tiny config and the run ``convnn fit`` made of it (``runs/tiny/version_0``)."""
    tmp = tmp_path_factory.mktemp("front_door")
    config = tiny_config(tmp / "runs")
    config["trainer"]["max_epochs"] = 1
    path = write_config(tmp / "tiny.yaml", config)
    done = convnn(["fit", "-c", str(path)], cwd=tmp)
    assert done.returncode == 0, done.stderr[-3000:]
    run = tmp / "runs" / "tiny" / "version_0"
    return {"tmp": tmp, "config": path, "last": run / "checkpoints" / "last.ckpt"}


def fresh_config(tmp_path: Path) -> tuple[Path, Path]:
    """``(config, save_dir)``: the tiny config writing into ``tmp_path/runs`` (not there yet)."""
    config = tiny_config(tmp_path / "runs")
    config["trainer"]["max_epochs"] = 1
    return write_config(tmp_path / "tiny.yaml", config), tmp_path / "runs"


# -- a, e: a bad model or data value names its key, before the run directory --------------


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--model.init_args.lr", "-0.01"], ["model.init_args.lr=-0.01 is not allowed"]),
        (
            ["--data.init_args.image_size", "15"],  # 4-pixel patches: 3 rows would be dropped
            ["data.init_args.image_size=15 is not a multiple of the patch size 4", "12 or 16"],
        ),
        (  # checked in epochs before the run, not at configure_optimizers inside it
            ["--model.init_args.warmup_epochs", "1", "--model.init_args.cooldown_epochs", "1"],
            ["model.init_args.cooldown_epochs=1", "leave no epoch of decay", "< max_epochs"],
        ),
    ],
)
def test_a_bad_value_names_its_key_before_the_run_directory(tmp_path, args, words):
    config, save_dir = fresh_config(tmp_path)
    done = convnn(["fit", "-c", str(config), *args], cwd=tmp_path)
    one_error(done, *words)
    assert "note:" not in done.stderr  # no note about the model, then an error
    assert not save_dir.exists()


def test_a_prefix_of_an_option_is_not_taken_for_the_option(tmp_path):
    """argparse takes ``--seed_everythin 3`` for ``--seed_everything 3`` by default
    (``allow_abbrev``): a typo would run with a value the user did not mean to set."""
    config, save_dir = fresh_config(tmp_path)
    done = convnn(["fit", "-c", str(config), "--seed_everythin", "3"], cwd=tmp_path)
    assert done.returncode == 2 and TRACEBACK not in done.stderr, done.stderr[-3000:]
    first = error_lines(done)[0]
    assert "unrecognized arguments: --seed_everythin 3" in first
    assert "did you mean '--seed_everything'" in first
    assert not save_dir.exists()


# -- b, i: files and names checked before Lightning and timm are imported ------------------


def test_mistakes_before_the_heavy_imports_are_one_line(tmp_path):
    """A PNG renamed to ``.ckpt`` (PyTorch's advice to load it with ``weights_only=False``
    is wrong here), a truncated checkpoint, a missing file, a misspelled subcommand or
    option: one line each, and neither Lightning nor timm imported."""
    png = tmp_path / "photo.ckpt"
    Image.new("RGB", (8, 8)).save(png, format="PNG")
    truncated = tmp_path / "cut.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(64)}}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:200])
    cases = {
        "fit --ckpt_path PNG": (["fit", "-c", "c.yaml", "--ckpt_path", str(png)], "convnn"),
        "evaluate --ckpt PNG": (["evaluate", "--ckpt", str(png)], "convnn evaluate"),
        "inspect --ckpt PNG": (["inspect", "--ckpt", str(png), "--out", "o"], "convnn inspect"),
        "truncated": (["validate", "-c", "c.yaml", "--ckpt_path", str(truncated)], "convnn"),
        "missing --ckpt": (["evaluate", "--ckpt", "none.ckpt"], "convnn evaluate"),
        "subcommand": (["fitt", "-c", "c.yaml"], "convnn"),
        "option": (["fit", "-c", "c.yaml", "--trainr.max_epochs", "3"], "convnn"),
    }
    (tmp_path / "c.yaml").write_text("seed_everything: 0\n")
    code = (
        "import sys, yaml\nfrom lightning_modules.cli import main\n"
        f"for args in {[args for args, _ in cases.values()]!r}:\n"
        "    try:\n        main(args)\n    except SystemExit as e:\n        print(e.code)\n"
        "print(sorted(m for m in ('lightning', 'timm', 'torch') if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
        timeout=120, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert done.stdout.split("\n")[:-2] == ["2"] * len(cases), done.stdout + done.stderr
    assert done.stdout.split("\n")[-2] == "[]", done.stdout  # not even torch
    lines = done.stderr.splitlines()
    assert TRACEBACK not in done.stderr and len(lines) == len(cases), done.stderr
    for line, (case, (_, prog)) in zip(lines, cases.items(), strict=True):
        assert line.startswith(f"{prog}: error: "), (case, line)
        assert "weights_only=False" not in line and "mmap" not in line, line
    expected = [
        "photo.ckpt is not a checkpoint: torch.save did not write it",
        "photo.ckpt is not a checkpoint",
        "photo.ckpt is not a checkpoint",
        "cut.ckpt is a truncated or damaged checkpoint",
        "--ckpt 'none.ckpt' does not exist",
        "unknown subcommand 'fitt'; did you mean 'fit'?",
        "unknown option '--trainr.max_epochs'; did you mean '--trainer.max_epochs'?",
    ]
    for line, words in zip(lines, expected, strict=True):
        assert words in line, line


def test_the_option_roots_are_the_parsers():
    """``COMMANDS[...].roots`` (checked before Lightning is imported) are the first parts of
    the options of each Lightning subcommand's parser."""
    from lightning_modules.cli.lightning import ConvNNCLI

    parsers = {}

    class Parsers(ConvNNCLI):
        def parse_arguments(self, parser, args) -> None:
            parsers.update(parser._subcommands_action.choices)
            raise SystemExit(0)

    with pytest.raises(SystemExit):
        Parsers(args=["fit"])
    for name, parser in parsers.items():
        options = [o for o in parser._option_string_actions if o.startswith("--")]
        assert sorted(COMMANDS[name].roots) == sorted({o[2:].split(".")[0] for o in options})


# -- c, g: a checkpoint of another size or another model -----------------------------------


def test_a_16px_vit_checkpoint_on_32px_data_is_one_consistent_line(tiny, tmp_path):
    args = ["validate", "-c", str(tiny["config"]), "--ckpt_path", str(tiny["last"])]
    done = convnn([*args, "--data.init_args.image_size", "32"], cwd=tmp_path)
    one_error(done, "for 16x16 images", "the data gives 32x32", "use data with image_size 16")
    assert "note:" not in done.stderr


def test_a_vit_checkpoint_with_a_vgg11_config_is_refused(tiny, tmp_path):
    configs = [
        "-c",
        str(ROOT / "configs/cifar10.yaml"),
        "-c",
        str(ROOT / "configs/cifar/vgg11_conv.yaml"),
    ]
    done = convnn(["fit", *configs, "--ckpt_path", str(tiny["last"])], cwd=tmp_path)
    one_error(done, "holds a convnn_vit_tiny_patch4_32, not the config's convnn_vgg11")
    assert not (tmp_path / "runs").exists() and "epoch" not in done.stdout


# -- d: one corrupt image stops fit before any training ----------------------------------


def test_a_corrupt_png_stops_fit_before_training(tmp_path):
    root = tmp_path / "images"
    for split in ("train", "val"):
        for label, color in (("a", (250, 0, 0)), ("b", (0, 0, 250))):
            (root / split / label).mkdir(parents=True)
            for i in range(4):
                Image.new("RGB", (16, 16), color).save(root / split / label / f"{i}.png")
    corrupt = root / "train" / "b" / "2.png"
    corrupt.write_bytes(corrupt.read_bytes()[:40])
    config = tiny_config(tmp_path / "runs")
    config["trainer"]["max_epochs"] = 1
    data = {"root": str(root), "image_size": 16, "batch_size": 4, "num_workers": 0}
    config["data"] = {"class_path": "datamodules.ImageNetDataModule", "init_args": data}
    done = convnn(["fit", "-c", str(write_config(tmp_path / "images.yaml", config))], tmp_path)
    one_error(done, f"unreadable image '{corrupt}'")
    assert "epoch 1/1" not in done.stdout and "train/" not in done.stdout


# -- f: a resumed run reports the best of the whole run ----------------------------------


def test_a_resumed_fit_reports_the_best_of_the_whole_run(tiny, tmp_path):
    """The checkpoint's run had reached 99% (its callback state says so); the epoch trained
    after the resume, in a new version directory, reaches less: the final line is 99%."""
    checkpoint = torch.load(tiny["last"], weights_only=True)
    for state in checkpoint["callbacks"].values():
        if state.get("monitor") == "val/acc1":
            state["best_model_score"] = torch.tensor(0.99)
            earlier = state["best_model_path"]
    resumed = tmp_path / "resume.ckpt"
    torch.save(checkpoint, resumed)
    args = ["fit", "-c", str(tiny["config"]), "--ckpt_path", str(resumed)]
    done = convnn([*args, "--trainer.max_epochs", "2"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "epoch 2/2" in done.stdout  # one epoch trained after the resume
    best = [ln for ln in done.stdout.splitlines() if "best val/acc1" in ln]
    assert best == [f"convnn fit: best val/acc1 99.0%: {earlier} (saved before the resume)"]


# -- h: grid-file typos get a close match --------------------------------------------------


@pytest.mark.parametrize(
    ("grid", "words"),
    [
        ({"axis": {"model.init_args.lr": [0.1]}}, ["grid keys ['axis']; did you mean 'axes'?"]),
        (
            {"axes": {"model.init_args.lrr": [0.1, 0.2]}},
            ["key 'model.init_args.lrr'", "has no argument 'lrr'; did you mean 'lr'?"],
        ),
    ],
)  # fmt: skip
def test_grid_key_typos_get_a_close_match(tiny, tmp_path, grid, words):
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump({"name": "typo", "base": str(tiny["config"]), **grid}))
    for command in ("plan", "run"):
        cmd = [sys.executable, "-m", "ablations.ablate", command, str(path)]
        cmd += ["--out", str(tmp_path / "out")] if command == "run" else []
        done = subprocess.run(
            cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"},
        )  # fmt: skip
        one_error(done, *words, prog="convnn-ablate")
        out = tmp_path / "out"
        assert not out.exists() or not any(out.iterdir())  # no cell started
