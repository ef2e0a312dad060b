"""Similarity scores between queries and candidates (SPEC §1.4).

Candidates come either *shared* by all queries, ``(*, M, D)``, or *per query*,
``(*, Nq, M, D)``; scores are ``(*, Nq, M)``, higher means more similar (``*`` is
any number of batch dimensions, e.g. batch and heads).
Scores are computed in at least float32, also under autocast, so that reduced
precision never changes which neighbors are selected.
"""

from __future__ import annotations

import contextlib
import math

import torch
from torch import Tensor

EPS = 1e-8


def autocast_off(device: torch.device) -> contextlib.AbstractContextManager:
    """Autocast switched off on ``device`` (nothing to switch on the ``meta`` device, where
    models are checked shape by shape)."""
    if device.type == "meta":
        return contextlib.nullcontext()
    return torch.autocast(device.type, enabled=False)


def score_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 stays float64; everything else is computed in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def unit(x: Tensor, dim: int = -1) -> Tensor:
    """``x / |x|`` along ``dim``. A zero vector (``|x| <= EPS``) stays zero and has a zero
    gradient (``F.normalize`` would give it a gradient of ``1 / EPS``, which overflows
    float16 and swamps every other gradient)."""
    sq = x.square().sum(dim, keepdim=True)
    zero = sq <= EPS**2
    return torch.where(zero, 0.0, x / torch.where(zero, 1.0, sq).sqrt())


def _dot(q: Tensor, kc: Tensor, per_query: bool) -> Tensor:
    if not per_query:
        return q @ kc.transpose(-2, -1)
    return (q.unsqueeze(-2) * kc).sum(-1)


def centred(q: Tensor, k: Tensor) -> tuple[Tensor, Tensor]:
    """``q - m`` and ``k - m`` for ``m`` the mean query ``(*, 1, D)`` (no gradient): the
    expansion ``|q|^2 + |k|^2 - 2 q.k`` of a squared distance loses
    ``~eps * (|q - m|^2 + |k - m|^2)`` to rounding, so centring on the queries keeps the
    distances from a query to the keys near it (the ones selected) exact, whatever the
    common offset of the features and however far the zero padding tokens are."""
    centre = q.mean(-2, keepdim=True).detach()  # distances do not depend on it
    return q - centre, k - centre


def feature_scores(kind: str, q: Tensor, kc: Tensor, per_query: bool = False) -> Tensor:
    """``dot`` (scaled by ``1/sqrt(D)``), ``cosine`` or ``euclidean`` (negative distance).

    Args:
        q: ``(*, Nq, D)`` query features.
        kc: ``(*, M, D)`` shared or ``(*, Nq, M, D)`` per-query candidate features.
        per_query: which of the two layouts ``kc`` has.
    Returns:
        ``(*, Nq, M)`` scores. A zero vector has cosine 0 to everything, with a zero
        gradient (:func:`unit`); the distance is ``sqrt(d^2 + eps)`` so that coincident
        tokens have finite gradients.
    """
    with autocast_off(q.device):
        dtype = score_dtype(q.dtype)
        q, kc = q.to(dtype), kc.to(dtype)
        if kind == "dot":
            return _dot(q, kc, per_query) / math.sqrt(q.shape[-1])
        if kind == "cosine":
            return _dot(unit(q), unit(kc), per_query)
        if kind == "euclidean":
            if per_query:
                sq = (q.unsqueeze(-2) - kc).square().sum(-1)
            else:  # |q|^2 + |k|^2 - 2 q.k, after centring both on the queries' mean
                q, kc = centred(q, kc)
                q2 = q.square().sum(-1, keepdim=True)
                k2 = kc.square().sum(-1).unsqueeze(-2)
                sq = (q2 + k2 - 2 * _dot(q, kc, per_query)).clamp(min=0)
            return -(sq + EPS).sqrt()
        raise ValueError(f"similarity={kind!r} is not a feature similarity")


def standardize(scores: Tensor, distinct: Tensor | None = None) -> Tensor:
    """Zero mean, unit variance over the candidates (last dim) of each query. A constant
    row (standard deviation <= EPS) gives zeros with a zero gradient (not ``1 / EPS``).

    ``distinct``: ``(..., M)`` bool, broadcastable to ``scores``; the statistics are
    taken over these candidates only (a sampled table lists the query twice when it is
    also in the sample: once forced, once sampled)."""
    if distinct is None:
        centred = scores - scores.mean(-1, keepdim=True)
        var = centred.square().mean(-1, keepdim=True)
    else:
        w = distinct.to(scores.dtype)
        count = w.sum(-1, keepdim=True)
        centred = scores - (scores * w).sum(-1, keepdim=True) / count
        var = (centred.square() * w).sum(-1, keepdim=True) / count
    flat = var <= EPS**2
    return torch.where(flat, 0.0, centred / torch.where(flat, 1.0, var).sqrt())


def mixed_scores(
    feature: Tensor, location: Tensor, lam: float, distinct: Tensor | None = None
) -> Tensor:
    """``lam * standardized feature + (1 - lam) * standardized location`` similarity
    (statistics over the ``distinct`` candidates, see :func:`standardize`)."""
    return lam * standardize(feature, distinct) + (1 - lam) * standardize(location, distinct)
