"""What several commands share: the study file, its storage, and the checks before a run."""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from hpsearch.errors import HpsearchError, SpecError
from hpsearch.spec import MAX_COUNT, LoadedSpec, TrainerObjective, load_spec
from hpsearch.storage import StorageURL, resolve

if TYPE_CHECKING:
    from hpsearch.guide import Findings
    from hpsearch.train.summary import DataSummary


def add_study_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("study_file", metavar="STUDY.yaml", help="the study file")
    parser.add_argument(
        "--storage",
        metavar="URL",
        help="storage URL; overrides HPSEARCH_STORAGE and `storage:` (never put a password "
        "here: use HPSEARCH_DB_PASSWORD)",
    )
    parser.add_argument("--name", help="study name; overrides `name:` in the file")


def bounded_int(flag: str, low: int, high: int = MAX_COUNT) -> Callable[[str], int]:
    """An argparse `type` for an integer flag: a number outside [low, high] is one line
    (HpsearchError, raised while the arguments are read, before anything changes)."""

    def parse(text: str) -> int:
        value = int(text)  # not a number: argparse says so
        if value < low:
            raise HpsearchError(f"{flag} must be >= {low}, but got {value}")
        if value > high:
            shown = text if len(text) <= 24 else text[:21] + "..."
            raise HpsearchError(f"{flag} must be <= {high}, but got {shown}")
        return value

    parse.__name__ = "int"  # argparse names the type in its "invalid int value" message
    return parse


def load(args: argparse.Namespace) -> tuple[LoadedSpec, StorageURL]:
    loaded = load_spec(args.study_file)
    return loaded, resolve(loaded, flag=args.storage)


def check_output(path: Path, *, force: bool, flag: str = "-o") -> None:
    """An output file must not replace a file unasked, nor be written through a link (even a
    dangling one: a file would appear wherever it points), and its folder must exist."""
    if path.is_symlink():
        if not force:
            raise HpsearchError(
                f"{flag} {path}: it is a link (to {os.readlink(path)}); choose another name, or "
                "pass --force to replace the link itself (never what it points to)"
            )
    elif path.exists():
        if not path.is_file():
            raise HpsearchError(f"{flag} {path}: it is not a regular file; choose another name")
        if not force:
            raise HpsearchError(f"{flag} {path}: the file exists; pass --force to replace it")
    if not path.parent.is_dir():
        raise HpsearchError(f"{flag} {path}: folder {path.parent} does not exist; create it first")


@contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """A new temporary file beside `path` (never an existing file or link) to write; it then
    replaces `path` in one step (a link at `path` is replaced, not followed)."""
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_output(path: Path, text: str) -> None:
    """Write `text` to `path` through `replacing` (call `check_output` first)."""
    with replacing(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_study_file(path: Path, text: str, *, command: str) -> None:
    """Write a study file hpsearch made, atomically and only once it validates as written."""
    with replacing(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
        try:
            load_spec(tmp)
        except SpecError as e:
            raise HpsearchError(
                f"{command} made a study file that does not validate (a bug): {e}"
            ) from e


def study_name(args: argparse.Namespace, loaded: LoadedSpec) -> str:
    return str(args.name or loaded.spec.name)


@dataclass(frozen=True)
class Preflight:
    """A trainer study's data summary and the guide's findings about it."""

    summary: DataSummary
    findings: Findings


def preflight(
    loaded: LoadedSpec,
    *,
    timeout_s: float | None,
    gpu_hours: float | None,
    workers: int = 1,
    cache_dir: Path | None = None,
) -> Preflight | None:
    """The checks a non-expert needs before a trainer study runs (None for other objectives).

    Raises:
        SpecError: the data cannot be used, or `pretrained: true` cannot get its weights.
    """
    spec = loaded.spec.objective
    if not isinstance(spec, TrainerObjective):
        return None
    from hpsearch import guide, objective
    from hpsearch.errors import DataError
    from hpsearch.train.summary import summarize

    options = objective.trainer_options(loaded, spec, guide.representative_values(loaded.spec))
    guide.check_weights(loaded, options)  # before the folder scan: it is quick and it stops all
    try:
        summary = summarize(options.dataset, cache_dir=cache_dir)
    except DataError as e:
        raise loaded.error(("objective", "dataset"), str(e).rstrip(".")) from None
    findings = guide.check(
        loaded, options, summary, timeout_s=timeout_s, gpu_hours=gpu_hours, workers=workers
    )
    return Preflight(summary, findings)
