"""Similarity scores between queries and candidates (docs/method.md §1.4).

Candidates come either *shared* by all queries, ``(*, M, D)``, or *per query*,
``(*, Nq, M, D)``; scores are ``(*, Nq, M)``, higher means more similar (``*`` is
any number of batch dimensions, e.g. batch and heads).
Scores are computed in at least float32, also under autocast, so that reduced
precision never changes which neighbors are selected.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import get_args

import torch
from torch import Tensor

from ..options import FeatureSimilarity, check_option_table, option_entry
from ..options import Similarity as SimilarityName
from ..validation import check_choice
from .gather import with_null_row

EPS = 1e-8


def autocast_off(device: torch.device) -> contextlib.AbstractContextManager:
    """Autocast switched off on ``device``; no context where it is off already (so
    ``torch.export`` keeps one flat graph rather than a region per call) or on the ``meta``
    device, where models are checked shape by shape."""
    if device.type == "meta" or not torch.is_autocast_enabled(device.type):
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


def negative_distance(sq: Tensor) -> Tensor:
    """``-sqrt(d^2 + eps)`` of squared distances ``sq``: finite gradients at ``d = 0``."""
    return -(sq + EPS).sqrt()


def expanded_distance(q: Tensor, k2: Tensor, dots: Tensor) -> Tensor:
    """Negative distances ``(*, Nq, M)`` from the expansion ``|q|^2 + |k|^2 - 2 q.k``, the
    one formula of every expanded euclidean score (``q`` and the keys already
    :func:`centred`): ``q`` ``(*, Nq, D)``, ``k2`` the keys' ``|k|^2`` broadcastable to
    ``dots`` ``(*, Nq, M)``."""
    sq = (q.square().sum(-1, keepdim=True) + k2 - 2 * dots).clamp(min=0)
    return negative_distance(sq)


# --- the feature formulas, one function per (kind, layout) --------------------------------
# dense: ``q (*, Nq, D)``, ``kc (*, M, D)`` or per query ``(*, Nq, M, D)`` -> ``(*, Nq, M)``.
# gathered: ``q (*, Nq, D)``, ``k (*, N, D)``, ``index (*, Nq, k)`` -> ``(*, Nq, k)`` through
#   ``gather_dot`` (:func:`convnn.backends.blocked_gather.gather_dot`, passed in: ops never import
#   backends); ``known``: the same scores without gradient, reused as forward values.
# window: ``q (B, C, Ho, Wo)``, ``taps`` ``[(B, C, Ho, Wo)] * k`` -> ``(B, k, Ho, Wo)``.
# All take tensors already in the score dtype, with autocast off.

GatherDot = Callable[..., Tensor]
"""``gather_dot(q, key, index, has_null=False, known=None) -> (*, Nq, k)``."""


def _dense_dot(q: Tensor, kc: Tensor, per_query: bool) -> Tensor:
    return _dot(q, kc, per_query) / math.sqrt(q.shape[-1])


def _dense_cosine(q: Tensor, kc: Tensor, per_query: bool) -> Tensor:
    return _dot(unit(q), unit(kc), per_query)


def _dense_euclidean(q: Tensor, kc: Tensor, per_query: bool) -> Tensor:
    if per_query:
        return negative_distance((q.unsqueeze(-2) - kc).square().sum(-1))
    q, kc = centred(q, kc)  # |q|^2 + |k|^2 - 2 q.k, after centring both on the queries' mean
    return expanded_distance(q, kc.square().sum(-1).unsqueeze(-2), _dot(q, kc, per_query))


def _gathered_scaled_dot(
    q: Tensor,
    k: Tensor,
    index: Tensor,
    has_null: bool,
    known: Tensor | None,
    gather_dot: GatherDot,
    scale: float,
) -> Tensor:
    known = None if known is None else known / scale
    return gather_dot(q, k, index, has_null, known) * scale


def _gathered_dot(q, k, index, has_null, known, gather_dot) -> Tensor:
    scale = 1 / math.sqrt(q.shape[-1])
    return _gathered_scaled_dot(q, k, index, has_null, known, gather_dot, scale)


def _gathered_cosine(q, k, index, has_null, known, gather_dot) -> Tensor:
    return _gathered_scaled_dot(unit(q), unit(k), index, has_null, known, gather_dot, 1.0)


def _gathered_euclidean(q, k, index, has_null, known, gather_dot) -> Tensor:
    """Centred expansion; the null token (a zero vector) is centred too."""
    q, k = centred(q, with_null_row(k, has_null))  # k: (*, N or N + 1, D)
    dots = gather_dot(q, k, index)
    k2 = k.square().sum(-1)  # (*, N or N + 1)
    k2 = k2.unsqueeze(-2).expand(*index.shape[:-1], k2.shape[-1]).gather(-1, index)
    return expanded_distance(q, k2, dots)


def _window_scaled_dot(q: Tensor, taps: list[Tensor], scale: float) -> Tensor:
    return torch.stack([(q * t).sum(1) for t in taps], dim=1) * scale


def _window_dot(q: Tensor, taps: list[Tensor]) -> Tensor:
    return _window_scaled_dot(q, taps, 1 / math.sqrt(q.shape[1]))


def _window_cosine(q: Tensor, taps: list[Tensor]) -> Tensor:
    return _window_scaled_dot(unit(q, dim=1), [unit(t, dim=1) for t in taps], 1.0)


def _window_euclidean(q: Tensor, taps: list[Tensor]) -> Tensor:
    return torch.stack([negative_distance((q - t).square().sum(1)) for t in taps], dim=1)


def _dot_flops(d: int) -> int:
    return 2 * d  # one multiply-add per channel (normalizations and roots are free)


# --- how a kind combines its feature and location scores ----------------------------------
# ``(feature, location, lam, distinct, dim) -> scores``; ``dim`` is the candidate dim.


def _feature_only(feature, location, lam, distinct, dim) -> Tensor:
    return feature


def _location_only(feature, location, lam, distinct, dim) -> Tensor:
    return location


def _mixed(feature, location, lam, distinct, dim) -> Tensor:
    f, loc = feature.movedim(dim, -1), location.movedim(dim, -1)
    return mixed_scores(f, loc, lam, distinct).movedim(-1, dim)


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


@dataclass(frozen=True)
class SimilaritySpec:
    """One value of the ``similarity`` option and everything every path needs of it.

    A *feature* similarity (``dot``, ``cosine``, ``euclidean``) has its formula in each
    layout a path uses; the others are built from the Chebyshev ``location`` scores and,
    for ``mixed``, the ``mixed_feature`` scores (:meth:`feature_kind`) by ``combine``.

    Attributes:
        name: the option value.
        dense: ``(q, kc, per_query) -> (*, Nq, M)`` scores of every candidate
            (``ops.scores``, the ``reference``/``dense`` paths).
        gathered: ``(q, k, index, has_null, known, gather_dot) -> (*, Nq, k)`` scores of
            gathered neighbors (the ``blocked`` path).
        window: ``(q, taps) -> (B, k, Ho, Wo)`` scores of window taps (``shifts``).
        pair_flops: ``d -> FLOPs`` of one query-candidate score (``tools.profile``).
        normalised: the features are scaled to unit length first (``cosine``).
        centred: expansions ``|q|^2 + |k|^2 - 2 q.k`` centre on the queries (:func:`centred`).
        location: reads the Chebyshev distances of the candidates (needs a grid).
        mixes_feature: reads the ``mixed_feature`` similarity.
        over_candidates: a candidate's score depends on every candidate (standardized),
            so the scores of selected neighbors are the dense scores, gathered.
        combine: ``(feature, location, lam, distinct, dim) -> scores`` of this kind.
    """

    name: str
    dense: Callable[[Tensor, Tensor, bool], Tensor] | None = None
    gathered: Callable[..., Tensor] | None = None
    window: Callable[[Tensor, list[Tensor]], Tensor] | None = None
    pair_flops: Callable[[int], int] | None = None
    normalised: bool = False
    centred: bool = False
    location: bool = False
    mixes_feature: bool = False
    over_candidates: bool = False
    combine: Callable[..., Tensor] = field(default=_feature_only, compare=False)

    @property
    def feature(self) -> bool:
        """Scored from the features alone, with its own formula in every layout."""
        return self.dense is not None

    def feature_kind(self, mixed_feature: str) -> str | None:
        """The feature similarity this kind reads (``mixed_feature`` for ``mixed``), or
        ``None`` (``location``)."""
        if self.mixes_feature:
            return mixed_feature
        return self.name if self.feature else None


SIMILARITIES: dict[str, SimilaritySpec] = {
    spec.name: spec
    for spec in (
        SimilaritySpec("dot", _dense_dot, _gathered_dot, _window_dot, _dot_flops),
        SimilaritySpec(
            "cosine", _dense_cosine, _gathered_cosine, _window_cosine, _dot_flops, normalised=True
        ),
        SimilaritySpec(
            "euclidean",
            _dense_euclidean,
            _gathered_euclidean,
            _window_euclidean,
            _dot_flops,
            centred=True,
        ),
        SimilaritySpec("location", location=True, combine=_location_only),
        SimilaritySpec(
            "mixed",
            location=True,
            mixes_feature=True,
            over_candidates=True,
            combine=_mixed,
        ),
    )
}
"""Every value of the ``similarity`` option (:data:`convnn.options.Similarity`), by name."""

FEATURE_SIMILARITIES: tuple[str, ...] = tuple(n for n, s in SIMILARITIES.items() if s.feature)
"""The feature similarities (:data:`convnn.options.FeatureSimilarity`), in table order."""


def check_similarity_table(
    table: Mapping[str, SimilaritySpec],
    kinds: Sequence[str] = get_args(SimilarityName),
    feature_kinds: Sequence[str] = get_args(FeatureSimilarity),
) -> None:
    """Raise ``TypeError`` unless ``table`` has one complete entry per value of the
    ``similarity`` option (``kinds``, :func:`~convnn.options.check_option_table`) and its
    feature entries are ``feature_kinds``: a new value added to the ``Literal`` but not to
    the table, or a feature entry missing the formula of one path, fails at import instead
    of silently scoring another way."""
    check_option_table("similarity", table, kinds)
    problems = []
    features = {name for name, spec in table.items() if spec.feature}
    if features != set(feature_kinds):
        problems.append(f"feature entries {sorted(features)} != {sorted(feature_kinds)}")
    for name, spec in table.items():
        if spec.name != name:
            problems.append(f"entry {name!r} is named {spec.name!r}")
        layouts = {"dense": spec.dense, "gathered": spec.gathered, "window": spec.window}
        layouts["pair_flops"] = spec.pair_flops
        missing = [layout for layout, fn in layouts.items() if fn is None]
        if spec.feature and missing:
            problems.append(f"feature similarity {name!r} has no {missing}")
        if not spec.feature and not (spec.location or spec.mixes_feature):
            problems.append(f"{name!r} has no formula and reads neither features nor location")
    if problems:
        raise TypeError("similarity table out of step with the options: " + "; ".join(problems))


check_similarity_table(SIMILARITIES)


def similarity_spec(kind: str, key: str = "similarity") -> SimilaritySpec:
    """The table entry of ``kind``; an unknown kind raises
    :class:`~convnn.errors.OptionError` naming ``key`` and the allowed values."""
    return option_entry(SIMILARITIES, key, kind)


def feature_similarity(kind: str, key: str = "similarity") -> SimilaritySpec:
    """The entry of the feature similarity ``kind``; anything else raises
    :class:`~convnn.errors.OptionError` naming ``key`` and the feature similarities."""
    spec = SIMILARITIES.get(kind)
    if spec is None or not spec.feature:
        check_choice(key, kind, FEATURE_SIMILARITIES)
    return spec  # type: ignore[return-value]


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
    spec = feature_similarity(kind)
    with autocast_off(q.device):
        dtype = score_dtype(q.dtype)
        return spec.dense(q.to(dtype), kc.to(dtype), per_query)  # type: ignore[misc]


def pair_flops(kind: str, mixed_feature: str, d: int) -> int:
    """FLOPs of one query-candidate score of ``kind`` on ``d`` feature channels (0 for
    ``location``: input-independent tables are free)."""
    feature = similarity_spec(kind).feature_kind(mixed_feature)
    return 0 if feature is None else feature_similarity(feature).pair_flops(d)  # type: ignore[misc]
