"""``convnn doctor``: versions, devices, backend settings, the named paths and the Triton
self-check of every CUDA device, as text or ``--json``. Exits 1 when a self-check fails or
an environment variable is invalid (Lightning is not imported).

With ``TRITON_INTERPRET=1`` the self-check also runs on the CPU, on Triton's interpreter.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import torch

from convnn.backends import BACKEND_ENV, PATHS, resolve_backend, selfcheck
from convnn.backends.blocked_gather import DEBUG_ENV, debug_checks
from convnn.errors import ConvNNError

__all__ = ["main", "report"]

PACKAGES = ("torch", "triton", "timm", "lightning", "numpy", "convnn")


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def _devices() -> list[dict[str, Any]]:
    devices = [{"name": "cpu", "kind": platform.machine(), "threads": torch.get_num_threads()}]
    for i in range(torch.cuda.device_count() if torch.cuda.is_available() else 0):
        props = torch.cuda.get_device_properties(i)
        devices.append({
            "name": f"cuda:{i}",
            "kind": props.name,
            "capability": f"sm_{props.major}{props.minor}",
            "memory_gib": round(props.total_memory / 2**30, 1),
        })  # fmt: skip
    return devices


def _checked_devices(devices: list[dict[str, Any]]) -> list[str]:
    """Where the self-check runs: every CUDA device, and the CPU when Triton interprets."""
    names = [d["name"] for d in devices if d["name"].startswith("cuda")]
    return names + (["cpu"] if os.environ.get("TRITON_INTERPRET") == "1" else [])


def _setting(read: Any) -> tuple[str, str | None]:
    """``(value, None)`` or ``("invalid", one-line error)`` of an environment setting."""
    try:
        return str(read()), None
    except ConvNNError as err:
        return "invalid", str(err)


def report() -> dict[str, Any]:
    """Everything ``convnn doctor`` prints, as a JSON-ready dict (``problems``: lines)."""
    devices = _devices()
    backend, backend_error = _setting(lambda: resolve_backend("auto"))
    mode, mode_error = _setting(selfcheck.triton_mode)
    problems = [e for e in (backend_error, mode_error) if e]
    checks = []
    if mode_error is None:
        for name in _checked_devices(devices):
            result = selfcheck.run_selfcheck(name)
            checks.append({"device": name, "ok": result.ok, "detail": result.detail,
                           "seconds": round(result.seconds, 3)})  # fmt: skip
            if not result.ok:
                problems.append(f"Triton self-check failed on {name}: {result.detail}")
    return {
        "python": platform.python_version(),
        "versions": {p: _version(p) for p in PACKAGES},
        "cuda": torch.version.cuda,
        "devices": devices,
        "environment": {
            BACKEND_ENV: os.environ.get(BACKEND_ENV),
            selfcheck.TRITON_ENV: os.environ.get(selfcheck.TRITON_ENV),
            DEBUG_ENV: os.environ.get(DEBUG_ENV),
            "TRITON_INTERPRET": os.environ.get("TRITON_INTERPRET"),
        },
        "backend": backend,
        "triton_mode": mode,
        "index_checks": debug_checks(),
        "paths": [
            {"name": p.name, "level": p.level, "requires": p.requires} for p in PATHS.values()
        ],  # fmt: skip
        "selfcheck": checks,
        "problems": problems,
    }


def _text(r: dict[str, Any]) -> str:
    versions = ", ".join(f"{p} {v}" for p, v in r["versions"].items())
    lines = [f"versions: python {r['python']}, {versions}", f"CUDA (torch build): {r['cuda']}"]
    lines.append("devices:")
    for d in r["devices"]:
        extra = (f"{d['capability']}, {d['memory_gib']} GiB" if "capability" in d
                 else f"{d['threads']} threads")  # fmt: skip
        lines.append(f"  {d['name']:<8} {d['kind']} ({extra})")
    if len(r["devices"]) == 1:
        lines.append("  no CUDA device")
    env = ", ".join(f"{k}={v if v is not None else '(unset)'}" for k, v in r["environment"].items())
    lines.append(f"environment: {env}")
    lines.append(
        f"backend: auto -> {r['backend']}; Triton gathers: {r['triton_mode']}; index checks: "
        f"{'on' if r['index_checks'] else f'off ({DEBUG_ENV}=1 turns them on)'}"
    )
    lines.append("paths (fast tries each level in this order; 'reference' on request):")
    for p in r["paths"]:
        lines.append(f"  {p['name']:<17} {p['level']:<6} needs {p['requires'] or '-'}")
    lines.append("Triton self-check:")
    for c in r["selfcheck"]:
        verdict = "ok" if c["ok"] else "FAILED"
        lines.append(f"  {c['device']:<8} {verdict}: {c['detail']} ({c['seconds']:.2f} s)")
    if not r["selfcheck"]:
        lines.append("  not run: no CUDA device (TRITON_INTERPRET=1 runs it on the CPU)")
    lines += [f"problem: {p}" for p in r["problems"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``convnn doctor [--json]``; returns the exit status (1 when there are problems)."""
    parser = argparse.ArgumentParser(prog="convnn doctor", description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    r = report()
    print(json.dumps(r, indent=2) if args.json else _text(r))
    return 1 if r["problems"] else 0
