"""The `command:` objective: any program, parameters substituted, results read from its stdout.

The program reports with lines such as ``hpsearch-report step=3 val_accuracy=0.91`` (one per
epoch, so the pruner can act) and may end with ``hpsearch-result val_accuracy=0.93``; without a
result line the last report is the result. A pruned trial's process group is stopped.
"""

from __future__ import annotations

import collections
import os
import shlex
import signal
import string
import subprocess
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import optuna

from hpsearch.errors import ObjectiveError
from hpsearch.objective.types import Runner
from hpsearch.spec import CommandObjective, LoadedSpec

REPORT_PREFIX = "hpsearch-report"
RESULT_PREFIX = "hpsearch-result"
CommandReport = Callable[[Mapping[str, float], int], None]


def placeholders(template: str) -> list[str]:
    """The `{name}` fields of a command template."""
    try:
        return [field for _, field, _, _ in string.Formatter().parse(template) if field]
    except ValueError as e:
        raise ObjectiveError(f"bad command template: {e}; escape a literal brace as {{{{") from e


def render(template: str, values: Mapping[str, Any]) -> list[str]:
    """The argv of one trial: each `{name}` replaced by its value, shell-quoted."""
    quoted = {k: shlex.quote(str(v)) for k, v in values.items()}
    return shlex.split(template.format_map(quoted))


def parse_metrics(line: str) -> dict[str, float]:
    """`step=3 val_accuracy=0.91` -> {'step': 3.0, 'val_accuracy': 0.91}; bad pairs are errors."""
    metrics: dict[str, float] = {}
    for pair in line.split():
        key, sep, value = pair.partition("=")
        try:
            if not sep:
                raise ValueError
            metrics[key] = float(value)
        except ValueError:
            raise ObjectiveError(
                f"cannot read {pair!r} in {line!r}; report as `{REPORT_PREFIX} step=3 "
                "val_accuracy=0.91` (name=number pairs)"
            ) from None
    return metrics


def run_command(
    argv: list[str],
    *,
    env: Mapping[str, str],
    cwd: Path,
    report: CommandReport,
    timeout: float | None = None,
) -> dict[str, float]:
    """Run one trial's program; returns its result metrics.

    `report` may raise (a pruned trial): the program's process group is then stopped and the
    exception propagates.

    Raises:
        RuntimeError: the program exited non-zero (with its last output line), or reported nothing.
    """
    try:
        process = subprocess.Popen(
            argv,
            cwd=cwd,
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            start_new_session=True,  # its own process group, so stopping it stops its children
        )
    except OSError as e:
        raise RuntimeError(f"cannot start {argv[0]!r}: {e.strerror}") from None
    timer = _kill_after(process, timeout)
    tail: collections.deque[str] = collections.deque(maxlen=20)
    last: dict[str, float] = {}
    result: dict[str, float] | None = None
    try:
        assert process.stdout is not None
        for raw in process.stdout:
            line = raw.rstrip("\n")
            tail.append(line)
            head, _, rest = line.partition(" ")
            if head == REPORT_PREFIX:
                metrics = parse_metrics(rest)
                step = int(metrics.pop("step", len(tail)))
                last = metrics
                report(metrics, step)
            elif head == RESULT_PREFIX:
                result = parse_metrics(rest)
        code = process.wait()
    except BaseException:
        stop(process)
        raise
    finally:
        if timer is not None:
            timer.cancel()
    if code != 0:
        reason = "timed out" if code == -signal.SIGKILL and timeout else f"exited with {code}"
        last_line = next((t for t in reversed(tail) if t.strip()), "")
        raise RuntimeError(f"command {reason}: {last_line[-300:]}")
    if result is None and not last:
        raise RuntimeError(
            f"command printed no `{RESULT_PREFIX} name=value` or `{REPORT_PREFIX}` line"
        )
    return result if result is not None else last


def stop(process: subprocess.Popen[str], grace: float = 10.0) -> None:
    """SIGTERM the process group, then SIGKILL it after `grace` seconds."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        pass


def _kill_after(process: subprocess.Popen[str], timeout: float | None) -> threading.Timer | None:
    if timeout is None:
        return None

    def kill() -> None:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)

    timer = threading.Timer(timeout, kill)
    timer.daemon = True
    timer.start()
    return timer


def check_command(loaded: LoadedSpec, objective: CommandObjective) -> None:
    """Every `{name}` of the command is a search-space parameter or an objective option."""
    known = set(loaded.spec.search_space) | set(objective.options)
    try:
        fields = placeholders(objective.command)
    except ObjectiveError as e:
        raise loaded.error(("objective", "command"), str(e)) from None
    for name in fields:
        if name not in known:
            raise loaded.error(
                ("objective", "command"),
                f"{{{name}}} is neither a search_space parameter nor an objective option; "
                f"known: {', '.join(sorted(known)) or 'none'}",
            )


def command_runner(loaded: LoadedSpec, objective: CommandObjective) -> Runner:
    """Run the command once per trial, parameters substituted and in `HPSEARCH_PARAM_*`."""
    check_command(loaded, objective)

    def run(trial: optuna.Trial, values: dict[str, Any], report: CommandReport) -> Any:
        params = {**objective.options, **values}
        env = {f"HPSEARCH_PARAM_{k.upper()}": str(v) for k, v in params.items()}
        env["HPSEARCH_TRIAL_NUMBER"] = str(trial.number)
        env["HPSEARCH_STUDY"] = trial.study.study_name
        return run_command(
            render(objective.command, params),
            env=env,
            cwd=loaded.directory,
            report=report,
            timeout=objective.trial_timeout,
        )

    return Runner(run)
