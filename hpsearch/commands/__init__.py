"""The CLI's commands, one module each: `NAME`, `HELP`, `add_arguments(parser)`, `run(args)`."""

from __future__ import annotations

import argparse
import importlib
from typing import Protocol, cast

__all__ = ["HELPS", "NAMES", "Command", "command"]


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
# Each command's one-line help, for `hpsearch --help`, which then imports no command module
# (tests/test_cli_help.py keeps it equal to each module's `HELP`).
HELPS: dict[str, str] = {
    "init": "look at a folder of images and this machine; write a study file that runs as written",
    "run": "create or join the study and run trials until its budget is spent",
    "validate": "check a study file and print the resolved search space and storage; run nothing",
    "schema": "print the JSON Schema of the study file, for editor completion",
    "fit-batch": (
        "probe the largest power-of-two batch size this machine's devices hold, and store it"
    ),
    "doctor": "check storage, versions, clocks, GPUs and pool sizes before a launch",
    "status": (
        "show how a study is doing: trials, budget, best, speed and ETA, workers, stuck trials"
    ),
    "stop": (
        "ask every worker of a study to hand back its running trial and exit (resume: run"
        " --resume)"
    ),
    "best": "print the best trial's parameters (or the Pareto front) as YAML ready for `enqueue:`",
    "export": "write one row per trial (values, parameters, curve summary, attributes) to a file",
    "dashboard": (
        "serve optuna-dashboard on the study's storage (127.0.0.1 by default; --read-only)"
    ),
    "report": "write one self-contained HTML file: status, best parameters and Optuna's plots",
    "advise": (
        "say what mattered, which ranges to move, whether it still improves, and what to run next"
    ),
    "storage-proxy": (
        "serve the study database over gRPC (grpc://HOST:PORT) for large fleets of "
        "workers; no TLS, no authentication: private networks only"
    ),
    "examples": (
        "write the example study files (the quickstart, a ResNet-50 image folder) to a folder"
    ),
}


def command(name: str) -> Command:
    """The module of the command `name` (one of `NAMES`)."""
    return cast(Command, importlib.import_module(f"hpsearch.commands.{_MODULES[name]}"))
