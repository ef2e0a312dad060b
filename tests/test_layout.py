"""The repository stands on its own and its modules are named apart.

* Nothing in the repository reads, or points to, a file outside its tree: the method is
  described in docs/method.md and its numbers are data in ``lightning_modules/paper.py``.
* Each module's file name is unique across ``convnn/``, ``lightning_modules/``,
  ``datamodules/`` and ``ablations/`` (``__init__.py`` aside), so a file name alone says
  which module is meant.
"""

from __future__ import annotations

import shutil
import subprocess
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("convnn", "lightning_modules", "datamodules", "ablations")
# written in two parts, so that this file does not name them itself
OUTSIDE = ("../" + "shared", "SPEC" + ".md")


def _repository_files() -> list[Path]:
    """Tracked files and new files git does not ignore."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    return [ROOT / name for name in listed.split("\0") if name and (ROOT / name).is_file()]


def test_nothing_points_outside_the_repository() -> None:
    found = []
    for path in _repository_files():
        data = path.read_bytes()
        found += [f"{path.relative_to(ROOT)}: {m}" for m in OUTSIDE if m.encode() in data]
    assert not found, "files outside the repository named in: " + "; ".join(found)


def test_module_names_are_unique() -> None:
    where = defaultdict(list)
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if path.name != "__init__.py" and "__pycache__" not in path.parts:
                where[path.name].append(str(path.relative_to(ROOT)))
    repeated = {name: paths for name, paths in where.items() if len(paths) > 1}
    assert not repeated, f"module file names used more than once: {repeated}"
