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

The workers' side is `storage.proxy.RetryingGrpcStorageProxy`.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import optuna
from optuna.exceptions import ExperimentalWarning
from optuna.storages import RDBStorage

from hpsearch.errors import StorageError
from hpsearch.signals import stop_on_signals
from hpsearch.storage.open import open_storage
from hpsearch.storage.optuna_compat import make_grpc_server
from hpsearch.storage.url import (
    PASSWORD_ENV,
    PROXY_PORT,
    STORAGE_ENV,
    StorageURL,
    flag_or_env,
    normalise,
    require_grpc,
)

_log = logging.getLogger(__name__)

DEFAULT_THREADS = 10  # Optuna's own default for run_grpc_proxy_server
STOP_GRACE_S = 10.0  # in-flight calls may finish; each is one short database transaction


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
    return normalise(raw, source, base=base, password=env.get(PASSWORD_ENV))


def serve(
    url: StorageURL,
    *,
    host: str = "127.0.0.1",
    port: int = PROXY_PORT,
    threads: int = DEFAULT_THREADS,
) -> str:
    """Serve `url` over gRPC on host:port until SIGTERM/SIGINT; returns the signal's name.

    Raises:
        StorageError: the database is unreachable, the address cannot be bound, or gRPC is
            not installed.
    """
    require_grpc()
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
        with stop_on_signals() as stop:
            server = _make_server(storage, host, port, pool)
            server.start()
            _log.info(
                "storage proxy: serving %s on grpc://%s:%d (%d threads; no TLS, no "
                "authentication: keep this port on a private network)",
                url.redacted, host, port, threads,
            )  # fmt: skip
            while not stop.event.wait(1.0):  # a short wait keeps signal handlers responsive
                pass
            _log.info("%s: stopping (in-flight calls get %.0fs)", stop.by, STOP_GRACE_S)
            server.stop(STOP_GRACE_S).wait()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        rdb.engine.dispose()
    _log.info("storage proxy stopped")
    return stop.by or "stop"


def _make_server(
    storage: optuna.storages.BaseStorage, host: str, port: int, pool: ThreadPoolExecutor
) -> Any:
    # `run_grpc_proxy_server` is make_server + start + wait_for_termination with no handle to
    # stop it; the handle lets SIGTERM finish in-flight calls (`server.stop(grace)`) instead of
    # dropping them.
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            return make_grpc_server(storage, host, port, pool)
    except RuntimeError as e:
        raise StorageError(
            f"storage-proxy cannot listen on {host}:{port} ({str(e).split(';')[0]}); the port "
            "is in use or the host is no address of this machine: pick another --port or --host"
        ) from None
