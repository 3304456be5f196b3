"""The CLI's commands, one module each: `NAME`, `HELP`, `add_arguments(parser)`, `run(args)`."""

from __future__ import annotations

import argparse
from types import ModuleType
from typing import Protocol, cast

from hpsearch.commands import (
    advise,
    best,
    dashboard,
    doctor,
    examples,
    export,
    fit_batch,
    init,
    report,
    run,
    schema,
    status,
    stop,
    storage_proxy,
    validate,
)

__all__ = ["COMMANDS", "Command"]


class Command(Protocol):
    NAME: str
    HELP: str

    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace) -> int: ...


def _commands(*modules: ModuleType) -> list[Command]:
    return [cast(Command, m) for m in modules]


COMMANDS: list[Command] = _commands(
    init,
    run,
    validate,
    schema,
    fit_batch,
    doctor,
    status,
    stop,
    best,
    export,
    dashboard,
    report,
    advise,
    storage_proxy,
    examples,
)
