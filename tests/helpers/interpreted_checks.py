"""What the checks run on Triton's CPU interpreter share (``triton_interpreted.py``,
``custom_ops_interpreted.py``): a registry of named checks, the script's ``main`` (one JSON
object ``{name: "ok" or the error}`` on stdout), and the tests' run of such a script in one
subprocess, with ``TRITON_INTERPRET=1 CONVNN_TRITON=force`` set before Triton is imported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

HELPERS = Path(__file__).resolve().parent
ROOT = HELPERS.parents[1]


class Checks(dict[str, Callable[[], None]]):
    """Checks by name: ``@checks.add`` registers a function under its own name."""

    def add(self, fn: Callable[[], None]) -> Callable[[], None]:
        self[fn.__name__] = fn
        return fn

    def main(self, names: list[str]) -> None:
        """Run the checks ``names`` (all when empty) and print their results as JSON."""
        results = {}
        for name in names or list(self):
            try:
                self[name]()
                results[name] = "ok"
            except Exception:
                results[name] = traceback.format_exc(limit=6)
        print(json.dumps(results))


def run_interpreted(script: str, **env: str) -> dict[str, str]:
    """Every check of the helper ``script`` (a file name in this folder), run once in one
    subprocess on the interpreter, with the extra environment ``env``: ``{name: result}``."""
    environ = dict(os.environ, TRITON_INTERPRET="1", CONVNN_TRITON="force", **env)
    command = [sys.executable, str(HELPERS / script)]
    proc = subprocess.run(command, env=environ, capture_output=True, text=True, timeout=600,
                          cwd=ROOT)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])
