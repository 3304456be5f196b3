"""Start several local worker processes: one per GPU (`--gpus`) or N for CPU studies (`--workers`).

The parent never imports torch or touches CUDA: each child gets `CUDA_VISIBLE_DEVICES` before it
starts, so its CUDA context sees exactly one device as `cuda:0`. The storage URL reaches the
children through the environment, never their command line, so `ps` shows no password.

The children are forked from the parent, which has already imported hpsearch, Optuna,
SQLAlchemy and the database driver: a child starts its first trial without importing anything
(about 1 s of CPU each, which N fresh interpreters on a small machine pay N times over:
docs/workers.md). Where the parent has imported torch (a trainer study's checks), whose thread
pools do not survive a fork, each child is a fresh `python -m hpsearch run` instead.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import re
import runpy
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import Protocol

import sqlalchemy as sa

from hpsearch.batch_size import visible_gpus
from hpsearch.errors import HpsearchError
from hpsearch.storage import STORAGE_ENV, StorageURL

_log = logging.getLogger(__name__)
# The file the launcher's first worker creates once it has joined the study (`joined`), and
# the one the others wait for before they join (`wait_for_first`).
JOINED_ENV = "HPSEARCH_LAUNCHER_JOINED"
WAIT_ENV = "HPSEARCH_LAUNCHER_WAIT"


def parse_gpus(value: str) -> list[str]:
    """`all` or `0,2,3` -> GPU indices of this machine; raises HpsearchError naming the fix."""
    visible = visible_gpus()
    if value == "all":
        if not visible:
            raise HpsearchError(
                "--gpus all: no GPU found (nvidia-smi sees none); use --workers N on a CPU machine"
            )
        return visible
    if not re.fullmatch(r"\d+(,\d+)*", value):
        raise HpsearchError(f"--gpus must be `all` or indices like 0,2,3, but got {value!r}")
    asked = value.split(",")
    missing = [g for g in asked if g not in visible]
    if missing:
        seen = ", ".join(visible) if visible else "none (no GPU found)"
        raise HpsearchError(
            f"--gpus {value}: this machine has no GPU {', '.join(missing)}; its GPUs are {seen}; "
            "use --gpus all, or --workers N on a CPU machine"
        )
    if len(set(asked)) != len(asked):
        raise HpsearchError(f"--gpus {value}: a GPU is named twice; give each once")
    return asked


def launch(
    argv: Sequence[str], url: StorageURL, *, n_workers: int, gpus: Sequence[str] | None
) -> int:
    """Run `hpsearch run ARGV` in one child per worker; returns 0 when every child succeeded.

    The children start together, so their start-up (imports, the storage) overlaps, and all
    but the first wait before joining the study until the first has created or joined it
    (`joined`, `wait_for_first`): they never race to create it. The first SIGTERM/SIGINT is
    passed on to every child (each stops gracefully); a second one kills them.
    """
    slots = list(gpus) if gpus else [None] * n_workers
    children: list[_Child] = []
    signals = {"count": 0}
    fork = _can_fork()
    if fork:
        _import_driver(url)  # once here, not once in each child

    def forward(signum: int, frame: FrameType | None) -> None:
        signals["count"] += 1
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGKILL if signals["count"] > 1 else signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        with tempfile.TemporaryDirectory(prefix="hpsearch-launch-") as folder:
            first = Path(folder) / "joined"
            for i, gpu in enumerate(slots):
                env = {**os.environ, STORAGE_ENV: url.secret_url}
                env[JOINED_ENV if i == 0 else WAIT_ENV] = str(first)
                env.pop("HPSEARCH_DB_PASSWORD", None)  # already inside the URL in the environment
                if gpu is not None:
                    env["CUDA_VISIBLE_DEVICES"] = gpu
                args = ["run", *argv, "--worker-id", str(i)]
                start = _forked if fork else _spawned
                children.append(start(args, env))
            _log.info(
                "started %d worker(s)%s", len(children),
                f" on GPUs {','.join(gpus)}" if gpus else "",
            )  # fmt: skip
            while not first.exists() and children[0].poll() is None:
                time.sleep(0.02)
            first.touch()  # the first exited without joining: the others go on (and say why)
            codes = [child.wait() for child in children]
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    failed = [(i, c) for i, c in enumerate(codes) if c != 0]
    for i, code in failed:
        _log.error("worker %d exited with %d", i, code)
    return 1 if failed else 0


class _Child(Protocol):
    """What the launcher needs of a child: `subprocess.Popen`'s words."""

    def poll(self) -> int | None: ...
    def wait(self) -> int: ...
    def send_signal(self, signum: int) -> None: ...


def _spawned(args: list[str], env: dict[str, str]) -> _Child:
    return subprocess.Popen([sys.executable, "-m", "hpsearch", *args], env=env)


class _Forked:
    """A forked child worker, with `subprocess.Popen`'s words."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self._process = multiprocessing.get_context("fork").Process(
            target=_child_main, args=(args, env), daemon=False
        )
        self._process.start()

    def poll(self) -> int | None:
        return self._process.exitcode

    def wait(self) -> int:
        self._process.join()
        assert self._process.exitcode is not None
        return self._process.exitcode

    def send_signal(self, signum: int) -> None:
        if self._process.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._process.pid, signum)


def _forked(args: list[str], env: dict[str, str]) -> _Child:
    return _Forked(args, env)


def _child_main(args: list[str], env: dict[str, str]) -> None:
    # The parent's handler forwards signals to the children: here, it would signal siblings.
    for s in (signal.SIGTERM, signal.SIGINT):
        signal.signal(s, signal.SIG_DFL)
    os.environ.clear()
    os.environ.update(env)
    # What `python -m hpsearch ARGS` runs, in this process: its modules are loaded already.
    sys.argv = [sys.argv[0], *args]
    runpy.run_module("hpsearch", run_name="__main__", alter_sys=True)


def _can_fork() -> bool:
    """Fork the children, unless torch (its thread pools, CUDA) is in the parent already."""
    return hasattr(os, "fork") and "torch" not in sys.modules


def _import_driver(url: StorageURL) -> None:
    """Import the database driver the children will use, so that they share it."""
    if url.kind in ("sqlite", "grpc"):
        return
    with contextlib.suppress(Exception):  # a child that cannot load it says why itself
        sa.engine.make_url(url.secret_url).get_dialect().import_dbapi()


def joined() -> None:
    """Tell the launcher's other workers (if a launcher started this one first) that the study
    and its budget exist now."""
    path = os.environ.pop(JOINED_ENV, None)  # this process's own children are not workers
    if path:
        with contextlib.suppress(OSError):  # the launcher is gone: nobody waits
            Path(path).touch()


def wait_for_first(stopping: Callable[[], bool]) -> None:
    """Before joining: wait until the launcher's first worker has joined (if a launcher started
    this one and not first), or `stopping()`."""
    path = os.environ.pop(WAIT_ENV, None)
    if not path:
        return
    ready = Path(path)
    # The launcher's folder gone: the launcher is gone too, there is nobody to wait for.
    while not ready.exists() and ready.parent.exists() and not stopping():
        time.sleep(0.02)
