"""Attention-style ConvNN: a drop-in for timm's ViT ``Attention``.

Per head, learned ``q/k/v`` projections give the selection features and values;
each query aggregates its ``k`` selected neighbors (docs/method.md §1). With ``k=None``
(all tokens), ``softmax(dot)`` weighting and the ``sum`` kernel the layer is
exactly multi-head self-attention; with ``k < N`` it is KVT top-k attention.

Token layout: ``num_prefix_tokens`` class/register tokens, then a square
``S x S`` patch map. Prefix tokens take part as ordinary tokens in feature
similarities. For ``location`` similarity they have no position: a prefix token
is at distance 0 from itself and farther than any patch from every other token,
so patch queries never pick a prefix token before all patches, and a prefix
query picks itself first, then the other tokens in index order (ties).
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import OptionError
from ..functional import Grid, convnn
from ..ops.aggregation import weight_shapes
from ..options import ConvNNOptions, make_options, options_repr
from ..validation import check_choice, check_input, check_positive_int
from .branching import convnn_share

ATTENTION_DEFAULTS: dict[str, Any] = dict(
    k=9, similarity="dot", weighting="softmax", kernel="sum", window_border="shift"
)
"""ConvNNAttention's defaults where they differ from :class:`~convnn.ConvNNOptions`'s:
KVT-style top-9 attention, shifted (NATTEN) windows."""


KERNEL_INITS = ("kaiming", "ones")
"""``kernel_init`` values: ``kaiming`` (uniform, as ``nn.Linear``) or ``ones`` (a
``depthwise`` kernel that starts as the ``sum`` kernel, as the authors' attention layer)."""


def _grid_pair(grid_size: tuple[int, int]) -> tuple[int, int]:
    pair = tuple(grid_size)
    if len(pair) != 2:
        raise OptionError(f"grid_size={grid_size!r} must be (H, W)", key="grid_size")
    for v in pair:
        check_positive_int("grid_size", v)
    return int(pair[0]), int(pair[1])


class ConvNNAttention(nn.Module):
    """ConvNN-attention on tokens ``(B, N, dim) -> (B, N, dim_out)``.

    Accepts timm ``Attention``'s constructor arguments and ``forward`` signature and
    keeps its parameter names (``qkv``, ``q_norm``, ``k_norm``, ``norm``, ``proj``),
    so timm ViT weights load. Spatial options read the tokens as ``num_prefix_tokens``
    prefix tokens then a ``grid_size`` ``(H, W)`` patch map (default: square). Neighbors
    are selected per head. The ConvNN options follow :class:`convnn.ConvNNOptions`;
    kernels act on the head dimension and are shared by the heads. ``kernel_init``
    (:data:`KERNEL_INITS`): ``"ones"`` starts a ``depthwise`` kernel as the ``sum`` kernel, as
    the authors' attention layer does; ``"kaiming"`` (default) draws it as ``nn.Linear`` does.

    ``float32_selection`` (class attribute, default ``True``; set it on an instance or on
    the class): under autocast, the q and k that select neighbors are projected again in
    float32, so the selected sets match a float32 run (>= 99.9% of tokens, tested). That
    projection costs a float32 matmul per layer; ``False`` selects from the 16-bit q and
    k (about 1% of sets differ under float16, 5% under bfloat16) and saves it.
    """

    float32_selection: bool = True

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        qkv_bias: bool = False,
        qk_norm: bool = False,
        scale_norm: bool = False,
        proj_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        norm_layer: type[nn.Module] | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        attn_head_dim: int | None = None,
        dim_out: int | None = None,
        options: ConvNNOptions | None = None,
        num_prefix_tokens: int = 1,
        pos_grid_size: tuple[int, int] = (14, 14),
        grid_size: tuple[int, int] | None = None,
        convnn_heads: int | None = None,
        kernel_init: str = "kaiming",
        **overrides: Any,
    ) -> None:
        super().__init__()
        check_positive_int("dim", dim)
        check_positive_int("num_heads", num_heads)
        if attn_head_dim is None and dim % num_heads:
            raise OptionError(f"dim={dim} must be divisible by num_heads={num_heads}", key="dim")
        if (qk_norm or scale_norm) and norm_layer is None:
            raise OptionError(
                "norm_layer is required when qk_norm or scale_norm is True", key="norm_layer"
            )
        if num_prefix_tokens < 0:
            raise OptionError(
                f"num_prefix_tokens={num_prefix_tokens} must be >= 0", key="num_prefix_tokens"
            )
        self.options = make_options(options, ATTENTION_DEFAULTS, **overrides)
        if self.options.coords_to_values:
            raise OptionError(
                "coords_to_values=True is not supported by ConvNNAttention (the heads' value "
                "width is fixed by qkv); allowed: False",
                key="coords_to_values",
            )
        kernel, positional_encoding = self.options.kernel, self.options.positional_encoding
        dd = {"device": device, "dtype": dtype}
        self.num_heads = num_heads
        self.head_dim = attn_head_dim or dim // num_heads
        self.attn_dim = num_heads * self.head_dim
        self.convnn_heads = num_heads if convnn_heads is None else convnn_heads
        self.num_prefix_tokens = num_prefix_tokens
        self.grid_size = None if grid_size is None else _grid_pair(grid_size)
        self.dropout_p = attn_drop
        self.qkv = nn.Linear(dim, self.attn_dim * 3, bias=qkv_bias, **dd)
        self.q_norm = norm_layer(self.head_dim, **dd) if qk_norm else nn.Identity()
        self.k_norm = norm_layer(self.head_dim, **dd) if qk_norm else nn.Identity()
        self.norm = norm_layer(self.attn_dim, **dd) if scale_norm else nn.Identity()
        self.proj = nn.Linear(self.attn_dim, dim_out or dim, bias=proj_bias, **dd)
        self.proj_drop = nn.Dropout(proj_drop)
        shapes = {}
        if self.convnn_heads:
            kk = self.options.k or 1
            shapes = weight_shapes(kernel, self.head_dim, self.head_dim, kk)
            if kernel != "sum" and self.options.k is None:
                raise OptionError(
                    f"kernel={kernel!r} needs a fixed k; k=None only with 'sum'", key="kernel"
                )
        self.weight = nn.Parameter(torch.empty(shapes["weight"], **dd)) if shapes else None
        pw = shapes.get("pointwise_weight")
        self.pointwise_weight = nn.Parameter(torch.empty(pw, **dd)) if pw else None
        self.pos_table = None
        if positional_encoding == "learned" and self.convnn_heads:
            self.pos_table = nn.Parameter(torch.zeros(self.head_dim, *pos_grid_size, **dd))
            nn.init.trunc_normal_(self.pos_table, std=0.02)
        check_choice("kernel_init", kernel_init, KERNEL_INITS)
        if kernel_init == "ones" and kernel != "depthwise":
            raise OptionError(
                f"kernel_init='ones' needs kernel='depthwise' (got kernel={kernel!r}); "
                "allowed otherwise: 'kaiming'",
                key="kernel_init",
            )
        self.kernel_init = kernel_init
        for p in (self.weight, self.pointwise_weight):
            if p is not None:
                nn.init.kaiming_uniform_(p, a=math.sqrt(5))
        if kernel_init == "ones" and self.weight is not None:
            nn.init.ones_(self.weight)  # starts as the sum kernel (the authors' attention)

    def token_grid(self, num_tokens: int) -> Grid | None:
        """The layout of ``num_tokens`` tokens: ``num_prefix_tokens`` then the ``grid_size``
        patch map (timm's ``patch_embed.grid_size``, set by the converter), else a square
        map (no ``grid_size``, or a square one meeting another square token count); ``None``
        when neither fits."""
        P = self.num_prefix_tokens
        if self.grid_size is not None:
            h, w = self.grid_size
            if num_tokens == P + h * w:
                return Grid(h, w, P)
            if h != w:
                return None
        return Grid.square_patches(num_tokens, P)

    def _grid(self, num_tokens: int) -> Grid | None:
        if not self.options.needs_grid:
            return None
        grid = self.token_grid(num_tokens)
        if grid is None:
            P = self.num_prefix_tokens
            built = f"the {self.grid_size} patch grid" if self.grid_size else "a square patch map"
            raise OptionError(
                f"{num_tokens} tokens are not num_prefix_tokens={P} + {built}, which the "
                "chosen spatial options need; pass grid_size=(H, W)",
                key="grid_size" if self.grid_size else "num_prefix_tokens",
            )
        return grid

    def _selection_features(self, x: Tensor, q: Tensor, k: Tensor) -> tuple[Tensor, Tensor]:
        """``q`` and ``k`` ``(B, hc, N, hd)`` of the ConvNN heads, which select the neighbors.

        Under autocast they are projected again, in float32: selection ranks float32
        scores, but q and k rounded to 16 bits would already change about 1% (float16)
        to 5% (bfloat16) of the selected sets. Not needed when the features select
        nothing (``location`` similarity, or ``k=None``: every token).
        """
        by_features = self.options.similarity != "location" and self.options.k is not None
        if not (
            by_features
            and self.float32_selection
            and not x.is_meta
            and torch.is_autocast_enabled(x.device.type)
        ):
            return q, k
        B, N, _ = x.shape
        h, hc, hd = self.num_heads, self.convnn_heads, self.head_dim
        weight = self.qkv.weight.view(3, h, hd, -1)[:2, :hc].reshape(2 * hc * hd, -1)
        bias = self.qkv.bias
        if bias is not None:
            bias = bias.view(3, h, hd)[:2, :hc].reshape(-1).float()
        with torch.autocast(x.device.type, enabled=False):
            qk = F.linear(x.float(), weight.float(), bias)
            q, k = qk.view(B, N, 2, hc, hd).permute(2, 0, 3, 1, 4).contiguous().unbind(0)
            return self.q_norm(q), self.k_norm(k)

    def forward(
        self, x: Tensor, attn_mask: Tensor | None = None, is_causal: bool = False
    ) -> Tensor:
        """``(B, N, dim) -> (B, N, dim_out)``. Masks apply to plain attention heads only."""
        check_input(type(self).__name__, x, "(B, N, dim)", self.qkv.in_features, 2, "dim")
        B, N, _ = x.shape
        h, hc, hd = self.num_heads, self.convnn_heads, self.head_dim
        if hc and (attn_mask is not None or is_causal):
            key = "attn_mask" if attn_mask is not None else "is_causal"
            raise OptionError(
                f"{key} is not supported by ConvNN heads (convnn_heads={hc}); expected "
                "attn_mask=None and is_causal=False",
                key=key,
            )
        qkv = self.qkv(x).reshape(B, N, 3, h, hd).permute(2, 0, 3, 1, 4)
        opts = self.options
        gathers = opts.k is not None or opts.kernel != "sum" or opts.weighting != "softmax"
        if hc and gathers:
            qkv = qkv.contiguous()  # row gathers need contiguous heads; frees the strided copy
        q, k, v = qkv.unbind(0)  # (B, h, N, hd)
        q, k = self.q_norm(q), self.k_norm(k)
        drop = self.dropout_p if self.training else 0.0
        heads = []
        if hc:
            q_sel, k_sel = self._selection_features(x, q[:, :hc], k[:, :hc])
            out = convnn(
                v[:, :hc],
                q_sel,
                k_sel,
                options=self.options,
                weight=self.weight,
                pointwise_weight=self.pointwise_weight,
                grid=self._grid(N),
                pos_table=self.pos_table,
                training=self.training,
                dropout_p=drop,
            )  # (B, hc, N, hd)
            heads.append(out)
        if hc < h:
            heads.append(
                F.scaled_dot_product_attention(
                    q[:, hc:],
                    k[:, hc:],
                    v[:, hc:],
                    attn_mask=attn_mask,
                    dropout_p=drop,
                    is_causal=is_causal,
                )
            )  # (B, h - hc, N, hd)
        x = heads[0] if len(heads) == 1 else torch.cat(heads, dim=1)  # (B, h, N, hd)
        x = x.transpose(1, 2).reshape(B, N, self.attn_dim)
        x = self.norm(x)
        x = self.proj(x)
        return self.proj_drop(x)

    @classmethod
    def from_attention(
        cls, attn: nn.Module, k: int | None = None, **overrides: Any
    ) -> ConvNNAttention:
        """A ConvNNAttention with ``attn``'s weights computing the same function.

        ``k=None``: all tokens (exactly self-attention); ``k < N``: KVT top-k attention.
        """
        if getattr(attn, "gate", None) is not None:
            raise OptionError(
                "attn: from_attention does not support gated timm Attention (attn.gate is set)",
                key="attn",
            )
        qkv, proj = attn.qkv, attn.proj
        settings = dict(similarity="dot", weighting="softmax", kernel="sum", candidates="all")
        settings.update(overrides)
        layer = cls(
            qkv.in_features,
            attn.num_heads,
            qkv_bias=qkv.bias is not None,
            proj_bias=proj.bias is not None,
            attn_drop=attn.attn_drop.p,
            proj_drop=attn.proj_drop.p,
            attn_head_dim=attn.head_dim,
            dim_out=proj.out_features,
            device=qkv.weight.device,
            dtype=qkv.weight.dtype,
            k=k,
            **settings,
        )
        layer.load_state_dict(attn.state_dict(), strict=False)
        for name in ("q_norm", "k_norm", "norm"):
            setattr(layer, name, copy.deepcopy(getattr(attn, name)))
        return layer

    def extra_repr(self) -> str:
        return (
            f"num_heads={self.num_heads}, head_dim={self.head_dim}, "
            f"convnn_heads={self.convnn_heads}, num_prefix_tokens={self.num_prefix_tokens}, "
            + (f"grid_size={self.grid_size}, " if self.grid_size else "")
            + (f"kernel_init={self.kernel_init!r}, " if self.kernel_init != "kaiming" else "")
            + options_repr(self.options)
        )


class BranchingAttention(ConvNNAttention):
    """Branching attention (docs/method.md §3): ``convnn_share(ratio, num_heads)`` heads are ConvNN
    heads, the others ordinary softmax attention; every head reads all input
    channels through ``qkv`` and ``proj`` mixes the concatenated heads.

    ``ratio=0`` is exactly timm ``Attention``; ``ratio=1`` is :class:`ConvNNAttention`.
    """

    def __init__(self, dim: int, num_heads: int = 8, *args, ratio: float = 0.5, **kwargs) -> None:
        check_positive_int("num_heads", num_heads)
        self.ratio = ratio
        heads = convnn_share(ratio, num_heads, "heads")
        super().__init__(dim, num_heads, *args, convnn_heads=heads, **kwargs)

    def extra_repr(self) -> str:
        return f"ratio={self.ratio}, " + super().extra_repr()
