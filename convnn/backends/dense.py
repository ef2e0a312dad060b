"""The ``dense`` path: neighbor weights as a sparse-in-content dense matrix.

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

from ..ops import topk
from ..ops.scores import weighting_spec
from ..ops.similarity import FEATURE_SIMILARITIES, feature_scores, similarity_spec
from . import Path, TokenCall, register


def can_run(call: TokenCall) -> bool:
    opts = call.options
    N, C = call.value.shape[-2:]
    return (
        opts.candidates == "all"
        and opts.kernel == "sum"
        and similarity_spec(opts.similarity).feature
        and (
            not weighting_spec(opts.weighting).weighted
            or similarity_spec(opts.score_for_weights).feature
        )
        and call.query.shape[-2] == N
        and N <= 2 * C
    )


def run(call: TokenCall) -> Tensor:
    """``sum``-kernel ConvNN over all candidates: ``(*, N, C)`` outputs."""
    opts, query, key, value, k = call.options, call.query, call.key, call.value, call.k
    dropout_p = call.drop
    table = call.table()
    scheme = weighting_spec(opts.weighting)
    weighted = scheme.weighted
    with torch.set_grad_enabled(weighted and torch.is_grad_enabled()):
        scores = feature_scores(opts.similarity, query, key)  # (*, N, N)
    index, _ = topk.top_k(scores.detach(), k, table, "rank")  # (*, N, k)
    if weighted:
        kind = opts.score_for_weights
        wscores = scores if kind == opts.similarity else feature_scores(kind, query, key)
        w = wscores.gather(-1, index)
        w = scheme.weights(w)
        if dropout_p:
            w = F.dropout(w, dropout_p)
    else:
        w = value.new_ones(index.shape)
    P = value.new_zeros(*index.shape[:-1], value.shape[-2])
    P = P.scatter(-1, index, w.to(value.dtype))  # (*, N, N), k non-zeros per row
    return call.with_bias(P @ value)


register(
    Path(
        "dense",
        "tokens",
        can_run,
        run,
        f"candidates='all', kernel='sum', a feature similarity ({', '.join(FEATURE_SIMILARITIES)}) "
        "for selection and weights, a query per token and N <= 2 * channels",
    )
)
