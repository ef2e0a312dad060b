"""Training stack: the generic :class:`ImageClassifier`, its optimizer/schedule factory and
the ``convnn`` command line (:func:`main`; ``convnn evaluate``).

The names are imported on first use, so ``convnn --help`` (``lightning_modules.cli``) prints
without importing Lightning, timm or torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["ImageClassifier", "LRSchedule", "build_optimizer"]

_SOURCES = {"ImageClassifier": ".classifier", "LRSchedule": ".optim", "build_optimizer": ".optim"}


def __getattr__(name: str) -> Any:
    if name not in _SOURCES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_SOURCES[name], __name__), name)
    globals()[name] = value
    return value
