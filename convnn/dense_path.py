"""Small-N fast path: neighbor weights as a sparse-in-content dense matrix.

When every token is a candidate and the token count is small next to the
channels (``N <= 2 C``, e.g. a ViT on 32x32 images), matrix products beat
gathers: the similarity ``S`` is computed once (with gradient), the top-k is
read off ``S``, the ``k`` weights of each query are scattered into a zero
``(*, Nq, N)`` matrix ``P`` and the ``sum`` kernel is ``P @ value``. ``P`` is no
larger than the values, and every step is a BLAS call or a cheap gather.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .geometry import CandidateTable
from .options import ConvNNOptions
from .selection import top_k
from .similarity import feature_scores

FEATURE = ("dot", "cosine", "euclidean")


def applies(opts: ConvNNOptions, value: Tensor, query: Tensor) -> bool:
    """Whether :func:`dense_small` computes this configuration."""
    N, C = value.shape[-2:]
    return (
        opts.candidates == "all"
        and opts.kernel == "sum"
        and opts.similarity in FEATURE
        and (opts.weighting == "none" or opts.score_for_weights in FEATURE)
        and query.shape[-2] == N
        and N <= 2 * C
    )


def dense_small(
    opts: ConvNNOptions,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    table: CandidateTable,
    k: int,
    dropout_p: float = 0.0,
) -> Tensor:
    """``sum``-kernel ConvNN over all candidates: ``(*, N, C)`` outputs."""
    weighted = opts.weighting != "none"
    with torch.set_grad_enabled(weighted and torch.is_grad_enabled()):
        scores = feature_scores(opts.similarity, query, key)  # (*, N, N)
    index, _ = top_k(scores.detach(), k, table, "rank")  # (*, N, k)
    if weighted:
        kind = opts.score_for_weights
        wscores = scores if kind == opts.similarity else feature_scores(kind, query, key)
        w = wscores.gather(-1, index)
        w = w.softmax(-1) if opts.weighting == "softmax" else w
        if dropout_p:
            w = F.dropout(w, dropout_p)
    else:
        w = value.new_ones(index.shape)
    P = value.new_zeros(*index.shape[:-1], value.shape[-2])
    P = P.scatter(-1, index, w.to(value.dtype))  # (*, N, N), k non-zeros per row
    return P @ value
