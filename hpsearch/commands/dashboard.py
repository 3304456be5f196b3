"""`hpsearch dashboard STUDY.yaml`: optuna-dashboard on the study's storage, in this process."""

from __future__ import annotations

import argparse
import logging

from hpsearch.commands.common import add_study_arguments, bounded_int, load
from hpsearch.errors import HpsearchError
from hpsearch.inspect.dashboard import DashboardServer, is_loopback, make_app, read_only_for
from hpsearch.inspect.source import open_view
from hpsearch.signals import stop_on_signals
from hpsearch.storage.artifacts import open_store

NAME = "dashboard"
HELP = "serve optuna-dashboard on the study's storage (127.0.0.1 by default; --read-only)"
_log = logging.getLogger("hpsearch")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_study_arguments(parser)
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0: everyone)",
    )
    parser.add_argument(
        "--port",
        type=bounded_int("--port", 0, 65535),
        default=8080,
        help="port (default 8080; 0: any)",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--read-only",
        dest="read_only",
        action="store_true",
        default=None,
        help="refuse every change (delete, rename, tell, notes); default when --host is not "
        "loopback",
    )
    mode.add_argument(
        "--writable",
        dest="read_only",
        action="store_false",
        help="allow changes through the dashboard; default on loopback",
    )


def run(args: argparse.Namespace) -> int:
    if not 0 <= args.port <= 65535:
        raise HpsearchError(f"--port must be between 0 and 65535, but got {args.port}")
    read_only = read_only_for(args.host, args.read_only)
    loaded, url = load(args)
    shared = open_store(loaded, writable=False)
    # The storage comes from the resolved URL object, so a password from the environment is
    # used here and never appears on a command line (optuna-dashboard's own CLI needs one).
    view = open_view(loaded, url, name=args.name)
    try:
        app = make_app(
            view.storage, read_only=read_only, artifact_store=shared.store if shared else None
        )
        server = DashboardServer(app, host=args.host, port=args.port)
        if not read_only and not is_loopback(args.host):
            _log.warning(
                "the dashboard is writable on %s: anyone who reaches it can delete studies and "
                "tell trials (there is no login); prefer --read-only", args.host
            )  # fmt: skip
        mode = "read-only" if read_only else "writable"
        checkpoints = f"  checkpoints from {shared.label}\n" if shared else ""
        # As PID 1 in a container SIGTERM has no default action: without a handler `docker
        # stop` and Kubernetes wait out their grace period and then kill it.
        with stop_on_signals() as stop:
            server.start()
            print(
                f"optuna-dashboard ({mode}) for study {view.name!r} on {url.redacted}\n"
                f"{checkpoints}"
                f"  {server.url(f'/dashboard/studies/{view.study_id}')}\n"
                "  Ctrl-C to stop",
                flush=True,
            )
            while not stop.event.wait(1.0):  # a short wait keeps the handler responsive
                pass
            server.shutdown()
    finally:
        view.close()
    return 0
