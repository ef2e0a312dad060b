"""An independent float64 implementation of ConvNN (docs/method.md §1), for the differential fuzzer.

Written from ``docs/method.md`` (the method) and the documented contract of the public API (option
names, weight layouts, token layouts); it imports nothing from :mod:`convnn`, so a defect
in the operator's shared selection, candidate or shape code cannot hide in both. Plain
Python loops over examples, queries and candidates; numpy float64 for small vector math.

Conventions (from docs/method.md and the documented contract):

* tokens ``(*, N, C)``; a map is ``P`` prefix tokens then ``H x W`` in raster order; a
  zero-padded map lists the padding tokens as ordinary (zero) tokens of the padded grid;
  a window reaching outside the grid uses the zero *null* token, index ``N``.
* candidates are listed per query in raster order (slots); ties go to the lower slot,
  which is the lower token index; ``random``/``spatial``: the query itself first (always
  selected, the most similar in rank order), then the sorted sample without the query.
* ``dot`` = ``q.k / sqrt(D)``; ``cosine`` with a zero vector (``|x|^2 <= 1e-16``) = 0;
  ``euclidean`` = ``-sqrt(|q - k|^2 + 1e-8)`` (documented eps); ``location`` = minus the
  Chebyshev distance, a prefix token at 0 from itself and ``max(H, W)`` from any other;
  ``mixed`` = ``lam * z(feature) + (1 - lam) * z(location)``, ``z`` standardizing over the
  row's distinct candidates (population variance; a flat row gives zeros).
* ``order="offset"``: neighbours sorted by slot (raster order of their position), sampled
  tables by token index.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

EPS = 1e-8
DEFAULTS: dict[str, Any] = dict(
    k=9,
    similarity="cosine",
    weighting="none",
    weighting_similarity=None,
    lam=0.5,
    mixed_feature="cosine",
    candidates="all",
    num_samples=None,
    window_size=None,
    window_border="pad",
    order="auto",
    kernel="standard",
    positional_encoding="none",
    coords_to_values=False,
    sample_scope="batch",
    sample_seed=0,
    sequence=False,
)
FEATURE = ("dot", "cosine", "euclidean")


def full_options(opts: dict[str, Any]) -> dict[str, Any]:
    out = {**DEFAULTS, **{k: v for k, v in opts.items() if k in DEFAULTS}}
    ws = out["window_size"]
    out["window_shape"] = (ws, ws) if isinstance(ws, int) else tuple(ws or (1, 1))
    if out["order"] == "auto":
        spatial_order = out["similarity"] == "location" or out["candidates"] == "window"
        out["order"] = "offset" if spatial_order else "rank"
    out["score_for_weights"] = out["weighting_similarity"] or out["similarity"]
    return out


@dataclass(frozen=True)
class RefGrid:
    """``num_prefix`` tokens without position, then a ``height x width`` map; ``padding``
    rows/columns on each side of it are zero padding around the input."""

    height: int
    width: int
    num_prefix: int = 0
    padding: tuple[int, int] = (0, 0)

    @property
    def num_tokens(self) -> int:
        return self.num_prefix + self.height * self.width

    def position(self, t: int) -> tuple[int, int] | None:
        if t < self.num_prefix:
            return None
        t -= self.num_prefix
        return (t // self.width, t % self.width)

    def token(self, r: int, c: int) -> int:
        """Token at grid position ``(r, c)``, or ``N`` (the null token) outside the grid."""
        if 0 <= r < self.height and 0 <= c < self.width:
            return self.num_prefix + r * self.width + c
        return self.num_tokens

    @property
    def input_size(self) -> tuple[int, int]:
        return self.height - 2 * self.padding[0], self.width - 2 * self.padding[1]

    def input_position(self, t: int) -> tuple[int, int] | None:
        """Position inside the input map (``None`` for prefix, padding and null tokens)."""
        if t >= self.num_tokens:
            return None
        p = self.position(t)
        if p is None:
            return None
        r, c = p[0] - self.padding[0], p[1] - self.padding[1]
        H, W = self.input_size
        return (r, c) if 0 <= r < H and 0 <= c < W else None


# ----------------------------------------------------------------------------- encodings


def _coords(grid: RefGrid, t: int) -> np.ndarray:
    p = grid.input_position(t)
    if p is None:
        return np.zeros(2)
    H, W = grid.input_size
    x = p[1] / (W - 1) * 2 - 1 if W > 1 else 0.0
    y = p[0] / (H - 1) * 2 - 1 if H > 1 else 0.0
    return np.array([x, y])


def _freq(dim4: int) -> np.ndarray:
    return np.array([1.0 / 10000 ** (i / dim4) for i in range(dim4)])


def _sincos(grid: RefGrid, t: int, dim: int) -> np.ndarray:
    p = grid.input_position(t)
    if p is None:
        return np.zeros(dim)
    f = _freq(dim // 4)
    parts = []
    for coord in (p[1], p[0]):  # column first, then row
        parts += [np.sin(coord * f), np.cos(coord * f)]
    return np.concatenate(parts)


def _rope(x: np.ndarray, grid: RefGrid, t: int) -> np.ndarray:
    p = grid.input_position(t)
    if p is None:
        return x.copy()
    dim = x.shape[0]
    f = _freq(dim // 4)
    out = np.empty(dim)
    half = dim // 2
    for h, coord in enumerate((p[1], p[0])):
        for i in range(dim // 4):
            a, b = x[h * half + 2 * i], x[h * half + 2 * i + 1]
            ang = coord * f[i]
            out[h * half + 2 * i] = a * math.cos(ang) - b * math.sin(ang)
            out[h * half + 2 * i + 1] = a * math.sin(ang) + b * math.cos(ang)
    return out


def _encode(
    o: dict, feat: np.ndarray, grid: RefGrid | None, t: int, pos_table: np.ndarray | None
) -> np.ndarray:
    kind = o["positional_encoding"]
    if kind == "none":
        return feat
    assert grid is not None
    if kind == "coords":
        return np.concatenate([feat, _coords(grid, t)])
    if kind == "sincos":
        return feat + _sincos(grid, t, feat.shape[0])
    if kind == "rope":
        return _rope(feat, grid, t)
    if kind == "learned":
        assert pos_table is not None
        H, W = grid.input_size
        if pos_table.shape[1:] != (H, W):
            raise NotImplementedError("the reference adds a learned table of the input's size")
        p = grid.input_position(t)
        return feat if p is None else feat + pos_table[:, p[0], p[1]]
    raise NotImplementedError(kind)


# ---------------------------------------------------------------------------- similarity


def _unit(v: np.ndarray) -> np.ndarray:
    sq = float(np.dot(v, v))
    return np.zeros_like(v) if sq <= EPS**2 else v / math.sqrt(sq)


def feature_score(kind: str, q: np.ndarray, c: np.ndarray) -> float:
    if kind == "dot":
        return float(np.dot(q, c)) / math.sqrt(q.shape[0])
    if kind == "cosine":
        return float(np.dot(_unit(q), _unit(c)))
    if kind == "euclidean":
        d = q - c
        return -math.sqrt(float(np.dot(d, d)) + EPS)
    raise ValueError(kind)


def chebyshev(grid: RefGrid, qt: int, qpos: tuple | None, ct: int, cpos: tuple | None) -> float:
    if qpos is None or cpos is None:  # a prefix token: 0 to itself, far from the rest
        return 0.0 if qt == ct else float(max(grid.height, grid.width))
    return float(max(abs(qpos[0] - cpos[0]), abs(qpos[1] - cpos[1])))


def _standardize(values: list[float], distinct: list[bool]) -> list[float]:
    pool = [v for v, d in zip(values, distinct, strict=True) if d]
    mean = sum(pool) / len(pool)
    var = sum((v - mean) ** 2 for v in pool) / len(pool)
    if var <= EPS**2:
        return [0.0] * len(values)
    sd = math.sqrt(var)
    return [(v - mean) / sd for v in values]


def _conditioning(values: list[float], distinct: list[bool]) -> float:
    pool = [v for v, d in zip(values, distinct, strict=True) if d]
    mean = sum(pool) / len(pool)
    sd = math.sqrt(sum((v - mean) ** 2 for v in pool) / len(pool))
    return 0.0 if sd <= EPS else max(abs(v) for v in pool) / sd


def row_scores(
    kind: str,
    o: dict,
    q: np.ndarray,
    cands: list[np.ndarray],
    dist: list[float],
    distinct: list[bool],
) -> list[float]:
    """Scores of one query's candidates under similarity ``kind``."""
    if kind in FEATURE:
        return [feature_score(kind, q, c) for c in cands]
    location = [-d for d in dist]
    if kind == "location":
        return location
    feature = [feature_score(o["mixed_feature"], q, c) for c in cands]
    zf, zl = _standardize(feature, distinct), _standardize(location, distinct)
    lam = o["lam"]
    return [lam * a + (1 - lam) * b for a, b in zip(zf, zl, strict=True)]


# ---------------------------------------------------------------------------- candidates


def _spaced(n: int, size: int) -> list[int]:
    """``n`` evenly spaced integers from 0 to ``size - 1`` (rounded half to even)."""
    if n == 1:
        return [0]
    return [round(Fraction(j * (size - 1), n - 1)) for j in range(n)]


def spatial_tokens(grid: RefGrid, num_samples: int, sequence: bool) -> list[int]:
    """The evenly spaced grid of map tokens including the borders, in raster order;
    a one-row map takes ``num_samples`` evenly spaced tokens."""
    if sequence or grid.height == 1:
        rows, cols = [0], _spaced(num_samples, grid.width)
    else:
        s = math.isqrt(num_samples)
        rows, cols = _spaced(s, grid.height), _spaced(s, grid.width)
    return [grid.num_prefix + r * grid.width + c for r in rows for c in cols]


def candidates_of(
    o: dict, grid: RefGrid | None, N: int, qt: int, sample: list[int] | None
) -> tuple[list[int], list[tuple | None], list[bool], bool]:
    """``(tokens, positions, distinct, forced_self)`` of query token ``qt`` in slot order."""
    kind = o["candidates"]
    pos = (lambda t: grid.position(t)) if grid is not None else (lambda t: None)
    if kind == "all":
        toks = list(range(N))
        return toks, [pos(t) for t in toks], [True] * N, False
    if kind == "window":
        assert grid is not None
        qr, qc = grid.position(qt)  # type: ignore[misc]
        (sh, sw), shift = o["window_shape"], o["window_border"] == "shift"
        r0, c0 = qr - sh // 2, qc - sw // 2
        if shift:
            r0 = min(max(r0, 0), grid.height - sh)
            c0 = min(max(c0, 0), grid.width - sw)
        positions = [(r0 + i, c0 + j) for i in range(sh) for j in range(sw)]
        toks = [grid.token(r, c) for r, c in positions]
        return toks, positions, [True] * len(toks), False
    if kind == "spatial":
        assert grid is not None
        sample = spatial_tokens(grid, o["num_samples"], o["sequence"])
    assert sample is not None
    toks = [qt] + list(sample)
    distinct = [True] + [t != qt for t in sample]
    return toks, [pos(t) for t in toks], distinct, True


# -------------------------------------------------------------------------- aggregation


def aggregate(
    o: dict,
    neigh: list[np.ndarray],
    w: list[float],
    weight: np.ndarray | None,
    pointwise: np.ndarray | None,
    bias: np.ndarray | None,
) -> np.ndarray:
    """Tap ``j`` of the kernel applied to the ``j``-th weighted neighbour (docs/method.md §1.7)."""
    kernel, C, k = o["kernel"], neigh[0].shape[0], len(neigh)
    if kernel == "standard":
        assert weight is not None
        out = np.zeros(weight.shape[0])
        for j in range(k):
            out += weight[:, :, j] @ (w[j] * neigh[j])
    elif kernel == "depthwise":
        assert weight is not None
        O = weight.shape[0]
        m = O // C
        out = np.zeros(O)
        for oc in range(O):
            out[oc] = sum(weight[oc, j] * w[j] * neigh[j][oc // m] for j in range(k))
    elif kernel == "separable":
        assert weight is not None and pointwise is not None
        d = np.zeros(C)
        for j in range(k):
            d += weight[:, j] * w[j] * neigh[j]
        out = pointwise @ d
    else:
        out = np.zeros(C)
        for j in range(k):
            out += w[j] * neigh[j]
    return out if bias is None else out + bias


# ----------------------------------------------------------------------------- operator


@dataclass
class QueryDetail:
    """What one query saw: candidate tokens (slot order), exact selection and weighting
    scores, distinct mask, whether slot 0 is forced, and the chosen slots."""

    tokens: list[int]
    scores: list[float]
    weight_scores: list[float]
    distinct: list[bool]
    forced: bool
    slots: list[int]
    conditioning: float = 0.0
    """``lam * max|feature| / std(feature)`` of ``mixed`` (how much standardizing
    magnifies a rounding error of the feature similarity), else 0."""
    magnitude: float = 0.0
    """``sum_j |w_j| * max|v_j|`` over the selected neighbours: the size of the weighted sum
    before its terms cancel (a float32 sum is off by a few ulps of this, not of the result)."""


def select_slots(
    scores: list[float], distinct: list[bool], forced: bool, k: int, order: str, tokens: list[int]
) -> list[int]:
    """Top-``k`` slots, ties to the lower slot; offset order re-sorts them by position."""
    order_key = []
    for s, (score, ok) in enumerate(zip(scores, distinct, strict=True)):
        if not ok:
            continue
        if forced and s == 0:
            order_key.append((0, 0.0, s))
        else:
            order_key.append((1, -score, s))
    order_key.sort()
    slots = [s for _, _, s in order_key[:k]]
    if len(slots) < k:
        raise ValueError(f"k={k} > {len(slots)} distinct candidates")
    if order == "offset":
        slots.sort(key=(lambda s: (tokens[s], s)) if forced else None)
    return slots


def tokens_reference(
    value: np.ndarray,
    query: np.ndarray | None,
    key: np.ndarray | None,
    opts: dict[str, Any],
    *,
    grid: RefGrid | None = None,
    query_index: list[int] | None = None,
    sample: np.ndarray | None = None,
    weight: np.ndarray | None = None,
    pointwise_weight: np.ndarray | None = None,
    bias: np.ndarray | None = None,
    pos_table: np.ndarray | None = None,
    k: int | None = None,
) -> dict[str, Any]:
    """ConvNN on tokens: ``value (*, N, C)``, ``query (*, Nq, D)`` (default: ``key`` at
    ``query_index``), ``key (*, N, D)`` (default ``value``). ``sample``: ``(*s, r)`` token
    indices broadcast over the batch dims (``random``). Returns ``out (*, Nq, O)``,
    ``index (*, Nq, k)`` and ``details`` (a :class:`QueryDetail` per batch row and query)."""
    o = full_options(opts)
    value = np.asarray(value, dtype=np.float64)
    key = value if key is None else np.asarray(key, dtype=np.float64)
    *batch, N, C = value.shape
    qi = list(range(N)) if query_index is None else [int(t) for t in query_index]
    if query is None:
        query = key[..., qi, :]
    query = np.asarray(query, dtype=np.float64)
    kk = k or o["k"] or N
    flat_v = value.reshape(-1, N, C)
    flat_k = key.reshape(-1, N, key.shape[-1])
    flat_q = query.reshape(-1, len(qi), query.shape[-1])
    samples = None
    if o["candidates"] == "random":
        assert sample is not None
        sample = np.asarray(sample)
        samples = np.broadcast_to(sample, (*batch, sample.shape[-1])).reshape(-1, sample.shape[-1])
    outs, index, details = [], [], []
    for b in range(flat_v.shape[0]):
        keys = [_encode(o, flat_k[b, t], grid, t, pos_table) for t in range(N)]
        vals = [flat_v[b, t] for t in range(N)]
        if o["positional_encoding"] == "coords" and o["coords_to_values"]:
            vals = [np.concatenate([v, _coords(grid, t)]) for t, v in enumerate(vals)]  # type: ignore[arg-type]
        null_key, null_val = np.zeros_like(keys[0]), np.zeros_like(vals[0])
        smp = None if samples is None else [int(t) for t in samples[b]]
        row_out, row_idx, row_det = [], [], []
        for n, qt in enumerate(qi):
            q = _encode(o, flat_q[b, n], grid, qt, pos_table)
            toks, positions, distinct, forced = candidates_of(o, grid, N, qt, smp)
            cand = [keys[t] if t < N else null_key for t in toks]
            dist: list[float] = []
            needs = {o["similarity"], o["score_for_weights"]} & {"location", "mixed"}
            if needs:
                assert grid is not None
                qpos = grid.position(qt)
                dist = [
                    chebyshev(grid, qt, qpos, t, p) for t, p in zip(toks, positions, strict=True)
                ]
            scores = row_scores(o["similarity"], o, q, cand, dist, distinct)
            wscores = scores
            if o["score_for_weights"] != o["similarity"]:
                wscores = row_scores(o["score_for_weights"], o, q, cand, dist, distinct)
            slots = select_slots(scores, distinct, forced, kk, o["order"], toks)
            cond = 0.0
            if "mixed" in (o["similarity"], o["score_for_weights"]):
                feat = [feature_score(o["mixed_feature"], q, c) for c in cand]
                cond = o["lam"] * _conditioning(feat, distinct)
            w = [1.0] * kk
            if o["weighting"] != "none":
                w = [wscores[s] for s in slots]
                if o["weighting"] == "softmax":
                    top = max(w)
                    e = [math.exp(x - top) for x in w]
                    w = [x / sum(e) for x in e]
            neigh = [vals[toks[s]] if toks[s] < N else null_val for s in slots]
            row_out.append(aggregate(o, neigh, w, weight, pointwise_weight, bias))
            row_idx.append([toks[s] for s in slots])
            mag = sum(
                abs(wj) * float(np.abs(nj).max(initial=0.0))
                for wj, nj in zip(w, neigh, strict=True)
            )
            row_det.append(QueryDetail(toks, scores, wscores, distinct, forced, slots, cond, mag))
        outs.append(row_out)
        index.append(row_idx)
        details.append(row_det)
    out = np.array(outs).reshape(*batch, len(qi), -1)
    return {"out": out, "index": np.array(index).reshape(*batch, len(qi), kk), "details": details}


def draws_from_input_only(o: dict) -> bool:
    o = full_options(o)
    shift = o["candidates"] == "window" and o["window_border"] == "shift"
    return shift or o["candidates"] in ("random", "spatial")


def map_layout(
    H: int,
    W: int,
    kernel_size: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    input_only: bool,
) -> tuple[RefGrid, list[int], tuple[int, int]]:
    """The token grid of a map layer and its query tokens: each query at the centre
    (``kernel // 2``) of a convolution window; the padded map when padding tokens are
    candidates, else the input itself."""
    sizes = []
    centres = []
    for size, ks, st, pad in zip((H, W), kernel_size, stride, padding, strict=True):
        n = (size + 2 * pad - ks) // st + 1
        if n < 1:
            raise ValueError("input smaller than the kernel")
        first = ks // 2 - (pad if input_only else 0)
        sizes.append(n)
        centres.append([first + i * st for i in range(n)])
    if input_only:
        grid = RefGrid(H, W)
    else:
        grid = RefGrid(H + 2 * padding[0], W + 2 * padding[1], 0, padding)
    qi = [r * grid.width + c for r in centres[0] for c in centres[1]]
    return grid, qi, (sizes[0], sizes[1])


def map_reference(
    x: np.ndarray,
    opts: dict[str, Any],
    kernel_size: tuple[int, int],
    stride: tuple[int, int] = (1, 1),
    padding: tuple[int, int] = (0, 0),
    **kwargs: Any,
) -> dict[str, Any]:
    """``ConvNN2d`` semantics on ``x (B, C, H, W)``: ``out (B, O, Ho, Wo)``, ``index
    (B, Ho*Wo, k)`` on the (padded) map's tokens."""
    x = np.asarray(x, dtype=np.float64)
    B, C, H, W = x.shape
    only = draws_from_input_only(opts)
    grid, qi, (Ho, Wo) = map_layout(H, W, kernel_size, stride, padding, only)
    if not only:
        ph, pw = padding
        x = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    tokens = x.reshape(B, C, -1).transpose(0, 2, 1)
    res = tokens_reference(tokens, None, None, opts, grid=grid, query_index=qi, **kwargs)
    res["out"] = res["out"].transpose(0, 2, 1).reshape(B, -1, Ho, Wo)
    res["grid"] = grid
    return res


def attention_reference(
    x: np.ndarray,
    opts: dict[str, Any],
    *,
    num_heads: int,
    qkv_weight: np.ndarray,
    qkv_bias: np.ndarray | None,
    proj_weight: np.ndarray,
    proj_bias: np.ndarray | None,
    num_prefix: int = 1,
    **kwargs: Any,
) -> dict[str, Any]:
    """``ConvNNAttention`` semantics on ``x (B, N, dim)``: per head ``q, k, v`` rows of
    ``qkv`` (layout ``(3, heads, head_dim)``), ConvNN per head with the kernel shared by
    the heads, heads concatenated, then ``proj``. The tokens are ``num_prefix`` prefix
    tokens and a square patch map (when a spatial option needs it)."""
    o = full_options(opts)
    x = np.asarray(x, dtype=np.float64)
    B, N, _ = x.shape
    qkv = x @ qkv_weight.T + (0 if qkv_bias is None else qkv_bias)
    hd = qkv.shape[-1] // (3 * num_heads)
    qkv = qkv.reshape(B, N, 3, num_heads, hd).transpose(2, 0, 3, 1, 4)  # (3, B, h, N, hd)
    side = math.isqrt(N - num_prefix)
    grid = RefGrid(side, side, num_prefix)
    needs_grid = (
        {o["similarity"], o["score_for_weights"]} & {"location", "mixed"}
        or o["candidates"] in ("spatial", "window")
        or o["positional_encoding"] != "none"
    )
    if needs_grid and side * side != N - num_prefix:
        raise ValueError("not a square patch map")
    res = tokens_reference(
        qkv[2], qkv[0], qkv[1], opts, grid=grid if needs_grid else None, k=o["k"] or N, **kwargs
    )
    heads = res["out"]  # (B, h, N, hd)
    merged = heads.transpose(0, 2, 1, 3).reshape(B, N, -1)
    res["out"] = merged @ proj_weight.T + (0 if proj_bias is None else proj_bias)
    return res
