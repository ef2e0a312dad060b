"""When the gather primitives run as Triton kernels, and the check that they work.

``CONVNN_TRITON`` (environment variable): ``auto`` (default) runs the kernels on CUDA
devices whose self-check passed; ``0`` never runs them; ``force`` runs them on any device
without a self-check (with ``TRITON_INTERPRET=1``, on the CPU: how the tests run them).

The self-check runs once per device, on the first gather there: both kernels on tiny
inputs against PyTorch's gathers (a few milliseconds once compiled). A compile or launch
failure or a mismatch warns once, in one line, and the PyTorch gathers serve that device
for the rest of the process. ``convnn doctor`` prints the results.
"""

from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass

import torch
from torch import Tensor

from ..errors import first_line
from ..ops.gather import gather_rows
from ..validation import check_choice
from . import triton_kernels

__all__ = ["TRITON_ENV", "CheckResult", "results", "run_selfcheck", "triton_ready", "use_triton"]

TRITON_ENV = "CONVNN_TRITON"
TRITON_MODES = ("auto", "0", "force")
TOLERANCE = 1e-4
"""Largest error (relative to the largest reference value) the float32 check allows."""


@dataclass(frozen=True)
class CheckResult:
    """One device's self-check: ``ok``, a one-line ``detail`` and its duration."""

    device: str
    ok: bool
    detail: str
    seconds: float


_RESULTS: dict[str, CheckResult] = {}


def triton_mode() -> str:
    """``CONVNN_TRITON``: ``auto`` (also when unset or empty), ``0`` or ``force``."""
    mode = os.environ.get(TRITON_ENV, "auto") or "auto"
    check_choice(f"environment variable {TRITON_ENV}", mode, TRITON_MODES)
    return mode


def _device_name(device: torch.device | str) -> str:
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return str(device)


def _on_kernel_device(x: Tensor) -> bool:
    """Whether ``auto`` considers the kernels for ``x`` (CUDA tensors)."""
    return x.is_cuda


def run_selfcheck(device: torch.device | str) -> CheckResult:
    """Both kernels on tiny float32 inputs on ``device`` against PyTorch's gathers (an
    expanded key, k=5 unrolled and k=17 looped); never raises."""
    name = _device_name(device)
    start = time.perf_counter()
    if not triton_kernels.available():
        return CheckResult(name, False, "triton is not installed", 0.0)
    g = torch.Generator().manual_seed(0)
    worst = 0.0
    try:
        for k in (5, 17):
            q = torch.randn(2, 3, 7, 16, generator=g).to(name)
            key = torch.randn(1, 3, 11, 16, generator=g).to(name)
            index = torch.randint(0, 11, (2, 3, 7, k), generator=g).to(name)
            w = torch.randn(2, 3, 7, k, generator=g).to(name)
            rows = gather_rows(key.expand(2, 3, 11, 16).contiguous(), index)  # (2, 3, 7, k, 16)
            pairs = (
                (triton_kernels.gather_dot(q, key, index), (rows * q[..., None, :]).sum(-1)),
                (triton_kernels.gather_sum(key, index, w), (rows * w[..., None]).sum(-2)),
            )
            for got, want in pairs:
                scale = want.abs().max().clamp(min=1.0)
                worst = max(worst, ((got - want).abs().max() / scale).item())
    except Exception as err:  # a compile or launch failure: the message is the result
        seconds = time.perf_counter() - start
        return CheckResult(name, False, f"kernel failed: {first_line(err)}", seconds)
    seconds = time.perf_counter() - start
    ok = worst <= TOLERANCE  # NaN fails too
    verdict = "matches" if ok else f"MISMATCH (allowed {TOLERANCE:.0e})"
    return CheckResult(name, ok, f"{verdict} PyTorch: max relative error {worst:.1e}", seconds)


def triton_ready(device: torch.device | str) -> bool:
    """The cached self-check of ``device`` (run on the first call); a failure warns once."""
    name = _device_name(device)
    result = _RESULTS.get(name)
    if result is None:
        result = _RESULTS[name] = run_selfcheck(name)
        if not result.ok:
            warnings.warn(
                f"convnn: Triton self-check failed on {name} ({result.detail}); the PyTorch "
                "gathers are used there for the rest of this process",
                RuntimeWarning,
                stacklevel=3,
            )
    return result.ok


def results() -> dict[str, CheckResult]:
    """The self-checks run so far in this process, by device."""
    return dict(_RESULTS)


def use_triton(x: Tensor) -> bool:
    """Whether the gather primitives run as Triton kernels for tensors like ``x``."""
    mode = triton_mode()
    if mode == "0" or not triton_kernels.available():
        return False
    if mode == "force":
        return True
    if not _on_kernel_device(x):
        return False
    if torch.compiler.is_compiling():  # no eager check inside a trace: use a past result
        result = _RESULTS.get(_device_name(x.device))
        return result is None or result.ok
    return triton_ready(x.device)
