"""The ``sdpa`` path: every token selected, ``softmax(dot)`` weights and the ``sum``
kernel are exactly scaled dot-product attention (docs/method.md §2), run by
``F.scaled_dot_product_attention`` (flash / memory-efficient kernels where available)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from . import Path, TokenCall, register


def can_run(call: TokenCall) -> bool:
    opts = call.options
    return (
        opts.candidates == "all"
        and call.k == call.num_tokens
        and call.query.shape[-2] == call.num_tokens
        and opts.weighting == "softmax"
        and opts.score_for_weights == "dot"
        and opts.kernel == "sum"
    )


def run(call: TokenCall) -> Tensor:
    """``(*, N, C)`` attention outputs."""
    out = F.scaled_dot_product_attention(call.query, call.key, call.value, dropout_p=call.drop)
    return call.with_bias(out)


register(
    Path(
        "sdpa",
        "tokens",
        can_run,
        run,
        "candidates='all', k equal to the token count, a query per token, "
        "weighting='softmax' by 'dot' and kernel='sum'",
    )
)
