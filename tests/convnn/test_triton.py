"""The Triton gather kernels, their self-check and fallback and ``convnn doctor``, all on the
CPU (the GPU check script and its benchmarks: ``tests/test_gpu_setup.py``).

The kernels themselves run on Triton's CPU interpreter in one subprocess
(``tests/helpers/triton_interpreted.py``: precision, offsets past 2**31, strides, indices out of
range, layers through the kernels). The self-check's fallback is tested by injecting a
failing kernel. The CUDA tests at the end run on a GPU only (``benchmarks/gpu_check.sh``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from interpreted_checks import run_interpreted

import convnn
from convnn.backends import blocked_gather, selfcheck
from convnn.backends import triton_kernels as tk
from convnn.ops.gather import gather_rows, with_null_row
from lightning_modules.cli import doctor

ROOT = Path(__file__).resolve().parents[2]
HAS_TRITON = tk.available()
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

if HAS_TRITON:
    import triton_interpreted

    INTERPRETED = list(triton_interpreted.CHECKS)
else:  # pragma: no cover - triton ships with torch
    INTERPRETED = []


# -- the kernels on Triton's interpreter --------------------------------------------------


@pytest.fixture(scope="module")
def interpreted() -> dict[str, str]:
    """Every check of ``triton_interpreted.py``, run once in one interpreted subprocess."""
    return run_interpreted("triton_interpreted.py", CONVNN_DEBUG="1")


@pytest.mark.parametrize("name", INTERPRETED)
def test_kernels_on_the_interpreter(interpreted, name):
    """See each check's docstring in ``tests/helpers/triton_interpreted.py``."""
    assert interpreted[name] == "ok", interpreted[name]


# -- offsets and strides ------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda: torch.zeros(2, 3, 5, 4),  # contiguous: one dim
        lambda: torch.zeros(1, 3, 5, 4).expand(2, 3, 5, 4),  # broadcast batch
        lambda: torch.zeros(2, 1, 5, 4).expand(2, 3, 5, 4),  # broadcast heads
        lambda: torch.zeros(5, 4).expand(2, 3, 5, 4),  # everything broadcast
        lambda: torch.zeros(2, 6, 5, 4)[:, 1:4],  # a head slice
        lambda: torch.zeros(3, 2, 5, 4).transpose(0, 1),  # batch dims swapped
        lambda: torch.zeros(2, 1, 3, 5, 4)[:, :, :2],  # a size-1 dim in the middle
        lambda: torch.zeros(7, 5, 4)[::2],  # a stepped batch
    ],
)
def test_batch_strides_address_every_batch(make):
    """Two strides reach the first element of every flattened batch, as torch places it."""
    x = make()
    batch = x.shape[:-2]
    inner, s_outer, s_inner = tk.batch_strides(tuple(batch), x.stride()[:-2])
    for b, position in enumerate(
        torch.cartesian_prod(*map(torch.arange, batch)).view(-1, len(batch))
    ):
        expected = x[tuple(position.tolist())].storage_offset() - x.storage_offset()
        assert (b // inner) * s_outer + (b % inner) * s_inner == expected, (b, position)


def test_batch_strides_refuse_three_unmergeable_dims():
    x = torch.zeros(2, 3, 4, 5, 6)[:, :2, :3]
    assert tk.batch_strides(tuple(x.shape[:-2]), x.stride()[:-2]) is None


class RecordLaunch:
    """Stands in for ``_gather_kernel``: records the arguments of one launch."""

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            self.grid, self.args, self.kwargs = grid, args, kwargs

        return launch


@pytest.mark.skipif(not HAS_TRITON, reason="needs triton")
@pytest.mark.parametrize("k, unrolled", [(5, 5), (16, 16), (17, 0), (40, 0)])
def test_launch_unrolls_small_k_only_and_reads_broadcast_tables_in_place(monkeypatch, k, unrolled):
    """Taps are unrolled up to SMALL_K; beyond, one kernel (K=0) loops at run time. An
    expanded value is passed as it is (its storage, stride 0), not copied."""
    monkeypatch.setattr(tk, "_gather_kernel", launch := RecordLaunch())
    v = torch.randn(1, 3, 10, 8)
    index, w = torch.zeros(4, 3, 6, k, dtype=torch.long), torch.ones(4, 3, 6, k)
    tk.gather_sum(v, index, w)
    x, *_ = launch.args
    assert launch.kwargs["K"] == unrolled and not launch.kwargs["DOT"]
    assert x.data_ptr() == v.data_ptr() and x.stride()[:2] == (0, 80)
    assert launch.args[9:12] == (3, 0, 80)  # inner batch 3 (heads), outer stride 0 (batch)
    tk.gather_dot(torch.randn(4, 3, 6, 8), v, index)
    assert launch.kwargs["DOT"] and launch.grid[1] == 1


# -- index checks, broadcast gradients (PyTorch gathers) -------------------------------------


def test_debug_mode_reports_indices_out_of_range(monkeypatch):
    v, w = torch.randn(2, 5, 3), torch.ones(2, 4, 2)
    bad = torch.tensor([[0, 1], [2, 5], [1, 1], [0, 0]]).expand(2, 4, 2)
    monkeypatch.setenv(blocked_gather.DEBUG_ENV, "1")
    with pytest.raises(
        convnn.ConvNNError, match=r"^neighbor index out of range: found 0\.\.5, allowed 0\.\.4"
    ):
        blocked_gather.weighted_gather_sum(v, bad, w)
    with pytest.raises(convnn.ConvNNError, match=r"found -1\.\.0"):
        blocked_gather.gather_dot(
            v[:, :4], v, torch.full((2, 4, 2), -1).index_fill(-1, torch.tensor([1]), 0)
        )
    blocked_gather.weighted_gather_sum(v, bad, w, has_null=True)  # index N: the null row
    monkeypatch.setenv(blocked_gather.DEBUG_ENV, "0")
    checked = []
    monkeypatch.setattr(blocked_gather, "check_index", lambda *a: checked.append(a))
    blocked_gather.weighted_gather_sum(v, bad.clamp(max=4), w)
    assert checked == []  # off: no synchronizing reduction


def test_gradient_of_a_broadcast_table_is_summed_over_its_batch():
    g = torch.Generator().manual_seed(0)
    key = torch.randn(1, 6, 4, dtype=torch.float64, generator=g, requires_grad=True)
    q = torch.randn(3, 5, 4, dtype=torch.float64, generator=g, requires_grad=True)
    index = torch.randint(0, 7, (3, 5, 2), generator=g)
    got = blocked_gather.gather_dot(q, key, index, has_null=True)
    rows = gather_rows(with_null_row(key.expand(3, 6, 4), True), index)
    want = (rows * q[..., None, :]).sum(-1)
    torch.testing.assert_close(got, want, atol=1e-12, rtol=0)
    grads = torch.autograd.grad(got.square().sum(), [q, key])
    expected = torch.autograd.grad(want.square().sum(), [q, key])
    for a, b in zip(grads, expected, strict=True):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)


# -- when the kernels run: the mode, the self-check and its fallback --------------------------


def test_triton_mode(monkeypatch):
    x = torch.zeros(1)
    monkeypatch.setenv(selfcheck.TRITON_ENV, "0")
    assert not selfcheck.use_triton(x)
    monkeypatch.setenv(selfcheck.TRITON_ENV, "force")
    assert selfcheck.use_triton(x) == HAS_TRITON  # any device, no self-check
    monkeypatch.setenv(selfcheck.TRITON_ENV, "auto")
    assert not selfcheck.use_triton(x)  # auto: CUDA tensors only
    monkeypatch.setenv(selfcheck.TRITON_ENV, "forse")
    with pytest.raises(convnn.OptionError, match=r"CONVNN_TRITON='forse'.*did you mean 'force'"):
        selfcheck.use_triton(x)


@pytest.fixture
def as_if_cuda(monkeypatch):
    """The CPU taken for a CUDA device by ``auto``, with no self-check run yet; the kernels
    (replaced by each test) count as installed."""
    monkeypatch.delenv(selfcheck.TRITON_ENV, raising=False)
    monkeypatch.setattr(selfcheck, "_on_kernel_device", lambda x: True)
    monkeypatch.setattr(selfcheck, "_RESULTS", {})
    monkeypatch.setattr(tk, "available", lambda: True)
    return monkeypatch


def attention_outputs(layer: convnn.ConvNNAttention, x: torch.Tensor) -> dict:
    out = {}
    for backend in ("fast", "reference"):
        layer.options = convnn.ConvNNOptions(**{**layer.options.__dict__, "backend": backend})
        y = layer(x)
        out[backend] = (y, *torch.autograd.grad(y.square().sum(), [x, layer.qkv.weight]))
    return out


def test_failing_kernel_warns_once_and_falls_back(as_if_cuda):
    """A kernel that fails to compile: one warning of one line, then the PyTorch gathers
    for the rest of the process, with the reference's results."""
    calls = []

    def broken(*args):
        calls.append(1)
        raise RuntimeError("PassManager::run failed (injected)\nmore detail")

    as_if_cuda.setattr(tk, "gather_dot", broken)
    as_if_cuda.setattr(tk, "gather_sum", broken)
    torch.manual_seed(0)
    attn = convnn.ConvNNAttention(16, 2, k=4, weighting="softmax").double()
    x = torch.randn(2, 17, 16, dtype=torch.float64, requires_grad=True)
    with pytest.warns(RuntimeWarning) as record:
        out = attention_outputs(attn, x)
    assert len(record) == 1 and len(calls) == 1
    message = str(record[0].message)
    assert "\n" not in message
    assert message.startswith(
        "convnn: Triton self-check failed on cpu (kernel failed: PassManager::run failed "
        "(injected)); the PyTorch gathers"
    )
    for a, b in zip(out["fast"], out["reference"], strict=True):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        attention_outputs(attn, x)  # no second warning, no second try
    assert len(calls) == 1
    assert not selfcheck.results()["cpu"].ok


def test_wrong_kernel_is_a_mismatch(as_if_cuda):
    as_if_cuda.setattr(
        tk, "gather_sum", lambda v, index, w: torch.zeros(*index.shape[:-1], v.shape[-1])
    )
    as_if_cuda.setattr(tk, "gather_dot", lambda q, key, index: torch.zeros(index.shape))
    with pytest.warns(RuntimeWarning, match=r"MISMATCH \(allowed 1e-04\) PyTorch"):
        assert not selfcheck.triton_ready("cpu")
    assert not selfcheck.use_triton(torch.zeros(1))


def test_a_correct_kernel_passes_and_is_used(as_if_cuda):
    """The fallback is taken on failure only: a kernel that computes the right values
    passes the self-check and then serves the layer's gathers."""
    used = []

    def good_sum(v, index, w):
        used.append("sum")
        rows = gather_rows(v.expand(*index.shape[:-2], *v.shape[-2:]).contiguous(), index)
        return (rows * w[..., None]).sum(-2)

    def good_dot(q, key, index):
        rows = gather_rows(key.expand(*index.shape[:-2], *key.shape[-2:]).contiguous(), index)
        return (rows * q[..., None, :]).sum(-1)

    as_if_cuda.setattr(tk, "gather_sum", good_sum)
    as_if_cuda.setattr(tk, "gather_dot", good_dot)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert selfcheck.triton_ready("cpu")
    assert selfcheck.results()["cpu"].detail.startswith("matches PyTorch")
    used.clear()
    attn = convnn.ConvNNAttention(16, 2, k=4, weighting="softmax", kernel="sum")
    attn(torch.randn(1, 17, 16))
    assert used == ["sum"]


# -- convnn doctor ----------------------------------------------------------------------------


def test_doctor_reports_versions_paths_and_no_gpu(capsys, monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert doctor.main([]) == 0
    text = capsys.readouterr().out
    assert f"torch {torch.__version__.split('+')[0]}" in text
    assert "no CUDA device" in text and "Triton self-check:\n  not run: no CUDA device" in text
    for name in ("conv", "window_attention", "shifts", "sdpa", "dense", "blocked", "reference"):
        assert f"\n  {name} " in text
    assert doctor.main(["--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["backend"] == "fast" and r["triton_mode"] == "auto" and r["selfcheck"] == []
    assert [p["name"] for p in r["paths"]][-2:] == ["blocked", "reference"]


def test_doctor_exits_1_on_a_failed_selfcheck_or_bad_setting(capsys, monkeypatch):
    monkeypatch.setattr(doctor, "_checked_devices", lambda devices: ["cpu"])
    monkeypatch.setattr(tk, "available", lambda: True)
    monkeypatch.setattr(tk, "gather_dot", lambda *a: 1 / 0)
    assert doctor.main([]) == 1
    out = capsys.readouterr().out
    assert "  cpu      FAILED: kernel failed: division by zero" in out
    assert "problem: Triton self-check failed on cpu" in out
    monkeypatch.setenv("CONVNN_BACKEND", "fastest")
    assert doctor.main([]) == 1
    assert (
        "problem: environment variable CONVNN_BACKEND='fastest' is not allowed"
        in capsys.readouterr().out
    )


def test_convnn_doctor_command_on_the_interpreter():
    """``convnn doctor --json`` with ``TRITON_INTERPRET=1``: the self-check runs (and
    passes) on the CPU, and Lightning is not imported."""
    code = (
        "import sys; from lightning_modules.cli import main\n"
        "try:\n    main(['doctor', '--json'])\n"
        "finally:\n    print('lightning imported:', 'lightning' in sys.modules)"
    )
    env = dict(os.environ, TRITON_INTERPRET="1")
    env.pop("CONVNN_TRITON", None)
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=300, cwd=ROOT)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    report, tail = proc.stdout.rsplit("\n", 2)[0], proc.stdout.rsplit("\n", 2)[1]
    assert tail == "lightning imported: False"
    checks = json.loads(report)["selfcheck"]
    assert [(c["device"], c["ok"]) for c in checks] == [("cpu", True)], checks


# -- on a GPU (benchmarks/gpu_check.sh) ---------------------------------------------------------


@CUDA
def test_cuda_selfcheck_passes():
    assert selfcheck.triton_ready("cuda")
    assert selfcheck.use_triton(torch.zeros(1, device="cuda"))


@CUDA
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("k", [9, 40])
def test_cuda_kernels_match_pytorch(dtype, k):
    g = torch.Generator().manual_seed(0)
    key = torch.randn(4, 12, 197, 64, generator=g).to("cuda", dtype)
    q = torch.randn(4, 12, 197, 64, generator=g).to("cuda", dtype)
    index = torch.randint(0, 198, (4, 12, 197, k), generator=g).cuda()
    w = torch.randn(4, 12, 197, k, generator=g).to("cuda", dtype)
    rows = gather_rows(with_null_row(key, True).double(), index)
    tol = {torch.float32: 1e-4, torch.bfloat16: 3e-2, torch.float64: 1e-12}[dtype]
    got = tk.gather_dot(q, key[:, :], index).double()
    torch.testing.assert_close(
        got, (rows * q.double()[..., None, :]).sum(-1), atol=tol * 8, rtol=tol
    )
    got = tk.gather_sum(key, index, w).double()
    torch.testing.assert_close(got, (rows * w.double()[..., None]).sum(-2), atol=tol * 8, rtol=tol)


@CUDA
def test_cuda_output_past_2_31_elements():
    """A gathered sum whose output has more than 2**31 elements (4.3 GB in bf16)."""
    if torch.cuda.get_device_properties(0).total_memory < 24 * 2**30:
        pytest.skip("needs 24 GiB of GPU memory")
    rows, C, N = 2**31 // 256 + 64, 256, 1000
    v = torch.randn(N, C, device="cuda", dtype=torch.bfloat16)
    index = torch.randint(0, N, (rows, 2), device="cuda")
    w = torch.ones(rows, 2, device="cuda", dtype=torch.bfloat16)
    out = tk.gather_sum(v, index, w)
    for r in (0, rows // 2, rows - 1):
        want = v[index[r, 0]].float() + v[index[r, 1]].float()
        torch.testing.assert_close(out[r].float(), want, atol=0.05, rtol=0.02)
    del out


@CUDA
def test_cuda_attention_float64_fast_equals_reference():
    torch.manual_seed(0)
    attn = convnn.ConvNNAttention(64, 4, k=7, weighting="softmax").cuda().double()
    x = torch.randn(3, 65, 64, device="cuda", dtype=torch.float64, requires_grad=True)
    out = attention_outputs(attn, x)
    for a, b in zip(out["fast"], out["reference"], strict=True):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=0)
