"""Walking a dataset's class folders safely: no link out of the folder or into a loop, only
regular files (a FIFO named `x.png` would block the first read for ever), no error for a
broken or looping link; what was left out is counted and said in one warning."""

from __future__ import annotations

import logging
import os
import stat
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

logger = logging.getLogger(__name__)

_WHY = {
    "link": "links out of their folder or into a loop",
    "special": "not regular files (FIFOs, devices, sockets)",
    "unreadable": "unreadable (broken links, permissions)",
}


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def class_files(
    root: Path, class_dir: Path, extensions: tuple[str, ...], skipped: Counter[str]
) -> Iterator[tuple[Path, os.stat_result]]:
    """(path, stat) of each regular image file under `class_dir` (hidden names left out).

    A folder link is followed only to a folder inside `class_dir` not yet walked (so never
    into another class, out of the dataset, or round a loop); a file link only to a regular
    file inside `root`. Everything left out is counted in `skipped`.
    """
    top = os.path.realpath(class_dir)
    if not _inside(top, os.path.realpath(root)):
        skipped["link"] += 1
        return
    seen: set[tuple[int, int]] = set()
    stack = [str(class_dir)]
    while stack:
        folder = stack.pop()
        try:
            info = os.stat(folder)
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            skipped["unreadable"] += 1
            continue
        if (info.st_dev, info.st_ino) in seen:
            skipped["link"] += 1
            continue
        seen.add((info.st_dev, info.st_ino))
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                if entry.is_dir():
                    if entry.is_symlink() and not _inside(os.path.realpath(entry.path), top):
                        skipped["link"] += 1
                    else:
                        stack.append(entry.path)
                elif entry.name.lower().endswith(extensions):
                    found = _regular(root, entry, skipped)
                    if found is not None:
                        yield Path(entry.path), found
            except OSError:  # a link loop (ELOOP), a file gone meanwhile
                skipped["unreadable"] += 1


def _regular(root: Path, entry: os.DirEntry[str], skipped: Counter[str]) -> os.stat_result | None:
    info = os.stat(entry.path)  # stat never blocks, even on a FIFO
    if not stat.S_ISREG(info.st_mode):
        skipped["special"] += 1
        return None
    if entry.is_symlink() and not _inside(os.path.realpath(entry.path), os.path.realpath(root)):
        skipped["link"] += 1
        return None
    return info


def warn_skipped(root: Path, skipped: Counter[str]) -> None:
    """One warning for everything `class_files` left out."""
    if skipped:
        parts = ", ".join(f"{n} {_WHY[why]}" for why, n in sorted(skipped.items()))
        logger.warning("%s: skipped %s", root, parts)


def open_regular(path: Path) -> int:
    """A read-only descriptor of `path`, which must be a regular file; opening never blocks.

    Raises:
        OSError: not a regular file (it was replaced by a FIFO or device after the scan).
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(f"{path.name} is not a regular file")
    os.set_blocking(fd, True)
    return fd
