"""The `hpsearch` command line: one module per command under `hpsearch.commands`.

`main(argv) -> int` maps every `HpsearchError` to one line on stderr and exit code 2; `--debug`
shows the traceback instead.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import signal
import sys
from collections.abc import Sequence
from types import FrameType

from hpsearch.errors import HpsearchError
from hpsearch.version import __version__

_log = logging.getLogger("hpsearch")


def build_parser(only: str | None = None, *, full: bool = True) -> argparse.ArgumentParser:
    """The whole command line, or with `only` (a command's name) just that command's part;
    `full=False` without `only`: the commands' names and help lines only (`--help`).

    `main` builds the part of the command it runs: a worker's `hpsearch run` then imports run's
    modules only. The commands import optuna, SQLAlchemy, pydantic: a second or more, which
    `main` covers with its early signal handler.
    """
    from hpsearch.commands import HELPS, NAMES, command

    parser = argparse.ArgumentParser(
        prog="hpsearch",
        description="Hyperparameter search for deep learning, on one machine or many.",
    )
    parser.add_argument("--version", action="version", version=f"hpsearch {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    if only is None and not full:
        # `hpsearch --help`, `--version` or a mistyped command: no command module imported,
        # so this is as quick as `optuna --help` (the modules import optuna, plotly, ...).
        for name in NAMES:
            sub.add_parser(name, help=HELPS[name], description=HELPS[name])
        return parser
    for name in NAMES if only is None else (only,):
        module = command(name)
        p = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        p.add_argument("-v", "--verbose", action="store_true", help="log more (debug level)")
        p.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")
        p.add_argument("--debug", action="store_true", help="show tracebacks of errors")
        module.add_arguments(p)
        p.set_defaults(handler=module.run)
    return parser


def _configure_logging(verbose: bool, quiet: bool) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    root = logging.getLogger("hpsearch")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    import optuna

    # Optuna's own lines come out as ours: one line in our format, parameters by the names the
    # study file gives them, trials by number, and none that repeats our progress line.
    optuna.logging.set_verbosity(logging.INFO if verbose else logging.WARNING)
    optuna.logging.disable_default_handler()
    ours = logging.StreamHandler(sys.stderr)
    ours.setFormatter(handler.formatter)
    ours.addFilter(_optuna_line if not verbose else _readable_names)
    optuna_root = logging.getLogger("optuna")
    optuna_root.handlers[:] = [ours]
    optuna_root.propagate = False


# "Trial 3 failed with parameters: {...} because of ..." and "Trial 3 failed with value None.":
# our progress line already says `trial 3 FAIL (ValueError: ...)` (`trial 3 queued again` for a
# handed-back one), and `-v` shows them with the traceback.
_REPEATS = re.compile(r"Trial \d+ failed (with parameters: |with value )")


def _optuna_line(record: logging.LogRecord) -> bool:
    if _REPEATS.match(record.getMessage()):
        return False
    # The reason is already one line in our progress line and in the trial's `fail_reason`.
    record.exc_info = None
    record.exc_text = None
    return _readable_names(record)


def _readable_names(record: logging.LogRecord) -> bool:
    """`log2_batch_size` (the exponent a sampler searches) as `batch_size`, `Trial#3` as
    `trial 3`."""
    message = re.sub(r"\blog2_(\w+)", r"\1", record.getMessage())
    record.msg, record.args = re.sub(r"\bTrial ?#(\d+)", r"trial \1", message), None
    return True


class _StoppedEarly(Exception):
    """SIGTERM arrived before the command could handle it (while importing)."""


def _stop_early(signum: int, frame: FrameType | None) -> None:
    raise _StoppedEarly(signal.Signals(signum).name)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code."""
    # A scheduler may stop a worker the moment it starts: without a handler, SIGTERM during the
    # imports killed it (-15) instead of a clean exit. Commands install their own handlers.
    previous = signal.signal(signal.SIGTERM, _stop_early)  # Ctrl-C stays a KeyboardInterrupt
    try:
        return _main(argv)
    except _StoppedEarly as e:  # anywhere before the command ran: its imports, the parser
        print(f"hpsearch: stopped by {e} before starting; nothing to hand back", file=sys.stderr)
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)


def _main(argv: Sequence[str] | None) -> int:
    from hpsearch.commands import NAMES

    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        only = argv[0] if argv and argv[0] in NAMES else None
        parser = build_parser(only, full=only is not None)
        args = parser.parse_args(argv)
        _configure_logging(args.verbose, args.quiet)
    except HpsearchError as e:  # a flag's value out of range (`bounded_int`)
        print(f"hpsearch: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("hpsearch: interrupted", file=sys.stderr)
        return 130
    try:
        return int(args.handler(args))
    except BrokenPipeError:
        # `hpsearch status --json | head -1`: the reader has what it wanted. Point stdout at
        # /dev/null so the interpreter's last flush does not print a traceback either.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # what a shell reports for a process ended by SIGPIPE
    except _StoppedEarly as e:  # a command without handlers of its own (`run` has them)
        print(f"hpsearch: stopped by {e}", file=sys.stderr)
        return 143
    except HpsearchError as e:
        if args.debug:
            raise
        print(f"hpsearch: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("hpsearch: interrupted", file=sys.stderr)
        return 130
