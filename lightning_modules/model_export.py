"""Export a trained run the way timm users share models: ``convnn export --ckpt PATH --out DIR``.

``DIR`` receives

- ``model.safetensors``: the network's weights (its EMA weights when the run kept them),
- ``config.json``: timm's configuration (``architecture`` and ``model_args``), so that
  ``timm.create_model("local-dir:DIR", pretrained=True)`` rebuilds the same network,
- ``README.md``: a model card: the network, the recipe and data it was trained with, the
  checkpoint's validation top-1, its grid setting's seeds with mean and 95% interval when
  the checkpoint belongs to a ``convnn-ablate`` cell whose grid was reported, the paper's
  row of this network (docs/method.md §4) and the code version.

An existing non-empty ``DIR`` is refused: an export never overwrites another silently.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from .checkpoint_io import load_checkpoint
from .classifier import _follow_image_size
from .evaluation import build_model, checkpoint_info
from .files import atomic_write_text, check_new_directory
from .paper import find_row

__all__ = ["export_checkpoint", "model_args"]

FILES = ("model.safetensors", "config.json", "README.md")


def model_args(hparams: dict[str, Any], image_size: int | None) -> dict[str, Any]:
    """The ``timm.create_model`` keywords of the run's network: its ``model_kwargs`` with
    the class count, channels and (fixed-size models) input size the DataModule gave it."""
    kwargs = {k: v for k, v in (hparams.get("model_kwargs") or {}).items() if k != "pretrained"}
    _, kwargs, _ = _follow_image_size(hparams["model"], image_size, kwargs)
    return {**kwargs, "num_classes": hparams["num_classes"], "in_chans": hparams["in_chans"]}


def _grid_setting(ckpt_path: Path) -> dict[str, Any] | None:
    """The checkpoint's ``convnn-ablate`` cell and its setting's row of the grid's
    ``results.csv`` (written by ``convnn-ablate report``), when there are both."""
    cell_dir = next((p for p in ckpt_path.resolve().parents if (p / "cell.json").is_file()), None)
    if cell_dir is None:
        return None
    cell = json.loads((cell_dir / "cell.json").read_text())
    found = {"cell": cell["id"], "setting": cell["setting"], "seed": cell.get("seed")}
    results = cell_dir.parent / "results.csv"
    if results.is_file():
        with open(results, newline="") as f:
            rows = [r for r in csv.DictReader(f) if r.get("setting") == cell["setting"]]
        if rows:
            found["row"] = rows[0]
    return found


def _card(info: dict[str, Any], hparams: dict[str, Any], args: dict[str, Any], ckpt: dict) -> str:
    # info: checkpoint_info's, with ema, grid and code_version
    """The model card's text."""
    name = hparams["model"]
    data = ckpt.get("datamodule_hyper_parameters") or {}
    data_class = data.get("_class_path") or ckpt.get("datamodule_class_path") or "unknown"
    recipe = {k: hparams.get(k) for k in ("optimizer", "lr", "weight_decay", "scheduler")}
    recipe["trained_epochs"] = info.get("epoch")
    lines = [
        f"# {name}",
        "",
        "A ConvNN model trained with the ConvNN suite and exported by `convnn export`.",
        "",
        "```python",
        "import timm, convnn",
        'model = timm.create_model("local-dir:THIS_DIRECTORY", pretrained=True)',
        "```",
        "",
        "## Network",
        "",
        f"`{name}` with `{json.dumps(args, sort_keys=True, default=str)}`"
        + (" (EMA weights)" if info.get("ema") else ""),
        "",
        "## Training",
        "",
        f"- data: `{data_class}` {json.dumps(_plain(data), sort_keys=True, default=str)}",
        f"- recipe: {json.dumps(recipe, sort_keys=True, default=str)}",
    ]
    at = f" after epoch {info['epoch']}" if info.get("epoch") is not None else ""
    lines.append(f"- this checkpoint: the {info['kind']} one{at}")
    if info.get("val_top1") is not None:
        lines.append(f"- its validation top-1: {info['val_top1']:.2f}%")
    elif (info.get("run_best") or {}).get("top1") is not None:
        lines.append(f"- the run's best validation top-1: {info['run_best']['top1']:.2f}%")
    lines += _grid_lines(info.get("grid")) + _paper_lines(name, hparams) + ["", "## Code", ""]
    version = info.get("code_version") or {}
    lines.append(f"- commit: {version.get('git_commit', 'unknown')}")
    for package, v in (version.get("packages") or {}).items():
        lines.append(f"- {package} {v}")
    return "\n".join(lines) + "\n"


def _plain(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if not k.startswith("_")}


def _grid_lines(grid: dict[str, Any] | None) -> list[str]:
    if grid is None:
        return []
    lines = ["", "## Grid", "", f"- cell `{grid['cell']}`: {grid['setting']}, seed {grid['seed']}"]
    row = grid.get("row")
    if row and row.get("top1_mean"):
        n, mean = row.get("n", "?"), float(row["top1_mean"])
        interval = ""
        if row.get("top1_ci_low") and row.get("top1_ci_high"):
            interval = f", 95% interval [{float(row['top1_ci_low']):.2f}, "
            interval += f"{float(row['top1_ci_high']):.2f}]"
        lines.append(f"- the setting over {n} seeds: top-1 {mean:.2f}%{interval} (last epoch)")
    return lines


def _paper_lines(name: str, hparams: dict[str, Any]) -> list[str]:
    row = find_row(name, hparams.get("model_kwargs"))
    if row is None:
        return ["", "## Paper", "", "No published row for this network (docs/method.md §4)."]
    return [
        "",
        "## Paper",
        "",
        f"- {row.label}: top-1 {row.top1:.2f}% ({row.statistic} epoch) on {row.dataset}, "
        f"{row.source}",
    ]


def export_checkpoint(ckpt_path: str | Path, out: str | Path) -> dict[str, Any]:
    """Write ``FILES`` for the checkpoint into ``out`` (see the module docstring); returns
    what was exported (model name, ``model_args``, EMA or not, grid setting)."""
    from timm.models._hub import save_for_hf

    ckpt_path, out = Path(ckpt_path), check_new_directory(out, "--out")
    ckpt = load_checkpoint(ckpt_path)
    module = build_model(ckpt, ckpt_path)
    hparams = dict(module.hparams)
    args = model_args(hparams, module.image_size)
    info = checkpoint_info(ckpt, ckpt_path)
    info |= {"ema": module.ema is not None, "grid": _grid_setting(ckpt_path)}
    version = ckpt_path.resolve().parent.parent / "code_version.json"  # the run directory's
    info["code_version"] = json.loads(version.read_text()) if version.is_file() else None
    network = module.eval_model.eval()
    save_for_hf(network, out, model_args=args, safe_serialization=True)
    atomic_write_text(out / "README.md", _card(info, hparams, args, ckpt))
    return {"model": hparams["model"], "model_args": args, "ema": info["ema"], "out": str(out)}
