"""Pydantic's validation errors as one line: `file:line: key.path: what is wrong and the fix`.

Pydantic reports a location such as `('search_space', 'lr', 'float', 'low')`, where `float` is the
union member it tried, and messages such as "Input should be a valid dictionary or instance of
Budget". Here the location is walked along the models' annotations to drop exactly the union
tags, and each kind of error is said in the study file's terms, with an example of what fits.
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from hpsearch.spec._base import KeyPath, Problem, describe, suggest, unknown_key_message

# An example value for each place a user can get the shape wrong; `*` is any name, `#` an index.
_EXAMPLES: dict[tuple[str, ...], str] = {
    ("name",): "`my-study`",
    ("direction",): "`maximize` (or `minimize`)",
    ("directions",): "`[maximize, minimize]`",
    ("metric",): "`val_accuracy` (a list for several directions)",
    ("storage",): "`sqlite:///storage/hpsearch.db`",
    ("artifacts",): "`artifacts/`",
    ("artifact_store",): "`{type: filesystem, path: /shared/hpsearch}`",
    ("sampler",): "`{type: tpe, seed: 0}`",
    ("pruner",): "`{type: median, n_warmup_steps: 2}`",
    ("pruner", "wrapped"): "`{type: median}`",
    ("budget",): "`{n_trials: 40, timeout: 2h}`",
    ("workers",): "`{heartbeat_interval: 30, max_retries: 2}`",
    ("batch_size_fit",): "`{policy: per_device, margin: 0.1}`",
    ("objective",): "`{function: train.py:train}`",
    ("dataset",): "`{name: digits}` or `{path: images/}`",  # trainer options, below `objective`
    ("dataset", "augment"): "`[hflip, random_crop]`",
    ("search_space",): "`{lr: {type: float, low: 1.0e-5, high: 0.1, log: true}}`",
    ("search_space", "*"): "`{type: float, low: 0.0, high: 1.0}`",
    ("search_space", "*", "when"): "`{optimizer: sgd}`",
    ("search_space", "*", "choices"): "`[sgd, adam]`",
    ("enqueue",): "`[{lr: 0.01, optimizer: sgd}]`",
    ("enqueue", "#"): "`{lr: 0.01, optimizer: sgd}`",
}
_EXPECTED_BY_KEY: dict[tuple[str, ...], str] = {
    ("metric",): "a metric name such as `val_accuracy`, or a list of names (one per direction)",
}
_BOUNDS = {
    "greater_than_equal": ">=",
    "greater_than": ">",
    "less_than_equal": "<=",
    "less_than": "<",
}


def example(keys: KeyPath, *, kind: str = "mapping") -> str:
    """An example value for the key at `keys`, in backticks."""
    pattern = tuple(
        "#" if isinstance(k, int) else "*" if i == 1 and keys[0] == "search_space" else k
        for i, k in enumerate(keys)
    )
    return _EXAMPLES.get(pattern) or ("`[a, b]`" if kind == "list" else "`{key: value}`")


@dataclass(frozen=True)
class _Located:
    """One pydantic error, its key path without union tags, and where it entered a plain union."""

    detail: ErrorDetails
    keys: KeyPath
    owner: type[BaseModel] | None  # the model whose field the last key is
    union_at: int | None = None  # len(keys) where a non-discriminated union was entered
    union: Any = None
    member: str = ""  # the union member pydantic tried, as its tag
    at: Any = None  # the annotation at the end of the location


def first_problem(error: ValidationError, root: type[BaseModel]) -> tuple[KeyPath, str]:
    """The first problem as (key path, message), followed by how many more there are."""
    groups: dict[KeyPath, list[_Located]] = {}
    for detail in error.errors():
        located = _locate(root, detail)
        end = located.union_at if located.union_at is not None else len(located.keys)
        groups.setdefault(located.keys[:end], []).append(located)
    keys, message = _say(next(iter(groups.values())))
    if len(groups) > 1:
        more = len(groups) - 1
        message += f" (and {more} more problem{'s' if more > 1 else ''})"
    return keys, message


def _say(group: list[_Located]) -> tuple[KeyPath, str]:
    first = group[0]
    if first.union_at is None:
        return first.keys, _message(first)
    # A plain union (`str | list[str]`): report the member of the same shape as the input, if
    # any (`metric: [a, 3]` -> `metric.1: must be a string`), else what the union accepts.
    at = first.union_at
    whole = [g for g in group if len(g.keys) == at]
    value = whole[0].detail.get("input") if whole else first.detail.get("input")
    shape = "list[" if isinstance(value, list) else "dict[" if isinstance(value, Mapping) else None
    for g in group:
        if shape and g.member.startswith(shape) and len(g.keys) > at:
            return g.keys, _message(g)
    keys = first.keys[:at]
    expected = _EXPECTED_BY_KEY.get(tuple(map(str, keys))) or _expected(first.union)
    return keys, f"must be {expected}, but got {describe(value)}"


def _message(located: _Located) -> str:
    d, keys = located.detail, located.keys
    kind, given, ctx = d["type"], d.get("input"), d.get("ctx") or {}
    got = describe(given)
    cause = ctx.get("error")
    if isinstance(cause, Problem):
        return cause.message
    if kind == "missing":
        return "this key is required but missing"
    if kind == "extra_forbidden":
        valid = list(located.owner.model_fields) if located.owner else []
        return unknown_key_message(str(keys[-1]), valid) if valid else "unknown key; remove it"
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        tags = list(_union_members(_unwrap(located.at)))
        if kind == "union_tag_not_found":
            return f"this key is required but missing; add one of: {', '.join(tags)}"
        tag = str(ctx.get("tag"))
        return f"unknown type {tag!r}; {suggest(tag, tags)}valid: {', '.join(tags)}"
    typed = _type_message(kind, given, keys, ctx)
    if typed is not None:
        return typed
    message = d["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if kind in ("value_error", "assertion_error", "objective_kind"):
        return message.rstrip(".")
    message = message.replace("Input should be", "must be")
    return message if isinstance(given, Mapping | list) else f"{message}, but got {got}"


def _type_message(kind: str, given: Any, keys: Any, ctx: Mapping[str, Any]) -> str | None:
    """The message of an error about the kind or the range of a value, or None."""
    got = describe(given)
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"must be a mapping such as {example(keys)}, but got {got}"
    if kind in ("list_type", "tuple_type"):
        return f"must be a list such as {example(keys, kind='list')}, but got {got}"
    if kind == "string_type":
        quote = f"; quote it: '{_yaml(given)}'" if isinstance(given, int | float) else ""
        return f"must be a string, but got {got}{quote}"
    if kind == "string_too_short":
        return f"must not be empty, but got {got}; give e.g. {example(keys)}"
    if kind == "string_too_long":
        return f"must be at most {ctx.get('max_length')} characters, but got {len(given)}"
    return _scalar_message(kind, given, ctx)


def _scalar_message(kind: str, given: Any, ctx: Mapping[str, Any]) -> str | None:
    """The message of an error about a number, a truth value or one of a few options."""
    got = describe(given)
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"must be an integer, but got {got}{_number_hint(given)}"
    if kind in ("float_type", "float_parsing"):
        return f"must be a number, but got {got}{_number_hint(given)}"
    if kind in ("bool_type", "bool_parsing"):
        return f"must be true or false, but got {got}"
    if kind == "literal_error":
        options = re.findall(r"'([^']*)'|(\d+)", str(ctx.get("expected", "")))
        valid = [a or b for a, b in options]
        hint = suggest(str(given), valid).strip() if isinstance(given, str) else ""
        return f"must be {_or(valid)}, but got {got}" + (f"; {hint}" if hint else "")
    if kind in _BOUNDS:
        bound = next(iter(ctx.values()), "?")
        if isinstance(bound, float) and bound.is_integer():
            bound = int(bound)
        return f"must be {_BOUNDS[kind]} {bound}, but got {got}"
    if kind == "finite_number":
        return f"must be a finite number, but got {got}"
    return None


def _number_hint(given: Any) -> str:
    if isinstance(given, str) and re.fullmatch(r"\s*[-+]?[\d_.]+(e[-+]?\d+)?\s*", given, re.I):
        return "; remove the quotes"
    if isinstance(given, float):
        return "; use a whole number"
    return ""


def _yaml(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _or(values: Sequence[str]) -> str:
    return values[0] if len(values) == 1 else f"{', '.join(values[:-1])} or {values[-1]}"


# --- walking a location along the annotations ------------------------------------------------


def _locate(root: type[BaseModel], detail: ErrorDetails) -> _Located:
    """Drop the union tags pydantic inserts in `loc`, knowing from the types where they are."""
    keys: list[str | int] = []
    annotation: Any = root
    owner: type[BaseModel] | None = None
    union_at, union, member = None, None, ""
    loc = list(detail["loc"])
    while loc:
        seg = loc.pop(0)
        annotation = _unwrap(annotation)
        if _is_union(annotation):
            choices = _union_members(annotation)
            if _discriminated(choices):
                if seg in choices:
                    annotation = choices[seg]
                    continue
            else:  # a plain union: the segment is the member's tag, e.g. `str`, `list[str]`
                if union_at is None:
                    union_at, union, member = len(keys), annotation, str(seg)
                annotation = _member_by_tag(choices, str(seg))
                continue
        if seg == "[key]":  # the key itself has the wrong type (e.g. a number)
            continue
        keys.append(seg)
        owner = None
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            owner = annotation
            field = annotation.model_fields.get(str(seg))
            annotation = field.annotation if field else Any
        else:
            annotation = _item(annotation)
    cause = (detail.get("ctx") or {}).get("error")
    if isinstance(cause, Problem):
        keys.extend(cause.keys)
    if detail["type"] in ("union_tag_invalid", "union_tag_not_found"):
        keys.append("type")
    return _Located(detail, tuple(keys), owner, union_at, union, member, annotation)


def _unwrap(annotation: Any) -> Any:
    """Strip `Annotated[...]` and `... | None`."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(args) != 1:
                return annotation
            annotation = args[0]
        else:
            return annotation


def _is_union(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (Union, types.UnionType)


def _union_members(annotation: Any) -> dict[str, Any]:
    """A union's members by their tag: a model's `type` (or `Tag`), else the type itself."""
    out: dict[str, Any] = {}
    for arg in typing.get_args(annotation):
        if arg is type(None):
            continue
        inner = arg
        tag = None
        if typing.get_origin(arg) is Annotated:
            inner, *meta = typing.get_args(arg)
            tag = next((str(m.tag) for m in meta if hasattr(m, "tag")), None)
        if _is_union(_unwrap(inner)):
            out.update(_union_members(_unwrap(inner)))
            continue
        inner = _unwrap(inner)
        if tag is None and isinstance(inner, type) and issubclass(inner, BaseModel):
            field = inner.model_fields.get("type")
            if field is not None and typing.get_origin(field.annotation) is Literal:
                tag = str(typing.get_args(field.annotation)[0])
        out[tag if tag is not None else repr(inner)] = inner
    return out


def _discriminated(members: Mapping[str, Any]) -> bool:
    return all(isinstance(m, type) and issubclass(m, BaseModel) for m in members.values())


def _member_by_tag(members: Mapping[str, Any], tag: str) -> Any:
    for member in members.values():
        origin = typing.get_origin(member)
        if (
            (isinstance(member, type) and member.__name__ == tag)
            or (origin is list and tag.startswith("list["))
            or (origin is dict and tag.startswith("dict["))
            or (origin is Literal and tag.startswith("literal["))
        ):
            return member
    return Any


def _item(annotation: Any) -> Any:
    """The annotation of one item of a list, tuple or dict annotation (else `Any`)."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (dict, Mapping) and len(args) == 2:
        return args[1]
    if origin in (list, tuple, Sequence) and args:
        return args[0]
    return Any


def _expected(annotation: Any) -> str:
    """What a (union) annotation accepts, in words: `a string or a list`."""
    annotation = _unwrap(annotation)
    if _is_union(annotation):
        members = set(typing.get_args(annotation))
        parts = []
        if {bool, int, float, str} <= members:
            parts.append("a single value (a string, a number or true/false)")
            members -= {bool, int, float, str}
        parts += [_expected(m) for m in typing.get_args(annotation) if m in members]
        return _or(list(dict.fromkeys(parts)))
    if typing.get_origin(annotation) is Literal:
        return _or([f"`{a}`" for a in typing.get_args(annotation)])
    words = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}
    if annotation in words:
        return words[annotation]
    if typing.get_origin(annotation) in (list, tuple):
        return "a list"
    return "a mapping"


def format_error(path: Path, lines: Mapping[KeyPath, int], keys: KeyPath, message: str) -> str:
    """`file:line: key.path: message`, at the line of the deepest key of `keys` in the file."""
    line = None
    for n in range(len(keys), -1, -1):
        if keys[:n] in lines:
            line = lines[keys[:n]]
            break
    where = f"{path}:{line}" if line is not None else str(path)
    dotted = ".".join(str(k) for k in keys)
    return one_line(f"{where}: {dotted}: {message}" if dotted else f"{where}: {message}")


def one_line(text: str) -> str:
    """`text` with line breaks and other control characters escaped: an error is one line."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
