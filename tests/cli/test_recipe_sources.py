"""Each recipe config says where its settings come from, and holds the settings its sources
ran: repeated augmentation for DeiT and RSB A2, DeiT's cool-down as it ran (none), gradient
clipping at 1.0 where the authors' code is the source, channels_last for the CNNs.

(``test_configs.py`` runs every config through the CLI; here the merged files are read.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
HEADING = "# Recipe. Where each setting comes from"


def merged(*names: str) -> dict[str, Any]:
    """The files merged as the CLI merges them: key by key, a ``model_kwargs`` mapping
    replaced as a whole."""
    out: dict[str, Any] = {}
    for name in names:
        _merge(out, yaml.safe_load((CONFIGS / name).read_text()))
    return out


def _merge(into: dict[str, Any], new: dict[str, Any]) -> None:
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict) and key != "model_kwargs":
            _merge(into[key], value)
        else:
            into[key] = value


def header(path: Path) -> str:
    lines = path.read_text().splitlines()
    return "\n".join(line for line in lines[: next(i for i, x in enumerate(lines) if not x)])


RECIPES = sorted(
    [p for p in CONFIGS.glob("*.yaml")] + list((CONFIGS / "cifar").glob("*.yaml")),
    key=str,
)


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_every_recipe_says_where_each_setting_comes_from(path):
    text = header(path)
    assert HEADING in text, f"{path.name}: no '{HEADING}' block in its header"
    sources = text.split(HEADING, 1)[1]
    assert "Ours:" in sources or "(" in sources  # at least one named source


@pytest.mark.parametrize("row", sorted((CONFIGS / "imagenet").glob("*.yaml")), ids=str)
def test_every_imagenet_row_names_its_recipe(row):
    base = "imagenet_vit_b16.yaml" if row.stem.startswith("vit") else "imagenet_resnet50.yaml"
    assert f"Everything but the model comes from configs/{base}" in header(row)


def test_deit_and_rsb_use_repeated_augmentation():
    vit, resnet = merged("imagenet_vit_b16.yaml"), merged("imagenet_resnet50.yaml")
    assert vit["data"]["init_args"]["aug_repeats"] == 3
    assert resnet["data"]["init_args"]["aug_repeats"] == 3
    # DeiT's loop stops at --epochs: its 10 cool-down epochs never ran
    assert vit["model"]["init_args"]["cooldown_epochs"] == 0
    assert vit["trainer"]["max_epochs"] == 300
    for config in (vit, resnet):  # neither source clips gradients
        assert "gradient_clip_val" not in config["trainer"]


@pytest.mark.parametrize("variant", ["conv", "branching", "convnn"])
def test_the_paper_vgg11_recipes_clip_as_the_authors_code(variant):
    for base in ("cifar10.yaml", "cifar100.yaml"):
        config = merged(base, f"cifar/vgg11_{variant}.yaml")
        assert config["trainer"]["gradient_clip_val"] == 1.0
        assert config["model"]["init_args"]["model"] == "convnn_vgg11_mlp"
        assert config["model"]["init_args"]["channels_last"] is True


@pytest.mark.parametrize("path", sorted((CONFIGS / "cifar").glob("*.yaml")), ids=lambda p: p.stem)
def test_channels_last_for_the_cnns_only(path):
    config = merged("cifar10.yaml", f"cifar/{path.name}")
    expected = not path.stem.startswith("vit")
    assert config["model"]["init_args"]["channels_last"] is expected
    assert merged("imagenet_resnet50.yaml")["model"]["init_args"]["channels_last"] is True
    assert "channels_last" not in merged("imagenet_vit_b16.yaml")["model"]["init_args"]
