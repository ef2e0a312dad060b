"""Parameters and GFLOPs of models with ConvNN layers (``convnn.profile``).

GFLOPs are ``2 x`` multiply-adds (the paper's convention) counted by
``torch.utils.flop_counter.FlopCounterMode`` for every ordinary op. The ConvNN
operator is counted by formula instead of by its internal ops (which depend on the
backend): forward hooks measure what the counter saw inside each ConvNN layer
(outside its child modules such as ``qkv``/``proj``) and replace it with
:func:`convnn_flops`. Like the counter, the formula counts multiply-adds only:
normalizations, softmax and input-independent location tables are free; top-k
comparisons are reported as a separate figure.

Run ``python -m convnn.models.zoo`` for the tables of the ``convnn_*`` models.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

from ..modules import ConvNN1d, ConvNN2d, ConvNNAttention
from ..ops.aggregation import kernel_spec
from ..ops.geometry import ConvWindow
from ..ops.scores import weighting_spec
from ..ops.similarity import pair_flops, similarity_spec
from ..options import ConvNNOptions

__all__ = [
    "ModelProfile",
    "convnn_flops",
    "markdown_table",
    "print_profiles",
    "profile",
    "profile_models",
]

PARTS = ("similarity", "weighting", "aggregation")


def _cpu_sdpa(q, k, v, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(q, k, v)


def _cpu_sdpa_backward(grad_out, q, k, v, *args, out_shape=None, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out, q, k, v)


# The counter has no formula for the CPU flash-attention kernel that F.sdpa uses on CPU.
_CPU_SDPA = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_sdpa_backward,
}


def _num_candidates(opts: ConvNNOptions, num_tokens: int, single_row: bool) -> int:
    if opts.candidates == "all":
        return num_tokens
    if opts.candidates == "window":
        return opts.window_shape[0] * opts.window_shape[1]
    r = opts.num_samples or 0
    if opts.candidates == "spatial" and not single_row:
        r = math.isqrt(r) ** 2
    return r + 1  # the query itself is always a candidate


def _operator_flops(opts: ConvNNOptions, nq: int, m: int, d: int, c: int, o: int) -> dict[str, int]:
    """``nq`` queries, ``m`` candidates; ``d`` feature, ``c`` value, ``o`` output channels."""
    k = opts.k if opts.k is not None else m
    sim = nq * m * pair_flops(opts.similarity, opts.mixed_feature, d)
    weighting = 0
    if weighting_spec(opts.weighting).weighted:
        weighting = nq * k * c  # scale each neighbor
        kind = opts.score_for_weights
        if kind != opts.similarity:  # scored again: every candidate when standardized over them
            pairs = m if similarity_spec(kind).over_candidates else k
            weighting += nq * pairs * pair_flops(kind, opts.mixed_feature, d)
    agg = kernel_spec(opts.kernel).flops(nq, k, c, o)
    topk = nq * m * max(1, math.ceil(math.log2(k))) if k < m else 0
    return {"similarity": sim, "weighting": weighting, "aggregation": agg, "topk": topk}


def convnn_flops(module: nn.Module, input_shape: Sequence[int]) -> dict[str, int]:
    """Analytic cost of one ConvNN layer's operator on an input of ``input_shape``.

    Returns FLOPs (``2 x`` multiply-adds) of ``similarity`` (``2 Nq M D`` for feature
    similarities, 0 for location), ``weighting`` (scaling the ``k`` neighbors, plus
    their scores when weighted by another similarity), ``aggregation`` (the kernel:
    ``2 Nq k C O`` for ``standard``) and ``attention`` (plain heads of a branching
    attention, as the counter counts SDPA), and ``topk`` comparisons
    (``Nq M ceil(log2 k)`` when ``k < M``). ``Nq`` queries, ``M`` candidates each.
    """
    opts: ConvNNOptions = module.options  # type: ignore[assignment]
    if isinstance(module, ConvNNAttention):
        B, N = input_shape[0], input_shape[1]
        hd, hc = module.head_dim, module.convnn_heads
        d = hd + 2 * (opts.positional_encoding == "coords")
        out = {p: 0 for p in (*PARTS, "topk")}
        if hc:
            m = _num_candidates(opts, N, single_row=False)
            out = _operator_flops(opts, B * hc * N, m, d, hd, hd)
        out["attention"] = 4 * B * (module.num_heads - hc) * N * N * hd
        return out
    if not isinstance(module, (ConvNN1d, ConvNN2d)):
        raise TypeError(f"convnn_flops needs a ConvNN layer, got {type(module).__name__}")
    B, H, W = input_shape[0], *((1, input_shape[-1]) if len(input_shape) == 3 else input_shape[2:])
    window = ConvWindow(module.kernel_size, module.stride, module.padding)
    nq = B * math.prod(window.output_size(H, W))
    ph, pw = window.padding
    shift = opts.candidates == "window" and opts.window_border == "shift"
    tokens = H * W if shift else (H + 2 * ph) * (W + 2 * pw)
    coords = 2 * (opts.positional_encoding == "coords")
    c = module.in_channels + coords * opts.coords_to_values
    m = _num_candidates(opts, tokens, single_row=H == 1)
    out = _operator_flops(opts, nq, m, module.in_channels + coords, c, module.out_channels)
    return {**out, "attention": 0}


@dataclass
class ModelProfile:
    """Cost of one forward pass.

    Attributes:
        params: number of parameters.
        gflops: total GFLOPs (``2 x`` multiply-adds; ConvNN operators by formula).
        topk_gcomparisons: billions of top-k comparisons of the ConvNN layers.
        convnn: GFLOPs of the ConvNN operators by part (``similarity``,
            ``weighting``, ``aggregation``), included in ``gflops``.
    """

    params: int
    gflops: float
    topk_gcomparisons: float = 0.0
    convnn: dict[str, float] = field(default_factory=dict)


def _is_convnn(module: nn.Module) -> bool:
    return isinstance(module, (ConvNN1d, ConvNN2d, ConvNNAttention))


def _hook_convnn_layers(model: nn.Module, counter: FlopCounterMode, tally: dict[str, int]):
    """Hooks that move each ConvNN layer's counted ops into ``tally["counted"]`` and add
    its formula cost to ``tally``."""
    handles, state = [], {}

    def before(module, args):
        state[module] = [counter.get_total_flops(), 0, args[0].shape]

    def after(module, args, output):
        start, children, shape = state.pop(module)
        tally["counted"] += counter.get_total_flops() - start - children
        for part, flops in convnn_flops(module, shape).items():
            tally[part] += flops

    def child_before(owner):
        def hook(module, args):
            state[module] = counter.get_total_flops()

        return hook

    def child_after(owner):
        def hook(module, args, output):
            start = state.pop(module, None)
            if owner in state and start is not None:
                state[owner][1] += counter.get_total_flops() - start

        return hook

    for module in model.modules():
        if not _is_convnn(module):
            continue
        handles += [
            module.register_forward_pre_hook(before),
            module.register_forward_hook(after),
        ]
        for child in module.children():
            handles += [
                child.register_forward_pre_hook(child_before(module)),
                child.register_forward_hook(child_after(module)),
            ]
    return handles


def profile(
    model: nn.Module, input_size: int | Sequence[int] = 224, *, batch_size: int = 1
) -> ModelProfile:
    """Parameters and GFLOPs of one forward pass of ``model`` (run in eval mode, no grad).

    Args:
        input_size: image side ``S`` (input ``(3, S, S)``), ``(C, H, W)`` or a full shape.
        batch_size: batch of the random input when ``input_size`` has no batch dimension.
    """
    if isinstance(input_size, int):
        input_size = (3, input_size, input_size)
    shape = tuple(input_size) if len(input_size) == 4 else (batch_size, *input_size)
    ref = next(model.parameters(), None)
    device = ref.device if ref is not None else None
    dtype = ref.dtype if ref is not None and ref.is_floating_point() else None
    x = torch.randn(shape, device=device, dtype=dtype)
    counter = FlopCounterMode(display=False, custom_mapping=_CPU_SDPA)
    tally = dict.fromkeys(("counted", *PARTS, "attention", "topk"), 0)
    handles = _hook_convnn_layers(model, counter, tally)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), counter:
            model(x)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    convnn = sum(tally[p] for p in PARTS)
    total = counter.get_total_flops() - tally["counted"] + convnn + tally["attention"]
    return ModelProfile(
        params=sum(p.numel() for p in model.parameters()),
        gflops=total / 1e9,
        topk_gcomparisons=tally["topk"] / 1e9,
        convnn={p: tally[p] / 1e9 for p in PARTS},
    )


def profile_models(
    models: Mapping[str, nn.Module], input_size: int | Sequence[int] = 224
) -> dict[str, ModelProfile]:
    """:func:`profile` of each model (the first one is the baseline of :func:`print_profiles`)."""
    return {name: profile(model, input_size) for name, model in models.items()}


def _rows(profiles: Mapping[str, ModelProfile]) -> list[tuple[str, ...]]:
    base = next(iter(profiles.values()), None)
    rows = []
    for name, p in profiles.items():
        ratio = p.gflops / base.gflops if base and base.gflops else float("nan")
        parts = (f"{p.convnn.get(k, 0.0):.2f}" for k in PARTS)
        cells = (f"{p.params:,}", f"{p.gflops:.2f}", f"{ratio:.2f}", *parts)
        rows.append((name, *cells, f"{p.topk_gcomparisons:.3f}"))
    return rows


_COLUMNS = ("model", "params", "GFLOPs", "x base", "sim", "weight", "agg", "top-k G cmp")


def print_profiles(
    profiles: Mapping[str, ModelProfile], title: str | None = None, console=None
) -> None:
    """A rich table of profiles side by side; ``x base`` is against the first row.

    ``sim``, ``weight`` and ``agg`` are the ConvNN operators' GFLOPs (part of ``GFLOPs``).
    """
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for col in _COLUMNS:
        table.add_column(col, justify="left" if col == "model" else "right")
    for row in _rows(profiles):
        table.add_row(*row)
    (console or Console(width=120)).print(table)


def markdown_table(profiles: Mapping[str, ModelProfile]) -> str:
    """The :func:`print_profiles` table in Markdown."""
    lines = ["| " + " | ".join(_COLUMNS) + " |", "|---" + "|---:" * (len(_COLUMNS) - 1) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in _rows(profiles)]
    return "\n".join(lines)
