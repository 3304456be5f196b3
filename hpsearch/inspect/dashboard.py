"""optuna-dashboard in-process on the study's storage, with a read-only mode that refuses writes.

optuna-dashboard has no authentication and its HTTP API deletes studies, renames them and tells
trials. Bound to anything but loopback, it is served read-only by default, with two guards: a
storage wrapper whose every write method raises (the guarantee, whatever route calls it), and a
WSGI filter that answers every non-GET request with 403 and a reason the page can show.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import socket
import threading
from collections.abc import Callable, Container, Iterable, Sequence
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from optuna.distributions import BaseDistribution
from optuna.storages import BaseStorage
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from hpsearch.errors import HpsearchError
from hpsearch.storage.artifacts import ArtifactStore
from hpsearch.storage.optuna_compat import FrozenStudy

_log = logging.getLogger(__name__)

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
READ_ONLY_REASON = (
    "this dashboard is read-only (hpsearch dashboard --read-only): nothing can be changed "
    "through it; run `hpsearch dashboard --writable` on 127.0.0.1 to edit"
)


class ReadOnlyError(HpsearchError):
    """A write was attempted through a read-only storage."""


class ReadOnlyStorage(BaseStorage):
    """Delegates every read to `inner`; every write raises `ReadOnlyError`.

    Each abstract and overridable method of `BaseStorage` is listed explicitly (no
    `__getattr__`), so a write method added to Optuna later is refused by the base class's
    abstract-method check rather than silently passed through.
    """

    def __init__(self, inner: BaseStorage) -> None:
        self._inner = inner

    def _refuse(self, what: str) -> ReadOnlyError:
        return ReadOnlyError(
            f"cannot {what}: the storage is opened read-only for the dashboard; "
            "use `hpsearch dashboard --writable` on 127.0.0.1 to change studies"
        )

    # --- writes: all refused ---------------------------------------------------------------

    def create_new_study(
        self, directions: Sequence[StudyDirection], study_name: str | None = None
    ) -> int:
        raise self._refuse("create a study")

    def delete_study(self, study_id: int) -> None:
        raise self._refuse("delete a study")

    def set_study_user_attr(self, study_id: int, key: str, value: Any) -> None:
        raise self._refuse("set a study attribute")

    def set_study_system_attr(self, study_id: int, key: str, value: Any) -> None:
        raise self._refuse("set a study attribute (notes, preferences)")

    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        raise self._refuse("create a trial")

    def set_trial_param(
        self,
        trial_id: int,
        param_name: str,
        param_value_internal: float,
        distribution: BaseDistribution,
    ) -> None:
        raise self._refuse("set a trial parameter")

    def set_trial_state_values(
        self, trial_id: int, state: TrialState, values: Sequence[float] | None = None
    ) -> bool:
        raise self._refuse("tell a trial (set its state or values)")

    def set_trial_intermediate_value(
        self, trial_id: int, step: int, intermediate_value: float
    ) -> None:
        raise self._refuse("report an intermediate value")

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        raise self._refuse("set a trial attribute")

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        raise self._refuse("set a trial attribute")

    # --- reads: delegated -------------------------------------------------------------------

    def get_study_id_from_name(self, study_name: str) -> int:
        return self._inner.get_study_id_from_name(study_name)

    def get_study_name_from_id(self, study_id: int) -> str:
        return self._inner.get_study_name_from_id(study_id)

    def get_study_directions(self, study_id: int) -> list[StudyDirection]:
        return self._inner.get_study_directions(study_id)

    def get_study_user_attrs(self, study_id: int) -> dict[str, Any]:
        return self._inner.get_study_user_attrs(study_id)

    def get_study_system_attrs(self, study_id: int) -> dict[str, Any]:
        return self._inner.get_study_system_attrs(study_id)

    def get_all_studies(self) -> list[FrozenStudy]:
        return self._inner.get_all_studies()

    def get_trial_id_from_study_id_trial_number(self, study_id: int, trial_number: int) -> int:
        return self._inner.get_trial_id_from_study_id_trial_number(study_id, trial_number)

    def get_trial_number_from_id(self, trial_id: int) -> int:
        return self._inner.get_trial_number_from_id(trial_id)

    def get_trial_param(self, trial_id: int, param_name: str) -> float:
        return self._inner.get_trial_param(trial_id, param_name)

    def get_trial(self, trial_id: int) -> FrozenTrial:
        return self._inner.get_trial(trial_id)

    def get_all_trials(
        self,
        study_id: int,
        deepcopy: bool = True,
        states: Container[TrialState] | None = None,
    ) -> list[FrozenTrial]:
        return self._inner.get_all_trials(study_id, deepcopy=deepcopy, states=states)

    def get_n_trials(
        self, study_id: int, state: tuple[TrialState, ...] | TrialState | None = None
    ) -> int:
        return self._inner.get_n_trials(study_id, state)

    def get_best_trial(self, study_id: int) -> FrozenTrial:
        return self._inner.get_best_trial(study_id)

    def get_trial_params(self, trial_id: int) -> dict[str, Any]:
        return self._inner.get_trial_params(trial_id)

    def get_trial_user_attrs(self, trial_id: int) -> dict[str, Any]:
        return self._inner.get_trial_user_attrs(trial_id)

    def get_trial_system_attrs(self, trial_id: int) -> dict[str, Any]:
        return self._inner.get_trial_system_attrs(trial_id)

    def remove_session(self) -> None:
        self._inner.remove_session()

    def check_trial_is_updatable(self, trial_id: int, trial_state: TrialState) -> None:
        self._inner.check_trial_is_updatable(trial_id, trial_state)


def refuse_writes(app: WSGIApp) -> WSGIApp:
    """A WSGI filter: GET/HEAD/OPTIONS pass; any other method gets 403 with a JSON reason."""

    def guarded(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD", "GET").upper() in ("GET", "HEAD", "OPTIONS"):
            return app(environ, start_response)
        body = json.dumps({"reason": READ_ONLY_REASON}).encode()
        start_response(
            "403 Forbidden",
            [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
        )
        return [body]

    return guarded


def make_app(
    storage: BaseStorage, *, read_only: bool, artifact_store: ArtifactStore | None = None
) -> WSGIApp:
    """optuna-dashboard's WSGI app on `storage` (wrapped and filtered when `read_only`).

    With `artifact_store`, the dashboard lists and serves the trials' checkpoints.
    """
    from optuna_dashboard import wsgi

    if read_only:
        return refuse_writes(wsgi(ReadOnlyStorage(storage), artifact_store=artifact_store))
    return wsgi(storage, artifact_store=artifact_store)


def is_loopback(host: str) -> bool:
    """Whether only this machine can reach `host` (`localhost`, 127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to a public address


def read_only_for(host: str, flag: bool | None) -> bool:
    """`--read-only`/`--writable` when given, else read-only unless bound to loopback."""
    return (not is_loopback(host)) if flag is None else flag


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a browser's open connection must not keep the process alive


class _Server6(_Server):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        _log.debug("dashboard: %s", format % args)


class DashboardServer:
    """A running (or ready) dashboard server; `port=0` picks a free port."""

    def __init__(self, app: WSGIApp, *, host: str, port: int) -> None:
        server_class = _Server6 if ":" in host else _Server
        try:
            self._server = make_server(
                host, port, app, server_class=server_class, handler_class=_QuietHandler
            )
        except OSError as e:
            raise HpsearchError(
                f"cannot listen on {host}:{port}: {e.strerror or e}; pick another --port or --host"
            ) from None
        self.host = host
        self.port = int(self._server.server_port)
        self._thread: threading.Thread | None = None

    def url(self, path: str = "/dashboard") -> str:
        host = self.host
        if host in ("0.0.0.0", "::"):
            host = socket.gethostname()
        elif ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}{path}"

    def serve_forever(self) -> None:
        self._server.serve_forever(poll_interval=0.2)

    def start(self) -> DashboardServer:
        """Serve in a background thread (for tests and notebooks)."""
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)
        self._thread.start()
        return self

    def shutdown(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=10)
        self._server.server_close()
