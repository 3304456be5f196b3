"""`hpsearch storage-proxy`: Optuna's gRPC storage proxy in front of the database."""

from __future__ import annotations

import argparse

from hpsearch.commands.common import bounded_int
from hpsearch.errors import HpsearchError
from hpsearch.storage.proxy_server import DEFAULT_THREADS, database_url, serve
from hpsearch.storage.url import PROXY_PORT

NAME = "storage-proxy"
HELP = (
    "serve the study database over gRPC (grpc://HOST:PORT) for large fleets of workers; "
    "no TLS, no authentication: private networks only"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--storage",
        metavar="URL",
        help="the database to serve; overrides HPSEARCH_STORAGE (never put a password here: "
        "use HPSEARCH_DB_PASSWORD)",
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1: this machine only, like the dashboard; "
        "0.0.0.0 for workers on other machines, on a private network)",
    )
    parser.add_argument(
        "--port",
        type=bounded_int("--port", 0, 65535),
        default=PROXY_PORT,
        help=f"port to listen on (default: {PROXY_PORT})",
    )
    parser.add_argument(
        "--threads",
        type=bounded_int("--threads", 1, 1024),
        default=DEFAULT_THREADS,
        metavar="N",
        help=f"server threads, and database connections (default: {DEFAULT_THREADS})",
    )


def run(args: argparse.Namespace) -> int:
    if not 0 < args.port < 65536:
        raise HpsearchError(f"--port must be between 1 and 65535, but got {args.port}")
    if args.threads < 1:
        raise HpsearchError(f"--threads must be >= 1, but got {args.threads}")
    serve(database_url(args.storage), host=args.host, port=args.port, threads=args.threads)
    return 0
