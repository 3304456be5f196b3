"""The next study `hpsearch advise -o` writes: the same file with the advised search space."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hpsearch.guide.writer import Doc, comments_by_key, scalar

# Objective keys holding paths relative to the study file, rebased when the new file is
# written to another folder.
_PATH_KEYS = ("weights",)
_DATASET_PATH_KEYS = ("path", "val_path")


def render_next(
    raw: Mapping[str, Any],
    *,
    source: Path,
    output: Path,
    space: Mapping[str, Mapping[str, Any]],
    fixed: Mapping[str, Any],
    enqueue: Mapping[str, Any],
    changes: list[str],
    study: str,
) -> str:
    """The study file `raw` (as read from `source`) with the next search space, for `output`.

    The file's own comments (its header, the sources `init` cites, the reason beside each key)
    are written again beside the keys they were on.
    """
    text = source.read_text(encoding="utf-8") if source.is_file() else ""
    header, whys = comments_by_key(text)
    doc = Doc()
    today = dt.date.today().isoformat()
    doc.comment(f"The next study after {source.name}, written by `hpsearch advise` on {today}.")
    doc.comment(f"What changed, from the trials of study {study!r}:")
    for change in changes:
        doc.comment(f"  - {change}")
    doc.comment(f"The best trial so far runs first. Run it with `hpsearch run {output.name}`.")
    if header:
        doc.comment(f"\nFrom {source.name}:")
        for line in header:
            doc.comment(line)
    doc.blank()
    name = f"{raw.get('name', study)}-next"
    fixed_why = {f"objective.{k}": "fixed by `hpsearch advise`: it barely mattered" for k in fixed}
    for key, value in raw.items():
        if key == "name":
            doc.key("name", name, "a new study: the old one keeps its trials")
        elif key == "objective":
            doc.section("objective", whys.get("objective"))
            objective = _rebased({**value, **fixed}, source.parent, output.parent)
            doc.mapping(objective, 2, {**whys, **fixed_why}, "objective.")
        elif key in ("search_space", "enqueue"):
            continue
        elif isinstance(value, Mapping) and value:
            doc.section(key, whys.get(key))
            doc.mapping(value, 2, whys, f"{key}.")
        else:
            doc.key(key, value, whys.get(key))
    doc.section("search_space", whys.get("search_space"))
    before = raw.get("search_space") or {}
    for key, entry in space.items():
        why = whys.get(f"search_space.{key}")
        if key in before and dict(before[key]) != dict(entry):
            why = f"was {scalar(before[key])}" + (f"; {why}" if why else "")
        doc.key(key, dict(entry), why, indent=2)
    if enqueue:
        doc.section("enqueue", "the best trial of the previous study")
        doc.item(dict(enqueue))
    return doc.render()


def _rebased(objective: Mapping[str, Any], old: Path, new: Path) -> dict[str, Any]:
    """Relative paths in the objective, rewritten relative to the new file's folder."""
    if old.resolve() == new.resolve():
        return dict(objective)

    def move(path: str) -> str:
        if os.path.isabs(path):
            return path
        return os.path.relpath(old.resolve() / path, new.resolve())

    out = dict(objective)
    for key in _PATH_KEYS:
        if isinstance(out.get(key), str):
            out[key] = move(out[key])
    function = out.get("function")
    if isinstance(function, str) and ".py:" in function:
        file, _, attr = function.rpartition(":")
        out["function"] = f"{move(file)}:{attr}"
    dataset = out.get("dataset")
    if isinstance(dataset, Mapping):
        out["dataset"] = {
            k: move(v) if k in _DATASET_PATH_KEYS and isinstance(v, str) else v
            for k, v in dataset.items()
        }
    return out
