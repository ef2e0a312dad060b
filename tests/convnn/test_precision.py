"""The selection promises of docs/precision.md, checked on the inputs that break naive
arithmetic: a common offset of 1000, zero-padded maps, unit-scale features, float32 and
float64. For each similarity every selected neighbor's *exact* score (float64 from the same
inputs) must lie within the documented gap of the k-th exact score."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from convnn import ConvNNOptions
from convnn.functional import Grid, select, select2d

DOC = Path(__file__).resolve().parents[2] / "docs" / "precision.md"
SENTENCES = {
    "location": "exact in every dtype: distances are integers, ties go to the lower token index.",
    "dot": "the selection is exact up to near-ties of 2 * D * eps * sum_i |q_i k_ji| / sqrt(D).",
    "cosine": "the selection is exact up to near-ties of 2 * (D + 4) * eps.",
    "euclidean": "the selection is exact up to near-ties of 4 * (D + 2) * eps * (2 |q - m|^2 "
    "+ |k_j - m|^2 + |k_kth - m|^2) in squared distance, m the mean of the queries scored "
    "together.",
    "mixed": "the selection is exact up to near-ties of lam * (feature gap) / std(feature "
    "scores) in the mixed score.",
}
K = 9
DTYPES = pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
INPUTS = pytest.mark.parametrize("offset", [0.0, 1000.0], ids=["unit", "offset"])


def eps(dtype: torch.dtype) -> float:
    return 2.0**-24 if dtype == torch.float32 else 2.0**-53


def test_every_promise_is_written_in_the_docs():
    text = " ".join(DOC.read_text().split())
    for name, sentence in SENTENCES.items():
        assert f"**{name}**: {sentence}" in text, name


def tokens(offset: float, dtype: torch.dtype, n: int = 64, d: int = 8) -> torch.Tensor:
    torch.manual_seed(0)
    return (torch.randn(2, n, d, dtype=torch.float64) + offset).to(dtype)


def assert_within_gap(exact: torch.Tensor, index: torch.Tensor, gap: torch.Tensor) -> int:
    """``exact`` ``(*, Nq, N)`` exact scores (higher is better), ``index`` ``(*, Nq, k)``
    the selection, ``gap`` broadcastable to ``index``: every selected score is at least
    the k-th best exact score minus ``gap``. Returns how many queries differ from the
    exact set (near-ties)."""
    kth = exact.topk(index.shape[-1], dim=-1).values[..., -1:]
    chosen = exact.gather(-1, index)
    assert (chosen >= kth - gap).all(), (chosen - kth).min()
    best = exact.sort(dim=-1, descending=True, stable=True).indices[..., : index.shape[-1]]
    return int((best.sort(-1).values != index.sort(-1).values).any(-1).sum())


@DTYPES
@INPUTS
def test_dot(dtype, offset):
    x = tokens(offset, dtype)
    D = x.shape[-1]
    index = select(x, options=ConvNNOptions(k=K, similarity="dot")).index
    q = x.double()
    exact = q @ q.transpose(-1, -2) / math.sqrt(D)
    size = (q.abs().unsqueeze(-2) * q.abs().unsqueeze(-3)).sum(-1).amax(-1, keepdim=True)
    assert_within_gap(exact, index, 2 * D * eps(dtype) * size / math.sqrt(D))


@DTYPES
@INPUTS
def test_cosine(dtype, offset):
    x = tokens(offset, dtype)
    D = x.shape[-1]
    index = select(x, options=ConvNNOptions(k=K, similarity="cosine")).index
    u = F.normalize(x.double(), dim=-1)
    assert_within_gap(u @ u.transpose(-1, -2), index, torch.tensor(2 * (D + 4) * eps(dtype)))


def euclidean_gap(q: torch.Tensor, keys: torch.Tensor, index: torch.Tensor, dtype) -> tuple:
    """Exact negative squared distances ``(B, Nq, N)`` and the documented gap per selected
    neighbor (``q`` ``(B, Nq, D)``, ``keys`` ``(B, N, D)`` in float64)."""
    D = q.shape[-1]
    m = q.mean(-2, keepdim=True)
    sq = (q.unsqueeze(-2) - keys.unsqueeze(-3)).square().sum(-1)
    spread_q = (q - m).square().sum(-1, keepdim=True)  # (B, Nq, 1)
    spread_k = (keys - m).square().sum(-1).unsqueeze(-2).expand_as(sq)  # (B, Nq, N)
    kth_slot = sq.topk(index.shape[-1], dim=-1, largest=False).indices[..., -1:]
    spread_kth = spread_k.gather(-1, kth_slot)
    spread_j = spread_k.gather(-1, index)
    gap = 4 * (D + 2) * eps(dtype) * (2 * spread_q + spread_j + spread_kth)
    return -sq, gap


@DTYPES
@INPUTS
def test_euclidean_tokens(dtype, offset):
    x = tokens(offset, dtype)
    index = select(x, options=ConvNNOptions(k=K, similarity="euclidean")).index
    exact, gap = euclidean_gap(x.double(), x.double(), index, dtype)
    assert_within_gap(exact, index, gap)


@DTYPES
@INPUTS
@pytest.mark.parametrize("backend", ["reference", "fast"])
def test_euclidean_zero_padded_map(dtype, offset, backend):
    """The case the centring on the keys' mean failed: zero padding tokens among the keys."""
    torch.manual_seed(0)
    x = (torch.randn(1, 8, 10, 10, dtype=torch.float64) + offset).to(dtype)
    opts = ConvNNOptions(k=K, similarity="euclidean", backend=backend)
    sel = select2d(x, (3, 3), (1, 1), (1, 1), options=opts)
    keys = F.pad(x, (1, 1, 1, 1)).double().flatten(2).transpose(1, 2)  # (1, 144, 8)
    q = keys[:, sel.query_index]
    exact, gap = euclidean_gap(q, keys, sel.index, dtype)
    differ = assert_within_gap(exact, sel.index, gap)
    assert differ == 0  # random features: no near-ties at all, the exact sets


@DTYPES
def test_location_is_exact(dtype):
    torch.manual_seed(0)
    x = torch.randn(1, 4, 7, 9, dtype=dtype)
    opts = ConvNNOptions(k=K, similarity="location", backend="reference")
    sel = select2d(x, (3, 3), (1, 1), (1, 1), options=opts)
    rows, cols = torch.meshgrid(torch.arange(9), torch.arange(11), indexing="ij")
    pos = torch.stack((rows.flatten(), cols.flatten()), -1)  # the 9x11 padded map
    q = pos[sel.query_index]
    dist = (q[:, None] - pos[None]).abs().amax(-1).double()  # (Nq, N) Chebyshev
    best = (-dist).sort(dim=-1, descending=True, stable=True).indices[:, :K]
    assert torch.equal(sel.index[0].sort(-1).values, best.sort(-1).values)


@DTYPES
@INPUTS
def test_mixed(dtype, offset):
    x = tokens(offset, dtype, n=64)
    D, lam = x.shape[-1], 0.5
    opts = ConvNNOptions(k=K, similarity="mixed", mixed_feature="cosine", lam=lam)
    grid = Grid(8, 8)
    index = select(x, options=opts, grid=grid).index
    u = F.normalize(x.double(), dim=-1)
    feature = u @ u.transpose(-1, -2)
    pos = grid.positions(torch.arange(64))
    location = -(pos[:, None] - pos[None]).abs().amax(-1).double()

    def z(s):
        c = s - s.mean(-1, keepdim=True)
        return c / c.square().mean(-1, keepdim=True).sqrt()

    exact = lam * z(feature) + (1 - lam) * z(location)
    feature_std = (feature - feature.mean(-1, keepdim=True)).square().mean(-1).sqrt()
    gap = lam * 2 * (D + 4) * eps(dtype) / feature_std.unsqueeze(-1)
    assert_within_gap(exact, index, gap)
