"""`convnn-ablate report` statistics, the paper's numbers beside measured ones on the same
statistic, plots, and `convnn evaluate` printing the published number of a docs/method.md §4 row.

The report tests run on hand-made cell directories with known values: seeds giving top-1
80, 82, 84 have mean 82, std 2 and the 95% interval 82 ± t(0.975, 2) * 2 / sqrt(3). Real
cells (trained, resumed) are in ``test_best_epoch.py``.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import re
import sys
from pathlib import Path

import pytest
import yaml
from training_helpers import tiny_config, write_config

from ablations import ablate as cli
from ablations.grid import load_grid, merged_config
from ablations.plots import axis_figure
from ablations.report import grid_info, markdown, summarize, write_report
from ablations.stats import paired, summary, t_quantile
from convnn.errors import GridError
from lightning_modules.paper import ROWS, compare, find_row, network

ROOT = Path(__file__).resolve().parents[2]
T_975_2 = 4.302652729911275  # Student t, 0.975 quantile, 2 degrees of freedom
HALF = T_975_2 * 2 / math.sqrt(3)  # 4.9683...


def test_t_quantile_and_summary_by_hand():
    assert t_quantile(0.975, 2) == pytest.approx(T_975_2, rel=1e-9)
    assert t_quantile(0.975, 1) == pytest.approx(12.706204736, rel=1e-9)
    s = summary([80, 82, 84])
    assert (s.n, s.mean, s.std) == (3, 82.0, 2.0)
    assert s.half == pytest.approx(4.968275, abs=1e-6)
    assert (s.low, s.high) == (pytest.approx(82 - HALF), pytest.approx(82 + HALF))
    one = summary([70.0])
    assert one.n == 1 and one.std is None and one.low is None and one.excludes_zero is None
    assert summary([]) is None
    d = paired({0: 85, 1: 86, 2: 90, 3: 99}, {0: 80, 1: 82, 2: 84})  # seed 3 has no pair
    assert (d.n, d.mean, d.std) == (3, 5.0, 1.0)
    assert d.low == pytest.approx(5 - T_975_2 / math.sqrt(3)) and d.excludes_zero
    assert paired({0: 81, 1: 81}, {0: 80, 1: 82}).excludes_zero is False


def write_cell(out: Path, setting: str, seed, top1, order: int, **extra) -> None:
    """A finished (``top1`` given) or pending cell directory, as the runner leaves it."""
    layer = setting.split("=")[1]
    cell = {
        "id": f"{layer}-s{seed}",
        "name": f"{setting} seed={seed}",
        "setting": setting,
        "values": {"layer": layer},
        "seed": seed,
        "overrides": {"model.init_args.model_kwargs.layer": layer},
        "order": order,
        "baseline": order == 0,
        "paper": extra.pop("paper", None),
        "grid": "handmade",
        "axes": ["layer"],
    }
    d = out / cell["id"]
    d.mkdir(parents=True)
    (d / "cell.json").write_text(json.dumps(cell))
    config = {"trainer": {"max_epochs": 30}, "data": {"class_path": "datamodules.DigitsDataModule"}}
    (d / "config.yaml").write_text(yaml.safe_dump(config))
    if top1 is not None:
        result = {**cell, "status": "done", "top1": top1, "top5": top1 + 10, "params": 2.0e5}
        result |= {"gflops": 0.007, "wall_time_s": 60.0, "images_per_second": 1000.0}
        result |= {"throughput": {"others_cpus": 0.0, "under_load": False}} | extra
        (d / "result.json").write_text(json.dumps(result))


PAPER = {"row": "vit_b16_convnn_all_k9", "top1": 81.19, "label": "a published row (method §4)"}


def best(top1: float, epoch: int) -> dict:
    """The best-epoch fields the runner records beside the last epoch's (30)."""
    return {"best_top1": top1, "best_epoch": epoch, "last_epoch": 30}


@pytest.fixture
def handmade(tmp_path) -> Path:
    """attention (baseline): 80, 82, 84 at the last epoch, 81, 83, 85 at the best; convnn: 85,
    86, 90 (paired differences 5, 4, 6), best 87, 88, 92 at epochs 27, 29, 30, with a
    published 81.19 (a best-epoch number); random: one seed, 70 (best 71), measured under
    load; a pending cell."""
    out = tmp_path / "grid"
    for seed, top1 in zip((0, 1, 2), (80.0, 82.0, 84.0), strict=True):
        write_cell(out, "layer=attention", seed, top1, 0, **best(top1 + 1, 28))
    for seed, top1, epoch in zip((0, 1, 2), (85.0, 86.0, 90.0), (27, 29, 30), strict=True):
        write_cell(out, "layer=convnn", seed, top1, 1, paper=PAPER, **best(top1 + 2, epoch))
    load = {"others_cpus": 1.6, "under_load": True}
    write_cell(out, "layer=random", 0, 70.0, 2, throughput=load, **best(71.0, 30))
    write_cell(out, "layer=random", 1, None, 2)
    return out


def test_report_statistics_paired_differences_and_paper(handmade):
    axes, rows, info = write_report(handmade)
    assert axes == ["layer"] and [r["layer"] for r in rows] == ["attention", "convnn", "random"]
    assert info == {"grid": "handmade", "epochs": "30", "num_classes": 10, "seeds": [0, 1, 2]}
    base, nn, one = rows
    assert (base["n"], base["top1_mean"], base["top1_std"], base["baseline"]) == (3, 82, 2, True)
    assert base["top1_ci_low"] == pytest.approx(82 - HALF)
    assert base["top1_ci_high"] == pytest.approx(82 + HALF)
    assert nn["diff_top1"] == pytest.approx(5.0) and nn["diff_pairs"] == 3
    assert nn["diff_top1_ci_low"] == pytest.approx(5 - T_975_2 / math.sqrt(3))
    assert nn["diff_excludes_zero"] is True
    assert nn["best_top1_mean"] == pytest.approx(89.0) and nn["best_epochs"] == [27, 29, 30]
    assert nn["best_n"] == 3 and nn["last_epochs"] == [30, 30, 30]
    # the paper's number is a best epoch's: compared with the best epoch's mean, not the last's
    assert nn["paper_top1"] == 81.19 and nn["paper_statistic"] == "best"
    assert nn["paper_measured"] == pytest.approx(89.0)
    assert nn["paper_diff"] == pytest.approx(89 - 81.19)
    assert one["n"] == 1 and one["top1_std"] is None and one["top1_ci_low"] is None
    assert one["diff_top1"] == pytest.approx(-10.0) and one["diff_excludes_zero"] is None
    assert one["status"] == "1 done, 1 pending"

    md = (handmade / "results.md").read_text()
    print(md)
    table = [line for line in md.splitlines() if line.startswith("|")]
    assert len(table) == 5
    head = [c.strip() for c in table[0].strip("|").split("|")]
    cells = [
        dict(zip(head, (c.strip() for c in t.strip("|").split("|")), strict=True))
        for t in table[2:]
    ]
    assert cells[0]["top-1 (%)"] == "82.00 ± 2.00"
    assert cells[0]["top-1 95% CI"] == f"[{82 - HALF:.2f}, {82 + HALF:.2f}]" == "[77.03, 86.97]"
    assert cells[0]["Δ top-1"] == "baseline" and cells[0]["seeds"] == "3"
    assert cells[1]["Δ top-1"] == "+5.00" and cells[1]["Δ 95% CI"] == "[2.52, 7.48]"
    assert cells[1]["Δ ≠ 0"] == "yes"
    assert cells[1]["paper top-1"] == "81.19 (best)" and cells[1]["measured − paper"] == "+7.81"
    assert cells[1]["best top-1 (%)"] == "89.00 ± 2.65" and cells[1]["best epoch"] == "27-30"
    assert cells[0]["best epoch"] == "28" and cells[2]["best top-1 (%)"] == "71.00"
    assert cells[0]["paper top-1"] == "" and cells[2]["measured − paper"] == ""
    # one seed: the value alone, never "± 0.00", and the interval columns say n/a
    assert cells[2]["top-1 (%)"] == "70.00" and cells[2]["top-1 95% CI"] == "n/a"
    assert cells[2]["Δ top-1"] == "-10.00" and cells[2]["Δ 95% CI"] == "n/a"
    assert cells[2]["Δ ≠ 0"] == "n/a"
    assert "± 0.00" not in md
    assert cells[2]["images/s"] == "1,000 †" and cells[0]["images/s"] == "1,000"
    assert md.startswith("# handmade: 30 epochs, seeds 0, 1, 2")
    assert "baseline `layer=attention`, paired by seed" in md and "Chance: 10.0%" in md
    assert "- `layer=convnn`: 81.19, the best epoch's validation top-1, a published row" in md
    assert "top-1 and top-5: the last epoch's" in md
    assert "† images/s measured under load" in md

    with open(handmade / "results.csv") as f:
        by_layer = {r["layer"]: r for r in csv.DictReader(f)}
    assert float(by_layer["convnn"]["diff_top1_ci_high"]) == pytest.approx(5 + T_975_2 / 3**0.5)
    assert by_layer["random"]["top1_std"] == "" and by_layer["attention"]["baseline"] == "True"
    assert float(by_layer["convnn"]["paper_diff"]) == pytest.approx(7.81)
    assert by_layer["convnn"]["paper_statistic"] == "best"
    assert by_layer["convnn"]["best_epochs"] == "27 29 30"
    assert (handmade / "plot_layer.png").stat().st_size > 0


def test_plot_title_chance_line_error_bars_and_points(handmade):
    from ablations.report import collect

    cells = collect(handmade)
    axes, rows = summarize(cells)
    fig = axis_figure("layer", axes, rows, grid_info(cells))
    ax = fig.axes[0]
    assert "handmade" in ax.get_title() and "30 epochs" in ax.get_title()
    assert "95% CI" in ax.get_title()
    chance = [ln for ln in ax.get_lines() if list(ln.get_ydata()) == [10.0, 10.0]]
    assert len(chance) == 1 and chance[0].get_linestyle() == "--"
    means = [ln for ln in ax.get_lines() if ln.get_marker() == "o"]
    assert len(means) == 1 and means[0].get_linestyle() == "None"  # categorical: no lines
    assert list(means[0].get_ydata()) == [82.0, 87.0, 70.0]
    bars = ax.containers[0].lines[2][0].get_segments()  # the 95% intervals
    assert bars[0][:, 1] == pytest.approx([82 - HALF, 82 + HALF])
    assert bars[2][0, 1] == bars[2][1, 1] == 70.0  # one seed: no interval
    seed_lines = [ln for ln in ax.get_lines() if ln.get_marker() == "."]
    seeds = [v for ln in seed_lines for v in ln.get_ydata()]
    assert sorted(seeds) == [80, 82, 84, 85, 86, 90]  # every seed of the settings with 3
    colour = means[0].get_color()  # one series: its seeds take its colour, not gray
    assert all(ln.get_color() == colour for ln in seed_lines)
    best = [ln for ln in ax.get_lines() if ln.get_marker() == "D"]
    assert [y for ln in best for y in ln.get_ydata()] == [83.0, 89.0, 71.0]
    assert all(ln.get_fillstyle() == "none" and ln.get_color() == colour for ln in best)
    _legend_covers_nothing(fig)
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "paper (best epoch)" in labels and "best epoch (mean)" in labels
    stars = [ln for ln in ax.get_lines() if ln.get_marker() == "*"]
    assert len(stars) == 1 and list(stars[0].get_ydata()) == [81.19]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["attention", "convnn", "random"]
    import matplotlib.pyplot as plt

    plt.close(fig)


def _legend_covers_nothing(fig) -> None:
    """The legend lies outside every axes: it covers no data."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    (legend,) = fig.legends
    box = legend.get_window_extent(renderer)
    for ax in fig.axes:
        assert not box.overlaps(ax.get_window_extent(renderer))


@pytest.mark.parametrize("ks", [[3, 9, 25], [4, 16, 64, 256]], ids=["linear", "log"])
def test_plot_dodges_series_at_the_same_x(ks):
    """Two series (similarity) at every k: each k's bars are side by side, not on top of each
    other, in the series' order; single seeds take their series' colour."""
    import matplotlib.pyplot as plt

    rows = []
    for sim_i, sim in enumerate(("cosine", "dot")):
        for k in ks:
            values = [60.0 + k / 10 + sim_i + s for s in (0, 1, 2)]
            rows.append({"k": k, "similarity": sim, "top1_mean": sum(values) / 3, "n": 3,
                         "top1_ci_low": values[0], "top1_ci_high": values[2],
                         "top1_values": values, "paper_top1": None})  # fmt: skip
    fig = axis_figure("k", ["k", "similarity"], rows, {"grid": "g", "epochs": "5"})
    ax = fig.axes[0]
    means = [ln for ln in ax.get_lines() if ln.get_marker() == "o"]
    assert len(means) == 2 and means[0].get_color() != means[1].get_color()
    a, b = (list(ln.get_xdata()) for ln in means)
    for x_a, x_b, k in zip(a, b, ks, strict=True):
        assert x_a < k < x_b  # around the value, in series order
        assert (x_b / x_a if ax.get_xscale() == "log" else x_b - x_a) > 0
    assert ax.get_xscale() == ("log" if ks[-1] / ks[0] >= 16 else "linear")
    for i, x in enumerate(a[:-1]):
        assert b[i] < a[i + 1] and x < b[i]  # one k's pair stays before the next k's
    seeds = [ln for ln in ax.get_lines() if ln.get_marker() == "."]
    scale = math.log2 if ax.get_xscale() == "log" else float
    points = [(scale(x), m.get_color()) for m in means for x in m.get_xdata()]
    for ln in seeds:  # each beside its own series' mean (the nearest one), in its colour
        x = scale(ln.get_xdata()[0])
        nearest = min(points, key=lambda p: abs(p[0] - x))
        assert ln.get_color() == nearest[1]
    assert len(seeds) == 2 * len(ks) and len({ln.get_color() for ln in seeds}) == 2
    _legend_covers_nothing(fig)
    plt.close(fig)


def test_report_cli_prints_statistics(handmade, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["report", str(handmade)])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "82.00 ± 2.00" in out and "[77.03, 86.97]" in out and "+7.81" in out


def test_single_seed_report_has_no_zero_std():
    cells = [
        {"setting": f"layer={x}", "values": {"layer": x}, "seed": None, "status": "done",
         "top1": t, "top5": 90.0, "order": i, "axes": ["layer"]}
        for i, (x, t) in enumerate([("a", 50.0), ("b", 60.0)])
    ]  # fmt: skip
    axes, rows = summarize(cells)
    md = markdown(axes, rows, {"grid": "g", "epochs": "1", "seeds": [None]})
    assert "± 0.00" not in md and "| a | 1 | 50.00 | n/a | baseline |" in md
    assert "| b | 1 | 60.00 | n/a | +10.00 | n/a | n/a |" in md
    assert "paper" not in md.split("\n\n")[2]  # no paper columns without published rows


def test_two_seed_intervals_say_so_and_three_do_not():
    """An interval over 2 seeds (one degree of freedom) is marked where it is printed, for
    the mean and for the paired difference; 3 seeds are not marked."""
    cells = [
        {"setting": f"layer={x}", "values": {"layer": x}, "seed": s, "status": "done",
         "top1": t + step * s, "top5": 99.0, "order": i, "axes": ["layer"]}
        for i, (x, t, step) in enumerate([("a", 50.0, 1), ("b", 60.0, 3)]) for s in range(2)
    ]  # fmt: skip
    axes, rows = summarize(cells)
    md = markdown(axes, rows, {"grid": "g", "epochs": "1", "seeds": [0, 1]})
    half = t_quantile(0.975, 1) * math.sqrt(0.5) / math.sqrt(2)  # std of [50, 51]: sqrt(0.5)
    assert f"| a | 2 | 50.50 ± 0.71 | [{50.5 - half:.2f}, {50.5 + half:.2f}] (2 seeds) |" in md
    b = next(line for line in md.splitlines() if line.startswith("| b "))
    assert b.count("(2 seeds)") == 2  # the mean's interval and the paired difference's (10, 12)
    assert "one degree of freedom" in md
    third = [{**cells[0], "seed": 2, "top1": 52.0}, {**cells[2], "seed": 2, "top1": 61.0}]
    md3 = markdown(*summarize(cells + third), {"grid": "g", "epochs": "1", "seeds": [0, 1, 2]})
    assert "seeds)" not in md3 and "one degree of freedom" not in md3


# ---------------------------------------------------------------- the published numbers


def _config_network(files: list[Path]) -> tuple[str, dict]:
    """Model name and model_kwargs after merging config files (a later model_kwargs mapping
    replaces an earlier one as a whole, as the `convnn` parser does)."""
    model, kwargs = None, {}
    for f in files:
        init = (yaml.safe_load(f.read_text()).get("model") or {}).get("init_args") or {}
        model = init.get("model", model)
        kwargs = init.get("model_kwargs", kwargs)
    return model, dict(kwargs)


@pytest.mark.parametrize("row_id", list(ROWS))
def test_paper_rows_are_their_configs(row_id):
    """Each row's network is its config's (found by find_row) and its top-1 the number that
    the config's header comment quotes."""
    row = ROWS[row_id]
    files = [ROOT / c for c in row.configs]
    model, kwargs = _config_network(files)
    assert find_row(model, kwargs) is row
    assert find_row(model, {**kwargs, "drop_path_rate": 0.3, "pretrained": False}) is row
    if kwargs.get("layer") in ("conv", "attention"):  # unconverted: ConvNN options do nothing
        assert find_row(model, {**kwargs, "k": 99}) is row
        assert find_row(model, {**kwargs, "layer": "convnn"}) is not row
    else:
        assert find_row(model, {**kwargs, "k": 99}) is None
    defaults = {"positional_encoding": "none", "sample_scope": "batch", "layer": "convnn"}
    if kwargs.get("layer", "convnn") == "convnn":  # defaults spelled out: the same network
        assert find_row(model, {**kwargs, **defaults}) is row
    quoted = re.search(r"Paper[^:\n]*: ([\d.]+)% top-1", files[-1].read_text())
    assert quoted and float(quoted.group(1)) == row.top1
    method = (ROOT / "docs" / "method.md").read_text()  # its line in the table of method §4
    assert f"| {row.id} | {row.label} | {row.dataset} | {row.top1:.2f} |" in method


def test_compare_takes_a_difference_only_on_the_rows_data_and_statistic():
    row = ROWS["vit_b16_convnn_all_k9"]
    assert row.statistic == "best" and all(r.statistic == "best" for r in ROWS.values())
    same = compare(row, 80.5, "datamodules.ImageNetDataModule", 1000, "best")
    assert same["difference"] == pytest.approx(80.5 - 81.19) and same["comparable"]
    assert same["statistic"] == same["measured_statistic"] == "best"
    other = compare(row, 80.5, "datamodules.SyntheticDataModule", 10, "best")
    assert other["difference"] is None and "paper on ImageNet-1k" in other["note"]
    assert compare(row, 1.0, "datamodules.ImageNetDataModule", 2, "best")["difference"] is None
    last = compare(row, 80.5, "datamodules.ImageNetDataModule", 1000, "last", "; see x.ckpt")
    assert last["difference"] is None and not last["comparable"]
    assert last["note"] == (
        "paper: the best epoch's validation top-1, measured: the last epoch's validation "
        "top-1; see x.ckpt"
    )
    unknown = compare(row, 80.5, "datamodules.ImageNetDataModule", 1000)
    assert unknown["difference"] is None and "an unknown epoch" in unknown["note"]


def test_defaults_spelled_out_do_not_hide_a_row():
    """`positional_encoding: none` is ConvNNOptions' default: the same network as leaving it
    out; the layer family's own defaults count (ConvNNAttention: dot, softmax, sum)."""
    from convnn.models._builder import ATTENTION_DEFAULTS_ALL
    from convnn.options import ConvNNOptions

    vit = ROWS["vit_b16_convnn_all_k9"]
    assert ConvNNOptions().positional_encoding == "none"
    kwargs = {**vit.model_kwargs, "positional_encoding": "none"}
    assert find_row(vit.model, kwargs) is vit
    assert find_row(vit.model, {**kwargs, "positional_encoding": "sincos"}) is None
    assert find_row(vit.model, {**ATTENTION_DEFAULTS_ALL, "layer": "convnn"}) is vit
    assert find_row(vit.model, {"layer": "convnn", "k": "all"}) is None  # k=None: attention-like
    assert network(vit.model, {"layer": "attention", "k": 5}) == {"layer": "attention"}
    assert find_row(vit.model, {"layer": "attention", "k": 5}) is ROWS["vit_b16_attention"]
    resnet = ROWS["resnet50_convnn_all"]  # cosine is ConvNN2d's default, not the attention's
    assert find_row(resnet.model, {"layer": "convnn", "k": 9}) is resnet
    assert find_row(vit.model, {**vit.model_kwargs, "similarity": "cosine"}) is None


SHIPPED = sorted((ROOT / "ablations" / "grids").glob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_grids_have_seeds_and_their_paper_cells_are_the_rows(path):
    """Every cell a shipped grid tags with a published row builds that row's network: the
    row lookup of `convnn evaluate` (find_row) on the cell's merged config finds the row."""
    grid = load_grid(path)
    assert len(grid.seeds) >= 3
    cells = grid.cells()
    assert sum(c.baseline for c in cells) == len(grid.seeds)
    for cell in cells:
        if not (cell.paper and cell.paper.get("row")):
            continue
        init = merged_config(grid, cell)["model"]["init_args"]
        row = ROWS[cell.paper["row"]]
        assert find_row(init["model"], init.get("model_kwargs")) is row, cell.name
        assert cell.paper["top1"] == row.top1 and cell.paper["statistic"] == row.statistic
    imagenet = {"imagenet_k_sweep": 2, "imagenet_branch_ratio": 1, "imagenet_positional": 1}
    imagenet |= {
        "imagenet_similarity_sampling": 3,
        "cifar10_vgg11_branching": 3,
        "imagenet_vit_b16_4node": 2,
    }
    papered = {c.setting for c in cells if c.paper}
    assert len(papered) == imagenet.get(grid.name, 0)


def test_positional_none_cell_is_the_vit_k9_row():
    grid = load_grid(ROOT / "ablations/grids/imagenet_positional.yaml")
    (cell,) = [c for c in grid.cells() if c.paper and c.seed == 0]
    kwargs = merged_config(grid, cell)["model"]["init_args"]["model_kwargs"]
    assert kwargs["positional_encoding"] == "none"  # spelled out, the default
    assert find_row("convnn_vit_base_patch16_224", kwargs) is ROWS["vit_b16_convnn_all_k9"]


def test_grid_baseline_and_paper_errors(tmp_path, capsys):
    def grid(**extra) -> str:
        spec = {
            "base": "configs/quickstart.yaml",
            "axes": {"model.init_args.model_kwargs.k": [3, 9]},
        }
        (tmp_path / "g.yaml").write_text(yaml.safe_dump({**spec, **extra}))
        return str(tmp_path / "g.yaml")

    assert [c.baseline for c in load_grid(grid()).cells()] == [True, False]
    assert [c.baseline for c in load_grid(grid(baseline={"k": 9})).cells()] == [False, True]
    cells = load_grid(grid(paper=[{"setting": {"k": 9}, "top1": 50, "label": "x"}])).cells()
    assert cells[1].paper == {"top1": 50.0, "label": "x", "statistic": "best"}
    assert cells[0].paper is None
    entry = {"setting": {"k": 9}, "top1": 50, "statistic": "last"}
    assert load_grid(grid(paper=[entry])).cells()[1].paper["statistic"] == "last"
    with pytest.raises(GridError, match="statistic 'max'"):
        load_grid(grid(paper=[{**entry, "statistic": "max"}]))
    with pytest.raises(GridError, match="expected"):  # a row names its own statistic
        load_grid(grid(paper=[{"setting": {"k": 9}, "row": "vgg11_conv", "statistic": "last"}]))
    with pytest.raises(GridError, match="matches 0 settings"):
        load_grid(grid(baseline={"k": 5})).cells()
    with pytest.raises(GridError, match="no published row 'nope'"):
        load_grid(grid(paper=[{"setting": {"k": 9}, "row": "nope"}]))
    with pytest.raises(GridError, match="matches no setting"):
        load_grid(grid(paper=[{"setting": {"k": 5}, "top1": 1}])).cells()
    with pytest.raises(GridError, match="expected"):
        load_grid(grid(paper=[{"setting": {"k": 9}, "top1": 1, "row": "vgg11_conv"}]))


# ---------------------------------------------------------------- convnn evaluate


def test_evaluate_prints_the_paper_number(tmp_path, capsys, monkeypatch):
    """A checkpoint of the method §4 row "VGG-11, standard conv" (one step on synthetic 32x32
    images): `convnn evaluate` prints the paper's 69.78 beside the measured top-1, and no
    difference, since the paper's number is on CIFAR-10. The row's network is narrowed to a
    16-wide head here (the row and the checkpoint alike): the authors' 4096-wide one would
    write a 1.5 GB checkpoint."""
    from lightning_modules.cli import ConvNNCLI, main

    monkeypatch.setattr(sys, "argv", ["convnn"])
    narrow = {"layer": "conv", "head_hidden_size": 16}
    row = ROWS["vgg11_conv"]
    monkeypatch.setitem(ROWS, row.id, dataclasses.replace(row, model_kwargs=narrow))
    config = tiny_config(tmp_path / "runs")
    config["model"]["init_args"] |= {"model": row.model, "model_kwargs": narrow}
    config["data"]["init_args"] |= {"image_size": 32, "num_train": 16, "num_val": 16}
    path = write_config(tmp_path / "vgg.yaml", config)
    cli_run = ConvNNCLI(args=["fit", "--config", str(path), "--trainer.fast_dev_run", "1"])
    ckpt = tmp_path / "vgg11_conv.ckpt"
    cli_run.trainer.save_checkpoint(ckpt)
    capsys.readouterr()
    main(
        ["evaluate", "--ckpt", str(ckpt), "--out", str(tmp_path / "r.json"), "--accelerator", "cpu"]
    )
    out = capsys.readouterr().out
    assert re.search(r"top-1 \(%\)\s*│\s*\d+\.\d\d\s*│\s*69\.78\s*│", out), out
    assert "paper: VGG-11, standard conv on CIFAR-10" in " ".join(out.split())
    assert re.search(r"top-1 measured - paper\s*│\s*n/a: paper on CIFAR-10", out), out
    results = json.loads((tmp_path / "r.json").read_text())
    assert results["paper"]["row"] == "vgg11_conv" and results["paper"]["top1"] == 69.78
    assert results["paper"]["difference"] is None
    assert results["paper"]["note"] == "paper on CIFAR-10, measured on SyntheticDataModule"
    speed = results["throughput"]
    assert speed["repeats"] == 5 and speed["slowest"] <= results["images_per_second"]
    assert results["images_per_second"] <= speed["fastest"]


def test_report_takes_baseline_and_paper_from_the_current_grid(tmp_path):
    """Cells record the grid's baseline and published numbers when prepared; `report --grid`
    (and `run --report`) applies the grid file's current ones to finished cells."""
    spec = {
        "name": "g",
        "base": "configs/quickstart.yaml",
        "seeds": [0, 1],
        "axes": {"layer": {"attention": {"x.layer": "attention"}, "convnn": {"x.layer": "convnn"}}},
    }
    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump(spec))
    out = tmp_path / "out"
    for cell in load_grid(path).cells():
        (out / cell.id).mkdir(parents=True)
        info = {**cell.to_json(), "grid": "g", "axes": ["layer"]}
        (out / cell.id / "cell.json").write_text(json.dumps(info))
        top1 = {"attention": 80.0, "convnn": 85.0}[cell.values["layer"]] + cell.seed
        result = {**info, "status": "done", "top1": top1, "top5": 99.0}
        (out / cell.id / "result.json").write_text(json.dumps(result))
    rows = write_report(out)[1]
    assert rows[0]["baseline"] and rows[1]["diff_top1"] == 5.0 and rows[1]["paper_top1"] is None
    spec |= {
        "baseline": {"layer": "convnn"},
        "paper": [{"setting": {"layer": "convnn"}, "top1": 84, "statistic": "last"}],
    }
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["report", str(out), "--grid", str(path)])
    assert exit_info.value.code == 0
    rows = write_report(out, load_grid(path))[1]
    assert rows[1]["baseline"] and rows[0]["diff_top1"] == -5.0 and rows[0]["diff_pairs"] == 2
    assert rows[1]["paper_top1"] == 84.0 and rows[1]["paper_diff"] == pytest.approx(1.5)
    assert rows[1]["paper_statistic"] == "last"  # a last-epoch number: the last epoch's mean
    spec["paper"][0].pop("statistic")  # the default, best: these cells record no best epoch
    path.write_text(yaml.safe_dump(spec))
    rows = write_report(out, load_grid(path))[1]
    assert rows[1]["paper_statistic"] == "best" and rows[1]["paper_diff"] is None
    assert "baseline `layer=convnn`" in (out / "results.md").read_text()


def test_intervals_are_clipped_to_the_possible_range():
    cells = [
        {"setting": "layer=a", "values": {"layer": "a"}, "seed": s, "status": "done",
         "top1": t, "order": 0, "axes": ["layer"]}
        for s, t in enumerate([30.0, 90.0, 95.0])
    ]  # fmt: skip
    row = summarize(cells)[1][0]
    assert summary([30, 90, 95]).high > 100 and summary([30, 90, 95]).low < 0
    assert (row["top1_ci_low"], row["top1_ci_high"]) == (0.0, 100.0)
