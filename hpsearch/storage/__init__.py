"""Where a study lives and how hpsearch talks to it.

`url` (the storage URL's precedence, password and redaction), `engine` (the one set of engine
settings), `retry` (what counts as a lost connection, and the backoff), `resilient` (Optuna's
RDB storage made to ride out database restarts, with hpsearch's one-transaction steps),
`sqlite` (the embedded default), `mysql`, `open` (`open_storage`), `proxy` / `proxy_server`
(Optuna's gRPC proxy, client and server), and `optuna_compat`, which holds every use of Optuna's
private API. The study-wide budget's ledger (`hpsearch.budget`) is claimed in its
transactions. Nothing here knows about trials' contents, workers or the trainer.
"""

from __future__ import annotations

from hpsearch.storage.engine import check_reachable, create_engine, engine_kwargs
from hpsearch.storage.fates import RETRY_ATTR
from hpsearch.storage.filekind import foreign_tables, not_a_database
from hpsearch.storage.open import StaleCallback, open_storage
from hpsearch.storage.resilient import ResilientRDBStorage
from hpsearch.storage.retry import (
    BACKOFF_SECONDS,
    STORAGE_ERRORS,
    call_with_retries,
    first_line,
    give_up_after,
    is_disconnect,
    is_permanent,
)
from hpsearch.storage.sqlite import filesystem_type, refuse_sqlite_across_machines
from hpsearch.storage.url import (
    HOME_ENV,
    OPTUNA_STORAGE_ENV,
    PASSWORD_ENV,
    STORAGE_ENV,
    StorageURL,
    default_home,
    flag_or_env,
    normalise,
    resolve,
)

__all__ = [
    "foreign_tables",
    "not_a_database",
    "BACKOFF_SECONDS",
    "HOME_ENV",
    "OPTUNA_STORAGE_ENV",
    "PASSWORD_ENV",
    "RETRY_ATTR",
    "STORAGE_ENV",
    "STORAGE_ERRORS",
    "ResilientRDBStorage",
    "StaleCallback",
    "StorageURL",
    "call_with_retries",
    "check_reachable",
    "create_engine",
    "default_home",
    "engine_kwargs",
    "filesystem_type",
    "first_line",
    "flag_or_env",
    "give_up_after",
    "is_disconnect",
    "is_permanent",
    "normalise",
    "open_storage",
    "refuse_sqlite_across_machines",
    "resolve",
]
