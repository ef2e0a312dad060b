"""Option names of the ConvNN operator and their validation.

Every option set is a ``Literal`` type; :func:`check_choice` turns a wrong value
into an :class:`~convnn.errors.OptionError` (a ``ValueError``) that names the parameter,
the value and the allowed set.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any, Literal, TypeVar, get_args

from .errors import OptionError
from .validation import check_choice, check_names, check_positive_int, check_ratio

T = TypeVar("T")

Candidates = Literal["all", "random", "spatial", "window"]
Similarity = Literal["dot", "cosine", "euclidean", "location", "mixed"]
FeatureSimilarity = Literal["dot", "cosine", "euclidean"]
"""The similarities scored from features alone; each value's formulas are one entry of
:data:`convnn.ops.similarity.SIMILARITIES`, which is checked against both literals."""
Weighting = Literal["none", "similarity", "softmax"]
Kernel = Literal["standard", "depthwise", "separable", "sum"]
PositionalEncoding = Literal["none", "coords", "sincos", "learned", "rope"]
Order = Literal["auto", "rank", "offset"]
WindowBorder = Literal["pad", "shift"]
SampleScope = Literal["batch", "example", "head"]
Backend = Literal[
    "auto", "reference", "fast", "conv", "window_attention", "shifts", "sdpa", "dense", "blocked"
]
"""``auto``, ``fast``, ``reference`` or one path by name (see :mod:`convnn.backends`)."""


def check_option_table(option: str, table: Mapping[str, Any], values: Sequence[str]) -> None:
    """Raise ``TypeError`` unless ``table`` (the implementation of an option, one entry per
    value) has exactly the option's ``values`` (``typing.get_args`` of its ``Literal``): run at
    import, so that a value added on one side only fails at once."""
    missing, extra = sorted(set(values) - set(table)), sorted(set(table) - set(values))
    if missing or extra:
        raise TypeError(
            f"the {option} table is out of step with its option values {list(values)}: "
            f"no entry for {missing}, entries for no value {extra}"
        )


def option_entry(table: Mapping[str, T], key: str, value: str) -> T:
    """The entry of ``value`` in an option's table; an unknown value raises
    :class:`~convnn.errors.OptionError` naming ``key`` and the allowed values."""
    entry = table.get(value)
    if entry is None:
        check_choice(key, value, tuple(table))
    return entry  # type: ignore[return-value]


if not set(get_args(FeatureSimilarity)) <= set(get_args(Similarity)):
    raise TypeError("every FeatureSimilarity must be a Similarity value")


def resolve_order(order: Order, similarity: Similarity, candidates: Candidates) -> str:
    """``auto`` means offset order for ``location`` similarity or ``window`` candidates."""
    check_choice("order", order, Order)
    if order != "auto":
        return order
    return "offset" if similarity == "location" or candidates == "window" else "rank"


@dataclass(frozen=True)
class ConvNNOptions:
    """Every choice of the ConvNN operator, validated once when built.

    Attributes:
        k: neighbors per query; ``None`` selects every candidate (attention).
        similarity: ranks the candidates (``dot``, ``cosine``, ``euclidean``,
            ``location``, ``mixed``).
        weighting: ``none`` (1), ``similarity`` (the raw score) or ``softmax``.
        weighting_similarity: similarity behind the weights; ``None`` = ``similarity``.
        lam: weight of the feature similarity in ``mixed`` (the rest is location).
        mixed_feature: feature similarity used inside ``mixed``.
        candidates: ``all``, ``random`` (``num_samples`` tokens), ``spatial``
            (``floor(sqrt(num_samples))^2`` grid tokens; ``num_samples`` evenly spaced
            tokens of a ``sequence``) or ``window`` (``window_size``).
        sequence: the tokens form one row (``ConvNN1d`` sets it), which decides what
            ``spatial`` candidates are.
        window_border: ``pad`` (zero tokens outside the map) or ``shift`` (NATTEN).
        order: ``rank`` (most similar first), ``offset`` (raster order of the
            neighbor's position, as kernel taps of a convolution) or ``auto``
            (offset for ``location`` or ``window``, rank otherwise).
        kernel: aggregation kernel, see :mod:`convnn.aggregation`.
        positional_encoding: added to the selection features only (``coords``
            appends 2 channels, also to the values when ``coords_to_values``).
        sample_scope: who shares a ``random`` draw in training: the whole ``batch``
            (every example and head, as the paper's code), each ``example`` (its heads
            share it) or each ``head`` of each example. In eval the draw is fixed (hashed
            from ``sample_seed``): one for all examples, per head for ``head``.
        sample_seed: seed of the fixed ``random`` candidate set used in eval mode.
        selection_budget_mb: the fast backend selects over blocks of queries whose
            similarity block stays under this many MiB; ``None``: 4 MiB on the CPU
            (cache-sized blocks), 256 MiB on GPUs.
        backend: ``auto`` (``CONVNN_BACKEND`` or ``fast``), ``fast``, ``reference`` or
            the name of one path (:mod:`convnn.backends`).
    """

    k: int | None = 9
    similarity: Similarity = "cosine"
    weighting: Weighting = "none"
    weighting_similarity: Similarity | None = None
    lam: float = 0.5
    mixed_feature: FeatureSimilarity = "cosine"
    candidates: Candidates = "all"
    num_samples: int | None = None
    window_size: int | tuple[int, int] | None = None
    window_border: WindowBorder = "pad"
    order: Order = "auto"
    kernel: Kernel = "standard"
    positional_encoding: PositionalEncoding = "none"
    coords_to_values: bool = False
    sample_scope: SampleScope = "batch"
    sample_seed: int = 0
    selection_budget_mb: float | None = None
    backend: Backend = "auto"
    sequence: bool = False

    def __post_init__(self) -> None:
        check_positive_int("k", self.k, allow_none=True)
        check_choice("similarity", self.similarity, Similarity)
        check_choice("weighting", self.weighting, Weighting)
        if self.weighting_similarity is not None:
            check_choice("weighting_similarity", self.weighting_similarity, Similarity)
        check_ratio("lam", self.lam)
        check_choice("mixed_feature", self.mixed_feature, FeatureSimilarity)
        check_choice("candidates", self.candidates, Candidates)
        check_choice("window_border", self.window_border, WindowBorder)
        check_choice("order", self.order, Order)
        check_choice("kernel", self.kernel, Kernel)
        check_choice("positional_encoding", self.positional_encoding, PositionalEncoding)
        check_choice("sample_scope", self.sample_scope, SampleScope)
        check_choice("backend", self.backend, Backend)
        if self.selection_budget_mb is not None and self.selection_budget_mb <= 0:
            raise OptionError(
                f"selection_budget_mb={self.selection_budget_mb!r} must be > 0",
                key="selection_budget_mb",
            )
        self._check_candidates()

    def _check_candidates(self) -> None:
        c = self.candidates
        if c in ("random", "spatial"):
            if self.num_samples is None:
                raise OptionError(
                    f"num_samples is required with candidates={c!r}", key="num_samples"
                )
            check_positive_int("num_samples", self.num_samples)
            if self.k is None:
                raise OptionError(
                    f"k=None (all candidates) is not allowed with candidates={c!r}", key="k"
                )
        if c == "window":
            if self.window_size is None:
                raise OptionError(
                    "window_size is required with candidates='window'", key="window_size"
                )
            sizes = self.window_size
            sizes = sizes if isinstance(sizes, tuple) else (sizes, sizes)
            for s in sizes:
                check_positive_int("window_size", s)
                if s % 2 == 0:
                    raise OptionError(
                        f"window_size={self.window_size} must be odd", key="window_size"
                    )
        available = self.max_k()
        if self.k is not None and available is not None and self.k > available:
            raise OptionError(
                f"k={self.k} is larger than the {available} candidates of "
                f"candidates={c!r}; allowed: 1 <= k <= {available}",
                key="k",
            )

    def max_k(self, num_tokens: int | None = None) -> int | None:
        """Number of candidates per query (``None`` if it depends on an unknown N)."""
        if self.candidates == "window":
            return self.window_shape[0] * self.window_shape[1]
        if self.candidates == "random":
            return self.num_samples
        if self.candidates == "spatial" and not self.sequence:
            return math.isqrt(self.num_samples) ** 2  # type: ignore[arg-type]
        if self.candidates == "spatial":
            return self.num_samples
        return num_tokens

    @property
    def window_shape(self) -> tuple[int, int]:
        """``(sh, sw)`` of the window; an int ``s`` means ``s x s``."""
        s = self.window_size or 1
        return s if isinstance(s, tuple) else (s, s)

    @property
    def resolved_order(self) -> str:
        return resolve_order(self.order, self.similarity, self.candidates)

    @property
    def selects_whole_padded_window(self) -> bool:
        """Zero-padded ``window`` candidates of which every one is selected (k = sh*sw)."""
        return (
            self.candidates == "window" and self.window_border == "pad" and self.k == self.max_k()
        )

    @property
    def draws_from_input_only(self) -> bool:
        """Shifted windows and random/spatial samples never use zero-padding tokens."""
        shift = self.candidates == "window" and self.window_border == "shift"
        return shift or self.candidates in ("random", "spatial")

    @property
    def score_for_weights(self) -> str:
        return self.weighting_similarity or self.similarity

    @property
    def needs_grid(self) -> bool:
        spatial = {"location", "mixed"}
        return (
            self.similarity in spatial
            or self.score_for_weights in spatial
            or self.candidates in ("spatial", "window")
            or self.positional_encoding != "none"
        )


OPTION_NAMES: frozenset[str] = frozenset(f.name for f in fields(ConvNNOptions))
"""Every option name; each layer, model and ``convert`` accepts all of them."""


def make_options(
    options: ConvNNOptions | None = None,
    defaults: Mapping[str, Any] | None = None,
    **overrides: Any,
) -> ConvNNOptions:
    """The options of a layer: ``options`` (or ``ConvNNOptions(**defaults)``, the layer's
    own defaults) with ``overrides`` replaced, validated once.

    Unknown names raise :class:`~convnn.errors.OptionError` with a close match
    (``simlarity`` -> ``similarity``).
    """
    check_names("ConvNN options", overrides, OPTION_NAMES)
    if options is not None:
        return replace(options, **overrides) if overrides else options
    return ConvNNOptions(**{**(defaults or {}), **overrides})


def option_values(options: ConvNNOptions) -> dict[str, Any]:
    """``{name: value}`` of every option."""
    return {name: getattr(options, name) for name in sorted(OPTION_NAMES)}


def options_repr(options: ConvNNOptions) -> str:
    """The options that differ from their defaults (and ``k``), for ``extra_repr``."""
    default = ConvNNOptions()
    parts = [
        f"{f.name}={getattr(options, f.name)!r}"
        for f in fields(options)
        if f.name == "k" or getattr(options, f.name) != getattr(default, f.name)
    ]
    return ", ".join(parts)
