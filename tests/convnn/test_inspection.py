"""Issue 14: see what ConvNN selects.

* the recorded selection is the reference backend's, on every candidate kind and path,
  and recording changes no output (nor the random draws);
* a ``from_conv2d`` layer's statistics and pictures are exactly the 3x3 window;
* an all-token attention layer's statistics match a count by hand;
* ``convnn inspect`` on a (one-epoch) quickstart checkpoint writes its files, the training
  callback writes image and scalar events, the runner writes ``locality.json`` and the
  report turns it into columns.
"""

from __future__ import annotations

import csv
import itertools
import json
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import convnn
from convnn import ConvNN2d, ConvNNAttention, record_selection, selection
from convnn.functional import select, select2d
from convnn.inspection import LocalityCounter, neighbor_view, panel, query_at
from convnn.inspection.pictures import QUERY

ROOT = Path(__file__).resolve().parents[2]

MAP_CASES = {
    "all_cosine": dict(similarity="cosine", k=5),
    "all_location_conv_path": dict(similarity="location", k=9, weighting="none"),
    "window_pad_attention_path": dict(
        candidates="window", similarity="dot", weighting="softmax", kernel="sum"
    ),
    "window_shift_mixed": dict(
        candidates="window", window_border="shift", similarity="mixed", weighting="softmax", k=5
    ),
    "spatial": dict(candidates="spatial", num_samples=9, similarity="euclidean", k=4),
    "random": dict(candidates="random", num_samples=8, k=4, weighting="similarity"),
}
TOKEN_CASES = {
    "dot_k5": dict(k=5),
    "all_tokens_sdpa": dict(k=None),
    "window_shift_mixed": dict(
        candidates="window", window_size=3, similarity="mixed", num_prefix_tokens=0
    ),
    "random_per_head": dict(candidates="random", num_samples=6, k=4, sample_scope="head"),
}


def _record(layer: nn.Module, x: torch.Tensor):
    with record_selection(layer) as record:
        out = layer(x)
    return out, record[next(iter(record))]


def _both_backends(layer, x, monkeypatch):
    """Output and selection under ``fast`` and under ``reference``."""
    monkeypatch.setenv("CONVNN_BACKEND", "fast")
    fast = _record(layer, x)
    monkeypatch.setenv("CONVNN_BACKEND", "reference")
    return fast, _record(layer, x)


@pytest.mark.parametrize("case", MAP_CASES, ids=list(MAP_CASES))
def test_recorded_map_selection_is_the_reference_selection(case, monkeypatch):
    torch.manual_seed(0)
    layer = ConvNN2d(4, 4, 3, padding=1, **MAP_CASES[case]).eval()
    x = torch.randn(2, 4, 5, 6)
    monkeypatch.setenv("CONVNN_BACKEND", "fast")
    plain = layer(x)
    (out, fast), (_, ref) = _both_backends(layer, x, monkeypatch)
    assert torch.equal(out, plain)  # recording changes nothing
    assert fast.index.shape == (2, 30, layer.options.k)
    assert torch.equal(fast.index, ref.index)
    assert torch.allclose(fast.weights, ref.weights, atol=1e-5)
    geometry = (layer.kernel_size, layer.stride, layer.padding)
    direct = select2d(x, *geometry, options=layer.options, backend="reference")
    assert torch.equal(direct.index, fast.index) and direct.grid == fast.grid


@pytest.mark.parametrize("case", TOKEN_CASES, ids=list(TOKEN_CASES))
def test_recorded_attention_selection_is_the_reference_selection(case, monkeypatch):
    torch.manual_seed(0)
    settings = {"num_prefix_tokens": 1, **TOKEN_CASES[case]}
    layer = ConvNNAttention(16, num_heads=2, **settings).eval()
    prefix = settings["num_prefix_tokens"]
    x = torch.randn(2, prefix + 16, 16)
    monkeypatch.setenv("CONVNN_BACKEND", "fast")
    plain = layer(x)
    (out, fast), (_, ref) = _both_backends(layer, x, monkeypatch)
    assert torch.equal(out, plain)
    assert fast.index.shape[:3] == (2, 2, prefix + 16) and fast.grid.num_prefix == prefix
    assert torch.equal(fast.index, ref.index)
    assert torch.allclose(fast.weights, ref.weights, atol=1e-5)


def test_weights_and_indices_reproduce_the_sum_kernel_output():
    torch.manual_seed(1)
    opts = convnn.ConvNNOptions(k=4, similarity="dot", weighting="softmax", kernel="sum")
    q, key, v = torch.randn(3, 2, 10, 8).unbind(0)
    chosen = select(v, q, key, options=opts)
    by_hand = (chosen.weights[..., None] * v[torch.arange(2)[:, None, None], chosen.index]).sum(-2)
    assert torch.allclose(convnn.convnn(v, q, key, options=opts), by_hand, atol=1e-6)
    assert chosen.weights.sum(-1).allclose(torch.ones(2, 10))


def test_random_training_draws_are_unchanged_and_the_query_is_selected():
    layer = ConvNN2d(3, 3, 3, padding=1, candidates="random", num_samples=10, k=4).train()
    x = torch.randn(2, 3, 6, 6)
    torch.manual_seed(5)
    plain, after = layer(x), torch.rand(1)
    torch.manual_seed(5)
    out, chosen = _record(layer, x)
    assert torch.equal(out, plain) and torch.equal(torch.rand(1), after)
    counter = LocalityCounter()
    counter.update(chosen)
    assert counter.summary()["self_fraction"] == pytest.approx(1 / 4)


def test_recording_leaves_no_listener_or_hooks_behind():
    from convnn.inspection.selection_record import LAYERS
    from convnn.models.size_check import CONVNN_LAYERS

    assert LAYERS == CONVNN_LAYERS
    layer = ConvNN2d(3, 3, 3, padding=1)
    with pytest.raises(RuntimeError), record_selection(layer):
        assert selection.SINK is not None
        raise RuntimeError
    assert selection.SINK is None and not layer._forward_hooks and not layer._forward_pre_hooks
    with record_selection(nn.Sequential(nn.Conv2d(3, 3, 1))) as record:
        layer(torch.randn(1, 3, 4, 4))  # a ConvNN layer outside the recorded model
    assert len(record) == 0


@pytest.mark.parametrize("stride", [1, 2])
def test_from_conv2d_selects_exactly_the_3x3_window(stride):
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 5, 3, stride=stride, padding=1)
    layer = ConvNN2d.from_conv2d(conv)
    x = torch.randn(2, 3, 7, 8)
    out, chosen = _record(layer, x)
    assert torch.allclose(out, conv(x), atol=1e-5)
    counter = LocalityCounter()
    counter.update(chosen)
    s = counter.summary()
    assert s["window_fraction"] == 1.0 and s["mean_distance"] == pytest.approx(8 / 9)
    assert s["distance_histogram"] == pytest.approx([1 / 9, 8 / 9])
    assert s["self_fraction"] == pytest.approx(1 / 9) and s["prefix_fraction"] == 0
    centres = list(itertools.product(range(0, 7, stride), range(0, 8, stride)))
    in_map = sum(
        0 <= r + dr < 7 and 0 <= c + dc < 8
        for (r, c), dr, dc in itertools.product(centres, (-1, 0, 1), (-1, 0, 1))
    )
    assert s["padding_fraction"] == pytest.approx(1 - in_map / (9 * len(centres)))
    assert s["coverage"] == 1.0 and s["map"] == [7, 8]
    for query in range(chosen.query_index.numel()):
        view = neighbor_view(chosen, query, example=1)
        r, c = view.query
        window = torch.zeros(9, 10, dtype=torch.bool)
        window[r : r + 3, c : c + 3] = True  # the band shifts the map by one cell
        assert torch.equal(view.selected, window)
    corner = panel(torch.zeros(1, 7, 8), neighbor_view(chosen, query_at(chosen, (0.0, 0.0))))
    cell, band = 14, 8  # 112 / 8 columns; the band is at most 8 pixels
    assert corner.shape == (3, 7 * cell + 2 * band, 8 * cell + 2 * band)
    assert torch.equal(corner[:, band, band], QUERY)  # the query's outline
    lit, far = corner[:, 2, band + cell // 2], corner[:, 2, -3]  # padding above it; far away
    assert lit[0] > lit[2] + 0.5 and far[0] == far[2] < 0.3  # orange; grey


def test_all_token_attention_statistics_by_hand():
    torch.manual_seed(0)
    layer = ConvNNAttention(8, num_heads=2, num_prefix_tokens=1, k=None).eval()
    _, chosen = _record(layer, torch.randn(3, 1 + 25, 8))
    counter = LocalityCounter()
    counter.update(chosen)
    s = counter.summary()
    cells = list(itertools.product(range(5), range(5)))
    pairs = [max(abs(a - c), abs(b - d)) for (a, b), (c, d) in itertools.product(cells, cells)]
    assert s["mean_distance"] == pytest.approx(sum(pairs) / len(pairs))
    assert s["mean_distance_per_head"] == pytest.approx([s["mean_distance"]] * 2)
    assert s["prefix_fraction"] == pytest.approx(1 / 26)
    assert s["self_fraction"] == pytest.approx(1 / 26)
    assert s["window_fraction"] == pytest.approx(13 * 13 / (25 * 26))
    assert s["coverage"] == 1.0 and s["heads"] == 2 and s["images"] == 3
    view = neighbor_view(chosen, query_at(chosen, (0.5, 0.5)), example=2, head=1)
    assert view.selected[1:-1, 1:-1].all() and view.prefix == 1 and view.query == (2, 2)


# -- the CLI, the callback, the runner and the report on a one-epoch quickstart run ----------


@pytest.fixture(scope="module")
def quickstart_run(tmp_path_factory):
    """``convnn fit -c configs/quickstart.yaml`` for one short epoch (in-process)."""
    from lightning_modules.cli import ConvNNCLI

    tmp = tmp_path_factory.mktemp("inspect")
    args = ["fit", "-c", str(ROOT / "configs" / "quickstart.yaml")]
    args += ["--trainer.logger.init_args.save_dir", str(tmp), "--trainer.max_epochs", "1"]
    args += ["--trainer.limit_train_batches", "3", "--trainer.limit_val_batches", "2"]
    args += ["--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(tmp)]
    argv, sys.argv = sys.argv, ["convnn"]
    try:
        ConvNNCLI(args=args)
    finally:
        sys.argv = argv
    run = tmp / "quickstart" / "version_0"
    return {"tmp": tmp, "run": run, "ckpt": run / "checkpoints" / "last.ckpt"}


def test_callback_writes_locality_scalars_and_pictures(quickstart_run):
    from training_helpers import events

    tags = events(quickstart_run["run"]).Tags()
    for i in range(4):
        assert f"locality/blocks.{i}.attn/mean_distance" in tags["scalars"]
        assert f"locality/blocks.{i}.attn/prefix_fraction" in tags["scalars"]
        assert f"neighbors/blocks.{i}.attn" in tags["images"]


def test_inspect_cli_writes_locality_json_and_pictures(quickstart_run, capsys):
    from lightning_modules.cli import main

    out = quickstart_run["tmp"] / "inspect"
    args = ["inspect", "--ckpt", str(quickstart_run["ckpt"]), "--out", str(out)]
    main([*args, "--images", "2", "--max_images", "40", "--queries", "8,8 0,15"])
    result = json.loads((out / "locality.json").read_text())
    assert list(result["layers"]) == [f"blocks.{i}.attn" for i in range(4)]
    assert result["num_images"] == 40 and result["queries"] == [[8, 8], [0, 15]]
    for s in result["layers"].values():
        assert 0 <= s["window_fraction"] <= 1 and 0 < s["mean_distance"] < 4
        assert sum(s["distance_histogram"]) == pytest.approx(1.0)
        assert (s["map"], s["heads"], s["k"], s["images"]) == ([4, 4], 2, 9, 40)
    for name in ("neighbors_0.png", "neighbors_1.png", "locality_depth.png"):
        data = (out / name).read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) < 200_000
    assert "blocks.3.attn" in capsys.readouterr().out
    with pytest.raises(SystemExit, match=r"^convnn inspect: error: --queries '8;x'"):
        main([*args, "--queries", "8;x"])


def test_runner_locality_feeds_the_report(quickstart_run, tmp_path, monkeypatch):
    from ablations.report import write_report
    from lightning_modules import cell_evaluation

    monkeypatch.setattr(cell_evaluation, "LOCALITY_IMAGES", 50)

    layers = json.loads(cell_evaluation.write_locality(quickstart_run["ckpt"]).read_text())[
        "layers"
    ]
    assert list(layers) == [f"blocks.{i}.attn" for i in range(4)]
    assert {s["images"] for s in layers.values()} == {50}
    for seed, (first, last) in enumerate([(0.8, 1.2), (1.0, 1.6)]):
        cell = tmp_path / f"convnn-s{seed}"
        cell.mkdir()
        info = {"id": cell.name, "setting": "layer=convnn", "values": {"layer": "convnn"}}
        info |= {"seed": seed, "order": 0, "grid": "g", "axes": ["layer"]}
        (cell / "cell.json").write_text(json.dumps(info))
        (cell / "result.json").write_text(json.dumps({**info, "status": "done", "top1": 50.0}))
        stats = [
            {"mean_distance": d, "window_fraction": 0.5, "prefix_fraction": 0.1}
            for d in (first, last)
        ]
        (cell / "locality.json").write_text(
            json.dumps({"layers": dict(zip("ab", stats, strict=True))})
        )
    write_report(tmp_path)
    row = next(csv.DictReader(open(tmp_path / "results.csv")))
    assert float(row["locality_first_mean_distance"]) == pytest.approx(0.9)
    assert float(row["locality_last_mean_distance"]) == pytest.approx(1.4)
    assert float(row["locality_prefix_fraction"]) == pytest.approx(0.1)
    assert "| 0.90 → 1.40 |" in (tmp_path / "results.md").read_text()


def test_a_finished_cell_loads_its_checkpoint_once(quickstart_run, monkeypatch):
    """A cell is evaluated and its locality measured on one loaded checkpoint (and one
    DataModule); the locality equals the one measured on a fresh load."""
    from lightning_modules import cell_evaluation, evaluation

    monkeypatch.setattr(cell_evaluation, "LOCALITY_IMAGES", 50)
    alone = json.loads(cell_evaluation.write_locality(quickstart_run["ckpt"]).read_text())
    alone = alone["layers"]
    loads = []
    load = evaluation.load_checkpoint
    monkeypatch.setattr(evaluation, "load_checkpoint", lambda *a: loads.append(a) or load(*a))
    metrics = cell_evaluation.evaluate_cell(quickstart_run["ckpt"])
    assert len(loads) == 1 and 0 <= metrics["top1"] <= 100
    shared = json.loads((quickstart_run["tmp"] / "quickstart" / "locality.json").read_text())
    assert shared["layers"] == alone
