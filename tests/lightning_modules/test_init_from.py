"""Start from weights, not only resume (``ImageClassifier(init_from=...)``): a checkpoint
fine-tuned to another class count, a ViT continued at a larger image size, a timm
baseline's weights in its ConvNN variant, and a clear error for another architecture."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
from training_helpers import tiny_config, write_config

from convnn.errors import UsageError
from lightning_modules import ImageClassifier

ROOT = Path(__file__).resolve().parents[2]
VIT = "convnn_vit_tiny_patch4_32"
SMALL_VIT = dict(img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2, k=5)


def _saved(tmp_path: Path, **kwargs) -> tuple[ImageClassifier, Path]:
    torch.manual_seed(0)
    source = ImageClassifier(VIT, SMALL_VIT, **kwargs)
    path = tmp_path / "weights.pth"
    torch.save(source.model.state_dict(), path)
    return source, path


def test_fine_tune_to_another_class_count(tmp_path, capfd) -> None:
    source, path = _saved(tmp_path, num_classes=10, image_size=16)
    tuned = ImageClassifier(VIT, SMALL_VIT, num_classes=5, image_size=16, init_from=str(path))
    assert "classifier head re-initialised for 5 classes" in capfd.readouterr().err
    assert tuned.model.head.weight.shape == (5, 32)
    for name, value in source.model.state_dict().items():
        if not name.startswith("head."):
            assert torch.equal(tuned.model.state_dict()[name], value), name


def test_vit_continues_at_a_larger_image_size(tmp_path, capfd) -> None:
    source, path = _saved(tmp_path, num_classes=10, image_size=16)
    larger = ImageClassifier(VIT, SMALL_VIT, num_classes=10, image_size=32, init_from=str(path))
    assert "resampled from 16 to 64 tokens (8x8)" in capfd.readouterr().err
    assert larger.model.pos_embed.shape == (1, 65, 32)
    # the 4x4 grid, resampled to 8x8 and back, is the original embedding's smooth version:
    # the class token's entry is copied as it is
    torch.testing.assert_close(larger.model.pos_embed[:, 0], source.model.pos_embed[:, 0])
    assert torch.equal(larger.model.blocks[1].mlp.fc2.weight, source.model.blocks[1].mlp.fc2.weight)
    assert larger.model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_a_timm_baseline_into_its_convnn_variant(tmp_path) -> None:
    """A timm ViT's state dict into the ConvNN ViT configured as the exact special case
    (all tokens, softmax(dot), sum kernel): the same logits."""
    args = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2)
    torch.manual_seed(0)
    baseline = timm.create_model("vit_tiny_patch16_224", num_classes=4, **args).eval()
    path = tmp_path / "vit.pth"
    torch.save(baseline.state_dict(), path)
    variant = ImageClassifier(
        VIT, {**args, "k": "all"}, num_classes=4, image_size=32, init_from=str(path)
    ).model.eval()
    assert type(variant.blocks[0].attn).__name__ == "ConvNNAttention"
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(variant(x), baseline(x), rtol=1e-5, atol=1e-5)


def test_a_timm_resnet_into_its_branching_variant(tmp_path, capfd) -> None:
    torch.manual_seed(0)
    resnet = timm.create_model("resnet18", num_classes=10)
    path = tmp_path / "resnet18.pth"
    torch.save(resnet.state_dict(), path)
    model = ImageClassifier(
        "convnn_resnet18", {"layer": "branching"}, num_classes=10, image_size=64,
        init_from=str(path),
    ).model  # fmt: skip
    assert "loaded as the baseline's weights, then converted" in capfd.readouterr().err
    layer = model.layer1[0].conv1  # half its filters from the ConvNN branch, half from conv
    assert torch.equal(layer.conv.weight, resnet.layer1[0].conv1.weight[32:])
    assert torch.equal(model.fc.weight, resnet.fc.weight)


def test_another_architecture_is_named_with_its_keys(tmp_path) -> None:
    _, path = _saved(tmp_path, num_classes=10, image_size=16)
    with pytest.raises(UsageError, match=r"init_from=.*does not fit model CifarResNet.*blocks\."):
        ImageClassifier("convnn_resnet18_cifar", {}, num_classes=10, init_from=str(path))
    with pytest.raises(UsageError, match="does not exist"):
        ImageClassifier(VIT, SMALL_VIT, image_size=16, init_from=str(tmp_path / "nothing.pt"))


def test_fine_tune_from_a_lightning_checkpoint_on_the_command_line(tmp_path) -> None:
    """The user's path: ``convnn fit`` a 10-class run, then ``convnn fit`` a 5-class one
    from its checkpoint with ``--model.init_args.init_from``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}

    def fit(config: dict, *args: str) -> subprocess.CompletedProcess:
        path = write_config(tmp_path / "config.yaml", config)
        command = [sys.executable, "-m", "lightning_modules.cli", "fit", "-c", str(path), *args]
        return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)

    first = tiny_config(tmp_path / "first")
    first["trainer"]["max_epochs"] = 1
    first["data"]["init_args"]["num_classes"] = 10
    done = fit(first)
    assert done.returncode == 0, done.stderr[-2000:]
    [ckpt] = (tmp_path / "first").glob("tiny/version_0/checkpoints/last.ckpt")
    second = tiny_config(tmp_path / "second")
    second["trainer"]["max_epochs"] = 1
    second["data"]["init_args"]["num_classes"] = 5
    done = fit(second, "--model.init_args.init_from", str(ckpt))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "classifier head re-initialised for 5 classes" in done.stderr
    assert "Restoring states" not in done.stderr  # weights only: not a resume
