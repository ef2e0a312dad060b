"""Random candidates under controlled evaluation samples (docs/random_candidates.md).

    python -m ablations.random_eval runs/ablations/random_candidates \\
        ablations/grids/random_candidates.yaml docs/results/random_candidates.json

Every ``random``-candidate cell of a finished grid is evaluated again from its
``last.ckpt`` on its own validation set, under each sample :data:`MODES` names, so that one
trained network is compared with itself under different candidate samples:

- ``fixed_shared``: eval as the layers did it before this study: one fixed hashed sample
  (``sample_seed`` of the first layer), the same in every layer.
- ``fixed_per_layer``: a fixed hashed sample per layer (``sample_seed + layer index``), as
  :func:`convnn.models.convert.convert` now sets the layers up.
- ``fresh``: training-style draws (a fresh draw per batch, independent in each layer, shared
  as the layer's ``sample_scope`` says), averaged over :data:`DRAWS` passes.
- ``fresh_shared``: a fresh draw per batch that every layer shares (one draw reused).
- ``fixed_shared_seeds``: the mean over :data:`DRAWS` fixed shared samples (seeds 0, 1, ...).

The training and validation loss of every epoch come from each cell's ``metrics.csv``.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from statistics import fmean
from typing import Any

import torch
from torch import nn

from convnn.modules.attention import ConvNNAttention
from lightning_modules.evaluation import load_run
from lightning_modules.files import atomic_write_text

from .grid import load_grid
from .record import grid_digest
from .report import collect
from .runner import latest_checkpoint
from .stats import converged, paired, summary
from .study import render

DRAWS = 10
"""Passes over the validation set for the ``fresh`` modes, fixed samples for the seeds mode."""

CURVES = ("train/loss", "val/loss", "train/acc1", "val/acc1")
"""The per-epoch series read from each cell's ``metrics.csv``."""

MODES = ("fixed_shared", "fixed_per_layer", "fresh", "fresh_shared", "fixed_shared_seeds")


def random_layers(model: nn.Module) -> list[ConvNNAttention]:
    """The model's ConvNN-attention layers with ``random`` candidates, in module order."""
    return [
        m
        for m in model.modules()
        if isinstance(m, ConvNNAttention) and m.options.candidates == "random"
    ]


@contextmanager
def sample_seeds(layers: list[ConvNNAttention], seeds: list[int]) -> Iterator[None]:
    """Each layer's fixed eval sample drawn from its own ``sample_seed`` for the duration."""
    saved = [layer.options for layer in layers]
    for layer, seed in zip(layers, seeds, strict=True):
        layer.options = dataclasses.replace(layer.options, sample_seed=seed)
    try:
        yield
    finally:
        for layer, options in zip(layers, saved, strict=True):
            layer.options = options


@contextmanager
def fresh_draws(layers: list[ConvNNAttention], seed: int, shared: bool) -> Iterator[None]:
    """The layers draw candidates as in training (fresh per call, global RNG; dropout is 0
    in these models), every call reseeded from ``seed`` and a counter: per layer
    (independent draws) or once per forward pass for all layers (``shared``: one draw)."""
    calls = {"n": 0}

    def reseed(index: int) -> Callable[[nn.Module, Any], None]:
        def hook(module: nn.Module, args: Any) -> None:
            if index == 0:
                calls["n"] += 1
            layer_part = 0 if shared else index
            torch.manual_seed(seed * 1_000_003 + calls["n"] * 1_009 + layer_part)

        return hook

    handles = [layer.register_forward_pre_hook(reseed(i)) for i, layer in enumerate(layers)]
    for layer in layers:
        layer.training = True
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
        for layer in layers:
            layer.training = False


@torch.no_grad()
def top1(model: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """Top-1 accuracy (%) of ``model`` over ``batches``."""
    correct = total = 0
    for x, y in batches:
        correct += int((model(x).argmax(-1) == y).sum())
        total += len(y)
    return 100.0 * correct / total


def evaluate_cell(ckpt: Path, draws: int = DRAWS) -> dict[str, float]:
    """Top-1 (%) of the checkpoint under each of :data:`MODES`."""
    _, module, dm, _ = load_run(ckpt, None, None, 0)
    dm.setup("validate")
    batches = [(x, y) for x, y in dm.val_dataloader()]
    model = module.eval()
    layers = random_layers(model)
    base = layers[0].options.sample_seed
    result: dict[str, float] = {"layers": len(layers)}
    with sample_seeds(layers, [base] * len(layers)):
        result["fixed_shared"] = top1(model, batches)
    with sample_seeds(layers, [base + i for i in range(len(layers))]):
        result["fixed_per_layer"] = top1(model, batches)
    for mode, shared in (("fresh", False), ("fresh_shared", True)):
        passes = []
        for d in range(draws):
            with fresh_draws(layers, d, shared):
                passes.append(top1(model, batches))
        result[mode] = fmean(passes)
    fixed = []
    for s in range(draws):
        with sample_seeds(layers, [base + s] * len(layers)):
            fixed.append(top1(model, batches))
    result["fixed_shared_seeds"] = fmean(fixed)
    result["fixed_shared_seeds_min"], result["fixed_shared_seeds_max"] = min(fixed), max(fixed)
    return result


def loss_curves(cell_dir: Path) -> dict[str, list[float]]:
    """Per-epoch ``train/loss``, ``val/loss``, ``train/acc1`` and ``val/acc1`` of a cell."""
    with open(cell_dir / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return {k: [float(r[k]) for r in rows if r.get(k)] for k in CURVES}


def study(out: Path, grid_path: Path, draws: int = DRAWS) -> dict[str, Any]:
    """Every cell's loss curves, and every random cell's top-1 under each mode, with per
    setting the mean and 95% interval of each mode and of each mode minus ``fixed_shared``
    (paired by seed), and of each mode minus the baseline's top-1."""
    grid = load_grid(grid_path)
    cells = [c for c in collect(out, grid) if c.get("status") == "done"]
    cells.sort(key=lambda c: (c.get("order", 0), c["seed"]))  # grid order
    baseline = {c["seed"]: c["top1"] for c in cells if c.get("baseline")}
    settings: dict[str, Any] = {}
    for setting in dict.fromkeys(c["setting"] for c in cells):
        entry: dict[str, Any] = {"seeds": {}}
        for c in sorted((c for c in cells if c["setting"] == setting), key=lambda c: c["seed"]):
            cell_dir = out / c["id"]
            seed_entry: dict[str, Any] = {"top1": c["top1"], "curves": loss_curves(cell_dir)}
            if not c.get("baseline"):
                seed_entry["modes"] = evaluate_cell(latest_checkpoint(cell_dir), draws)
            entry["seeds"][str(c["seed"])] = seed_entry
        seeds = entry["seeds"]
        modes = [m for m in MODES if all("modes" in s for s in seeds.values())]
        for mode in modes:
            values = {int(k): s["modes"][mode] for k, s in seeds.items()}
            fixed = {int(k): s["modes"]["fixed_shared"] for k, s in seeds.items()}
            diff = paired(values, fixed)
            to_base = paired(values, baseline)
            entry[mode] = {
                **(_summary_dict(summary(values.values())) or {}),
                "minus_fixed_shared": _summary_dict(diff),
                "minus_baseline": _summary_dict(to_base),
            }
        settings[setting] = entry
    return {
        "grid": str(grid_path),
        "grid_sha256": grid_digest(grid_path),
        "draws": draws,
        "settings": settings,
    }


def _summary_dict(s: Any) -> dict[str, float | None] | None:
    return None if s is None else {"mean": s.mean, "std": s.std, "half": s.half}


MODE_LABELS = {
    "fixed_shared": "one fixed sample, shared by the layers (before)",
    "fixed_per_layer": "one fixed sample per layer (now)",
    "fresh": "fresh draws per layer (as trained)",
    "fresh_shared": "a fresh draw shared by the layers",
    "fixed_shared_seeds": f"{DRAWS} fixed shared samples, mean",
}


def _interval(s: dict[str, Any] | None, sign: bool = False) -> str:
    if not s:
        return "n/a"
    mean = f"{s['mean']:+.2f}" if sign else f"{s['mean']:.2f}"
    if s.get("half") is None:
        return mean
    fmt = "{:+.2f}" if sign else "{:.2f}"
    low, high = s["mean"] - s["half"], s["mean"] + s["half"]
    if not sign:  # a top-1 interval, clipped to the possible range as the reports do
        low, high = max(0.0, low), min(100.0, high)
    return f"{mean} [{fmt.format(low)}, {fmt.format(high)}]"


def modes_table(data: dict[str, Any]) -> str:
    """Per random setting, the top-1 under each eval mode and its paired difference to the
    recorded (``fixed_shared``) one."""
    modes = [m for m in MODES if m != "fixed_shared"]
    head = ["setting", MODE_LABELS["fixed_shared"], *(MODE_LABELS[m] for m in modes)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, entry in data["settings"].items():
        if "fixed_shared" not in entry:
            continue
        cells = [_interval(entry["fixed_shared"])]
        for mode in modes:
            diff = _interval(entry[mode]["minus_fixed_shared"], sign=True)
            cells.append(f"{entry[mode]['mean']:.2f} ({diff})")
        lines.append(f"| {name.split('=')[-1]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def baseline_table(data: dict[str, Any]) -> str:
    """Per setting, its top-1 minus the baseline's (paired by seed) as recorded and with the
    per-layer eval sample, and its last epoch's training and validation loss and top-1."""
    head = ["setting", "top-1 (before)", "- all (before)", "top-1 (now)", "- all (now)"]
    head += ["train loss", "val loss (before)", "train top-1", "val top-1 (before)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, entry in data["settings"].items():
        seeds = entry["seeds"].values()
        last = {k: fmean(s["curves"][k][-1] for s in seeds) for k in CURVES}
        top1 = summary(s["top1"] for s in seeds)
        row = [name.split("=")[-1], _interval(_summary_dict(top1))]
        if "fixed_shared" in entry:
            row += [_interval(entry["fixed_shared"]["minus_baseline"], sign=True)]
            now = entry["fixed_per_layer"]
            row += [_interval(now), _interval(now["minus_baseline"], sign=True)]
        else:
            row += ["(baseline)", _interval(_summary_dict(top1)), "(baseline)"]
        row += [f"{last['train/loss']:.3f}", f"{last['val/loss']:.3f}"]
        row += [f"{100 * last['train/acc1']:.1f}", f"{100 * last['val/acc1']:.1f}"]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def plot_curves(data: dict[str, Any], path: Path) -> None:
    """Training and validation loss by epoch, mean over seeds, one line per setting."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    for name, entry in data["settings"].items():
        seeds = list(entry["seeds"].values())
        for ax, key in zip(axes, ("train/loss", "val/loss"), strict=True):
            series = [s["curves"][key] for s in seeds]
            mean = [fmean(v) for v in zip(*series, strict=True)]
            ax.plot(range(1, len(mean) + 1), mean, label=name.split("=")[-1])
    titles = ("training loss (fresh draws)", "validation loss (before)")
    for ax, title in zip(axes, titles, strict=True):
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.set_yscale("log")
    axes[0].set_ylabel(f"cross-entropy, mean of {len(seeds)} seeds")
    axes[1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


RESULTS = Path("docs/results/random_candidates.json")
DOC = Path("docs/random_candidates.md")
PLOT = Path("docs/img/random_candidates_loss.png")


def _high(s: dict[str, Any]) -> float:
    return s["mean"] + (s["half"] or 0.0)


def _random(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n.split("=")[-1]: e for n, e in data["settings"].items() if "fixed_shared" in e}


def _by_seed(seeds: dict[str, Any], mode: str) -> dict[str, float]:
    return {k: s["modes"][mode] for k, s in seeds.items()}


def _paired_modes(entry: dict[str, Any], a: str, b: str) -> dict[str, float | None] | None:
    """``a - b`` of one setting's eval modes, paired by seed."""
    seeds = entry["seeds"]
    return _summary_dict(paired(_by_seed(seeds, a), _by_seed(seeds, b)))


def _between(data: dict[str, Any], a: str, b: str, mode: str) -> dict[str, float | None] | None:
    """Setting ``a`` minus setting ``b`` under eval ``mode``, paired by seed."""
    rows = _random(data)
    return _summary_dict(paired(_by_seed(rows[a]["seeds"], mode), _by_seed(rows[b]["seeds"], mode)))


def convergence(data: dict[str, Any]) -> str:
    """Which cells miss the reports' convergence rule (:func:`ablations.stats.converged`) on
    the statistic they trained for: validation top-1 for the baseline, training top-1 (fresh
    draws) for random cells, whose validation top-1 by epoch used the shared sample."""
    missed = []
    for name, entry in data["settings"].items():
        key = "train/acc1" if "fixed_shared" in entry else "val/acc1"
        for seed, cell in entry["seeds"].items():
            curve = [100 * v for v in cell["curves"][key]]
            if not converged(curve):
                last = fmean(curve[-3:])
                missed.append(
                    f"{name.split('=')[-1]} seed {seed} ({key}: last 3 epochs {last:.2f}, "
                    f"best {max(curve):.2f})"
                )
    total = sum(len(e["seeds"]) for e in data["settings"].values())
    if not missed:
        return f"Convergence: all {total} cells meet the rule."
    return f"Convergence: {total - len(missed)} of {total} cells meet the rule; not " + (
        "; ".join(missed) + "."
    )


def reading(data: dict[str, Any]) -> str:
    """What the tables show, each statement with its paired 95% interval."""
    rows = _random(data)
    lines = []
    gains = {n: e["fixed_per_layer"]["minus_fixed_shared"] for n, e in rows.items()}
    above = [n for n, g in gains.items() if g and g["half"] is not None and g["mean"] > g["half"]]
    lines.append(
        f"- One fixed sample per layer instead of one shared by the layers raises top-1 in "
        f"{len(above)} of {len(rows)} random settings with an interval above 0: "
        + "; ".join(f"{n} {_interval(g, sign=True)}" for n, g in gains.items())
        + "."
    )
    fixing = {n: _paired_modes(e, "fixed_per_layer", "fresh") for n, e in rows.items()}
    sharing = {n: _paired_modes(e, "fresh_shared", "fresh") for n, e in rows.items()}
    below = [n for n, d in sharing.items() if d and d["half"] is not None and _high(d) < 0]
    shared_costs = all(
        d and d["half"] is not None and d["mean"] + d["half"] < 0 for d in sharing.values()
    )
    lines.append(
        "- Fixing the sample, per layer, against fresh training-style draws per layer: "
        + "; ".join(f"{n} {_interval(d, sign=True)}" for n, d in fixing.items())
        + ". Sharing a fresh draw across the layers, against fresh draws per layer: "
        + "; ".join(f"{n} {_interval(d, sign=True)}" for n, d in sharing.items())
        + (
            ": every interval below 0, so sharing the sample across layers is what costs."
            if shared_costs
            else f": below 0 except in {', '.join(n for n in sharing if n not in below)}."
        )
    )
    luck = {n: e["fixed_shared_seeds"]["minus_fixed_shared"] for n, e in rows.items()}
    lines.append(
        "- How lucky the seed-0 sample is (mean over 10 fixed shared samples minus it): "
        + "; ".join(f"{n} {_interval(d, sign=True)}" for n, d in luck.items())
        + "; the per-layer gain is larger than the upper bound of this luck in "
        + (", ".join(n for n in rows if gains[n]["mean"] > _high(luck[n])) or "no setting")
        + "."
    )
    now = {n: e["fixed_per_layer"]["minus_baseline"] for n, e in rows.items()}
    lines.append(
        "- With the per-layer sample, random candidates still cost against all 16 tokens "
        "(top-1 minus `all`): "
        + "; ".join(f"{n} {_interval(d, sign=True)}" for n, d in now.items())
        + "."
    )
    lines.append("- " + convergence(data))
    if {"r9", "r9_example", "r9_head"} <= set(rows):
        scope = [
            f"{n} minus r9 {_interval(_between(data, n, 'r9', 'fixed_per_layer'), sign=True)}"
            for n in ("r9_example", "r9_head")
        ]
        lines.append("- Who shares a training draw (per layer eval): " + "; ".join(scope) + ".")
    return "\n".join(lines)


def blocks(data: dict[str, Any]) -> dict[str, str]:
    """The generated blocks of docs/random_candidates.md by name."""
    return {"modes": modes_table(data), "baseline": baseline_table(data), "reading": reading(data)}


def main(argv: list[str] | None = None) -> None:
    """Evaluate a finished grid's random cells into a JSON file, or (``--write``) render
    docs/random_candidates.md's tables and its loss plot from the recorded JSON."""
    parser = argparse.ArgumentParser(prog="python -m ablations.random_eval", description=__doc__)
    parser.add_argument("out", type=Path, nargs="?", help="the grid's output directory")
    parser.add_argument("grid", type=Path, nargs="?", help="the grid file")
    parser.add_argument("json", type=Path, nargs="?", default=RESULTS, help="results file")
    parser.add_argument("--draws", type=int, default=DRAWS)
    parser.add_argument("--write", action="store_true", help="render the doc from the JSON")
    args = parser.parse_args(argv)
    if args.write:
        data = json.loads(args.json.read_text())
        atomic_write_text(DOC, render(DOC.read_text(), blocks(data), tag="random"))
        plot_curves(data, PLOT)
        print(f"wrote {DOC} and {PLOT}")
        return
    if args.out is None or args.grid is None:
        parser.error("OUT and GRID are needed unless --write")
    data = study(args.out, args.grid, args.draws)
    atomic_write_text(args.json, json.dumps(data, indent=1) + "\n")
    print(modes_table(data), baseline_table(data), sep="\n\n")


if __name__ == "__main__":
    main()
