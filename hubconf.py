"""``torch.hub`` entry points: every registered ``convnn_*`` model, built by timm.

    model = torch.hub.load("path/to/convnn", "convnn_resnet50", source="local",
                           layer="branching", branch_ratio=0.25)
    torch.hub.list("path/to/convnn", source="local")    # the model names

Each entry takes timm's ``create_model`` arguments (``pretrained``, ``num_classes``, ...) and
the ConvNN options of its model (see :mod:`convnn.models`).
"""

from __future__ import annotations

from typing import Any as _Any

import timm as _timm

from convnn.models import MODEL_NAMES as _MODEL_NAMES

dependencies = ["torch", "timm"]


def _entry(name: str):  # every public callable here is an entry point for torch.hub
    def create(pretrained: bool = False, **kwargs: _Any):
        return _timm.create_model(name, pretrained=pretrained, **kwargs)

    create.__name__ = create.__qualname__ = name
    create.__doc__ = f"``timm.create_model({name!r}, pretrained, **kwargs)``."
    return create


globals().update({_name: _entry(_name) for _name in _MODEL_NAMES})
