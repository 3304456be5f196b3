"""`hpsearch export`: one row per trial to CSV, JSON Lines or Parquet, streamed page by page.

Two passes over the trials, each reading `PAGE_SIZE` trials per query: the first finds the
columns (parameters and user attributes vary between trials) and their types, the second writes
rows. Memory holds one page, never the study. The second pass stops at the last trial the first
one saw, so trials started meanwhile do not arrive without their columns.
"""

from __future__ import annotations

import csv
import json
import math
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from hpsearch.errors import HpsearchError
from hpsearch.inspect.source import StudyView, curve, duration_s, is_curve_attr, utc_iso
from hpsearch.storage.attrs import (
    BATCH_SIZE_ATTR,
    CHECKPOINT_ATTR,
    DEVICE_ATTR,
    EPOCHS_RUN_ATTR,
    FAIL_REASON_ATTR,
    FAILED_TRIAL_ATTR,
    HOST_ATTR,
    PRUNE_REASON_ATTR,
    SEED_ATTR,
    WORKER_ATTR,
)
from hpsearch.storage.optuna_compat import trial_id
from hpsearch.study import CURVES_ATTR, read_curves

FORMATS = ("csv", "json", "parquet")
SUFFIXES = {".csv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}
# Shown first among the user attributes; the rest follow in alphabetical order.
FIRST_ATTRS = (WORKER_ATTR, HOST_ATTR, DEVICE_ATTR, BATCH_SIZE_ATTR, EPOCHS_RUN_ATTR, SEED_ATTR,
               CHECKPOINT_ATTR, FAIL_REASON_ATTR, PRUNE_REASON_ATTR)  # fmt: skip
ROWS_PER_BATCH = 1000  # rows per Parquet record batch


@dataclass
class Columns:
    """The columns of an export, in order, with the Python kinds seen in each."""

    names: list[str] = field(default_factory=list)
    kinds: dict[str, set[str]] = field(default_factory=dict)
    last_trial_id: int | None = None
    # Trials whose checkpoint the trainer still keeps (its best `keep_checkpoints`); None: all.
    kept: set[int] | None = None


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    return "str"


def value_columns(view: StudyView) -> list[str]:
    return ["value"] if not view.multi_objective else [f"value_{m}" for m in view.metrics]


def trial_row(view: StudyView, trial: FrozenTrial, kept: set[int] | None = None) -> dict[str, Any]:
    """One flat row: fixed columns, `params_<name>` (user-facing), `user_attrs_<key>`.

    A checkpoint the trainer has removed since (out of its best `keep_checkpoints`) is left
    out: the column lists only files that exist.
    """
    row: dict[str, Any] = {"number": trial.number, "state": trial.state.name}
    values = trial.values or [None] * len(view.directions)
    for name, value in zip(value_columns(view), values, strict=True):
        row[name] = value
    row["datetime_start"] = utc_iso(trial.datetime_start)
    row["datetime_complete"] = utc_iso(trial.datetime_complete)
    row["duration_s"] = duration_s(trial)
    for name, value in view.user_params(trial.params).items():
        row[f"params_{name}"] = value
    steps = curve(trial, view.metrics[0])
    sign = 1.0 if view.directions[0] == StudyDirection.MINIMIZE else -1.0
    row["steps"] = len(steps)
    row["last_step"] = max(steps) if steps else None
    row["last_intermediate"] = steps[max(steps)] if steps else None
    finite = [v for v in steps.values() if not math.isnan(v)]
    row["best_intermediate"] = min(finite, key=lambda v: sign * v) if finite else None
    row["retry_of"] = trial.system_attrs.get(FAILED_TRIAL_ATTR)
    row.update(_curve_columns(view, trial, steps))
    for key in _attr_order(trial.user_attrs):
        if key == CHECKPOINT_ATTR and not _listed(trial, kept):
            continue
        if not is_curve_attr(key, view.metrics) and key != CURVES_ATTR:
            value = trial.user_attrs[key]
            row[f"user_attrs_{key}"] = value if _scalar(value) else json.dumps(value)
    return row


def _curve_columns(view: StudyView, trial: FrozenTrial, steps: dict[int, float]) -> dict[str, str]:
    """`curve_<metric>`: every metric's value per step, as a JSON list (`curve_step` the steps).

    The study's metric from Optuna's intermediate values, the others from `hpsearch:curves`;
    where their steps differ, the other metrics' own steps are `curve_step`.
    """
    curves = read_curves(trial.user_attrs)
    out: dict[str, str] = {}
    if steps:
        out[f"curve_{view.metrics[0]}"] = json.dumps(
            [None if math.isnan(v) else v for v in steps.values()]
        )
    if curves.get("step"):
        out["curve_step"] = json.dumps(curves["step"])
    elif steps:
        out["curve_step"] = json.dumps(list(steps))
    for name, values in curves.items():
        if name != "step":
            out[f"curve_{name}"] = json.dumps(values)
    return out


def _attr_order(attrs: dict[str, Any]) -> list[str]:
    return [k for k in FIRST_ATTRS if k in attrs] + sorted(
        k for k in attrs if k not in FIRST_ATTRS
    )


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, bool | int | float | str)


def scan(view: StudyView) -> Columns:
    """Pass one: every column any trial has, in a stable order, and the kinds in each."""
    head = ["number", "state", *value_columns(view), "datetime_start", "datetime_complete",
            "duration_s"]  # fmt: skip
    tail = ["steps", "last_step", "last_intermediate", "best_intermediate", "retry_of"]
    kinds: dict[str, set[str]] = {name: set() for name in head + tail}
    params: list[str] = []  # in the order trials suggested them
    attrs: list[str] = []
    last = None
    ranked: list[tuple[float, int]] = []
    sign = 1.0 if view.directions[0] == StudyDirection.MINIMIZE else -1.0
    for trial in view.trials():
        last = trial_id(trial)
        if trial.state == TrialState.COMPLETE and trial.values and not view.multi_objective:
            ranked.append((sign * trial.values[0], trial.number))
        for name, value in trial_row(view, trial).items():
            if name not in kinds:
                kinds[name] = set()
                (params if name.startswith("params_") else attrs).append(name)
            if value is not None:
                kinds[name].add(_kind(value))
    first = [f"user_attrs_{k}" for k in FIRST_ATTRS if f"user_attrs_{k}" in kinds]
    names = head + params + tail + first + sorted(a for a in attrs if a not in first)
    return Columns(names=names, kinds=kinds, last_trial_id=last, kept=_kept(view, ranked))


def _listed(trial: FrozenTrial, kept: set[int] | None) -> bool:
    """Whether to list the trial's checkpoint: kept by the trainer and, where it is a local
    file, still there (a user may delete the folder; a listed path must open)."""
    if kept is not None and trial.number not in kept:
        return False
    where = str(trial.user_attrs.get(CHECKPOINT_ATTR, ""))
    return "://" in where or Path(where).exists()


def _kept(view: StudyView, ranked: list[tuple[float, int]]) -> set[int] | None:
    """The trials whose checkpoints the trainer keeps: its `keep_checkpoints` best."""
    keep = getattr(view.loaded.spec.objective, "keep_checkpoints", None)
    if not isinstance(keep, int) or view.multi_objective:
        return None
    return {number for _, number in sorted(v for v in ranked if not math.isnan(v[0]))[:keep]}


def rows(view: StudyView, columns: Columns) -> Iterator[dict[str, Any]]:
    """Pass two: the rows, each with exactly `columns.names` (missing values are None)."""
    if columns.last_trial_id is None:
        return
    for trial in view.trials(up_to_id=columns.last_trial_id):
        row = trial_row(view, trial, columns.kept)
        yield {name: row.get(name) for name in columns.names}


def format_for(path: Path, given: str | None) -> str:
    if given is not None:
        return given
    fmt = SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise HpsearchError(
            f"-o {path}: cannot tell the format from the suffix {path.suffix!r}; "
            f"pass --format {'|'.join(FORMATS)} or use .csv, .json, .jsonl or .parquet"
        )
    return fmt


def export_to(view: StudyView, out: IO[str], fmt: str) -> int:
    """Write every trial to an open text stream (standard output) as CSV or JSON Lines."""
    if fmt == "parquet":
        raise HpsearchError("-o -: Parquet is a binary format; write a file: -o trials.parquet")
    columns = scan(view)
    write = _write_csv if fmt == "csv" else _write_jsonl
    return write(out, columns, rows(view, columns))


def export(view: StudyView, path: Path, fmt: str) -> int:
    """Write every trial to `path` (through a temporary file, renamed at the end); rows written."""
    columns = scan(view)
    # A new file of a random name (never an existing file or a planted link), renamed over
    # `path` at the end: a link at `path` is replaced, not written through.
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        if fmt == "parquet":
            n = _write_parquet(tmp, columns, rows(view, columns))
        else:
            with tmp.open("w", encoding="utf-8", newline="") as out:
                write = _write_csv if fmt == "csv" else _write_jsonl
                n = write(out, columns, rows(view, columns))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return n


def _write_csv(out: IO[str], columns: Columns, data: Iterator[dict[str, Any]]) -> int:
    writer = csv.DictWriter(out, fieldnames=columns.names)
    writer.writeheader()
    n = 0
    for row in data:
        writer.writerow(row)
        n += 1
    return n


def _write_jsonl(out: IO[str], columns: Columns, data: Iterator[dict[str, Any]]) -> int:
    n = 0
    for row in data:
        # Strict JSON has no NaN or Infinity: a diverged intermediate value becomes null.
        clean = {k: None if isinstance(v, float) and not math.isfinite(v) else v
                 for k, v in row.items()}  # fmt: skip
        out.write(json.dumps(clean, ensure_ascii=False) + "\n")
        n += 1
    return n


def _write_parquet(path: Path, columns: Columns, data: Iterator[dict[str, Any]]) -> int:
    try:  # the `parquet` extra: CSV and JSON Lines need nothing
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise HpsearchError(
            "Parquet export needs pyarrow, which is not installed; pip install "
            "'hpsearch[parquet]', or export CSV or JSON Lines (-o trials.csv)"
        ) from None

    types = {name: _arrow_type(name, columns.kinds[name]) for name in columns.names}
    schema = pa.schema([(name, types[name]) for name in columns.names])
    n = 0
    with pq.ParquetWriter(path, schema) as writer:
        batch: list[dict[str, Any]] = []
        for row in data:
            batch.append({k: _coerce(v, types[k]) for k, v in row.items()})
            if len(batch) >= ROWS_PER_BATCH:
                writer.write_table(pa.Table.from_pylist(batch, schema=schema))
                n += len(batch)
                batch = []
        if batch or n == 0:
            writer.write_table(pa.Table.from_pylist(batch, schema=schema))
            n += len(batch)
    return n


def _arrow_type(name: str, kinds: set[str]) -> Any:
    import pyarrow as pa

    if name in ("datetime_start", "datetime_complete"):
        return pa.timestamp("ms", tz="UTC")
    if kinds == {"bool"}:
        return pa.bool_()
    if kinds == {"int"}:
        return pa.int64()
    if kinds and kinds <= {"int", "float"}:
        return pa.float64()
    if not kinds and name in ("number", "steps", "last_step", "retry_of"):
        return pa.int64()
    if not kinds and (name.startswith("value") or name in ("duration_s", "last_intermediate",
                                                            "best_intermediate")):  # fmt: skip
        return pa.float64()
    return pa.string()  # mixed kinds, or a column with no value at all


def _coerce(value: Any, arrow_type: Any) -> Any:
    import datetime as dt

    import pyarrow as pa

    if value is None:
        return None
    if pa.types.is_timestamp(arrow_type):
        return dt.datetime.fromisoformat(value)
    if pa.types.is_string(arrow_type):
        return value if isinstance(value, str) else json.dumps(value)
    if pa.types.is_boolean(arrow_type):
        return value if isinstance(value, bool) else None
    if pa.types.is_integer(arrow_type):
        return value if isinstance(value, int) and not isinstance(value, bool) else None
    # A kind first seen in pass two (a trial finished between the passes) becomes null.
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
