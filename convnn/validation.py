"""Shared argument checks: each raises :class:`~convnn.errors.OptionError` naming the
parameter, its value and what is allowed (with a close match for misspelled names)."""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import get_args

from .errors import OptionError

__all__ = [
    "check_choice",
    "check_input",
    "check_int",
    "check_names",
    "check_number",
    "check_positive_int",
    "check_ratio",
    "init_parameter_names",
    "suggestion",
]


def suggestion(name: str, allowed: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for the closest of ``allowed``, or ``""``."""
    close = difflib.get_close_matches(str(name), [str(a) for a in allowed], n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def check_choice(name: str, value: object, allowed: Sequence[object] | object) -> None:
    """Raise unless ``value`` is one of ``allowed`` (a list, a tuple or a ``Literal``)."""
    choices = tuple(allowed) if isinstance(allowed, (list, tuple)) else get_args(allowed)
    if value not in choices:
        hint = suggestion(value, choices) if isinstance(value, str) else ""  # type: ignore[arg-type]
        raise OptionError(
            f"{name}={value!r} is not allowed; choose one of {list(choices)}{hint}", key=name
        )


def check_names(what: str, names: Iterable[str], allowed: Collection[str]) -> None:
    """Raise when ``names`` holds names outside ``allowed``; ``what`` says what they are
    (``"ConvNN options"``), the message suggests a close match for the first one."""
    unknown = sorted(set(names).difference(allowed))
    if unknown:  # the common case (nothing unknown) costs one set difference
        allowed = sorted(allowed)
        raise OptionError(
            f"unknown {what} {unknown}{suggestion(unknown[0], allowed)} (allowed: {allowed})",
            key=unknown[0],
        )


def init_parameter_names(cls: type) -> list[str]:
    """The named ``__init__`` parameters of ``cls`` and, where an ``__init__`` takes
    ``**kwargs`` (passed on to ``super().__init__``), of its bases: the arguments a class
    accepts, as jsonargparse (LightningCLI) resolves them."""
    names: list[str] = []
    for klass in getattr(cls, "__mro__", (cls,)):
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        try:
            params = inspect.signature(init).parameters.values()
        except (TypeError, ValueError):
            break
        names += [p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        if not any(p.kind == p.VAR_KEYWORD for p in params):
            break
    return [n for n in dict.fromkeys(names) if n != "self"]


def check_input(
    layer: str, x: object, layout: str, channels: int, channel_dim: int, name: str
) -> None:
    """Raise unless ``x`` is a floating-point tensor of ``layout`` (e.g. ``"(B, C, H, W)"``,
    its rank) with ``channels`` along ``channel_dim``; ``name`` is the layer's width
    argument (``in_channels``, ``dim``)."""
    rank = layout.count(",") + 1
    shape = tuple(getattr(x, "shape", ()))
    if len(shape) != rank:
        raise OptionError(f"{layer} expects {layout}, got shape {shape}", key="input")
    if not x.is_floating_point():  # type: ignore[attr-defined]
        raise OptionError(
            f"{layer} expects a floating-point input, got {x.dtype}",
            key="input",  # type: ignore[attr-defined]
        )
    if shape[channel_dim] != channels:
        raise OptionError(
            f"input has {shape[channel_dim]} channels; this layer has {name}={channels}",
            key=name,
        )


def check_ratio(name: str, value: float) -> None:
    """Raise unless ``0 <= value <= 1``."""
    if isinstance(value, bool) or not (
        isinstance(value, (int, float)) and 0.0 <= float(value) <= 1.0
    ):
        raise OptionError(f"{name}={value!r} is outside the allowed range [0, 1]", key=name)


def check_int(name: str, value: object, minimum: int) -> None:
    """Raise unless ``value`` is an int ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise OptionError(
            f"{name}={value!r} is not allowed; expected an integer >= {minimum}", key=name
        )


def check_positive_int(name: str, value: object, allow_none: bool = False) -> None:
    """Raise unless ``value`` is an int >= 1 (or ``None`` when allowed)."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        allowed = "a positive integer" + (" or None" if allow_none else "")
        raise OptionError(f"{name}={value!r} is not allowed; expected {allowed}", key=name)


def check_number(name: str, value: object, allowed: str, ok: Callable[[float], bool]) -> None:
    """Raise unless ``value`` is a real number with ``ok(value)``; ``allowed`` describes it."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not ok(value):
        raise OptionError(f"{name}={value!r} is not allowed; expected a number {allowed}", key=name)
