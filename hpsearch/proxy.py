"""Optuna's gRPC storage proxy in front of the database, for fleets of hundreds of workers and up.

Workers point at `grpc://host:13000` instead of the database; the proxy holds the only database
connections (a pool of `threads`), so the server sees one client instead of thousands.

What does not pass through the proxy (see docs/deployment.md):
- TLS and authentication: the gRPC channel is plain text, and anyone who reaches the port can
  read and write every study. Keep it on a private network.
- Heartbeats: `GrpcStorageProxy` is no heartbeat storage, so a worker that dies without a
  graceful stop (SIGKILL, OOM kill, a lost node) leaves its trial RUNNING; Optuna's
  `fail_stale_trials` skips trials without a heartbeat row, so nothing fails it automatically.
- hpsearch's budget ledger (a SQL table): workers count trials instead, and N workers may
  overshoot `n_trials` by up to N - 1.

`RetryingGrpcStorageProxy` is the workers' side: Optuna's client, made to wait out a restart of
the proxy instead of crashing (and leaving its trial RUNNING for good, as no heartbeat covers it).
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import grpc
import optuna
from optuna.exceptions import ExperimentalWarning
from optuna.storages import GrpcStorageProxy, RDBStorage

from hpsearch.errors import StorageError
from hpsearch.resilient import BACKOFF_SECONDS
from hpsearch.storage import (
    PASSWORD_ENV,
    STORAGE_ENV,
    StorageURL,
    _normalise,
    flag_or_env,
    open_storage,
)

_log = logging.getLogger(__name__)

DEFAULT_PORT = 13000
DEFAULT_THREADS = 10  # Optuna's own default for run_grpc_proxy_server
STOP_GRACE_S = 10.0  # in-flight calls may finish; each is one short database transaction
FORCED_EXIT_CODE = 143  # 128 + SIGTERM
F = TypeVar("F", bound=Callable[..., Any])


def database_url(
    flag: str | None, *, environ: Mapping[str, str] | None = None, base: Path | None = None
) -> StorageURL:
    """The database the proxy serves: `--storage` > `HPSEARCH_STORAGE`; no study file, no default.

    The password comes from `HPSEARCH_DB_PASSWORD` (or inside `HPSEARCH_STORAGE`), never from
    the command line.

    Raises:
        StorageError: no URL, a password on the command line, a malformed URL, or a grpc:// URL.
    """
    env = os.environ if environ is None else environ
    given = flag_or_env(flag, env)
    if given is None:
        raise StorageError(
            f"storage-proxy needs the database it serves, but neither --storage nor "
            f"{STORAGE_ENV} is set; pass --storage postgresql+psycopg://USER@HOST/DB "
            f"(password in {PASSWORD_ENV})"
        )
    raw, source = given
    if raw.startswith("grpc://"):
        raise StorageError(
            f"{source}: the storage proxy serves a database, but got {raw!r} (a proxy); pass "
            "the database URL, e.g. postgresql+psycopg://USER@HOST/DB"
        )
    base = Path.cwd() if base is None else base
    return _normalise(raw, source, base=base, password=env.get(PASSWORD_ENV))


class _Stop:
    """Set by the first SIGTERM/SIGINT; a second one exits at once."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.signal_name: str | None = None

    def handler(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.signal_name is not None:
            _log.warning("second %s: exiting now", name)
            os._exit(FORCED_EXIT_CODE)
        self.signal_name = name
        self.event.set()


@contextmanager
def _stop_on_signals() -> Iterator[_Stop]:
    stop = _Stop()
    previous = {s: signal.signal(s, stop.handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield stop
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def serve(
    url: StorageURL,
    *,
    host: str = "0.0.0.0",
    port: int = DEFAULT_PORT,
    threads: int = DEFAULT_THREADS,
) -> str:
    """Serve `url` over gRPC on host:port until SIGTERM/SIGINT; returns the signal's name.

    Raises:
        StorageError: the database is unreachable, or the address cannot be bound.
    """
    if url.kind == "sqlite":
        _log.warning(
            "storage-proxy in front of SQLite: fine for a try-out, but one machine needs no "
            "proxy; use PostgreSQL or MySQL for a fleet"
        )
    # Heartbeats OFF: they do not pass through the proxy (GrpcStorageProxy is no heartbeat
    # storage), and the proxy itself runs no trials. One pooled connection per server thread.
    rdb = open_storage(url, heartbeat_interval=None, pool_size=threads)
    assert isinstance(rdb, RDBStorage)
    # get_storage adds Optuna's in-process cache of finished trials, as Optuna's documentation of
    # run_grpc_proxy_server asks. It matters: the proxy answers each worker's "trials since N"
    # from a full read of the study, which the cache turns into a read of the new trials only.
    # It is safe with several proxies (it caches finished trials only).
    storage = optuna.storages.get_storage(rdb)
    pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="storage-proxy")
    try:
        with _stop_on_signals() as stop:
            server = _make_server(storage, host, port, pool)
            server.start()
            _log.info(
                "storage proxy: serving %s on grpc://%s:%d (%d threads; no TLS, no "
                "authentication: keep this port on a private network)",
                url.redacted, host, port, threads,
            )  # fmt: skip
            while not stop.event.wait(1.0):  # a short wait keeps signal handlers responsive
                pass
            _log.info("%s: stopping (in-flight calls get %.0fs)", stop.signal_name, STOP_GRACE_S)
            server.stop(STOP_GRACE_S).wait()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        rdb.engine.dispose()
    _log.info("storage proxy stopped")
    return stop.signal_name or "stop"


def _make_server(
    storage: optuna.storages.BaseStorage, host: str, port: int, pool: ThreadPoolExecutor
) -> Any:
    # `run_grpc_proxy_server` is make_server + start + wait_for_termination with no handle to
    # stop it; the handle lets SIGTERM finish in-flight calls (`server.stop(grace)`) instead of
    # dropping them. Optuna 5.0's make_server: optuna/storages/_grpc/server.py.
    from optuna.storages._grpc.server import make_server

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            return make_server(storage, host, port, pool)
    except RuntimeError as e:
        raise StorageError(
            f"storage-proxy cannot listen on {host}:{port} ({str(e).split(';')[0]}); the port "
            "is in use or the host is no address of this machine: pick another --port or --host"
        ) from None


# --- the workers' side ------------------------------------------------------------------------


class RetryingGrpcStorageProxy(GrpcStorageProxy):
    """Optuna's gRPC client whose calls wait out a restart of the proxy.

    A call that finds no proxy (gRPC status UNAVAILABLE) is tried again with the backoff of
    `hpsearch.resilient` (about three minutes in all), instead of crashing the worker. The proxy's
    graceful stop lets in-flight calls finish before it closes the port, so a call that fails
    UNAVAILABLE was not executed and is safe to send again.
    """

    def __init__(
        self,
        *,
        host: str = "localhost",
        port: int = DEFAULT_PORT,
        backoff: Sequence[float] = BACKOFF_SECONDS,
    ) -> None:
        self.backoff = tuple(backoff)
        with warnings.catch_warnings():
            # Experimental since Optuna 4.2; it is the documented client, the warning is noise.
            warnings.simplefilter("ignore", ExperimentalWarning)
            super().__init__(host=host, port=port)

    @property
    def address(self) -> str:
        return f"{self._host}:{self._port}"


def _retrying_rpc(method: F) -> F:
    @functools.wraps(method)
    def call(self: RetryingGrpcStorageProxy, *args: Any, **kwargs: Any) -> Any:
        for attempt, wait in enumerate((*self.backoff, None)):
            try:
                return method(self, *args, **kwargs)
            except grpc.RpcError as e:
                code = e.code() if isinstance(e, grpc.Call) else None
                if wait is None or code != grpc.StatusCode.UNAVAILABLE:
                    raise
                _log.warning(
                    "storage proxy %s unreachable in %s (attempt %d); retrying in %gs",
                    self.address, method.__name__, attempt + 1, wait,
                )  # fmt: skip
                time.sleep(wait)
        raise AssertionError("unreachable")

    return call  # type: ignore[return-value]


# Every BaseStorage method GrpcStorageProxy implements with a remote call; the rest of
# BaseStorage (get_best_trial, get_n_trials, ...) is built on these.
_RPC_METHODS = (
    "create_new_study", "delete_study", "set_study_user_attr", "set_study_system_attr",
    "get_study_id_from_name", "get_study_name_from_id", "get_study_directions",
    "get_study_user_attrs", "get_study_system_attrs", "get_all_studies", "create_new_trial",
    "set_trial_param", "set_trial_state_values", "set_trial_intermediate_value",
    "set_trial_user_attr", "set_trial_system_attr", "get_trial_id_from_study_id_trial_number",
    "get_trial", "get_all_trials",
)  # fmt: skip
for _name in _RPC_METHODS:
    setattr(RetryingGrpcStorageProxy, _name, _retrying_rpc(getattr(GrpcStorageProxy, _name)))
