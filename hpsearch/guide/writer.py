"""A small YAML writer for study files with a comment on every choice (`init`, `advise -o`).

PyYAML drops comments, and the comments are the point of these files: each says why. Values are
written so the study-file reader reads them back exactly (floats always with a `.` or an
exponent, strings quoted when YAML would read them as something else).
"""

from __future__ import annotations

import json
import math
import re
import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

WIDTH = 99
COMMENT_COLUMN = 40
_PLAIN = re.compile(r"[A-Za-z_/.][\w./:-]*")
_YAML_WORDS = {"y", "n", "yes", "no", "on", "off", "true", "false", "null", "~"}


def scalar(value: Any) -> str:
    """One value in YAML flow syntax (nested mappings and lists inline)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return fmt_float(value)
    if isinstance(value, str):
        if _PLAIN.fullmatch(value) and value.lower() not in _YAML_WORDS:
            return value
        return json.dumps(value)  # a JSON string is a YAML double-quoted scalar
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {scalar(v)}" for k, v in value.items()) + "}"
    if isinstance(value, Sequence):
        return "[" + ", ".join(scalar(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} in a study file")


def fmt_float(value: float, digits: int = 4) -> str:
    """`0.0125`, `1.0e-05`, `3.0`: YAML 1.1 reads each as a float."""
    if not math.isfinite(value):
        raise ValueError(f"a study file cannot hold {value}")
    text = f"{value:.{digits}g}"
    if "e" in text:
        mantissa, exponent = text.split("e")
        return f"{mantissa if '.' in mantissa else mantissa + '.0'}e{exponent}"
    return text if "." in text else text + ".0"


class Doc:
    """Lines of YAML, each with an optional comment that says why."""

    def __init__(self) -> None:
        self._lines: list[tuple[str, str | None]] = []

    def comment(self, text: str, indent: int = 0) -> None:
        """A comment block, wrapped to the page width."""
        prefix = " " * indent + "# "
        for paragraph in text.splitlines() or [""]:
            # Continuation lines hang under the paragraph's text, past a `Label:` or a bullet.
            hang = re.match(r"\s*(?:[A-Z][a-z]+:\s+|\[\w+\]\s+|-\s+)?", paragraph)
            width = len(hang.group(0)) if hang else 0
            wrapped = textwrap.wrap(
                paragraph, WIDTH - len(prefix), subsequent_indent=" " * (width + 2 * (width == 0))
            ) or [""]
            self._lines.extend((prefix + line, None) for line in wrapped)

    def blank(self) -> None:
        self._lines.append(("", None))

    def key(self, key: str, value: Any, why: str | None = None, indent: int = 0) -> None:
        """`key: value  # why`; the comment goes above the key when the line would be long."""
        self._add(f"{' ' * indent}{key}: {scalar(value)}", why, indent)

    def section(self, key: str, why: str | None = None, indent: int = 0) -> None:
        """`key:` opening a block mapping or list."""
        self._add(f"{' ' * indent}{key}:", why, indent)

    def item(self, value: Any, why: str | None = None, indent: int = 2) -> None:
        """`- value` in a block list."""
        self._add(f"{' ' * indent}- {scalar(value)}", why, indent)

    def _add(self, line: str, why: str | None, indent: int) -> None:
        """A line with its comment, or the comment above it when both do not fit one line."""
        if why and not _fits(line, why):
            self.comment(why, indent)
            why = None
        self._lines.append((line, why))

    def mapping(
        self,
        data: Mapping[str, Any],
        indent: int = 0,
        whys: Mapping[str, str] | None = None,
        path: str = "",
    ) -> None:
        """A nested mapping in block style, its leaves in flow style; `whys`: comments by
        dotted key path (`objective.dataset.path`), as `comments_by_key` reads them."""
        for key, value in data.items():
            why = (whys or {}).get(path + key)
            if isinstance(value, Mapping) and value and _nested(value):
                self.section(key, why, indent=indent)
                self.mapping(value, indent + 2, whys, f"{path}{key}.")
            else:
                self.key(key, value, why, indent=indent)

    def render(self) -> str:
        out = []
        for line, why in self._lines:
            if why:
                line = f"{line.ljust(COMMENT_COLUMN)}  # {why}"
            out.append(line.rstrip())
        return "\n".join(out) + "\n"


def _fits(line: str, why: str) -> bool:
    return max(len(line), COMMENT_COLUMN) + 4 + len(why) <= WIDTH


def _nested(value: Mapping[str, Any]) -> bool:
    """Block style for mappings of mappings (objective, dataset), flow style for leaves."""
    return any(isinstance(v, Mapping) for v in value.values()) or len(value) > 4


_KEY_LINE = re.compile(r"^( *)([A-Za-z_][\w-]*):(.*)$")


def comments_by_key(text: str) -> tuple[list[str], dict[str, str]]:
    """A study file's comments, to write them again: (the comment lines before its first key,
    {dotted key path: the comment on that key's line, or in the lines just above it}).

    Read from the text because YAML loaders drop comments; a `#` inside a quoted value is
    not told apart, which at worst carries a stray comment.
    """
    header: list[str] = []
    found: dict[str, str] = {}
    above: list[str] = []
    stack: list[tuple[int, str]] = []  # (indent, key) of the open block mappings
    started = False
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            comment = stripped[1:].removeprefix(" ").rstrip()  # its own indentation kept
            (above if started else header).append(comment if not started else comment.strip())
            continue
        match = _KEY_LINE.match(line)
        if not match:
            above = []
            continue
        started = True
        indent, key, rest = len(match.group(1)), match.group(2), match.group(3)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = ".".join([k for _, k in stack] + [key])
        _, hash_, trailing = rest.partition(" #")
        why = trailing.strip() if hash_ else " ".join(above)
        if why:
            found[path] = why
        above = []
        stack.append((indent, key))
    return header, found
