"""The spectrum study's tables and verdicts (docs/results.md), computed from its recorded
results ``docs/results/spectrum_<task>.json`` (:mod:`ablations.record`).

    python -m ablations.study            # print the tables and the verdicts
    python -m ablations.study --write    # rewrite the generated blocks of the docs

docs/results.md (and the README's summary) hold each generated block between
``<!-- study:NAME -->`` and ``<!-- /study -->``; ``tests/ablations/test_study_results.py``
fails when a block differs from what this module computes from the data, so the documented
numbers cannot drift from it.

Each verdict is a rule on paired differences over seeds (same seed, same data order) with
Student-t 95% intervals: ``reproduced`` when the intervals show what the claim says (a gain:
the interval above 0; "flattens", "at least as good": no gain, or no loss, of ``MARGIN``
points or more), ``not reproduced`` when they exclude it (the gain the claim needs is
outside the interval), ``inconclusive`` otherwise; the evidence column gives the intervals
that decided.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from convnn.errors import DataError
from lightning_modules.files import atomic_write_text

from .stats import Summary, paired

__all__ = ["TASKS", "blocks", "difference", "load", "render", "setting_table", "verdicts"]

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "docs" / "results"
DOC = ROOT / "docs" / "results.md"
README = ROOT / "README.md"
IMAGES = ROOT / "docs" / "img"
TASKS = ("texture", "markers", "digits")
MARGIN = 1.0
"""Points: a gain or loss smaller than this counts as none ("flattens": no further gain of
a point; "at least as good": no loss of a point; a claimed gain is excluded when the
interval's upper end is below a point)."""

FAMILY = {"convnn_vgg_mini": "CNN", "convnn_vit_tiny_patch4_32": "ViT"}


def load(task: str, results: Path = RESULTS) -> dict[str, Any]:
    """The recorded results of ``spectrum_<task>``."""
    return json.loads((results / f"spectrum_{task}.json").read_text())


def _top1(data: dict[str, Any], layer: str) -> dict[str, float]:
    seeds = data["settings"][f"layer={layer}"]["seeds"]
    return {seed: s["top1"] for seed, s in seeds.items()}


def difference(data: dict[str, Any], layer: str, base: str) -> Summary:
    """Paired last-epoch top-1 difference ``layer - base`` over the seeds both ran."""
    found = paired(_top1(data, layer), _top1(data, base))
    if found is None or found.half is None:
        raise DataError(f"fewer than 2 seeds of layer={layer} pair with layer={base}")
    return found


def _diff(s: Summary) -> str:
    return f"{s.mean:+.2f} [{s.low:+.2f}, {s.high:+.2f}]"


def setting_table(data: dict[str, Any]) -> str:
    """Markdown: per layer its last-epoch top-1 (mean ± std, 95% interval), the best epoch's
    mean, the paired difference to the grid's baseline and how many seeds converged."""
    lines = [
        "| layer | top-1 % (last epoch) | 95% interval | best epoch | vs baseline | converged |",
        "|---|---|---|---|---|---|",
    ]
    for name, setting in data["settings"].items():
        layer = name.removeprefix("layer=")
        top1, best = setting["top1"], setting["best_top1"]
        diff = setting.get("diff_top1")
        vs = "baseline"
        if not setting["baseline"]:
            vs = f"{diff['mean']:+.2f} [{diff['ci_low']:+.2f}, {diff['ci_high']:+.2f}]"
        seeds = setting["seeds"].values()
        done = sum(bool(s["converged"]) for s in seeds)
        interval = f"[{top1['ci_low']:.2f}, {top1['ci_high']:.2f}]"
        lines.append(
            f"| {layer} | {top1['mean']:.2f} ± {top1['std']:.2f} | {interval} | "
            f"{best['mean']:.2f} | {vs} | {done}/{len(seeds)} |"
        )
    return "\n".join(lines)


@dataclass
class Verdict:
    claim: str
    verdict: str
    evidence: str


def _above(s: Summary) -> bool:
    """The interval lies above 0: a gain."""
    return s.low > 0


def _below(s: Summary) -> bool:
    """The interval lies below 0: a loss."""
    return s.high < 0


def _no_gain(s: Summary) -> bool:
    """The interval excludes a gain of ``MARGIN`` points or more."""
    return s.high < MARGIN


def _k_claim(d: dict[str, Any]) -> Verdict:
    rise = difference(d, "kvt_9", "kvt_1")
    on12 = difference(d, "kvt_12", "kvt_9")
    on16 = difference(d, "attention", "kvt_9")
    evidence = (
        f"digits: k=9 - k=1 {_diff(rise)}; k=12 - k=9 {_diff(on12)}; "
        f"k=16 (attention) - k=9 {_diff(on16)}"
    )
    if _above(rise) and _no_gain(on12) and _no_gain(on16):
        verdict = "reproduced"
    elif _no_gain(rise) or _above(on16):
        verdict = "not reproduced"
    else:
        verdict = "inconclusive"
    return Verdict("(a) top-1 rises with k up to about 9-12, then flattens", verdict, evidence)


def _branching_claim(d: dict[str, Any]) -> Verdict:
    ratios = ("branching_0.25", "branching_0.5", "branching_0.75")
    means = {r: d["settings"][f"layer={r}"]["top1"]["mean"] for r in ratios}
    best = max(means, key=means.__getitem__)
    vs_conv, vs_convnn = difference(d, best, "conv"), difference(d, best, "convnn_all")
    evidence = (
        f"texture, the best ratio {best.removeprefix('branching_')}: - conv {_diff(vs_conv)}; "
        f"- ConvNN all {_diff(vs_convnn)}"
    )
    if _above(vs_conv) and _above(vs_convnn):
        verdict = "reproduced"
    elif _no_gain(vs_conv) or _no_gain(vs_convnn):
        verdict = "not reproduced"
    else:
        verdict = "inconclusive"
    return Verdict("(b) a moderate branching ratio beats both pure branches", verdict, evidence)


def _candidates_claim(tasks: dict[str, dict[str, Any]]) -> Verdict:
    parts, costs, orders = [], [], []
    for task in ("markers", "digits"):
        d = tasks[task]
        cost = difference(d, "kvt_9", "random_9")  # what random candidates cost: > 0
        order = difference(d, "spatial_9", "random_9")  # spatial ones cost less: > 0
        costs.append(cost)
        orders.append(order)
        parts.append(f"{task}: all - random {_diff(cost)}, spatial - random {_diff(order)}")
    if all(_above(c) for c in costs) and all(_above(o) for o in orders):
        verdict = "reproduced"
    elif all(_no_gain(c) for c in costs) or any(_below(o) for o in orders):
        verdict = "not reproduced"
    elif any(_above(c) for c in costs) and not any(_above(o) for o in orders):
        verdict = "half reproduced: random candidates cost accuracy, spatial ones not less"
    else:
        verdict = "inconclusive"
    claim = "(c) random candidates cost accuracy against all; spatial ones cost less"
    return Verdict(claim, verdict, "; ".join(parts))


def _attention_claim(tasks: dict[str, dict[str, Any]]) -> Verdict:
    diffs = {t: difference(tasks[t], "kvt_9", "attention") for t in ("markers", "digits")}
    evidence = "; ".join(
        f"{t}: ConvNN-attention all k=9 - attention {_diff(s)}" for t, s in diffs.items()
    )
    if all(s.low >= -MARGIN for s in diffs.values()):
        verdict = "reproduced"
    elif any(_below(s) for s in diffs.values()):
        verdict = "not reproduced"
    else:
        verdict = "inconclusive"
    claim = "(d) ConvNN-attention over all candidates is at least as good as attention"
    return Verdict(claim, verdict, evidence)


def verdicts(tasks: dict[str, dict[str, Any]]) -> list[Verdict]:
    """The paper's four qualitative claims judged on the study's data."""
    return [
        _k_claim(tasks["digits"]),
        _branching_claim(tasks["texture"]),
        _candidates_claim(tasks),
        _attention_claim(tasks),
    ]


def verdict_table(tasks: dict[str, dict[str, Any]]) -> str:
    lines = ["| claim | verdict | evidence (paired differences, points, 95% interval) |"]
    lines.append("|---|---|---|")
    lines += [f"| {v.claim} | **{v.verdict}** | {v.evidence} |" for v in verdicts(tasks)]
    return "\n".join(lines)


def _run_line(data: dict[str, Any]) -> str:
    minutes = data["wall_time_s"] / 60 if data.get("wall_time_s") else None
    took = f", {minutes:.0f} min" if minutes else ""
    cells = sum(len(s["seeds"]) for s in data["settings"].values())
    line = f"{cells} cells, {data['epochs']} epochs, seeds {data['seeds']}{took}"
    for update in data.get("updates", []):  # settings rerun since (ablations.record --update)
        names = ", ".join(n.split("=")[-1] for n in update["settings"])
        rerun = update.get("wall_time_s")
        line += f"; {names} rerun since" + (f" ({rerun / 60:.0f} min)" if rerun else "")
    return line


def unconverged(tasks: dict[str, dict[str, Any]]) -> str:
    """Markdown list of the cells that missed the convergence criterion: the mean of their
    last 3 epochs' top-1 against their best epoch's."""
    lines = []
    for task, data in tasks.items():
        for name, setting in data["settings"].items():
            for seed, s in setting["seeds"].items():
                if s["converged"]:
                    continue
                history = s["val_top1_by_epoch"]
                last = sum(history[-3:]) / 3
                lines.append(
                    f"- {task}, {name.removeprefix('layer=')}, seed {seed}: last 3 epochs "
                    f"{last:.2f}, best {max(history):.2f} (epoch {history.index(max(history)) + 1}"
                    f" of {len(history)}); top-1 by epoch {[round(v, 1) for v in history]}"
                )
    return "\n".join(lines) or "Every cell converged."


CLASSES = {"texture": 4, "markers": 2, "digits": 10}
"""Classes of each task (the plots' chance line)."""


def recorded_cells(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The cells of a recorded grid as :func:`ablations.report.collect` gives them, rebuilt
    from the recorded file (the run directories need not exist)."""
    cells = []
    for order, (setting, entry) in enumerate(data["settings"].items()):
        axis, _, value = setting.partition("=")
        for seed, cell in entry["seeds"].items():
            cells.append(
                {**cell, "setting": setting, "values": {axis: value}, "axes": [axis]}
                | {"seed": int(seed), "status": "done", "baseline": entry["baseline"]}
                | {"order": order, "paper": None}
            )
    return cells


def plot_task(task: str, data: dict[str, Any], path: Path) -> None:
    """The report's top-1-by-layer plot of a task (error bars, seeds, chance line), drawn
    from the recorded data."""
    import matplotlib.pyplot as plt

    from .plots import axis_figure
    from .report import summarize

    axes, rows = summarize(recorded_cells(data))
    info = {"grid": f"spectrum_{task}", "epochs": data["epochs"], "seeds": data["seeds"]}
    fig = axis_figure(axes[0], axes, rows, info | {"num_classes": CLASSES[task]})
    fig.savefig(path, dpi=100)
    plt.close(fig)


def blocks(results: Path = RESULTS) -> dict[str, str]:
    """Every generated block of docs/results.md by name."""
    tasks = {t: load(t, results) for t in TASKS}
    found = {f"{t}": f"{_run_line(d)}\n\n{setting_table(d)}" for t, d in tasks.items()}
    found["verdicts"] = verdict_table(tasks)
    found["unconverged"] = unconverged(tasks)
    found["summary"] = "\n".join(f"- {v.claim}: **{v.verdict}**" for v in verdicts(tasks))
    return found


def render(text: str, generated: dict[str, str], tag: str = "study") -> str:
    """``text`` with every ``<!-- TAG:NAME -->`` ... ``<!-- /TAG -->`` block replaced by
    ``generated[NAME]`` (the generated parts of a results page)."""
    block = re.compile(rf"(<!-- {tag}:(\w+) -->\n)(.*?)\n?(<!-- /{tag} -->)", re.S)

    def replace(match: re.Match) -> str:
        name = match[2]
        if name not in generated:
            raise KeyError(f"unknown generated block {tag}:{name}")
        return f"{match[1]}{generated[name]}\n{match[4]}"

    return block.sub(replace, text)


def main(argv: Sequence[str] | None = None) -> None:
    """Print the study's tables and verdicts, or (``--write``) update docs/results.md and
    the README's summary."""
    parser = argparse.ArgumentParser(prog="python -m ablations.study", description=main.__doc__)
    parser.add_argument("--write", action="store_true", help="rewrite the docs' blocks")
    args = parser.parse_args(argv)
    generated = blocks()
    if args.write:
        for path in (DOC, README):
            atomic_write_text(path, render(path.read_text(), generated))
            print(f"wrote {path}")
        for task in TASKS:
            plot_task(task, load(task), IMAGES / f"spectrum_{task}.png")
        print(f"wrote {IMAGES}/spectrum_<task>.png")
        return
    for name, block in generated.items():
        print(f"## {name}\n\n{block}\n")


if __name__ == "__main__":
    main()
