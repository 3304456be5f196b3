"""Opening a study's storage: the resilient RDB storage, or the gRPC proxy's client."""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable
from contextlib import nullcontext

import optuna
import sqlalchemy
from optuna.exceptions import ExperimentalWarning
from optuna.storages import BaseStorage

from hpsearch.errors import StorageError
from hpsearch.storage.engine import check_reachable, engine_kwargs
from hpsearch.storage.optuna_compat import reading
from hpsearch.storage.resilient import ResilientRDBStorage
from hpsearch.storage.retry import first_line, is_disconnect, pause_while_running, stopping
from hpsearch.storage.sqlite import enable_wal, make_folder, read_only
from hpsearch.storage.url import PROXY_PORT, StorageURL, require_grpc

_log = logging.getLogger(__name__)

StaleCallback = Callable[[optuna.Study, optuna.trial.FrozenTrial], None]


def open_storage(
    url: StorageURL,
    *,
    heartbeat_interval: int | None = None,
    grace_period: int | None = None,
    stale_callback: StaleCallback | None = None,
    pool_size: int = 2,
    create_tables: bool = True,
    wait: float = 0.0,
) -> BaseStorage:
    """Open an Optuna storage on `url`, with heartbeats when `heartbeat_interval` is set.

    Raises:
        StorageError: the database is unreachable or its schema is incompatible.
    """
    if url.kind == "grpc":
        require_grpc()
        from hpsearch.storage.proxy import RetryingGrpcStorageProxy  # gRPC is imported only here

        host, _, port = url.secret_url.removeprefix("grpc://").rstrip("/").partition(":")
        return RetryingGrpcStorageProxy(host=host, port=int(port or PROXY_PORT))
    if not create_tables:
        url = read_only(url)  # a reader writes nothing, even where it could
    if url.sqlite_path is not None and create_tables:
        make_folder(url)
    check_reachable(url, wait=wait)
    if url.sqlite_path is not None and create_tables:
        enable_wal(url.sqlite_path)  # set by the workers; a reader leaves the file as it is

    def make() -> ResilientRDBStorage:
        with warnings.catch_warnings(), reading() if not create_tables else nullcontext():
            # Heartbeats are "experimental" in Optuna 5.0; they are the mechanism we rely on
            # for crashed workers, so the warning would only be noise for our users.
            warnings.simplefilter("ignore", ExperimentalWarning)
            return ResilientRDBStorage(
                # The one place braces are doubled: RDBStorage runs str.format over its URL.
                url.secret_url.replace("{", "{{").replace("}", "}}"),
                engine_kwargs=engine_kwargs(url, pool_size),
                heartbeat_interval=heartbeat_interval,
                grace_period=grace_period,
                heartbeat_stale_trial_callback=stale_callback,
                skip_table_creation=not create_tables,
                skip_compatibility_check=not create_tables,
                # A reader (status, the dashboard) takes no write lock; a worker does.
                serialize_sqlite=create_tables,
            )

    storage = _riding_out_races(make, url, create_tables=create_tables, wait=wait)
    if not create_tables and not sqlalchemy.inspect(storage.engine).has_table("studies"):
        # Optuna's version check would have failed here; a reader skips it (`reading`).
        storage.engine.dispose()
        raise StorageError(
            f"storage {url.redacted} has no Optuna tables: no study has run there; check "
            "--storage / HPSEARCH_STORAGE, or start a worker with `hpsearch run`"
        )
    return storage


def _riding_out_races(
    make: Callable[[], ResilientRDBStorage], url: StorageURL, *, create_tables: bool, wait: float
) -> ResilientRDBStorage:
    """`make()`, again while the database restarts or other workers create its tables."""
    started, races, pause = time.monotonic(), 0, 0.5
    while True:
        try:
            return make()
        except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError) as e:
            if is_disconnect(e):
                # The database went away after answering `check_reachable` (it restarts while
                # this worker starts): wait for it as long as for the first answer.
                if time.monotonic() - started + pause > wait or stopping():
                    raise StorageError(
                        f"cannot open storage {url.redacted}: {first_line(e)}"
                    ) from None
                _log.warning("waiting for storage %s: %s", url.redacted, first_line(e))
                pause_while_running(pause)
                pause = min(pause * 2, 10.0)
                continue
            if not create_tables:
                raise StorageError(
                    f"storage {url.redacted} holds no hpsearch study yet ({first_line(e)}); "
                    "check the URL, or start the study with `hpsearch run`"
                ) from None
            # Workers starting together on an empty database race to create Optuna's tables;
            # the losers see "already exists" errors and succeed on a second try.
            races += 1
            if races == 5:
                raise StorageError(
                    f"cannot open storage {url.redacted}: {first_line(e)}"
                ) from None
            time.sleep(0.2 * races)
        except (RuntimeError, ValueError) as e:
            raise StorageError(f"cannot open storage {url.redacted}: {first_line(e)}") from None
