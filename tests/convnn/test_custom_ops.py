"""The Triton gather kernels as PyTorch operators, ``convnn::gather_sum`` and
``convnn::gather_dot`` (docs/gpu.md, "torch.export, torch.compile and the FLOP counter").

On Triton's CPU interpreter, in one subprocess (``tests/helpers/custom_ops_interpreted.py``):
the operators and their gradients equal PyTorch's gathers in float64, ``opcheck`` passes, and
an exported and a compiled layer run the kernels through them. In this process, where no
kernel runs: ``FlopCounterMode`` counts them (meta tensors), and ``torch.export`` keeps them
as nodes where the kernels would run and traces PyTorch's gathers elsewhere.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from interpreted_checks import run_interpreted
from torch.utils.flop_counter import FlopCounterMode

import convnn
from convnn.backends import selfcheck
from convnn.backends import triton_kernels as tk

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(not tk.available(), reason="needs triton")

if tk.available():
    import custom_ops_interpreted

    INTERPRETED = list(custom_ops_interpreted.CHECKS)
else:  # pragma: no cover - triton ships with torch
    INTERPRETED = []


@pytest.fixture(scope="module")
def interpreted() -> dict[str, str]:
    """Every check of ``custom_ops_interpreted.py``, run once in one interpreted subprocess."""
    return run_interpreted("custom_ops_interpreted.py")


@pytest.mark.parametrize("name", INTERPRETED)
def test_operators_on_the_interpreter(interpreted, name):
    """See each check's docstring in ``tests/helpers/custom_ops_interpreted.py``."""
    assert interpreted[name] == "ok", interpreted[name]


def _targets(exported: torch.export.ExportedProgram) -> set[str]:
    """The ``convnn`` operators called anywhere in ``exported`` (nested graphs included)."""
    nodes = (n for gm in exported.graph_module.modules() for n in gm.graph.nodes)
    return {str(n.target) for n in nodes if str(n.target).startswith("convnn.")}


class GatherSum(torch.nn.Module):
    def forward(self, v: torch.Tensor, index: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return tk.gather_sum(v, index, w) * 2


def test_export_keeps_the_operator_as_one_node():
    """``torch.export`` traces the operator's fake implementation (no kernel runs) and keeps
    one node with the output's shape and dtype."""
    v, w = torch.randn(1, 2, 7, 5, dtype=torch.float64), torch.randn(3, 2, 4, 3)
    index = torch.randint(0, 8, (3, 2, 4, 3))
    exported = torch.export.export(GatherSum(), (v, index, w))
    nodes = [n for n in exported.graph.nodes if str(n.target) == "convnn.gather_sum.default"]
    assert len(nodes) == 1
    fake = nodes[0].meta["val"]
    assert fake.shape == (3, 2, 4, 5) and fake.dtype == torch.float64


@pytest.mark.parametrize(
    ("mode", "ops"), [("force", {"convnn.gather_sum.default"}), ("auto", set())]
)
def test_exported_layer_holds_the_operators_where_the_kernels_run(monkeypatch, mode, ops):
    """Where the kernels run (``force``; ``auto`` on a GPU) the exported layer calls the
    operator; on the CPU under ``auto`` it holds PyTorch's gathers and no ``convnn`` node."""
    monkeypatch.setenv(selfcheck.TRITON_ENV, mode)
    torch.manual_seed(0)
    attn = convnn.ConvNNAttention(16, 2, k=4, weighting="softmax").eval()
    x = torch.randn(2, 17, 16)  # N > 2 * head_dim: the blocked path
    exported = torch.export.export(attn, (x,))
    assert _targets(exported) == ops
    if not ops:
        torch.testing.assert_close(exported.module()(x), attn(x), atol=1e-6, rtol=0)


def test_flop_counter_counts_the_operators(monkeypatch):
    """``2 * rows * k * C`` per operator call, forward and backward: the weights' gradient
    of ``gather_sum`` is a ``gather_dot`` (and the table's a scatter-add)."""
    monkeypatch.setenv(selfcheck.TRITON_ENV, "force")  # the backward's gathers: the kernels
    meta = dict(device="meta", dtype=torch.float32)
    v = torch.empty(1, 2, 50, 8, **meta, requires_grad=True)
    w = torch.empty(4, 2, 30, 5, **meta, requires_grad=True)
    q = torch.empty(4, 2, 30, 8, **meta)
    index = torch.empty(4, 2, 30, 5, device="meta", dtype=torch.long)
    rows, k, C = 4 * 2 * 30, 5, 8
    with FlopCounterMode(display=False) as counter:
        tk.gather_dot(q, v.detach(), index)
    assert counter.get_flop_counts()["Global"] == {torch.ops.convnn.gather_dot: 2 * rows * k * C}
    with FlopCounterMode(display=False) as counter:
        out = tk.gather_sum(v, index, w)
        torch.autograd.grad(out.sum(), [w])
    counts = counter.get_flop_counts()["Global"]
    assert counts[torch.ops.convnn.gather_sum] == 2 * rows * k * C
    assert counts[torch.ops.convnn.gather_dot] == 2 * rows * k * C
