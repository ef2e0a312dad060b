"""Options against the sizes a model will see, checked when the model is built: one line
naming the layer, its input and the option, before any work (from Python, ``convnn fit``
and ``convnn-ablate plan``); bad layer inputs as one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import convnn
from convnn.errors import OptionError
from convnn.models.size_check import check_sizes

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "configs" / "quickstart.yaml"
TINY_VIT = dict(img_size=16, patch_size=4, embed_dim=64, depth=2, num_heads=2)


@pytest.mark.parametrize(
    ("options", "key", "message"),
    [
        (
            dict(k=100),
            "k",
            r"k=100 is larger than the N=17 candidate tokens; allowed: 1 <= k <= 17",
        ),
        (dict(candidates="random", num_samples=40), "num_samples", r"num_samples=40 .*N=17"),
    ],
)
def test_vit_options_against_its_tokens(options: dict, key: str, message: str) -> None:
    """A 16x16 image in 4x4 patches: 16 patch tokens + the class token in every block."""
    with pytest.raises(
        OptionError, match=rf"layer blocks\.0\.attn \(input \(17, 64\)\): {message}"
    ) as err:
        check_sizes("convnn_vit_tiny_patch4_32", (3, 16, 16), **TINY_VIT, **options)
    assert err.value.key == key


def test_cnn_options_against_each_stage() -> None:
    """ResNet-18/CIFAR on 32x32: 32x32 maps in stage 1 but 8x8 = 64 tokens in stage 3;
    on 128x128 the smallest map (stage 4) has 16x16."""
    kw = dict(layer="convnn", candidates="random", num_samples=100)
    with pytest.raises(OptionError, match=r"layer layer3\.0\.conv2 \(input \(256, 8, 8\)\)"):
        check_sizes("convnn_resnet18_cifar", (3, 32, 32), **kw)
    check_sizes("convnn_resnet18_cifar", (3, 128, 128), **kw)  # 16x16 in stage 4: fits


def test_valid_models_pass_and_use_no_memory() -> None:
    check_sizes("convnn_resnet50", (3, 224, 224), layer="branching", candidates="spatial",
                num_samples=25)  # fmt: skip
    check_sizes("convnn_vit_tiny_patch4_32", (3, 16, 16), **TINY_VIT, k=17)


def _run(args: list[str], cwd: Path, module: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", module, *args]
    return subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=300)


def test_fit_stops_with_one_line_before_training(tmp_path: Path) -> None:
    args = ["fit", "-c", str(QUICKSTART), "--model.init_args.model_kwargs.k", "100"]
    proc = _run(args, tmp_path, "lightning_modules.cli")
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if "error" in line.lower()]
    assert errors == [
        "convnn: error: layer blocks.0.attn (input (17, 64)): model.init_args.model_kwargs.k=100 "
        "is larger than the N=17 candidate tokens; allowed: 1 <= k <= 17"
    ]
    assert "Traceback" not in proc.stderr
    assert not list(tmp_path.rglob("*.ckpt"))


def test_plan_names_the_cell_and_key(tmp_path: Path) -> None:
    grid = tmp_path / "grid.yaml"
    grid.write_text(
        f"name: badk\nbase: {QUICKSTART}\naxes:\n  model.init_args.model_kwargs.k: [9, 100]\n"
    )
    proc = _run(["plan", str(grid)], tmp_path, "ablations.ablate")
    assert proc.returncode != 0
    assert (
        "convnn-ablate: error: cell 'k=100' (k_100-" in proc.stdout + proc.stderr
        and "key 'model.init_args.model_kwargs.k': layer blocks.0.attn" in proc.stdout + proc.stderr
    )


@pytest.mark.parametrize(
    ("build", "x", "message"),
    [
        (lambda: convnn.ConvNN2d(3, 3, 3), torch.ones(1, 3, 5, 5, dtype=torch.long),
         r"ConvNN2d expects a floating-point input, got torch.int64"),
        (lambda: convnn.ConvNN1d(3, 3, 3), torch.ones(1, 3, 5, dtype=torch.int32),
         r"ConvNN1d expects a floating-point input, got torch.int32"),
        (lambda: convnn.ConvNNAttention(16, 2), torch.randn(1, 2, 17, 16),
         r"ConvNNAttention expects \(B, N, dim\), got shape \(1, 2, 17, 16\)"),
        (lambda: convnn.BranchingAttention(16, 2), torch.randn(1, 17, 8),
         r"input has 8 channels; this layer has dim=16"),
    ],
)  # fmt: skip
def test_bad_layer_inputs_are_one_line_errors(build, x: torch.Tensor, message: str) -> None:
    with pytest.raises(OptionError, match=message):
        build()(x)
