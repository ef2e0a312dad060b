"""What ``pip install .`` promises: the operator library needs torch only (every other
package sits in an extra), and ``import convnn`` with its layers works without them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
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


def _torch_and_what_it_needs() -> set[str]:
    """The installed distributions ``torch`` needs at run time on this machine (its
    ``Requires-Dist`` for this interpreter, followed transitively), torch included."""
    from importlib import metadata

    from packaging.requirements import Requirement

    needed, todo = set(), ["torch"]
    while todo:
        name = todo.pop()
        key = name.lower().replace("_", "-")
        if key in needed:
            continue
        needed.add(key)
        for line in metadata.requires(name) or []:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    return needed


def _link_installed(names: set[str], site: Path) -> None:
    """Symbolic links in the folder ``site`` to this interpreter's installed distributions
    ``names`` (files and metadata): with ``site`` on a new environment's path, ``pip install
    torch`` without copying gigabytes."""
    from importlib import metadata

    for dist in metadata.distributions():
        if dist.metadata["Name"].lower().replace("_", "-") not in names:
            continue
        root = Path(dist.locate_file(""))
        tops = {Path(f).parts[0] for f in dist.files or [] if not str(f).startswith("..")}
        for top in tops:
            if (root / top).exists() and not (site / top).exists():
                (site / top).symlink_to(root / top)


@pytest.mark.long
def test_pip_install_into_a_fresh_environment_with_torch_only(tmp_path):
    """What a user of the operator alone does: a new virtual environment holding torch (and
    what torch needs) and nothing else, ``pip install`` of this project's wheel with no
    package index, ``pip check`` (it needs nothing more), then the operator and its layers
    run and no training package is there."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for package in ("convnn", "lightning_modules", "datamodules", "ablations"):
        shutil.copytree(
            ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    wheels = tmp_path / "wheels"
    build = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
             "-w", str(wheels), str(source)]  # fmt: skip
    done = subprocess.run(build, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    (wheel,) = wheels.glob("convnn-*.whl")

    env_dir = tmp_path / "fresh"
    subprocess.run([sys.executable, "-m", "venv", str(env_dir)], check=True)
    python = env_dir / "bin" / "python"
    where = "import sysconfig; print(sysconfig.get_path('purelib'))"
    site = Path(subprocess.run([str(python), "-c", where], capture_output=True, text=True,
                               check=True).stdout.strip())  # fmt: skip
    # torch is linked from a folder outside the new environment, on its path by a .pth file:
    # pip never uninstalls or writes a distribution outside its environment, so nothing it
    # does here can reach this interpreter's own torch through the links
    linked = tmp_path / "torch_only"
    linked.mkdir()
    _link_installed(_torch_and_what_it_needs(), linked)
    (site / "torch_only.pth").write_text(f"{linked}\n")
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "PIP_"))}
    # the new environment's own old setuptools (venv's) would hide the one torch requires
    drop = [str(python), "-m", "pip", "uninstall", "-q", "-y", "setuptools"]
    subprocess.run(drop, capture_output=True, text=True, env=clean, check=True)
    install = [str(python), "-m", "pip", "install", "-q", "--no-index", "--no-deps", str(wheel)]
    done = subprocess.run(install, capture_output=True, text=True, env=clean, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    # what the wheel requires is all there: torch and typing_extensions, nothing else
    check = [str(python), "-m", "pip", "check"]
    done = subprocess.run(check, capture_output=True, text=True, env=clean, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:]

    script = TORCH_ONLY.split("sys.meta_path.insert(0, Block())\n", 1)[1]  # no import blocker
    script = f"import sys\nBLOCKED = {EXTRAS_ONLY!r}\n{script}"
    done = subprocess.run([str(python), "-c", script], capture_output=True,
                          text=True, env=clean, cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "torch only: ok" in done.stdout
    listed = subprocess.run(
        [str(python), "-m", "pip", "list", "--format", "freeze"],
        capture_output=True,
        text=True,
        env=clean,
        check=True,
    ).stdout
    installed = {line.split("==")[0].lower() for line in listed.split()}
    assert "convnn" in installed and "torch" in installed
    assert not installed & {"lightning", "timm", "torchmetrics", "tensorboard", "rich"}
