"""The workers' side of the gRPC storage proxy: Optuna's client, waiting out a proxy restart.

Without the wait, a worker whose proxy restarts would crash and leave its trial RUNNING for good,
as no heartbeat covers trials through the proxy (see `storage.proxy_server`).
"""

from __future__ import annotations

import functools
import logging
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import grpc
from optuna.exceptions import ExperimentalWarning
from optuna.storages import GrpcStorageProxy

from hpsearch.storage.retry import BACKOFF_SECONDS
from hpsearch.storage.url import PROXY_PORT

_log = logging.getLogger(__name__)

DEFAULT_PORT = PROXY_PORT
F = TypeVar("F", bound=Callable[..., Any])


class RetryingGrpcStorageProxy(GrpcStorageProxy):
    """Optuna's gRPC client whose calls wait out a restart of the proxy.

    A call that finds no proxy (gRPC status UNAVAILABLE) is tried again with the backoff of
    `storage.retry` (about three minutes in all), instead of crashing the worker. The proxy's
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
