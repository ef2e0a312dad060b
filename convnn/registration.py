"""Register the ``convnn_*`` models in timm without making ``import convnn`` import timm.

``import convnn`` costs torch only. The timm models (:mod:`convnn.models`) are registered
the moment timm is imported, whoever imports it and whenever: at once when timm is already
loaded, otherwise by a one-shot import hook that imports :mod:`convnn.models` right after
timm's own module has run. ``timm.create_model("convnn_resnet18")`` and
``timm.list_models("convnn*")`` therefore work after ``import convnn`` as before.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from types import ModuleType
from typing import Any

__all__ = ["register_with_timm"]

MODELS = "convnn.models"


class _RegisterAfterLoad(importlib.abc.Loader):
    """timm's own loader, followed by ``import convnn.models``."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self.loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self.loader.exec_module(module)
        importlib.import_module(MODELS)

    def __getattr__(self, name: str) -> Any:  # resource readers etc. of the real loader
        return getattr(self.loader, name)


class _TimmImportHook(importlib.abc.MetaPathFinder):
    """Finds nothing itself; on the first ``import timm`` it removes itself and wraps the
    loader the other finders give timm in :class:`_RegisterAfterLoad`."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name != "timm":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            spec.loader = _RegisterAfterLoad(spec.loader)
        return spec


def register_with_timm() -> None:
    """Register the models now if timm is loaded, else when it is (at most one hook)."""
    if "timm" in sys.modules:
        importlib.import_module(MODELS)
    elif not any(isinstance(finder, _TimmImportHook) for finder in sys.meta_path):
        sys.meta_path.insert(0, _TimmImportHook())
