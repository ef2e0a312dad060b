"""The uniform-choice reference beside the 3x3-window one in every locality figure: the
statistics of `LocalityCounter`, the `convnn inspect` table, the depth plot and the report.

Uniform choice is checked against brute force: the mean over queries of the mean Chebyshev
distance to every token of the map, and the share of the map inside the query's 3x3 window
(the quickstart's 4x4 patch map: 1.78 cells and 39%, as the README says).
"""

from __future__ import annotations

import itertools
import json

import pytest
import torch
from torch import nn

from convnn import ConvNN2d, ConvNNAttention, record_selection
from convnn.inspection.locality_stats import LocalityCounter, uniform_reference


def brute(h: int, w: int, queries: list[tuple[int, int]] | None = None) -> tuple[float, float]:
    cells = list(itertools.product(range(h), range(w)))
    queries = queries or cells
    dist = [[max(abs(a - c), abs(b - d)) for c, d in cells] for a, b in queries]
    mean = sum(sum(row) / len(cells) for row in dist) / len(queries)
    window = sum(sum(x <= 1 for x in row) / len(cells) for row in dist) / len(queries)
    return mean, window


@pytest.mark.parametrize(("h", "w"), [(4, 4), (1, 1), (1, 5), (3, 7), (14, 14)])
def test_uniform_reference_is_brute_force(h, w):
    assert uniform_reference((h, w)) == pytest.approx(brute(h, w), abs=1e-12)
    torch.manual_seed(h * w)
    some = torch.stack([torch.randint(0, h, (5,)), torch.randint(0, w, (5,))], 1)
    expected = brute(h, w, [tuple(q) for q in some.tolist()])
    assert uniform_reference((h, w), some) == pytest.approx(expected, abs=1e-12)


def test_quickstart_map_reference_is_the_readmes():
    distance, window = uniform_reference((4, 4))
    assert f"{distance:.2f}" == "1.78" and f"{100 * window:.0f}%" == "39%"


def _summary(layer: nn.Module, x: torch.Tensor) -> dict:
    counter = LocalityCounter()
    with record_selection(layer) as record:
        layer(x)
    counter.update(record[next(iter(record))])
    return counter.summary()


def test_counter_reports_uniform_choice_over_its_own_queries():
    """A stride-2 convolution's queries are every other position: the reference averages
    over those; all-token attention on a 5x5 map lies at the reference of every position."""
    torch.manual_seed(0)
    conv = ConvNN2d.from_conv2d(nn.Conv2d(3, 4, 3, stride=2, padding=1))
    s = _summary(conv, torch.randn(2, 3, 7, 8))
    centres = list(itertools.product(range(0, 7, 2), range(0, 8, 2)))
    expected = brute(7, 8, centres)
    assert s["uniform_mean_distance"] == pytest.approx(expected[0])
    assert s["uniform_window_fraction"] == pytest.approx(expected[1])
    assert s["window_fraction"] == 1.0  # the convolution itself: its whole window
    attention = ConvNNAttention(8, num_heads=2, num_prefix_tokens=1, k=None).eval()
    s = _summary(attention, torch.randn(3, 26, 8))
    assert s["uniform_mean_distance"] == pytest.approx(brute(5, 5)[0])
    assert s["mean_distance"] == pytest.approx(s["uniform_mean_distance"])  # every token


LAYERS = {
    "blocks.0.attn": {"map": [4, 4], "heads": 2, "k": 9, "mean_distance": 1.80,
                      "window_fraction": 0.36, "self_fraction": 0.1, "prefix_fraction": 0.05,
                      "padding_fraction": 0.0, "coverage": 1.0,
                      "uniform_mean_distance": 1.78125, "uniform_window_fraction": 0.390625},
    "blocks.1.attn": {"map": [4, 4], "heads": 2, "k": 9, "mean_distance": 0.95,
                      "window_fraction": 0.92, "self_fraction": 0.1, "prefix_fraction": 0.05,
                      "padding_fraction": 0.0, "coverage": 1.0,
                      "uniform_mean_distance": 1.78125, "uniform_window_fraction": 0.390625},
}  # fmt: skip


def test_inspect_table_shows_uniform_beside_measured():
    from rich.console import Console

    from lightning_modules.cli.inspect import print_locality

    console = Console(record=True, width=220)
    print_locality({"model": "m", "num_images": 8, "layers": LAYERS}, console)
    text = console.export_text()
    head = next(line for line in text.splitlines() if "dist" in line and "layer" in line)
    assert head.index("dist") < head.index("uniform dist") < head.index("3x3")
    assert head.index("3x3") < head.index("uniform 3x3") < head.index("self")
    row = next(line for line in text.splitlines() if "blocks.0.attn" in line)
    assert [c.strip() for c in row.split("│")[5:9]] == ["1.80", "1.78", "36%", "39%"]


def test_depth_plot_draws_the_uniform_reference(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    from convnn.inspection.summary import depth_plot

    figures = []
    monkeypatch.setattr(plt, "close", figures.append)  # keep the figure to look at it
    depth_plot(LAYERS, tmp_path / "depth.png")
    assert (tmp_path / "depth.png").stat().st_size > 0
    (ax,) = figures[0].axes
    lines = {ln.get_label(): ln for ln in ax.get_lines()}
    assert list(lines["uniform choice"].get_ydata()) == [1.78125, 1.78125]
    assert list(lines["3x3 window (8/9)"].get_ydata()) == [8 / 9, 8 / 9]
    assert list(lines["mean over heads"].get_ydata()) == [1.80, 0.95]
    monkeypatch.undo()
    plt.close(figures[0])


def test_report_columns_show_uniform_beside_measured(tmp_path):
    """Cells with a locality.json: the report's distance and 3x3-share columns and their
    uniform references, recorded or (older files) computed from the map size."""
    import csv

    from ablations.report import write_report

    for seed, recorded in enumerate((True, False)):
        cell = tmp_path / f"convnn-s{seed}"
        cell.mkdir()
        info = {"id": cell.name, "setting": "layer=convnn", "values": {"layer": "convnn"}}
        info |= {"seed": seed, "order": 0, "grid": "g", "axes": ["layer"]}
        (cell / "cell.json").write_text(json.dumps(info))
        (cell / "result.json").write_text(json.dumps({**info, "status": "done", "top1": 50.0}))
        layers = {
            name: {k: v for k, v in s.items() if recorded or not k.startswith("uniform")}
            for name, s in LAYERS.items()
        }
        (cell / "locality.json").write_text(json.dumps({"layers": layers}))
    write_report(tmp_path)
    row = next(csv.DictReader(open(tmp_path / "results.csv")))
    assert float(row["locality_first_uniform_mean_distance"]) == pytest.approx(1.78125)
    assert float(row["locality_last_uniform_window_fraction"]) == pytest.approx(0.390625)
    md = (tmp_path / "results.md").read_text()
    head, _, line = [x for x in md.splitlines() if x.startswith("|")]
    cells = {h.strip(): c.strip() for h, c in zip(head.split("|"), line.split("|"), strict=True)}
    assert cells["distance first → last"] == "1.80 → 0.95"
    assert cells["uniform distance"] == "1.78"
    assert cells["3x3 share first → last"] == "36% → 92%"
    assert cells["uniform 3x3 share"] == "39%"
    assert "uniform: the same two numbers for neighbors chosen uniformly" in md
