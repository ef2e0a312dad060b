"""One-line messages of the ``convnn`` commands: notes (``convnn: note: ...``, on stderr) and
reports (``convnn fit: ...``, on stdout), printed once, by the process of global rank zero.

Lightning's ``rank_zero_warn`` prints a warning with the file and line of its caller; these
are for the user, so they are one plain line each.
"""

from __future__ import annotations

import os
import sys

__all__ = ["is_rank_zero", "note", "report"]

PROG = "convnn"


def is_rank_zero() -> bool:
    """Whether this process is global rank zero (Lightning's and torchrun's variables; a
    process outside any distributed launch is rank zero)."""
    for name in ("RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        if os.environ.get(name, "0").strip() not in ("", "0"):
            return False
    try:
        from lightning.pytorch.utilities.rank_zero import rank_zero_only
    except ImportError:  # pragma: no cover
        return True
    return getattr(rank_zero_only, "rank", 0) == 0


def note(message: str) -> None:
    """``convnn: note: <message>`` on stderr (rank zero only)."""
    if is_rank_zero():
        print(f"{PROG}: note: {message}", file=sys.stderr, flush=True)


def report(message: str, command: str | None = None) -> None:
    """``convnn <command>: <message>`` on stdout (rank zero only)."""
    if is_rank_zero():
        prog = f"{PROG} {command}" if command else PROG
        print(f"{prog}: {message}", flush=True)
