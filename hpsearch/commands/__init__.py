"""The CLI's commands, one module each: `NAME`, `HELP`, `add_arguments(parser)`, `run(args)`."""

from __future__ import annotations

import argparse
import importlib
from typing import Protocol, cast

__all__ = ["NAMES", "Command", "command"]


class Command(Protocol):
    NAME: str
    HELP: str

    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace) -> int: ...


# Command name -> module, in the order `hpsearch --help` lists them. Modules are imported on
# demand: every worker starts with `hpsearch run`, which should not pay for importing `best`,
# `dashboard` or `advise` (plotly, boto3 through optuna.artifacts: about half a second).
_MODULES = {
    "init": "init",
    "run": "run",
    "validate": "validate",
    "schema": "schema",
    "fit-batch": "fit_batch",
    "doctor": "doctor",
    "status": "status",
    "stop": "stop",
    "best": "best",
    "export": "export",
    "dashboard": "dashboard",
    "report": "report",
    "advise": "advise",
    "storage-proxy": "storage_proxy",
    "examples": "examples",
}
NAMES: tuple[str, ...] = tuple(_MODULES)


def command(name: str) -> Command:
    """The module of the command `name` (one of `NAMES`)."""
    return cast(Command, importlib.import_module(f"hpsearch.commands.{_MODULES[name]}"))
