"""The checklist "add a subcommand" of docs/architecture.md: one module with ``main(argv)`` and
one row of ``lightning_modules.cli.commands.COMMANDS``; help and dispatch come from the row,
and the one-line error handling from ``lightning_modules.cli.exits`` (for ``convnn-ablate``
too)."""

from __future__ import annotations

import importlib
import subprocess
import sys
import types
from pathlib import Path

import pytest

from convnn.errors import ConvNNError, DataError, GridError, OptionError, UsageError
from lightning_modules import cli
from lightning_modules.cli import commands, exits

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", sorted(commands.COMMANDS))
def test_every_row_names_a_module_with_main_and_is_in_the_help(name, capsys):
    command = commands.COMMANDS[name]
    module = importlib.import_module(f"lightning_modules.cli.{command.module}")
    assert callable(module.main)
    cli.main(["--help"])
    assert f"  {name:<10}{command.help}" in capsys.readouterr().out


def test_a_new_row_and_module_are_a_new_subcommand(monkeypatch, capsys):
    """What docs/architecture.md says adding a subcommand takes, and nothing more: the new
    command is listed, dispatched to, and its bad input is one line with exit status 2."""
    seen = []

    def main(argv):
        seen.append(argv)
        if argv == ["--bad"]:
            raise UsageError("--bad is not allowed")
        return 0

    module = types.ModuleType("lightning_modules.cli.hello")
    module.main = main
    monkeypatch.setitem(sys.modules, module.__name__, module)
    table = {**commands.COMMANDS, "hello": commands.Command("hello", "Say hello.")}
    monkeypatch.setattr(cli, "COMMANDS", table)
    with pytest.raises(SystemExit) as done:
        cli.main(["hello", "--name", "x"])
    assert done.value.code == 0 and seen == [["--name", "x"]]
    with pytest.raises(SystemExit) as done:
        cli.main(["hello", "--bad"])
    assert done.value.code == exits.USAGE_STATUS
    assert capsys.readouterr().err.strip() == "convnn hello: error: --bad is not allowed"


@pytest.mark.parametrize("error", [OptionError, UsageError, DataError, GridError])
def test_every_suite_error_is_one_line_and_status_two(error, capsys):
    def body():
        raise error("first line\n  detail of a worker's traceback\nValueError: the reason")

    with pytest.raises(exits.CommandError) as done:
        exits.run_command("prog", body)
    assert done.value.code == 2 and str(done.value) == "prog: error: the reason"
    assert capsys.readouterr().err == "prog: error: the reason\n"


def test_a_bug_keeps_its_traceback():
    with pytest.raises(ZeroDivisionError):
        exits.run_command("prog", lambda: 1 / 0)
    assert not issubclass(ZeroDivisionError, ConvNNError)


def test_a_missing_config_is_refused_before_lightning_is_imported(tmp_path):
    code = (
        "import sys\nfrom lightning_modules.cli import main\n"
        "try:\n    main(['fit', '-c', 'missing.yaml'])\n"
        "except SystemExit as e:\n    print(e.code)\n"
        "print(sorted(m for m in ('lightning', 'timm') if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert done.stdout.split() == ["2", "[]"], done.stdout + done.stderr
    assert done.stderr.strip() == "convnn: error: --config 'missing.yaml' does not exist"


def test_the_library_does_not_import_the_command_line():
    """What a run *is* loads without the command-line layer (and never imports ablations)."""
    code = (
        "import sys\n"
        "import lightning_modules.evaluation, lightning_modules.locality\n"
        "import lightning_modules.classifier, lightning_modules.paper\n"
        "print(sorted(m for m in sys.modules if m.startswith(('lightning_modules.cli', "
        "'ablations'))))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["[]"], done.stdout
