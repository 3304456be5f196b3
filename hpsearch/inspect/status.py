"""`hpsearch status`: how a running study is doing, as a 100-column table or as JSON.

Every number comes from one pass over a few facts of each trial (`inspect.facts`: read by SQL,
not as whole trials, so a 20,000-trial study takes well under a second), the best trial, the
budget ledger and Optuna's heartbeat table; the rules behind each one are in docs/inspect.md.
The table itself is drawn by `hpsearch.inspect.table`.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from hpsearch.inspect.disk import checkpoint_usage
from hpsearch.inspect.facts import Summary, read_summary
from hpsearch.inspect.format import STATES, fmt_duration
from hpsearch.inspect.savings import Savings
from hpsearch.inspect.source import StudyView, pareto_front
from hpsearch.storage.attrs import CHECKPOINT_ATTR
from hpsearch.study import STOP_ATTR

# A RUNNING trial is "stuck" after this many median trial durations (with >= 3 to judge by).
STUCK_FACTOR = 3.0


@dataclass
class Worker:
    """One worker (`host:pid#id`) as seen through the trials it ran."""

    worker: str
    running: list[int] = field(default_factory=list)
    running_s: float | None = None
    finished: int = 0
    last_finished_s_ago: float | None = None
    live: bool = False


@dataclass
class Stuck:
    number: int
    worker: str | None
    reason: str
    heartbeat_age_s: float | None
    running_s: float | None


@dataclass
class Status:
    """Everything `hpsearch status` shows; `as_json()` is what `--json` prints."""

    study: str
    storage: str
    directions: list[str]
    metrics: list[str]
    trials: dict[str, int]
    retries: int
    budget: dict[str, Any]
    best: dict[str, Any] | None
    pareto_front: list[int] | None
    median_duration_s: float | None
    throughput_per_hour: float | None
    throughput_window_s: float | None
    remaining_trials: int | None
    eta_s: float | None
    eta_limited_by: str | None
    pruning: dict[str, Any]
    recent_window_s: float
    workers: list[Worker]
    stuck: list[Stuck]
    stopped: dict[str, Any] | None = None  # `hpsearch stop` (or the target): at, by, reason
    checkpoints: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["live_workers"] = [w for w in data.pop("workers") if w["live"]]
        data["workers_seen"] = len(self.workers)
        return data


def collect(view: StudyView, *, recent_s: float = 600.0) -> Status:
    """Read the study once and work out every number of the status table."""
    now = dt.datetime.now()  # Optuna hands out naive local datetimes
    p = read_summary(view)
    workers = _workers(p, now)
    median = statistics.median(p.durations) if p.durations else None
    grace = float(view.loaded.spec.workers.grace_seconds)
    stuck = _stuck(p, workers, view.heartbeat_ages(), grace, median, now)
    # A worker whose trial's heartbeat went stale is gone (killed), however recently it finished
    # another; once the study is stopped, only a worker still finishing its trial is live.
    gone = {s.worker for s in stuck if s.heartbeat_age_s is not None}
    stopped = _stop_record(view)
    for w in workers.values():
        recent = w.last_finished_s_ago is not None and w.last_finished_s_ago <= recent_s
        if recent and stopped is None and w.worker not in gone and not w.live:
            w.live = True
    budget, started, to_start = _budget(view, p)
    running = p.counts["RUNNING"]

    # Someone works on the study: a RUNNING trial whose heartbeat is not stale, or a live
    # worker while budget is left. Otherwise times stop at the last trial, so a finished study
    # keeps its real duration and rate instead of aging with the clock.
    stale = sum(1 for s in stuck if s.heartbeat_age_s is not None)
    live = any(w.live for w in workers.values())
    spent = budget["spent"]
    working = running > stale or (spent is None and live)
    end = now if working or p.last_end is None else p.last_end
    if started is not None:
        # An idle study with budget left still runs down its timeout clock: show that clock.
        until = end.timestamp() if spent is not None else time.time()
        budget["elapsed_s"] = max(0.0, until - started)

    finished = p.counts["COMPLETE"] + p.counts["PRUNED"] + p.counts["FAIL"]
    window = None if p.first_start is None else (end - p.first_start).total_seconds()
    per_hour = finished / window * 3600 if finished and window and window > 0 else None
    remaining = None if to_start is None else to_start + running
    eta, eta_by = _eta(remaining, per_hour, budget) if stopped is None else (None, None)

    best = None
    if p.counts["COMPLETE"] and not view.multi_objective:
        chosen = view.storage.get_best_trial(view.study_id)  # Optuna's query, as `best` asks
        best = {
            "number": chosen.number,
            "values": list(chosen.values),
            "params": view.user_params(chosen.params),
            "checkpoint": chosen.user_attrs.get(CHECKPOINT_ATTR),
        }
    front = None
    if view.multi_objective:
        front = sorted(pareto_front(p.points, view.directions))

    return Status(
        study=view.name,
        storage=view.url.redacted,
        directions=[d.name.lower() for d in view.directions],
        metrics=view.metrics,
        trials={"total": sum(p.counts.values()), **{s.lower(): p.counts[s] for s in STATES}},
        retries=p.retries,
        budget=budget,
        best=best,
        pareto_front=front,
        median_duration_s=median,
        throughput_per_hour=per_hour,
        throughput_window_s=window,
        remaining_trials=remaining,
        eta_s=eta,
        eta_limited_by=eta_by,
        pruning=_savings(view, p),
        recent_window_s=recent_s,
        workers=sorted(workers.values(), key=lambda w: (not w.live, w.worker)),
        stuck=stuck,
        stopped=stopped,
        checkpoints=checkpoint_usage(view, p.artifacts),
    )


def _stop_record(view: StudyView) -> dict[str, Any] | None:
    """The study's stop record, unless it was resumed since (`run --resume`)."""
    record = view.study_attrs.get(STOP_ATTR)
    return dict(record) if isinstance(record, dict) and "reason" in record else None


def _workers(p: Summary, now: dt.datetime) -> dict[str, Worker]:
    """Every worker seen, with the trials it runs (and for how long) and when it last finished."""
    workers: dict[str, Worker] = {}
    for name, seen in p.workers.items():
        w = workers[name] = Worker(name, finished=seen.finished)
        if seen.last_end is not None:
            w.last_finished_s_ago = (now - seen.last_end).total_seconds()
    for trial in p.running:
        if trial.worker is None:
            continue
        w = workers.setdefault(trial.worker, Worker(trial.worker))
        w.running.append(trial.number)
        if trial.start is not None:
            w.running_s = max(w.running_s or 0.0, (now - trial.start).total_seconds())
    return workers


def _savings(view: StudyView, p: Summary) -> dict[str, Any]:
    savings = Savings.for_view(view)
    for (state, planned, ran), count in p.runs.items():
        savings.add_run(state, planned=planned, ran=ran, last_step=None, count=count)
    if p.complete_step is not None:
        savings.add_complete_step(p.complete_step)
    return savings.as_json()


def _stuck(
    p: Summary,
    workers: dict[str, Worker],
    ages: dict[int, float],
    grace: float,
    median: float | None,
    now: dt.datetime,
) -> list[Stuck]:
    """RUNNING trials that look abandoned; marks the workers of the others live."""
    stuck: list[Stuck] = []
    for trial in p.running:
        age = ages.get(trial.id)
        ran = (now - trial.start).total_seconds() if trial.start else None
        worker = trial.worker
        if age is not None and age > grace:
            reason = f"no heartbeat for {fmt_duration(age)} (grace period {fmt_duration(grace)})"
            stuck.append(Stuck(trial.number, worker, reason, age, ran))
            continue  # a stale heartbeat means its worker is gone
        if (pid := dead_here(worker)) is not None:  # killed, before its heartbeat goes stale
            reason = f"its worker's process {pid} on this machine is gone (killed)"
            stuck.append(Stuck(trial.number, worker, reason, age or 0.0, ran))
            continue
        if (
            ran is not None
            and median is not None
            and len(p.durations) >= 3
            and ran > max(STUCK_FACTOR * median, 60.0)
        ):
            reason = (
                f"running for {fmt_duration(ran)}, {ran / median:.0f}x the median trial "
                f"({fmt_duration(median)})"
            )
            stuck.append(Stuck(trial.number, worker, reason, None, ran))
        if worker is not None:
            workers[worker].live = True
    return stuck


def _budget(view: StudyView, p: Summary) -> tuple[dict[str, Any], float | None, int | None]:
    """(the budget numbers, when the budget clock started, trials not yet started or None).

    The ledger is the truth (a `run --n-trials` may override the file); without one (gRPC
    proxy, a study made by Optuna alone) the file's budget and the trials stand in.
    """
    ledger = view.ledger()
    spec = view.loaded.spec.budget
    if ledger is not None:
        limit, timeout = ledger.trial_limit, ledger.timeout_s
        claimed, retry_slots = ledger.claimed - ledger.retry_slots, ledger.retry_slots
        started = ledger.started_at
        gpu_limit = ledger.gpu_seconds_limit
        # Workers add device time to the ledger only when `gpu_hours` limits it.
        gpu_s = ledger.gpu_seconds if gpu_limit is not None else p.finished_s
        epochs = {"epochs_used": ledger.epochs_used, "epoch_limit": ledger.epoch_limit}
        to_start = None if limit is None else max(0, limit + retry_slots - ledger.claimed)
        spent = ledger.spent_reason(time.time())
    else:
        limit, timeout = spec.n_trials, spec.timeout
        claimed, retry_slots = sum(p.counts.values()) - p.retries, p.retries
        started = p.first_start.timestamp() if p.first_start else None
        gpu_s = p.finished_s
        gpu_limit = None if spec.gpu_hours is None else spec.gpu_hours * 3600
        to_start = None if limit is None else max(0, limit - claimed)
        epochs = {"epochs_used": None, "epoch_limit": spec.epochs}
        spent = None
    budget = {
        "source": "ledger" if ledger is not None else "study file",
        "trials_claimed": claimed,
        "trial_limit": limit,
        "retry_slots": retry_slots,
        "elapsed_s": None,
        "timeout_s": timeout,
        "gpu_hours": gpu_s / 3600,
        "gpu_hours_limit": None if gpu_limit is None else gpu_limit / 3600,
        "spent": spent,
        **epochs,
    }
    return budget, started, 0 if spent is not None else to_start


def _eta(
    remaining: int | None, per_hour: float | None, budget: dict[str, Any]
) -> tuple[float | None, str | None]:
    """Seconds until the budget ends, and which limit ends it."""
    eta, by = None, None
    if remaining == 0:
        eta, by = 0.0, "n_trials"
    elif remaining is not None and per_hour:
        eta, by = remaining / per_hour * 3600, "n_trials"
    timeout, elapsed = budget["timeout_s"], budget["elapsed_s"]
    if timeout is not None and elapsed is not None and budget["spent"] is None:
        left = max(0.0, timeout - elapsed)
        if eta is None or left < eta:
            eta, by = left, "timeout"
    return eta, by


def dead_here(worker: object) -> int | None:
    """The pid of a worker (`host:pid#id`) on this machine whose process no longer exists.

    A SIGKILLed worker's heartbeat stays fresh for the grace period; on its own machine the
    process table says at once that it is gone. A live process, a pid taken by another process
    since, another machine or a process this user may not signal: None (not known to be gone).
    """
    if not isinstance(worker, str):
        return None
    host, _, rest = worker.rpartition(":")
    pid = rest.split("#", 1)[0]
    if host != socket.gethostname() or not pid.isdigit():
        return None
    try:
        os.kill(int(pid), 0)  # signal 0: is there such a process (nothing is sent)
    except ProcessLookupError:
        return int(pid)
    except OSError:
        return None
    return None
