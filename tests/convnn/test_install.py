"""What ``pip install .`` promises: the operator library needs torch only (every other
package sits in an extra), and ``import convnn`` with its layers works without them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[2]
EXTRAS_ONLY = [  # import names of the packages the extras bring
    "timm", "lightning", "torchmetrics", "tensorboard", "rich", "jsonargparse", "sklearn",
    "yaml", "submitit", "matplotlib", "torchvision", "PIL",
]  # fmt: skip

TORCH_ONLY = f"""
import importlib.abc, sys
BLOCKED = {EXTRAS_ONLY!r}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"not installed here: {{name}}")
sys.meta_path.insert(0, Block())
import torch, convnn
x = torch.randn(2, 4, 6, 6, requires_grad=True)
assert convnn.ConvNN2d(4, 5, 3, padding=1)(x).shape == (2, 5, 6, 6)
assert convnn.BranchingConv2d(4, 6, 3, padding=1, ratio=0.5)(x).shape == (2, 6, 6, 6)
tokens = torch.randn(2, 17, 16)
assert convnn.ConvNNAttention(16, 2, k=5)(tokens).shape == (2, 17, 16)
q = torch.randn(1, 2, 9, 8, requires_grad=True)
out = convnn.convnn(q, q, q, options=convnn.ConvNNOptions(k=None, similarity="dot",
                    weighting="softmax", kernel="sum"))
out.sum().backward()
loaded = sorted({{m.split(".")[0] for m in sys.modules}} & set(BLOCKED))
assert not loaded, loaded
print("torch only: ok")
"""


def test_the_operator_library_needs_torch_only() -> None:
    done = subprocess.run(
        [sys.executable, "-c", TORCH_ONLY], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "torch only: ok" in done.stdout


def test_the_extras_hold_everything_else() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = [d.split(">")[0].split("[")[0].strip() for d in project["dependencies"]]
    assert names == ["torch", "typing_extensions"]
    extras = project["optional-dependencies"]
    train = {d.split(">")[0].split("[")[0].strip() for d in extras["train"]}
    assert {"lightning", "timm", "torchmetrics", "tensorboard", "rich"} <= train
    assert extras["slurm"] == ["submitit"] and extras["report"] == ["matplotlib"]
    assert extras["dev"][0] == "convnn[train,slurm,report]"  # make test installs .[dev]
