"""One error root in fact: bad input raises the suite's errors (``convnn/errors.py``),
imported from that one module.

The source of every package is read with :mod:`ast`: a ``raise`` of a built-in error that
bad input could cause (``ValueError``, ``FileNotFoundError``, ``TypeError``, ...) fails the
test unless :data:`ALLOWED` names it with its reason (internal checks, not bad input); an
error class of ``convnn.errors`` imported from another module fails it too. Then a few bad
inputs through the public API raise a :class:`~convnn.errors.ConvNNError` that names the
parameter.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import timm
import torch

import convnn.errors
from convnn import ConvNN2d
from convnn.errors import ConvNNError, DataError, DataNotFoundError, GridError, OptionError
from datamodules import ImageNetDataModule, SyntheticDataModule
from lightning_modules import ImageClassifier
from lightning_modules.paper import get_row, parse_entry

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("convnn", "lightning_modules", "datamodules", "ablations")

# Built-in errors that a message for the user should not be: bad input raises a suite error.
BUILTIN_ERRORS = {
    "Exception",
    "FileNotFoundError",
    "IOError",
    "IndexError",
    "KeyError",
    "LookupError",
    "OSError",
    "RuntimeError",
    "TypeError",
    "ValueError",
}

# (file, enclosing function, error) -> why it stays a built-in error. Keep it small.
ALLOWED = {
    ("convnn/options.py", "check_option_table", "TypeError"): (
        "import-time check that the option tables match the Literals: a programming error"
    ),
    ("convnn/options.py", "<module>", "TypeError"): (
        "import-time check that every FeatureSimilarity is a Similarity: a programming error"
    ),
    ("convnn/ops/similarity.py", "check_similarity_table", "TypeError"): (
        "import-time check that the similarity table has every value and part: a programming error"
    ),
    ("convnn/tools/profile.py", "convnn_flops", "TypeError"): (
        "called with a module that is not a ConvNN layer (profile() passes only those): the "
        "caller's programming error, a TypeError as for any argument of the wrong type"
    ),
    ("datamodules/transforms.py", "imagenet_transform", "TypeError"): (
        "an unknown **augment keyword, the TypeError Python raises for an unexpected keyword; "
        "the DataModule passes only the known ones (and checks their values)"
    ),
    ("ablations/study.py", "replace", "KeyError"): (
        "docs/results.md holds a block the study does not generate: the repository's docs out "
        "of step with its code (a maintainer's error, caught by the study's tests)"
    ),
    ("ablations/slurm.py", "__call__", "RuntimeError"): (
        "a SLURM job whose cell failed or was preempted: tells submitit the job failed, not "
        "bad input"
    ),
}


def _raises(path: Path) -> list[tuple[str, str, int]]:
    """``(enclosing function, built-in error, line)`` for each ``raise`` of a built-in error."""
    tree = ast.parse(path.read_text())
    found = []

    def visit(node: ast.AST, function: str) -> None:
        for child in ast.iter_child_nodes(node):
            name = function
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = child.name
            if isinstance(child, ast.Raise) and child.exc is not None:
                exc = child.exc.func if isinstance(child.exc, ast.Call) else child.exc
                if isinstance(exc, ast.Name) and exc.id in BUILTIN_ERRORS:
                    found.append((function, exc.id, child.lineno))
            visit(child, name)

    visit(tree, "<module>")
    return found


def _sources() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))


def test_bad_input_raises_the_suites_errors() -> None:
    seen, unexpected = set(), []
    for path in _sources():
        rel = path.relative_to(ROOT).as_posix()
        for function, error, line in _raises(path):
            if (rel, function, error) in ALLOWED:
                seen.add((rel, function, error))
            else:
                unexpected.append(f"{rel}:{line}: raise {error} in {function}()")
    assert not unexpected, (
        "raise the suite's error (convnn.errors: OptionError(message, key=...), DataError, "
        "UsageError, ...) for bad input, or add an internal check to ALLOWED with its reason:\n"
        + "\n".join(unexpected)
    )
    assert seen == set(ALLOWED), f"ALLOWED names raises that are gone: {set(ALLOWED) - seen}"


def test_errors_are_imported_from_convnn_errors() -> None:
    """No module imports a suite error through another module that re-exports it."""
    names = {name for name in convnn.errors.__all__ if name.endswith("Error")}
    wrong = []
    for path in [*_sources(), *sorted((ROOT / "tests").rglob("*.py"))]:
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom):
                continue
            module = "." * node.level + (node.module or "")
            home = module in ("convnn.errors", ".errors", "..errors")
            if not home and any(alias.name in names for alias in node.names):
                wrong.append(f"{path.relative_to(ROOT)}:{node.lineno}: from {module}")
    assert not wrong, "import the suite's errors from convnn.errors:\n" + "\n".join(wrong)


def test_the_errors_share_one_root() -> None:
    for name in convnn.errors.__all__:
        obj = getattr(convnn.errors, name)
        if isinstance(obj, type):
            assert issubclass(obj, ConvNNError), name
    # a missing data folder stays catchable as before
    assert issubclass(DataNotFoundError, DataError) and issubclass(DataNotFoundError, OSError)
    assert issubclass(DataNotFoundError, FileNotFoundError)


def _option_error(call, key: str, match: str) -> None:
    with pytest.raises(OptionError, match=match) as err:
        call()
    assert err.value.key == key
    assert key in str(err.value) and "\n" not in str(err.value)


def test_bad_arguments_raise_an_option_error_naming_the_parameter() -> None:
    _option_error(lambda: ConvNN2d(4, 4, 3, similarity="bogus"), "similarity", "'bogus'")
    _option_error(
        lambda: ImageClassifier("convnn_vgg11", label_smoothing=1.5),
        "label_smoothing",
        r"label_smoothing=1\.5 is not allowed; expected a number in \[0, 1\)",
    )
    _option_error(
        lambda: timm.create_model("convnn_resnet18", stages=(5,)),
        "stages",
        r"stages=\(5,\) is not allowed; expected a non-empty subset",
    )
    data = SyntheticDataModule(num_train=4, num_val=4, num_workers=0)
    _option_error(lambda: data.splits_for("fitt"), "stage", "stage='fitt' is not allowed")
    _option_error(lambda: get_row("nope"), "row", "no published row 'nope'; known: ")


def test_too_small_a_map_is_refused_the_same_on_every_path() -> None:
    x = torch.randn(1, 4, 3, 3)
    for settings in (
        {},
        {"k": 3},
        {"candidates": "window", "similarity": "dot"},
        {"candidates": "window", "similarity": "location"},  # a plain convolution
    ):
        _option_error(lambda s=settings: ConvNN2d(4, 4, 5, **s)(x), "input", r"input size 3x3")


def test_a_missing_data_folder_is_a_data_error(tmp_path: Path) -> None:
    root = tmp_path / "absent"
    with pytest.raises(
        DataNotFoundError, match=f"image root '{re.escape(str(root))}' does not exist"
    ) as err:
        ImageNetDataModule(root=str(root), num_workers=0)
    assert isinstance(err.value, FileNotFoundError)  # as callers caught it before


def test_a_bad_paper_entry_is_a_grid_error() -> None:
    with pytest.raises(GridError, match="paper entry .*expected"):
        parse_entry({"setting": {}})
    with pytest.raises(GridError, match="no published row 'nope'"):
        parse_entry({"setting": {}, "row": "nope"})
