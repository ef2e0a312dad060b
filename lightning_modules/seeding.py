"""Seeds that make a run reproducible, resumable and different on every DDP rank.

``seed_everything`` (the CLI's ``seed_everything``, default 0) seeds each process once, at
start-up, before the model is built, and exports the seed as ``PL_GLOBAL_SEED``. Once seeded
at start-up, the global generators would depend on everything that ran before a step (a
resumed run skips the steps it has done) and would be equal on every rank. So the
classifier reseeds Python's, NumPy's and torch's generators before every training batch
with :func:`step_seed` of ``(seed, rank, epoch, batch)``: dropout, drop-path, Mixup/CutMix
and ConvNN's fresh random candidates then depend only on where the step is, are different
on every rank, and are the same in an uninterrupted and a resumed run.
"""

from __future__ import annotations

import os
import random

import numpy as np
import torch

__all__ = ["run_seed", "seed_all", "step_seed"]


def run_seed() -> int | None:
    """The run's seed from ``seed_everything`` (``PL_GLOBAL_SEED``), or ``None`` if unseeded."""
    value = os.environ.get("PL_GLOBAL_SEED")
    return int(value) if value is not None else None


def step_seed(*keys: int) -> int:
    """A 32-bit seed mixed from ``keys`` (NumPy's ``SeedSequence``: nearby keys give unrelated
    streams, unlike ``seed + rank``)."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1)[0])


def seed_all(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global generator and torch (CPU and every GPU)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
