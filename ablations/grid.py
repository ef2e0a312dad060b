"""Grid files: a base config, axes of dotted config keys, and the cells they expand to.

A grid is YAML::

    name: k_sweep
    base: [configs/cifar10.yaml, configs/cifar/vit_tiny_convnn.yaml]
    set:                                # grid-wide overrides, dotted keys
      trainer.max_epochs: 100
    axes:
      model.init_args.model_kwargs.k: [3, 9, 16]     # a key and its values
      layer:                                        # a named axis of variants, each a
        convnn: {model.init_args.model_kwargs.layer: convnn}       # set of overrides
        branching: {model.init_args.model_kwargs.layer: branching}
    zip:                                # keys that move together: one axis
      - model.init_args.model_kwargs.candidates: [random, spatial]
        model.init_args.model_kwargs.num_samples: [32, 25]
    exclude:                            # cells matching every entry are dropped
      - {layer: branching, k: 16}
    seeds: [0, 1, 2]
    baseline: {k: 9}                    # the setting differences are taken to (default:
                                        # the first setting, every axis at its first value)
    paper:                              # published top-1 of settings: a row of
      - {setting: {k: 9}, row: vit_b16_convnn_all_k9}   # lightning_modules/paper.py, or a number
      - {setting: {k: 16}, top1: 81.6, label: "ViT-B/16 all k=16"}
    slurm: {timeout_min: 2880, gpus_per_node: 1, cpus_per_task: 8}

A value ``__delete__`` removes the key. Axis names are the full key, its last component
(``k``), or the variant axis's name; exclusions may use any of them. A cell is one
setting of every axis and one seed; its id depends only on its own values, so adding values
to an axis adds cells without renaming the old ones.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import itertools
import json
import logging
import re
import sys
import tempfile
import warnings as warnings_module
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from convnn.errors import GridError, OptionError, UsageError, root_cause
from convnn.validation import suggestion
from lightning_modules.class_switch import SECTIONS, drop_foreign_init_args, switch_line
from lightning_modules.cli.exits import config_key

__all__ = ["Axis", "Cell", "Grid", "GridError", "cell_loggers", "load_grid", "merged_config"]
__all__ += ["validate_cell"]

ROOT = Path(__file__).resolve().parent.parent
DELETE = "__delete__"


@dataclass
class Axis:
    """One dimension of the grid: ``labels[i]`` names the overrides ``choices[i]``."""

    name: str
    labels: list[Any]
    choices: list[dict[str, Any]]
    keys: list[str]


@dataclass
class Cell:
    """One run: a setting of every axis and a seed."""

    id: str
    name: str
    setting: str
    values: dict[str, Any]
    seed: int | None
    overrides: dict[str, Any]
    order: int = 0  # the setting's position in grid order
    baseline: bool = False  # the grid's baseline setting
    paper: dict[str, Any] | None = None  # published top-1: {"top1", "label"[, "row"]}

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "setting": self.setting,
            "values": self.values,
            "seed": self.seed,
            "overrides": self.overrides,
            "order": self.order,
            "baseline": self.baseline,
            "paper": self.paper,
        }


@dataclass
class Grid:
    name: str
    path: Path
    base: list[Path]
    set: dict[str, Any]
    axes: list[Axis]
    exclude: list[dict[str, Any]]
    seeds: list[int | None]
    slurm: dict[str, Any] = field(default_factory=dict)
    baseline: dict[str, Any] | None = None
    paper: list[dict[str, Any]] = field(default_factory=list)

    def settings(self) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        """``(values, overrides)`` of every setting in grid order, exclusions removed."""
        settings = []
        for combo in itertools.product(*(range(len(a.labels)) for a in self.axes)):
            values = {a.name: a.labels[i] for a, i in zip(self.axes, combo, strict=True)}
            overrides: dict[str, Any] = {}
            for a, i in zip(self.axes, combo, strict=True):
                overrides.update(a.choices[i])
            if not any(_matches(rule, values, overrides, self.axes) for rule in self.exclude):
                settings.append((values, overrides))
        return settings

    def cells(self) -> list[Cell]:
        """Every cell, in axis order then seed order, exclusions removed."""
        cells = []
        settings = self.settings()
        base = [_matches(self.baseline or {}, *s, self.axes) for s in settings]
        if self.baseline is None:
            base = [i == 0 for i in range(len(settings))]
        if settings and sum(base) != 1:
            raise GridError(
                f"{self.path.name}: baseline {self.baseline} matches {sum(base)} settings, not one"
            )
        for entry in self.paper:
            if not any(_matches(entry["setting"], *s, self.axes) for s in settings):
                raise GridError(
                    f"{self.path.name}: paper entry {entry['setting']} matches no setting"
                )
        for order, (values, overrides) in enumerate(settings):
            setting = " ".join(f"{k}={_fmt(v)}" for k, v in values.items()) or "base"
            found = [e for e in self.paper if _matches(e["setting"], values, overrides, self.axes)]
            paper = {k: v for k, v in found[0].items() if k != "setting"} if found else None
            for seed in self.seeds:
                name = setting if seed is None else f"{setting} seed={seed}"
                cell_id = _cell_id(values, seed)
                info = (order, base[order], paper)
                cells.append(Cell(cell_id, name, setting, values, seed, overrides, *info))
        return cells


def _fmt(value: Any) -> str:
    return json.dumps(value) if isinstance(value, (dict, list)) else str(value)


def _cell_id(values: dict[str, Any], seed: int | None) -> str:
    blob = json.dumps({"values": values, "seed": seed}, sort_keys=True, default=str)
    digest = hashlib.sha1(blob.encode()).hexdigest()[:8]
    slug = "-".join(f"{k}_{_fmt(v)}" for k, v in values.items())
    slug = re.sub(r"[^A-Za-z0-9.=-]+", "_", slug).replace("=", "")
    slug = (slug + ("" if seed is None else f"-s{seed}"))[:60].strip("-_")
    return f"{slug}-{digest}" if slug else digest


def _short(key: str) -> str:
    return key.rsplit(".", 1)[-1]


def _joined(err: BaseException) -> str:
    """``err``'s message on one line (a :class:`GridError` is printed as one line)."""
    return " ".join(line.strip() for line in str(err).splitlines())


def _matches(rule: dict[str, Any], values: dict, overrides: dict, axes: list[Axis]) -> bool:
    for key, want in rule.items():
        if key in values:
            got = values[key]
        elif key in overrides:
            got = overrides[key]
        else:
            hits = [k for k in overrides if _short(k) == key]
            if not hits:
                return False
            got = overrides[hits[0]]
        if got != want:
            return False
    return True


def _resolve(path: str, grid_dir: Path) -> Path:
    for base in (Path.cwd(), grid_dir, ROOT):
        candidate = (base / path).resolve()
        if candidate.is_file():
            return candidate
    raise GridError(f"base config {path!r} not found (relative to the cwd, the grid or {ROOT})")


def _parse_axes(spec: dict[str, Any], zips: list[dict[str, Any]]) -> list[Axis]:
    axes = []
    for name, values in spec.items():
        if isinstance(values, dict):  # variants: label -> overrides
            for label, over in values.items():
                if not isinstance(over, dict):
                    raise GridError(f"axis {name!r}: variant {label!r} must map keys to values")
            choices = [dict(v) for v in values.values()]
            keys = sorted({k for c in choices for k in c})
            axes.append(Axis(name, list(values), choices, keys))
        elif isinstance(values, list) and values:
            short = _short(name)
            axes.append(Axis(short, list(values), [{name: v} for v in values], [name]))
        else:
            raise GridError(f"axis {name!r}: expected a non-empty list or a mapping of variants")
    for group in zips:
        lengths = {k: len(v) if isinstance(v, list) else -1 for k, v in group.items()}
        if not group or len(set(lengths.values())) != 1 or -1 in lengths.values():
            raise GridError(f"zip {list(group)}: every key needs a list, all of one length")
        n = next(iter(lengths.values()))
        name = "+".join(_short(k) for k in group)
        labels = [",".join(_fmt(group[k][i]) for k in group) for i in range(n)]
        choices = [{k: group[k][i] for k in group} for i in range(n)]
        axes.append(Axis(name, labels, choices, list(group)))
    names = [a.name for a in axes]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise GridError(f"axis names {sorted(dup)} are ambiguous: use a variants axis")
    return axes


def load_grid(path: str | Path) -> Grid:
    """Read a grid file; structural errors raise :class:`GridError`."""
    path = Path(path)
    if not path.is_file():
        raise GridError(f"grid file '{path}' does not exist")
    try:
        spec = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise GridError(f"{path} is not valid YAML: {_joined(err)}") from None
    if not isinstance(spec, dict):
        raise GridError(f"{path}: expected a mapping of grid keys, got {type(spec).__name__}")
    known = {"name", "base", "set", "axes", "zip", "exclude", "seeds", "slurm"}
    known |= {"baseline", "paper"}
    unknown = set(spec) - known
    if unknown:
        hint = suggestion(sorted(unknown)[0], known)
        raise GridError(
            f"{path}: unknown grid keys {sorted(unknown)}{hint} (allowed: {sorted(known)})"
        )
    base = spec.get("base") or []
    base = [base] if isinstance(base, str) else list(base)
    if not base:
        raise GridError(f"{path}: 'base' (one or more config files) is required")
    seeds = spec.get("seeds") or [None]
    return Grid(
        name=spec.get("name", path.stem),
        path=path.resolve(),
        base=[_resolve(b, path.parent) for b in base],
        set=dict(spec.get("set") or {}),
        axes=_parse_axes(spec.get("axes") or {}, list(spec.get("zip") or [])),
        exclude=list(spec.get("exclude") or []),
        seeds=[None if s is None else int(s) for s in seeds],
        slurm=dict(spec.get("slurm") or {}),
        baseline=_baseline(spec.get("baseline"), path),
        paper=[_paper_entry(e, path) for e in spec.get("paper") or []],
    )


def _baseline(rule: Any, path: Path) -> dict[str, Any] | None:
    if rule is not None and not isinstance(rule, dict):
        raise GridError(f"{path}: baseline {rule!r}: expected a mapping of axis values")
    return rule


def _paper_entry(entry: Any, path: Path) -> dict[str, Any]:
    from lightning_modules.paper import parse_entry

    try:
        return parse_entry(entry)
    except ValueError as err:
        raise GridError(f"{path}: {err}") from None


# ---------------------------------------------------------------- merged configs


def _parse_only_cli():
    from jsonargparse import ArgumentError

    from lightning_modules.cli import DESCRIPTION, ConvNNCLI
    from lightning_modules.cli.parser import summarize

    class ParseOnly(ConvNNCLI):
        def parse_arguments(self, parser: Any, args: Any) -> None:
            """As ``convnn fit``'s: a misspelled key or value is one line with a close match."""
            try:
                super().parse_arguments(parser, args)
            except ArgumentError as err:
                raise UsageError(summarize(str(err), parser)) from None

        def instantiate_classes(self) -> None:
            pass

    def parse(args: list[str]):
        kwargs = {"description": DESCRIPTION, "exit_on_error": False, "allow_abbrev": False}
        with _quiet_seeding():  # the CLI seeds as it parses: no "Seed set" line per cell
            return ParseOnly(args=args, run=False, parser_kwargs=kwargs)

    return parse


_BASE_CACHE: dict[tuple[str, ...], dict[str, Any]] = {}


def base_config(files: list[Path]) -> dict[str, Any]:
    """The complete config (every default) of the base files, as plain YAML data."""
    key = tuple(str(f) for f in files)
    if key not in _BASE_CACHE:
        args = [a for f in files for a in ("-c", str(f))]
        with warnings_module.catch_warnings():
            warnings_module.simplefilter("ignore")
            cli = _parse_only_cli()(args)
        _BASE_CACHE[key] = yaml.safe_load(cli.parser.dump(cli.config, skip_validation=True))
    return copy.deepcopy(_BASE_CACHE[key])


def set_key(config: dict[str, Any], key: str, value: Any) -> None:
    """Set a dotted key (``model.init_args.model_kwargs.k``); ``__delete__`` removes it."""
    node = config
    parts = key.split(".")
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            if value == DELETE:
                return
            node[part] = {}
        node = node[part]
    if value == DELETE:
        node.pop(parts[-1], None)
    else:
        node[parts[-1]] = copy.deepcopy(value)


def merged_config(grid: Grid, cell: Cell, out_dir: Path | None = None) -> dict[str, Any]:
    """The cell's complete config: base files, grid ``set``, the cell's values, its seed and,
    with ``out_dir``, the logger writing into ``out_dir`` (one fixed directory per cell)."""
    config = base_config(grid.base)
    changes = {**grid.set, **cell.overrides}
    before = {s: (config.get(s) or {}).get("class_path") for s in SECTIONS}
    for key, value in changes.items():
        set_key(config, key, value)
    for section, old in before.items():
        node = config.get(section)
        if isinstance(node, dict) and node.get("class_path") not in (None, old):
            dropped = drop_foreign_init_args(node, _set_init_args(changes, section))
            if dropped:
                _note_once(switch_line(f"{section}.class_path", node["class_path"], dropped, old))
    if cell.seed is not None:
        config["seed_everything"] = cell.seed
    if out_dir is not None:
        trainer = config.setdefault("trainer", {})
        trainer["logger"] = cell_loggers(trainer.get("logger"), out_dir)
    return config


TENSORBOARD = "lightning.pytorch.loggers.TensorBoardLogger"


def cell_loggers(loggers: Any, out_dir: Path) -> dict[str, Any] | list[dict[str, Any]]:
    """A cell's ``trainer.logger``: first a TensorBoard logger writing ``out_dir/version_<n>``
    (the user's own, redirected, when the config has one; its directory also holds the
    cell's checkpoints), then every other logger of the config as the user set it (W&B,
    MLflow, CSV, ...). ``loggers``: the config's value (one mapping, a list, or
    ``True``/``False``/``None``: Lightning's default or none)."""
    entries = loggers if isinstance(loggers, list) else [loggers]
    entries = [copy.deepcopy(e) for e in entries if isinstance(e, dict)]
    board = next((e for e in entries if "TensorBoardLogger" in str(e.get("class_path"))), None)
    others = [e for e in entries if e is not board]
    board = board or {"class_path": TENSORBOARD}
    board.setdefault("init_args", {}).update(save_dir=str(out_dir), name="", version=None)
    return [board, *others] if others else board


def _set_init_args(changes: dict[str, Any], section: str) -> set[str]:
    """The ``init_args`` of ``section`` that grid ``changes`` set by name (kept on a
    ``class_path`` switch, so that the new class refuses a wrong one by its name)."""
    names = set()
    for key, value in changes.items():
        parts = key.split(".")
        if parts[0] != section:
            continue
        if len(parts) > 2 and parts[1] == "init_args":
            names.add(parts[2])
        elif isinstance(value, dict):
            inner = value.get("init_args", {}) if len(parts) == 1 else value
            names |= set(inner) if len(parts) <= 2 and isinstance(inner, dict) else set()
    return names


_NOTED: set[str] = set()


def _note_once(line: str) -> None:
    """``convnn-ablate: note: <line>`` on stderr, once per process (every cell merges)."""
    if line not in _NOTED:
        _NOTED.add(line)
        print(f"convnn-ablate: note: {line}", file=sys.stderr, flush=True)


def _option_key(err: BaseException) -> str | None:
    """The parameter an :class:`~convnn.errors.OptionError` in ``err``'s cause chain names
    (the innermost one that names one), or ``None``."""
    key = None
    while err is not None:
        if isinstance(err, OptionError) and err.key:
            key = err.key
        err = err.__cause__
    return key


def _error_key(
    err: BaseException, message: str, changes: dict[str, Any], config: dict[str, Any]
) -> str | None:
    """The cell's key that sets the parameter an error names (``OptionError.key``, e.g.
    ``k`` -> ``model.init_args.model_kwargs.k``): a key the grid changes, else the key under
    ``model`` or ``data`` of the merged config (``None`` when neither sets it); for an error
    that names no parameter, the changed key its text is about."""
    option = _option_key(err)
    if option is None:
        return _changed_key(message, changes)
    setters = {key: value for key, value in changes.items() if _short(key) == option}
    if len(setters) > 1:
        return _changed_key(message, setters) or next(iter(setters))
    suite = {part: config[part] for part in ("model", "data") if isinstance(config.get(part), dict)}
    return next(iter(setters), None) or config_key(suite, option)


def _changed_key(message: str, changes: dict[str, Any]) -> str | None:
    """The overridden key an error message is about: by its name, else by its value."""
    for key in sorted(changes, key=len, reverse=True):
        if key in message or re.search(rf"\b{re.escape(_short(key))}\b", message):
            return key
    for key, value in changes.items():
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            if re.search(rf"\b{re.escape(str(value))}\b", message):
                return key
    return None


def _synthetic_stand_in(config: dict[str, Any]) -> dict[str, Any]:
    """Replace a DataModule whose files are missing by synthetic data of the same shape."""
    import importlib

    data = config.get("data") or {}
    module, _, name = data.get("class_path", "").rpartition(".")
    cls = getattr(importlib.import_module(module), name, None) if module else None
    init = data.get("init_args") or {}
    size = init.get("image_size", getattr(cls, "image_size", 224))
    classes = getattr(cls, "num_classes", 1000) if isinstance(cls, type) else 1000
    stand_in = {"num_classes": classes, "image_size": size, "num_train": 1, "num_val": 1}
    config["data"] = {"class_path": "datamodules.SyntheticDataModule", "init_args": stand_in}
    return config


@contextlib.contextmanager
def _quiet_seeding() -> Iterator[None]:
    """Lightning's "Seed set to N" line, printed by every cell a plan validates, silenced."""
    logger = logging.getLogger("lightning.fabric.utilities.seed")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def validate_cell(grid: Grid, cell: Cell, need_data: bool = False) -> list[str]:
    """Parse the cell's merged config with the ``convnn`` parser and build its DataModule
    and model (on the meta device); raise :class:`GridError` naming the cell and the key.
    Returns warnings: a data set that is not on this machine (an error when ``need_data``;
    otherwise the rest is checked with synthetic data in its place)."""
    import torch

    config = merged_config(grid, cell)
    changes = {**grid.set, **cell.overrides}
    parse = _parse_only_cli()
    warnings: list[str] = []
    device = "meta"  # fast; a model that cannot be built there is built on the CPU
    for _ in range(3):
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
            yaml.safe_dump(config, f)
        try:
            with warnings_module.catch_warnings(), torch.device(device):
                warnings_module.simplefilter("ignore")
                cli = parse(["-c", f.name])
                cli.parser.instantiate_classes(cli.config)
            return warnings
        except (Exception, SystemExit) as error:  # noqa: BLE001  (every failure is reported)
            err = root_cause(error)
            if device == "meta" and "meta" in str(err).lower():
                device = "cpu"
                continue
            if isinstance(err, FileNotFoundError) and not warnings and not need_data:
                warnings.append(f"cell {cell.name!r}: {err} (data not checked)")
                config = _synthetic_stand_in(config)
                continue
            message = _joined(err).replace(f.name, "<merged config>").strip()
            key = _error_key(error, message, changes, config)
            message = message.removeprefix(f"{key}: ")  # the parser's line names it too
            where = f"key {key!r}" if key else "its merged config"
            raise GridError(f"cell {cell.name!r} ({cell.id}): {where}: {message}") from None
        finally:
            Path(f.name).unlink(missing_ok=True)
    return warnings
