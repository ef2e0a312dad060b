"""Deterministic top-k selection (docs/method.md §1.5).

Selection never carries a gradient: it ranks float32 (or float64) scores so that
ties go to the lower candidate slot, which is the lower token index because
candidate tables are in raster order.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .geometry import CandidateTable


def _ranked_by_key(scores: Tensor, k: int) -> Tensor:
    """Exact and branch-free: float32 scores packed with their slot into one int64 key
    (order-preserving bits of the score, then the inverted slot), then one ``topk``."""
    bits = (scores + 0.0).view(torch.int32)  # + 0.0 turns -0.0 into 0.0
    ordered = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits).to(torch.int64)
    slot = torch.arange(scores.shape[-1], device=scores.device, dtype=torch.int64)
    return ((ordered << 32) | (0xFFFFFFFF - slot)).topk(k, dim=-1).indices


def stable_sorted(scores: Tensor, k: int) -> Tensor:
    """Slots of the ``k`` highest ``scores`` by a full stable sort (the reference ranking)."""
    return torch.sort(scores, dim=-1, descending=True, stable=True).indices[..., :k]


def ranked_slots(scores: Tensor, k: int) -> Tensor:
    """Slots of the ``k`` highest ``scores`` ``(..., M)``, best first, ties to the lower slot.

    Eager float32: one ``topk`` of ``k + 1``, re-ordered so equal scores go by slot;
    only rows whose ``k``-th and ``k+1``-th scores tie are redone with a stable
    sort. Under ``torch.compile`` the branch-free packed-key ``topk`` is used.
    float64 (tests) uses the stable sort.
    """
    if scores.dtype != torch.float32:
        return stable_sorted(scores, k)
    if torch.compiler.is_compiling():
        return _ranked_by_key(scores, k)
    M = scores.shape[-1]
    vals, slots = scores.topk(min(k + 1, M), dim=-1)
    by_slot = slots.argsort(dim=-1)
    vals, slots = vals.gather(-1, by_slot), slots.gather(-1, by_slot)
    by_value = vals.argsort(dim=-1, descending=True, stable=True)
    vals, slots = vals.gather(-1, by_value), slots.gather(-1, by_value)
    if M == k:
        return slots
    tie = vals[..., k - 1] == vals[..., k]
    slots = slots[..., :k]
    if not scores.is_meta and bool(tie.any()):  # meta: shapes only (model checks)
        rows = tie.nonzero(as_tuple=True)
        slots = slots.index_put(rows, stable_sorted(scores[rows], k))
    return slots


def top_k(
    scores: Tensor, k: int, table: CandidateTable, order: str, exact_sort: bool = False
) -> tuple[Tensor, Tensor]:
    """Select ``k`` of ``M`` candidates from detached ``scores`` ``(*, Nq, M)``.

    Every selection of every backend goes through this function.
    Returns ``(index, slots)``, both ``(*, Nq, k)``: token indices and candidate slots,
    in rank order or, for ``order="offset"``, in raster order of the neighbor position.
    ``exact_sort`` (the reference backend) ranks with a full stable sort.
    """
    if table.forced_self:  # slot 0 (the query) always, its sampled copy never
        scores = torch.cat((torch.full_like(scores[..., :1], float("inf")), scores[..., 1:]), -1)
        scores = scores.masked_fill(table.duplicates(), float("-inf"))
    slots = stable_sorted(scores, k) if exact_sort else ranked_slots(scores, k)
    index = table.index.expand(scores.shape).gather(-1, slots)
    if order == "offset":
        raster = index if table.forced_self else slots
        perm = raster.argsort(dim=-1, stable=True)
        slots, index = slots.gather(-1, perm), index.gather(-1, perm)
    return index, slots
