"""Installs what the project needs beside a Python's own packages, without the network.

    python benchmarks/gpu_setup.py [--wheels benchmarks/wheels] [--site runs/gpu_site]
    PYTHONPATH=runs/gpu_site python benchmarks/gpu_setup.py --preflight

Run by ``benchmarks/gpu_check.sh`` with the Python that will run the check (on a bare GPU
machine: its ``python3``, which has torch, Lightning, timm, ... but not jsonargparse or
submitit). Reads the dependencies of ``pyproject.toml`` and follows them (extras too)
through the installed distributions and the wheels in ``--wheels``: a requirement that is
installed in a suitable version is left alone (torch is never resolved, upgraded or
reinstalled); one that is not is taken from its wheel. Then installs those wheels and the
project itself (built from a copy of the checkout) with ``pip install --no-deps
--no-index --no-build-isolation --target SITE``: nothing outside ``SITE`` changes; put
``SITE`` on ``PYTHONPATH`` to use it. ``SITE`` is removed first, and not made when nothing
is missing (prints ``nothing to install``). ``--preflight`` then checks that the project
and its CLI import, and stops with exit status 3 and a ``no CUDA device`` line without a GPU;
``--selfcheck DOCTOR_JSON`` prints the Triton self-check's result from ``convnn doctor --json``.

Exit status 1 with one ``gpu_setup: error:`` line when a requirement is missing and no wheel
of it is in ``--wheels`` (``make gpu-wheels`` fills the folder), or the installation fails.
Needs only the standard library and pip (whose ``packaging`` is used when the Python
has none), and setuptools >= 68 when the project has to be installed.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

try:
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
except ImportError:  # pragma: no cover - a Python without packaging: pip's copy
    from pip._vendor.packaging.requirements import Requirement
    from pip._vendor.packaging.utils import canonicalize_name

try:
    import tomllib
except ImportError:  # pragma: no cover - Python 3.10
    from pip._vendor import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
PROJECT = "convnn"
PACKAGES = ("convnn", "lightning_modules", "datamodules", "ablations")
"""The project's packages (pyproject's ``packages.find``): copied to build the project."""


class SetupError(Exception):
    """A problem that stops the set-up: one line."""


def wheel_index(folder: Path) -> dict[str, tuple[Path, str, list[str]]]:
    """``{name: (wheel, version, Requires-Dist lines)}`` of the wheels in ``folder``."""
    index: dict[str, tuple[Path, str, list[str]]] = {}
    for wheel in sorted(folder.glob("*.whl")):
        with zipfile.ZipFile(wheel) as z:
            meta = next(n for n in z.namelist() if re.fullmatch(r"[^/]+\.dist-info/METADATA", n))
            text = z.read(meta).decode()
        fields = re.findall(r"^(Name|Version|Requires-Dist): (.+)$", text, re.M)
        name = canonicalize_name(next(v for k, v in fields if k == "Name"))
        if name in index:
            raise SetupError(f"two wheels of {name} in {folder}: keep one")
        version = next(v for k, v in fields if k == "Version")
        index[name] = (wheel, version, [v for k, v in fields if k == "Requires-Dist"])
    return index


def wanted(lines: list[str], extras: set[str], base: bool = True) -> list[Requirement]:
    """The requirements among ``lines`` that apply here with ``extras`` requested (``base``:
    also those of no extra)."""
    out = []
    for line in lines:
        req = Requirement(line)
        if req.marker is None:
            if base:
                out.append(req)
            continue
        if any(req.marker.evaluate({"extra": e}) for e in extras):
            out.append(req)  # a requirement of a requested extra
        elif base and req.marker.evaluate({"extra": ""}):
            out.append(req)
    return out


def installed_version(name: str) -> str | None:
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


GPU_EXTRAS = ("train", "slurm", "report")
"""The extras of pyproject.toml the GPU check needs beside torch (the dev tools aside)."""


def resolve(dependencies: list[str], folder: Path) -> tuple[dict[str, tuple], list[str]]:
    """The wheels of ``folder`` to install (``{name: (wheel, version, requires)}``) so that
    every one of ``dependencies`` holds, and warnings (an unsuitable installed version with
    no wheel: the check may still work)."""
    wheels = wheel_index(folder)
    todo = [(Requirement(d), PROJECT) for d in dependencies]
    todo = [(r, p) for r, p in todo if r.marker is None or r.marker.evaluate({"extra": ""})]
    chosen: dict[str, tuple] = {}
    warnings: list[str] = []
    seen: set[tuple[str, frozenset]] = set()
    while todo:
        req, parent = todo.pop(0)
        name = canonicalize_name(req.name)
        if (name, frozenset(req.extras)) in seen:
            continue
        seen.add((name, frozenset(req.extras)))
        have = installed_version(name)
        if name not in chosen and have and req.specifier.contains(have, prereleases=True):
            # installed: only the requirements of the requested extras are followed
            extra = wanted(md.distribution(name).requires or [], set(req.extras), base=False)
            todo += [(r, name) for r in extra]
            continue
        if name in wheels and req.specifier.contains(wheels[name][1], prereleases=True):
            chosen[name] = wheels[name]
            todo += [(r, name) for r in wanted(wheels[name][2], set(req.extras))]
            continue
        if name in chosen:
            raise SetupError(f"{parent} wants {req}, the wheel is {name} {chosen[name][1]}")
        where = f"no wheel of it in {folder} (make gpu-wheels)"
        if have:
            warnings.append(f"{name} {have} is installed, {parent} wants {req}; {where}")
            continue
        raise SetupError(f"{name} is missing ({parent} wants {req}) and there is {where}")
    return chosen, warnings


def project_copy(tmp: Path) -> Path:
    """A copy of the project's sources in ``tmp`` (builds leave the checkout untouched)."""
    src = tmp / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for pkg in PACKAGES:
        shutil.copytree(ROOT / pkg, src / pkg, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    return src


def preflight() -> None:
    """The project and its CLI import (Lightning sees jsonargparse[signatures]); then exit
    status 3 with a ``no CUDA device`` line when there is no GPU."""
    import submitit  # noqa: F401
    import torch
    from lightning.pytorch.cli import _JSONARGPARSE_SIGNATURES_AVAILABLE as signatures

    import convnn  # noqa: F401
    import lightning_modules.cli.lightning  # noqa: F401  (jsonargparse, Lightning's CLI)

    if not signatures:
        raise SetupError(f"Lightning's CLI cannot use jsonargparse: {signatures}")
    names = ("convnn", "torch", "lightning", "timm", "jsonargparse", "submitit")
    print("preflight: " + ", ".join(f"{n} {md.version(n)}" for n in names), flush=True)
    if not torch.cuda.is_available():
        print(f"no CUDA device (torch.cuda.is_available() is False; torch {torch.__version__}, "
              f"built for CUDA {torch.version.cuda})")  # fmt: skip
        raise SystemExit(3)


def selfcheck(doctor_json: Path) -> None:
    """The Triton self-check's result on each GPU, from ``convnn doctor --json``'s report:
    one line each; exit status 1 when one failed or no GPU was checked."""
    try:
        checks = json.loads(doctor_json.read_text())["selfcheck"]
    except (OSError, ValueError, KeyError) as e:
        raise SetupError(f"no self-check in {doctor_json}: {e}") from None
    for c in checks:
        verdict = "ok" if c["ok"] else "FAILED"
        print(f"selfcheck: {c['device']} {verdict}: {c['detail']} ({c['seconds']:.2f} s)")
    if not any(c["device"].startswith("cuda") for c in checks):
        raise SetupError("the Triton self-check ran on no CUDA device")
    if not all(c["ok"] for c in checks):
        raise SetupError("the Triton self-check failed: the PyTorch gathers are used instead")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--wheels", type=Path, default=ROOT / "benchmarks" / "wheels")
    p.add_argument("--site", type=Path, default=ROOT / "runs" / "gpu_site")
    p.add_argument("--preflight", action="store_true",
                   help="only check that the project imports and a GPU is there")  # fmt: skip
    p.add_argument("--selfcheck", type=Path, metavar="DOCTOR_JSON",
                   help="only print the Triton self-check's result from this report")  # fmt: skip
    args = p.parse_args(argv)
    if args.preflight:
        return preflight()
    if args.selfcheck:
        return selfcheck(args.selfcheck)
    start = time.monotonic()
    project_table = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project_table.get("optional-dependencies", {})
    # the operator library's own dependencies, then what training and the grids need
    dependencies = [
        *project_table["dependencies"],
        *(d for extra in GPU_EXTRAS for d in extras.get(extra, [])),
    ]
    chosen, warnings = resolve(dependencies, args.wheels)
    for line in warnings:
        print(f"gpu_setup: warning: {line}", flush=True)
    project = installed_version(PROJECT) is None
    shutil.rmtree(args.site, ignore_errors=True)
    if not chosen and not project:
        print(f"gpu_setup: nothing to install ({sys.executable} has every requirement)")
        return
    if project:
        try:
            import setuptools  # noqa: F401  (the build backend, without build isolation)
        except ImportError:
            raise SetupError(f"setuptools is missing in {sys.executable}: cannot build "
                             f"{PROJECT}") from None  # fmt: skip
    names = [f"{n} {v[1]}" for n, v in sorted(chosen.items())] + [
        f"{PROJECT} (the checkout)"
    ] * project
    print(f"gpu_setup: installing into {args.site}: {', '.join(names)}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        targets = [str(v[0]) for v in chosen.values()]
        if project:
            targets.append(str(project_copy(Path(tmp))))
        cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q",
               "--no-build-isolation", "--disable-pip-version-check", "--no-cache-dir",
               "--target", str(args.site), *targets]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        tail = (proc.stderr or proc.stdout).strip().splitlines() or ["(no output)"]
        raise SetupError(f"pip install failed (exit {proc.returncode}): {tail[-1]}")
    print(f"gpu_setup: ok in {time.monotonic() - start:.1f} s; use PYTHONPATH={args.site}")


if __name__ == "__main__":
    try:
        main()
    except SetupError as e:
        raise SystemExit(f"gpu_setup: error: {e}") from None
