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
import subprocess
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import optuna

from hpsearch.errors import ObjectiveError
from hpsearch.objective import command_check
from hpsearch.objective.resume import RESUME_DIR, with_checkpoints
from hpsearch.objective.types import Report, ResumeInfo, Runner, TrialContext
from hpsearch.spec import CommandObjective, LoadedSpec
from hpsearch.storage.artifacts import open_store

REPORT_PREFIX = "hpsearch-report"
RESULT_PREFIX = "hpsearch-result"
CommandReport = Callable[[Mapping[str, float], int], None]
LINE_LIMIT = 64 * 1024  # bytes kept of one output line; metric lines are far shorter


# The trial program needs neither the study's database nor its password.
_SECRET_ENV = ("HPSEARCH_DB_PASSWORD", "HPSEARCH_STORAGE", "OPTUNA_STORAGE")


def placeholders(template: str) -> list[str]:
    """The `{name}` fields of a command template."""
    fields = []
    for token in _split(template):
        fields.extend(command_check.fields(token))
    return fields


def _split(template: str) -> list[str]:
    try:
        return shlex.split(template)
    except ValueError as e:
        raise ObjectiveError(f"cannot read the command line ({e}); check its quotes") from None


def check_template(template: str) -> None:
    """Refuse placeholders where a value would be run as code (`sh -c '... {x}'`).

    Raises:
        ObjectiveError: naming the placeholder and the fix (read it from the environment).
    """
    command_check.check_template(_split(template))


def render(template: str, values: Mapping[str, Any]) -> list[str]:
    """The argv of one trial: the template split into words first, then each `{name}` in a
    word replaced by its value, so a value stays one word and is never read by a shell."""
    check_template(template)
    return [token.format_map({k: str(v) for k, v in values.items()}) for token in _split(template)]


def trial_environment(extra: Mapping[str, str]) -> dict[str, str]:
    """This process's environment without the study's secrets, plus the trial's own variables."""
    env = {k: v for k, v in os.environ.items() if k not in _SECRET_ENV}
    return {**env, **extra}


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
            env=trial_environment(env),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
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
        for line in output_lines(process.stdout):
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


def output_lines(stream: IO[bytes], limit: int = LINE_LIMIT) -> Iterator[str]:
    """The program's output lines, each cut to `limit` bytes: memory stays bounded whatever it
    prints (a 400 MB line without a newline is read and dropped piece by piece)."""
    while True:
        chunk = stream.readline(limit)
        if not chunk:
            return
        if not chunk.endswith(b"\n") and len(chunk) == limit:
            while (rest := stream.readline(limit)) and not rest.endswith(b"\n"):
                pass  # the rest of an over-long line is not kept
            # Shown in the tail as its start; never read as a metric line (it is incomplete).
            chunk = b"[a line over %d bytes, cut] %s" % (limit, chunk[:200])
        yield chunk.decode("utf-8", errors="replace").rstrip("\r\n")


def stop(process: subprocess.Popen[bytes], grace: float = 10.0) -> None:
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


def _kill_after(process: subprocess.Popen[bytes], timeout: float | None) -> threading.Timer | None:
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
    """Every `{name}` of the command is a search-space parameter or an objective option, and
    none sits where its value would run as code."""
    known = set(loaded.spec.search_space) | set(objective.options)
    try:
        fields = placeholders(objective.command)
    except ObjectiveError as e:
        raise loaded.error(("objective", "command"), str(e)) from None
    for name in fields:
        if name not in known:
            hint = ""
            if f"${{{name}}}" in objective.command:
                hint = f"; for the shell variable ${{{name}}} write ${{{{{name}}}}}"
            raise loaded.error(
                ("objective", "command"),
                f"{{{name}}} is neither a search_space parameter nor an objective option; "
                f"known: {', '.join(sorted(known)) or 'none'}{hint}",
            )
    try:
        check_template(objective.command)
    except ObjectiveError as e:
        raise loaded.error(("objective", "command"), str(e)) from None


def command_runner(
    loaded: LoadedSpec, objective: CommandObjective, context: TrialContext
) -> Runner:
    """Run the command once per trial, parameters substituted and in `HPSEARCH_PARAM_*`, its
    checkpoint folder and resume epoch in `HPSEARCH_CHECKPOINT_DIR` and `HPSEARCH_RESUME_EPOCH`."""
    check_command(loaded, objective)

    def run(trial: optuna.Trial, values: dict[str, Any], report: Report, info: ResumeInfo) -> Any:
        params = {**objective.options, **values}
        env = {f"HPSEARCH_PARAM_{k.upper()}": str(v) for k, v in params.items()}
        env["HPSEARCH_TRIAL_NUMBER"] = str(trial.number)
        env["HPSEARCH_STUDY"] = trial.study.study_name
        env["HPSEARCH_CHECKPOINT_DIR"] = str(info.checkpoint_dir)
        env["HPSEARCH_RESUME_EPOCH"] = str(info.resume_epoch)
        return run_command(
            render(objective.command, params),
            env=env,
            cwd=loaded.directory,
            report=report,
            timeout=objective.trial_timeout,
        )

    return Runner(with_checkpoints(run, context.artifacts / RESUME_DIR, open_store(loaded)))
