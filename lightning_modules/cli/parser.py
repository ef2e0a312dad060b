"""jsonargparse's parse errors, condensed to one line for ``convnn``.

jsonargparse reports a wrong value under a subclass-mode key (``--model.init_args.optimizer
adam2``) as the failure of every member of a ``Union`` (the class and ``None``), below the
complete usage: 80 to 90 lines for one wrong word. :func:`summarize` keeps what was wrong,
the allowed values and a close match (``did you mean ...?``) for misspelled keys, option
names and values; :class:`OneLineErrors` prints it as ``convnn: error: ...`` (mixed into
the Lightning CLI's parser in ``lightning.py`` and into :class:`CommandParser`). Imports
neither Lightning nor timm: ``convnn evaluate`` and ``inspect`` parse before those imports.
"""

from __future__ import annotations

import importlib
import re
import sys
from typing import Any, NoReturn

from jsonargparse import ArgumentParser
from jsonargparse._common import debug_mode_active

from convnn.validation import init_parameter_names, suggestion

__all__ = ["CommandParser", "OneLineErrors", "summarize"]

PROG = "convnn"

_PARSER_KEY = re.compile(r'^Parser key "([^"]+)":\s*(.*)$')
_CLASS_PROBLEM = re.compile(r"^Problem with given class_path '([^']+)':\s*(.*)$")
_NOT_ACCEPTED = re.compile(r"^Option '([^']+)' is not accepted")
_LITERAL = re.compile(r"^Expected a typing\.Literal\[(.*)\](?:\. Got value: (.*))?$")
_EXPECTED = re.compile(r"^Expected a (.+?)(?:\. Got value: (.*))?$")
_TYPE = re.compile(r"<class '(?:builtins\.)?([\w.]+)'>")
_DOES_NOT_ACCEPT = re.compile(r"^(Subcommand|Group) '([^']+)' does not accept option '([^']+)'$")
_NO_ATTRIBUTE = re.compile(r"^module '([\w.]+)' has no attribute '(\w+)'")
_INVALID_CHOICE = re.compile(r"invalid choice: '([^']*)' \(choose from (.*)\)")
_NOISE = (
    "Does not validate against any of the Union subtypes",
    "Subtypes:",
    "Errors:",
    "Given value type:",
    "Expected a <class 'NoneType'>",
    "Not a valid subclass of",
    "Subclass types expect one of:",
    "- a class path (str)",
    "- a dict with",
)


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _items(lines: list[str]) -> list[tuple[str, list[str]]]:
    """The ``- item`` entries of a block: ``(first line without "- ", continuation lines)``,
    at the shallowest indentation where items occur."""
    starts = [i for i, line in enumerate(lines) if line.lstrip().startswith("- ")]
    if not starts:
        return []
    depth = min(_indent(lines[i]) for i in starts)
    items: list[tuple[str, list[str]]] = []
    for line in lines:
        if _indent(line) == depth and line.lstrip().startswith("- "):
            items.append((line.strip()[2:].strip(), []))
        elif items and _indent(line) >= depth:  # continuation (``Subtypes:`` may align)
            items[-1][1].append(line)
        elif items:
            break
    return items


def _given(lines: list[str]) -> str | None:
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("Given value:"):
            return stripped[len("Given value:") :].strip()
    return None


def _literal_values(text: str) -> list[Any]:
    import ast

    try:
        value = ast.literal_eval(f"[{text}]")
    except (ValueError, SyntaxError):
        return [text]
    return list(value)


def _class_parameters(class_path: str) -> list[str]:
    """The arguments a class accepts as ``init_args`` (:func:`init_parameter_names`)."""
    module, _, name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return []
    return init_parameter_names(cls)


def _subclasses(class_path: str) -> list[str]:
    """Names of the imported subclasses of ``class_path`` (for a ``--data X`` typo)."""
    module, _, name = class_path.rpartition(".")
    base = getattr(sys.modules.get(module), name, None)
    if not isinstance(base, type):
        return []
    found, todo = [base.__name__], [base]
    while todo:
        for sub in todo.pop().__subclasses__():
            if not sub.__name__.startswith("_") and sub.__name__ not in found:
                found.append(sub.__name__)
                todo.append(sub)
    return found


def _expected(items: list[tuple[str, list[str]]]) -> tuple[list[str], list[Any]]:
    """Type names and literal values that ``Expected a ...`` items allow."""
    types: list[str] = []
    values: list[Any] = []
    for text, _ in items:
        literal = _LITERAL.match(text)
        if literal:
            values += _literal_values(literal[1])
            continue
        expected = _EXPECTED.match(text)
        if expected:
            found = _TYPE.findall(expected[1]) or [expected[1]]
            types += ["None" if t == "NoneType" else t for t in found]
    return types, values


def _wrong_value(key: str, value: str | None, types: list[str], values: list[Any]) -> str:
    shown = f"{key}={value!r}" if value is not None else key
    allowed: list[str] = []
    if values:
        allowed.append(f"one of {values}")
    allowed += [t for t in dict.fromkeys(types) if t not in ("str", "int") or not values]
    hint = ""
    if value is not None:
        hint = suggestion(value, [v for v in values if isinstance(v, str)])
    if not allowed:
        return f"{shown} is not allowed{hint}"
    return f"{shown} is not allowed; expected {' or '.join(allowed)}{hint}"


def _explain(lines: list[str], key: str) -> str | None:
    """One line for a jsonargparse error block about ``key`` (``None``: not understood)."""
    lines = [line for line in lines if line.strip()]
    if not lines:
        return None
    first = lines[0].strip()
    header = _PARSER_KEY.match(first)
    if header:
        key = f"{key}.{header[1]}" if key else header[1]
        if header[2]:
            return _explain([header[2], *lines[1:]], key) or f"{key}: {header[2]}"
        return _explain(lines[1:], key)
    problem = _CLASS_PROBLEM.match(first)
    if problem:
        class_path = problem[1]
        body = ([problem[2]] if problem[2] else []) + lines[1:]
        unknown = _NOT_ACCEPTED.match(body[0].strip()) if body else None
        if unknown:
            hint = suggestion(unknown[1], _class_parameters(class_path))
            cls = class_path.rsplit(".", 1)[-1]
            return f"{key}.init_args.{unknown[1]}: {cls} has no argument {unknown[1]!r}{hint}"
        reason = body[0].strip() if body else "cannot be used"
        missing = _NO_ATTRIBUTE.match(reason)
        if missing:  # a misspelled class name in a class path
            module = sys.modules.get(missing[1])
            names = [n for n in dir(module) if n[:1].isupper()] if module else []
            return f"{key}: {missing[1]} has no class {missing[2]!r}{suggestion(missing[2], names)}"
        return _explain(body, f"{key}.init_args") or f"{key}: {class_path}: {reason}"
    unknown = _NOT_ACCEPTED.match(first)
    if unknown:
        return f"{key}: unknown option {unknown[1]!r}"
    literal = _LITERAL.match(first)
    if literal:
        return _wrong_value(key, literal[2], [], _literal_values(literal[1]))
    expected = _EXPECTED.match(first)
    if expected and expected[2] is not None:
        types, values = _expected([(first, [])])
        return _wrong_value(key, expected[2], types, values)
    items = _items(lines)
    if items:
        nested = [(t, r) for t, r in items if t.startswith("Does not validate")]
        inner = [item for _, rest in nested for item in _items(rest)]
        for text, rest in items + inner:  # a class that was found: its own error is the one
            if _CLASS_PROBLEM.match(text):
                return _explain([text, *rest], key)
        value = _given(lines)
        paths = [t for t, _ in items if t.startswith("Expected a path but")]
        if paths:
            subtypes = next((ln for ln in lines if ln.strip().startswith("Subtypes:")), "")
            bases = _TYPE.findall(subtypes)
            names = [n for b in bases if b != "NoneType" for n in _subclasses(b)]
            hint = suggestion(value or "", names)
            listed = f"; choose one of {names}" if 0 < len(names) <= 12 else ""
            return f"{key}: no class {value!r}{listed}{hint}"
        flat = [(t, r) for t, r in items if not t.startswith("Does not validate")] + inner
        types, values = _expected(flat)
        if types or values:
            return _wrong_value(key, value, types, values)
    return None


def summarize(message: str, parser: Any = None) -> str:
    """One line for a jsonargparse error message (``parser``: the subcommand's parser, whose
    option names are the candidates for a close match)."""
    text = message.strip()
    lines = text.splitlines()
    first = lines[0].strip() if lines else ""
    if first.startswith("unrecognized arguments:"):
        options = _option_strings(parser)
        unknown = [a for a in first.split(":", 1)[1].split() if a.startswith("-")]
        hints = [suggestion(a.split("=", 1)[0], options) for a in unknown]
        hint = next((h for h in hints if h), "")
        return f"{first}{hint}"
    accept = _DOES_NOT_ACCEPT.match(first)
    if accept:
        kind, where, option = accept.groups()
        full = option if kind == "Subcommand" else f"{where}.{option}"
        keys = [o.lstrip("-") for o in _option_strings(parser)]
        return f"unknown key {full!r}{suggestion(full, keys)}"
    choice = _INVALID_CHOICE.search(first)
    if choice:
        allowed = [c.strip(" '") for c in choice[2].split(",")]
        return f"{first}{suggestion(choice[1], allowed)}"
    explained = _explain(lines, "")
    if explained:
        return explained
    kept = [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith(_NOISE)]
    line = "; ".join(kept) or "invalid arguments"
    return line if len(line) <= 300 else line[:297] + "..."


def _option_strings(parser: Any) -> list[str]:
    if parser is None:
        return []
    options = list(getattr(parser, "_option_string_actions", {}))
    return [o for o in options if o.startswith("--")]


def _subcommand_parser(parser: Any, ex: Exception | None) -> Any:
    """The parser of the subcommand being parsed (its options are the close matches)."""
    found = getattr(ex, "subcommand_parser", None)
    if found is not None:
        return found
    action = getattr(parser, "_subcommands_action", None)
    if action is None:
        return parser
    for arg in getattr(parser, "args", None) or []:
        if arg in action.choices:
            return action.choices[arg]
    return parser


class OneLineErrors:
    """For jsonargparse parsers: an error exits with ``<prog>: error: <one line>`` and a
    pointer to ``--help`` instead of the complete usage (with ``exit_on_error=False``, or
    jsonargparse's debug mode, the full :class:`ArgumentError` is raised as before)."""

    def error_prog(self) -> str:
        """The name in front of ``error:``."""
        return PROG

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if not self.exit_on_error or debug_mode_active():  # type: ignore[attr-defined]
            super().error(message, ex)  # type: ignore[misc]
        parser = _subcommand_parser(self, ex)
        try:
            line = summarize(message, parser)
        except Exception:  # noqa: BLE001  (a message it does not know: keep jsonargparse's)
            line = " ".join(message.split())[:300]
        words = str(getattr(parser, "prog", PROG)).split()
        command = f"{PROG} {words[-1]}" if len(words) > 1 else PROG
        hint = f"({command} --help lists every option)"
        sys.stderr.write(f"{self.error_prog()}: error: {line}\n{hint}\n")
        self.exit(2)  # type: ignore[attr-defined]


class CommandParser(OneLineErrors, ArgumentParser):
    """The parser of ``convnn``'s own subcommands (``evaluate``, ``inspect``), with
    one-line errors named by the subcommand: ``convnn inspect: error: ...``."""

    def error_prog(self) -> str:
        return str(self.prog)
