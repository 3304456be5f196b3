"""What a storage holds when it is not a study's database: a file of another kind, or tables
that are not Optuna's (so `doctor` says so instead of "reachable, empty database")."""

from __future__ import annotations

import stat
from pathlib import Path

import sqlalchemy as sa

_SQLITE_HEADER = b"SQLite format 3\x00"
_MAGIC = {
    b"\x89PNG": "a PNG image", b"\xff\xd8\xff": "a JPEG image", b"GIF8": "a GIF image",
    b"%PDF": "a PDF document", b"PK\x03\x04": "a zip archive", b"\x1f\x8b": "a gzip archive",
    b"\x7fELF": "a program (ELF)", b"BZh": "a bzip2 archive", b"\xfd7zXZ": "an xz archive",
}  # fmt: skip


def not_a_database(path: Path) -> str | None:
    """What `path` is when it is neither absent, nor empty, nor an SQLite database."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return None
    except OSError as e:
        return f"unreadable ({e.strerror})"
    if stat.S_ISDIR(mode):
        return "a directory"
    if not stat.S_ISREG(mode):
        return "not a regular file (a device, FIFO or socket)"
    try:
        with path.open("rb") as f:  # a regular file: reading its head cannot block
            head = f.read(512)
    except OSError as e:
        return f"unreadable ({e.strerror})"
    if not head or head.startswith(_SQLITE_HEADER):
        return None
    for magic, kind in _MAGIC.items():
        if head.startswith(magic):
            return kind
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return f"binary data ({path.stat().st_size} bytes)"
    first = text.strip().splitlines()[0][:40] if text.strip() else ""
    return f"a text file (it begins {first!r})"


def foreign_tables(engine: sa.Engine, limit: int = 5) -> list[str]:
    """The tables of a database that holds no Optuna study ([] for an empty one)."""
    names = sorted(sa.inspect(engine).get_table_names())
    return names[:limit] + ([f"{len(names) - limit} more"] if len(names) > limit else [])
