"""``torch.hub`` finds and builds every ``convnn_*`` model from a checkout (``hubconf.py``)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import timm
import torch

from convnn.models import MODEL_NAMES

ROOT = Path(__file__).resolve().parents[2]


def test_hub_entry_points_are_the_models() -> None:
    """What ``torch.hub.list`` shows for a repository: its hubconf's public callables."""
    spec = importlib.util.spec_from_file_location("hubconf", ROOT / "hubconf.py")
    hub = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hub)
    entries = [n for n in dir(hub) if callable(getattr(hub, n)) and not n.startswith("_")]
    assert sorted(entries) == sorted(MODEL_NAMES)
    assert hub.dependencies == ["torch", "timm"]


def test_hub_builds_the_timm_model_with_its_options() -> None:
    torch.manual_seed(0)
    hub = torch.hub.load(
        str(ROOT), "convnn_vgg_mini", source="local", layer="branching", branch_ratio=0.25
    )
    torch.manual_seed(0)
    direct = timm.create_model("convnn_vgg_mini", layer="branching", branch_ratio=0.25)
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(hub.eval()(x), direct.eval()(x), rtol=0, atol=0)
    assert type(hub.features[0]).__name__ == "BranchingConv2d"
