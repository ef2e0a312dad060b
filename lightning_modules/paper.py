"""The paper's published numbers (docs/method.md §4), in one place: ``convnn-ablate report`` and
``convnn evaluate`` both read them from :data:`ROWS`.

A row is identified by its network: the timm model name and the ``model_kwargs`` of the
config that reproduces it (``configs/imagenet/<id>.yaml``, ``configs/cifar/<id>.yaml``),
ignoring kwargs that only regularize training or choose an implementation
(:data:`IGNORED`) and options spelled out at the model's default value (``positional_encoding:
none`` is the same network as no ``positional_encoding``). Its number is comparable with a
measurement on the row's data set (DataModule class and class count) of the same statistic
(:data:`STATISTICS`: every published number is the best epoch's validation top-1, as the
paper's code and DeiT report it); elsewhere it is shown but no difference is taken.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from convnn.errors import GridError, OptionError

__all__ = [
    "IGNORED",
    "ROWS",
    "STATISTICS",
    "PaperRow",
    "compare",
    "find_row",
    "get_row",
    "network",
    "parse_entry",
    "statistic_of",
]

IGNORED = frozenset(
    {
        "pretrained",
        "drop_rate",
        "drop_path_rate",
        "attn_drop_rate",
        "proj_drop_rate",
        "pos_drop_rate",
        "backend",
        "selection_budget_mb",
    }
)
"""``model_kwargs`` that do not change which network a row is (regularization, kernels)."""

STATISTICS = {
    "best": "the best epoch's validation top-1",
    "last": "the last epoch's validation top-1",
}
"""Which epoch a top-1 is taken from. The paper's training code keeps the maximum of the
per-epoch validation top-1 (as DeiT's ``max_accuracy``): its rows are ``best``. A grid's own
``paper:`` number names its statistic (``statistic: best|last``; ``best`` when omitted)."""

MODEL_DEFAULTS = {"layer": "convnn", "branch_ratio": 0.5, "mix": False}
"""The ``convnn_*`` models' own keyword defaults (``convnn.models._common``)."""


@dataclass(frozen=True)
class PaperRow:
    """One published result: top-1 (%) on ``data``'s validation split, GFLOPs, params (M)."""

    id: str
    label: str
    data: str
    num_classes: int
    model: str
    model_kwargs: dict[str, Any]
    top1: float
    gflops: float | None = None
    params_m: float | None = None
    source: str = "docs/method.md §4"
    configs: tuple[str, ...] = field(default=())
    statistic: str = "best"
    """The epoch ``top1`` is taken from (:data:`STATISTICS`)."""

    @property
    def dataset(self) -> str:
        return {"ImageNetDataModule": "ImageNet-1k", "CIFAR10DataModule": "CIFAR-10"}.get(
            self.data, self.data
        )


_BEST = "best"  # the paper's code (and DeiT's) reports the maximum over epochs of val top-1


def _imagenet(id_: str, label: str, model: str, kwargs: dict, top1: float, gf: float, pm: float):
    base = "imagenet_resnet50" if "resnet" in id_ else "imagenet_vit_b16"
    configs = (f"configs/{base}.yaml", f"configs/imagenet/{id_}.yaml")
    data = {"data": "ImageNetDataModule", "num_classes": 1000}
    return PaperRow(id_, label, **data, model=model, model_kwargs=kwargs, top1=top1, gflops=gf,
                    params_m=pm, configs=configs, statistic=_BEST)  # fmt: skip


def _cifar(id_: str, label: str, kwargs: dict, top1: float) -> PaperRow:
    """A row of the CIFAR-10 sweep, run on the authors' VGG-11 (``convnn_vgg11_mlp``: the
    4096-wide classifier of their ``models/vgg.py``)."""
    configs = ("configs/cifar10.yaml", f"configs/cifar/{id_}.yaml")
    source = "docs/method.md §4, CIFAR-10 VGG-11 branching sweep"
    data = {"data": "CIFAR10DataModule", "num_classes": 10}
    return PaperRow(id_, label, **data, model="convnn_vgg11_mlp", model_kwargs=kwargs,
                    top1=top1, source=source, configs=configs, statistic=_BEST)  # fmt: skip


_R50, _VIT = "convnn_resnet50", "convnn_vit_base_patch16_224"
_BRANCH = {"layer": "branching", "branch_ratio": 0.5, "k": 9, "similarity": "cosine"}
_VIT_NN = {"layer": "convnn", "k": 9, "similarity": "dot", "weighting": "softmax"}

ROWS: dict[str, PaperRow] = {
    row.id: row
    for row in (
        _imagenet("resnet50_conv", "ResNet-50, standard conv", _R50, {"layer": "conv"}, 78.86,
                  8.18, 25.58),
        _imagenet("resnet50_convnn_all", "ResNet-50, ConvNN all, k=9", _R50,
                  {"layer": "convnn", "k": 9, "similarity": "cosine", "candidates": "all"},
                  76.22, 10.32, 25.56),
        _imagenet("resnet50_branching_all", "ResNet-50, branching all, k=9", _R50,
                  {**_BRANCH, "candidates": "all"}, 79.42, 10.66, 26.47),
        _imagenet("resnet50_branching_random", "ResNet-50, branching random k=9 r=32", _R50,
                  {**_BRANCH, "candidates": "random", "num_samples": 32}, 78.98, 5.60, 26.47),
        _imagenet("resnet50_branching_spatial", "ResNet-50, branching spatial k=9 r=25", _R50,
                  {**_BRANCH, "candidates": "spatial", "num_samples": 25}, 78.82, 5.58, 26.47),
        _imagenet("vit_b16_attention", "ViT-B/16, self-attention", _VIT,
                  {"layer": "attention"}, 80.94, 35.13, 86.38),
        _imagenet("vit_b16_convnn_all_k9", "ViT-B/16, ConvNN-attention all k=9", _VIT,
                  {**_VIT_NN, "candidates": "all"}, 81.19, 34.43, 86.39),
        _imagenet("vit_b16_convnn_random", "ViT-B/16, ConvNN-attention random k=9 r=32", _VIT,
                  {**_VIT_NN, "candidates": "random", "num_samples": 32}, 76.04, 33.83, 86.39),
        _imagenet("vit_b16_convnn_spatial", "ViT-B/16, ConvNN-attention spatial k=9 r=128",
                  _VIT, {**_VIT_NN, "candidates": "spatial", "num_samples": 128}, 79.31, 34.18,
                  86.39),
        _imagenet("vit_b16_convnn_all_k16", "ViT-B/16, ConvNN-attention all k=16", _VIT,
                  {**_VIT_NN, "k": 16, "candidates": "all"}, 81.60, 34.45, 86.39),
        _cifar("vgg11_conv", "VGG-11, standard conv", {"layer": "conv"}, 69.78),
        _cifar("vgg11_branching", "VGG-11, branching ratio 0.25, location + feature similarity",
               {"layer": "branching", "branch_ratio": 0.25, "k": 9, "similarity": "mixed",
                "lam": 0.5, "candidates": "all", "mix": True}, 75.22),
        _cifar("vgg11_convnn", "VGG-11, ConvNN (branching ratio 1)",
               {"layer": "convnn", "k": 9, "similarity": "cosine", "candidates": "all"}, 60.09),
    )
}  # fmt: skip


def _defaults(model: str) -> tuple[str, dict[str, Any]]:
    """The baseline ``layer`` of ``model`` and its keyword defaults: :data:`MODEL_DEFAULTS`
    and the ConvNN options' (:class:`convnn.options.ConvNNOptions` with the layer's own:
    :class:`~convnn.ConvNNAttention`'s for ViTs, :class:`~convnn.ConvNN2d`'s otherwise)."""
    from convnn.models import vit
    from convnn.models._builder import ATTENTION_DEFAULTS_ALL, CONV_DEFAULTS

    if callable(getattr(vit, model, None)):
        return "attention", {**ATTENTION_DEFAULTS_ALL, **MODEL_DEFAULTS}
    return "conv", {**CONV_DEFAULTS, **MODEL_DEFAULTS}


def network(model: str, model_kwargs: dict[str, Any] | None) -> dict[str, Any]:
    """The ``model_kwargs`` that decide which network ``model`` builds: without
    :data:`IGNORED`, without keywords at their default value, without the ConvNN options of
    an unconverted baseline (``layer: attention``) and ``branch_ratio`` unless branching.
    Two configs of one network give the same dict however many defaults they spell out."""
    from convnn.models._builder import OPTION_NAMES

    baseline, defaults = _defaults(model)
    kwargs = {k: v for k, v in (model_kwargs or {}).items() if k not in IGNORED}
    if kwargs.get("k") == "all":  # the models' spelling of k=None (every token)
        kwargs["k"] = None
    layer = kwargs.get("layer", defaults["layer"])
    if layer == baseline:
        kwargs = {k: v for k, v in kwargs.items() if k not in OPTION_NAMES}
    if layer != "branching":
        kwargs.pop("branch_ratio", None)
    return {k: v for k, v in kwargs.items() if k not in defaults or defaults[k] != v}


def parse_entry(entry: Any) -> dict[str, Any]:
    """A grid's ``paper:`` entry, ``{setting: {...}, row: ID}`` (a row of :data:`ROWS`) or
    ``{setting: {...}, top1: NUMBER[, label: TEXT][, statistic: best|last]}``, as
    ``{"setting", "top1", "label", "statistic"[, "row"]}`` (a row's statistic is the row's; a
    number's is ``best`` unless given); ``GridError`` naming the entry otherwise."""
    ok = isinstance(entry, dict) and isinstance(entry.get("setting"), dict)
    ok = ok and ("row" in entry) != ("top1" in entry)
    ok = ok and not ("row" in entry and "statistic" in entry)
    if not ok or set(entry) - {"setting", "row", "top1", "label", "statistic"}:
        raise GridError(
            f"paper entry {entry!r}: expected {{setting: {{...}}, row: ID}} or "
            "{setting: {...}, top1: NUMBER, label: TEXT, statistic: best|last}"
        )
    if "top1" in entry:
        label = str(entry.get("label", "published"))
        statistic = str(entry.get("statistic", "best"))
        if statistic not in STATISTICS:
            raise GridError(
                f"paper entry {entry['setting']}: statistic {statistic!r}; expected one of "
                f"{', '.join(STATISTICS)}"
            )
        top1 = float(entry["top1"])
        return {"setting": entry["setting"], "top1": top1, "label": label, "statistic": statistic}
    try:
        row = get_row(str(entry["row"]))
    except OptionError as err:
        raise GridError(f"paper entry {entry['setting']}: {err}") from None
    label = entry.get("label", f"{row.label} ({row.source})")
    found = {"setting": entry["setting"], "row": row.id, "top1": row.top1, "label": label}
    return found | {"statistic": row.statistic}


def statistic_of(paper: dict[str, Any] | None) -> str | None:
    """The statistic of a cell's recorded ``paper`` entry: its own, else its row's (cells
    prepared before entries named one), else ``best``; ``None`` without an entry."""
    if not paper:
        return None
    if paper.get("statistic"):
        return str(paper["statistic"])
    row = ROWS.get(str(paper.get("row")))
    return row.statistic if row is not None else "best"


def get_row(row_id: str) -> PaperRow:
    """The row named ``row_id``; ``OptionError`` (key ``row``) naming the known ids otherwise."""
    try:
        return ROWS[row_id]
    except KeyError:
        known = ", ".join(ROWS)
        raise OptionError(f"no published row {row_id!r}; known: {known}", key="row") from None


def find_row(model: str, model_kwargs: dict[str, Any] | None) -> PaperRow | None:
    """The published row of this network: model name and :func:`network` of the kwargs
    (:data:`IGNORED` and keywords at their default aside)."""
    kwargs = network(model, model_kwargs)
    for row in ROWS.values():
        if row.model == model and network(row.model, row.model_kwargs) == kwargs:
            return row
    return None


def compare(
    row: PaperRow,
    top1: float,
    data: str | None,
    num_classes: int | None,
    statistic: str | None = None,
    statistic_note: str = "",
) -> dict[str, Any]:
    """The row's number beside a measured top-1 on ``data`` (a DataModule class path) whose
    epoch is ``statistic`` (:data:`STATISTICS`; ``None``: unknown): ``difference`` =
    measured - paper when the data and the statistic are the row's, else ``None`` and a note
    (``statistic_note`` ends it when the statistic differs: where the row's statistic is)."""
    data_name = (data or "").rsplit(".", 1)[-1]
    comparable = data_name == row.data and num_classes in (None, row.num_classes)
    same = statistic == row.statistic
    note = None
    if not comparable:
        note = f"paper on {row.dataset}, measured on {data_name or 'unknown data'}"
        if data_name == row.data:
            note += f" with {num_classes} classes"
    elif not same:
        measured = STATISTICS.get(statistic or "", "a top-1 of an unknown epoch")
        note = f"paper: {STATISTICS[row.statistic]}, measured: {measured}" + statistic_note
    return {
        "row": row.id,
        "label": row.label,
        "source": row.source,
        "data": row.dataset,
        "top1": row.top1,
        "gflops": row.gflops,
        "params_m": row.params_m,
        "statistic": row.statistic,
        "measured_statistic": statistic,
        "comparable": comparable and same,
        "difference": top1 - row.top1 if comparable and same else None,
        "note": note,
    }
