"""Reading a study file's YAML: bytes -> plain data, and a map from key paths to line numbers.

Safe (only YAML's plain types: no `!!python/...`, no dates), bounded (file size, nesting depth,
alias expansion) and located: every error is one `SpecError` naming the line and, where one can
be found, the key path.
"""

from __future__ import annotations

import codecs
import math
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from hpsearch.errors import SpecError
from hpsearch.spec._base import KeyPath
from hpsearch.spec.messages import format_error, one_line
from hpsearch.spec.yaml_errors import key_path_at, opened, yaml_message

MAX_BYTES = 10 * 2**20
MAX_DEPTH = 64  # a study file needs about 6 levels; arbitrary objective options get the rest
MAX_VALUES = 200_000  # after expanding aliases (`*name`): stops "billion laughs" files
_YAML = "tag:yaml.org,2002:"
_NON_PRINTABLE = re.compile(  # as PyYAML's reader checks it
    "[^\x09\x0a\x0d\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]"
)
_PLAIN_TAGS = {_YAML + t for t in ("null", "bool", "int", "float", "str", "seq", "map", "merge")}


class _NodeProblem(Exception):
    def __init__(self, mark: Any, keys: KeyPath, message: str) -> None:
        super().__init__(message)
        self.line: int = mark.line + 1 if mark is not None else 1
        self.keys = keys
        self.message = message


class _Loader(yaml.SafeLoader):
    """A safe loader that reads `1e-5` as a float, dates as text, and bounds nesting."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self._path: list[str | int | None] = []
        self._open_anchors: list[str | None] = []

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        event = self.peek_event()
        # `index` is the key node of a mapping value, the position in a list, or None.
        key = index.value if isinstance(index, yaml.ScalarNode) else index
        self._path.append(key if isinstance(key, str | int) else None)
        keys = tuple(k for k in self._path if k is not None)
        try:
            if isinstance(event, yaml.AliasEvent) and event.anchor in self._open_anchors:
                raise _NodeProblem(
                    event.start_mark,
                    keys,
                    f"the alias `*{event.anchor}` is inside the value it names, so it would "
                    f"never end; remove the alias",
                )
            if len(self._path) > MAX_DEPTH:
                raise _NodeProblem(
                    event.start_mark,
                    keys[:4],
                    f"values nest more than {MAX_DEPTH} levels deep; a study file needs a few "
                    "levels: check the brackets and indentation",
                )
            anchor = None if isinstance(event, yaml.AliasEvent) else event.anchor
            self._open_anchors.append(anchor)
            try:
                node: yaml.Node | None = super().compose_node(parent, index)
                assert node is not None  # PyYAML returns None only for an empty document
                return node
            finally:
                self._open_anchors.pop()
        finally:
            self._path.pop()


# YAML 1.1 reads `1e-5` as a string; read every YAML 1.2 float as a float. Dates stay text: a
# study file has no dates, and `name: 2024-01-01` is a fine study name.
_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != _YAML + "timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    _YAML + "float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+][0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def read_yaml(path: Path) -> tuple[Any, dict[KeyPath, int]]:
    """The file's data and the line of every key path in it (`()` is the document).

    Raises:
        SpecError: the file is missing, unreadable, not UTF-8, not YAML, or unreasonable.
    """
    text = _read_text(path)
    _check_characters(path, text)
    lines: dict[KeyPath, int] = {}
    marks: dict[tuple[int, int], KeyPath] = {}
    with _located(path, text, lines, marks):
        loader = _Loader(text)
        try:
            node = loader.get_single_node()
            if node is None:
                return None, lines
            _walk(loader, node, (), lines, marks, set())
            _check_size(node)
            return loader.construct_document(node), lines
        finally:
            loader.dispose()


def _read_text(path: Path) -> str:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise SpecError(one_line(f"{path}: no such study file; check the path")) from None
    except IsADirectoryError:
        problem = "is a folder, not a study file; give the .yaml file"
        raise SpecError(one_line(f"{path}: {problem}")) from None
    except OSError as e:
        problem = f"cannot read the study file: {e.strerror or e}"
        raise SpecError(one_line(f"{path}: {problem}")) from None
    if len(data) > MAX_BYTES:
        message = (
            f"the study file must be at most {MAX_BYTES // 2**20} MiB, but it is "
            f"{len(data) / 2**20:.0f} MiB; is this the right file?"
        )
        raise SpecError(format_error(path, {(): 1}, (), message))
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        message = "the study file must be UTF-8 text, but it is UTF-16; save it as UTF-8"
        raise SpecError(format_error(path, {(): 1}, (), message))
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        before = data[: e.start]
        line = before.count(b"\n") + 1
        column = e.start - (before.rfind(b"\n") + 1) + 1
        keys = key_path_at(before.decode("utf-8", "replace"), line)
        message = (
            f"the study file must be UTF-8 text, but byte 0x{data[e.start]:02x} at column "
            f"{column} is not UTF-8; save the file as UTF-8 (or is it a binary file?)"
        )
        raise SpecError(format_error(path, {keys: line}, keys, message)) from None


def _check_characters(path: Path, text: str) -> None:
    """Control characters other than tab and newlines make YAML refuse the file; say where."""
    match = _NON_PRINTABLE.search(text)
    if match is None:
        return
    line = text.count("\n", 0, match.start()) + 1
    keys = key_path_at(text, line)
    message = (
        f"the study file must be text, but it holds the control character "
        f"U+{ord(match.group()):04X}; remove it (or is it a binary file?)"
    )
    raise SpecError(format_error(path, {keys: line}, keys, message))


@contextmanager
def _located(
    path: Path, text: str, lines: dict[KeyPath, int], marks: dict[tuple[int, int], KeyPath]
) -> Iterator[None]:
    """Turn every YAML failure into one `SpecError` line with its line and key path."""
    try:
        yield
    except _NodeProblem as e:
        raise SpecError(format_error(path, {e.keys: e.line}, e.keys, e.message)) from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        if e.context_mark is not None and opened(e) is not None:
            mark = e.context_mark
        line = mark.line + 1 if mark else 1
        keys = marks.get((mark.line, mark.column), ()) if mark else ()
        message = f"YAML syntax error: {yaml_message(e)}"
        if not keys and "more than one YAML document" not in message:
            keys = key_path_at(text, line)
        raise SpecError(format_error(path, {**lines, keys: line}, keys, message)) from None
    except yaml.YAMLError as e:
        raise SpecError(one_line(f"{path}: YAML syntax error: {e}")) from None
    except (ValueError, TypeError, OverflowError, RecursionError) as e:
        raise SpecError(one_line(f"{path}: cannot read a value: {e}; check the values")) from None


def _walk(
    loader: _Loader,
    node: yaml.Node,
    prefix: KeyPath,
    lines: dict[KeyPath, int],
    marks: dict[tuple[int, int], KeyPath],
    seen: set[int],
) -> None:
    """Record the line of every key; refuse duplicate keys, odd tags and unusable numbers."""
    lines.setdefault(prefix, node.start_mark.line + 1)
    marks.setdefault((node.start_mark.line, node.start_mark.column), prefix)
    if id(node) in seen:  # an alias: its value was checked where it was defined
        return
    seen.add(id(node))
    if node.tag not in _PLAIN_TAGS:
        raise _NodeProblem(
            node.start_mark,
            prefix,
            f"the YAML tag `{node.tag.removeprefix(_YAML)}` is not allowed in a study file; "
            "remove it (quote the value if it is text)",
        )
    if isinstance(node, yaml.ScalarNode):
        _check_number(loader, node, prefix)
    elif isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if not isinstance(key, yaml.ScalarNode):
                raise _NodeProblem(
                    key.start_mark,
                    prefix,
                    "a key must be a plain name such as `lr`, but got a list or a mapping as a "
                    "key; check for a stray `?` or brackets",
                )
            path = (*prefix, "null" if key.tag == _YAML + "null" else str(key.value))
            if path in lines:
                raise _NodeProblem(
                    key.start_mark, path, f"duplicate key (first on line {lines[path]}); keep one"
                )
            lines[path] = key.start_mark.line + 1
            _walk(loader, value, path, lines, marks, seen)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _walk(loader, item, (*prefix, i), lines, marks, seen)


def _check_number(loader: _Loader, node: yaml.ScalarNode, keys: KeyPath) -> None:
    """Refuse numbers nothing downstream can use: `.inf`, `.nan`, `1e400`, `10**400`."""
    if node.tag not in (_YAML + "int", _YAML + "float"):
        return
    try:
        value = (
            loader.construct_yaml_int(node)
            if node.tag == _YAML + "int"
            else loader.construct_yaml_float(node)
        )
    except ValueError:
        raise _NodeProblem(
            node.start_mark, keys, f"{node.value!r} is not a number; remove the `!!` tag"
        ) from None
    shown = node.value if len(node.value) <= 30 else node.value[:27] + "..."
    if isinstance(value, int):
        if abs(value) > 2**63 - 1:
            raise _NodeProblem(
                node.start_mark,
                keys,
                f"{shown} is too large; numbers in a study file must fit in 64 bits",
            )
        return
    written = node.value.lower().lstrip("+-")
    if math.isnan(value):
        message = f"{shown} is not a number; give a finite number"
    elif math.isinf(value) and written == ".inf":
        message = f"{shown} is infinite; give a finite number (leave the key out for no limit)"
    elif math.isinf(value):
        message = f"{shown} is too large: it reads as infinity; give a finite number"
    else:
        return
    raise _NodeProblem(node.start_mark, keys, message)


def _check_size(root: yaml.Node) -> None:
    """Refuse aliases that expand to an enormous document (`a: &a [*b, *b, ...]`)."""
    sizes: dict[int, int] = {}

    def size(node: yaml.Node) -> int:
        if id(node) not in sizes:
            sizes[id(node)] = 0  # a cycle cannot happen here: the composer refused it
            if isinstance(node, yaml.MappingNode):
                total = 1 + sum(size(k) + size(v) for k, v in node.value)
            elif isinstance(node, yaml.SequenceNode):
                total = 1 + sum(size(item) for item in node.value)
            else:
                total = 1
            sizes[id(node)] = min(total, 2 * MAX_VALUES)
        return sizes[id(node)]

    if size(root) <= MAX_VALUES:
        return
    key: KeyPath = ()
    mark = root.start_mark
    if isinstance(root, yaml.MappingNode):
        biggest = max(root.value, key=lambda kv: size(kv[1]))
        key, mark = (str(biggest[0].value),), biggest[0].start_mark
    raise _NodeProblem(
        mark,
        key,
        f"aliases (`*name`) expand this to more than {MAX_VALUES} values; write the values "
        "out instead of nesting aliases",
    )
