"""The chaos run's records and its invariants, checked once the workers have exited.

What each invariant means is in `benchmarks/chaos.py`'s docstring; `Invariants` is the part of
`Chaos` that reads the study, the objective's own log and the workers' exits afterwards.
"""

from __future__ import annotations

import json
import signal
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chaos_databases import PrivateMariaDB, PrivatePostgres


@dataclass
class Proc:
    """One `hpsearch run` process of a worker slot, and what the chaos did to it."""

    slot: int
    popen: subprocess.Popen[bytes]
    log: Path
    started: float
    killed_at: float | None = None  # SIGKILL sent
    termed_at: float | None = None  # SIGTERM sent
    code: int | None = None
    ended: float | None = None

    @property
    def pid(self) -> int:
        return self.popen.pid


@dataclass
class ChaosConfig:
    seed: int = 1
    db: str = "postgresql"  # or mysql (a private MariaDB server)
    workers: int = 6
    n_trials: int = 120
    chaos_s: float = 60.0
    drain_s: float = 100.0
    db_kills: int = 4
    steps: int = 4
    step_s: float = 0.2
    event_gap: tuple[float, float] = (0.4, 1.6)
    db_down: tuple[float, float] = (0.5, 6.0)
    # A fixed schedule instead of the random one: (seconds after the first trial, action), the
    # action one of sigkill, sigterm, db (kill -9 and restart), refill (restart dead workers).
    script: tuple[tuple[float, str], ...] = ()
    enqueue: int = 3  # trials queued by the study file (run first, exactly once)


@dataclass
class ChaosResult:
    config: ChaosConfig
    seconds: float = 0.0
    sigkills: int = 0
    sigterms: int = 0
    db_restarts: int = 0
    worker_starts: int = 0
    start_refused: int = 0  # a worker started while the database was down exits at once
    states: Counter[str] = field(default_factory=Counter)
    retries: int = 0
    counted: int = 0
    ledger: str = ""
    violations: dict[str, list[str]] = field(default_factory=dict)
    term_outside: int = 0  # SIGTERMed before its handler existed, or after it had finished
    lost_to_kills: int = 0  # objective returned, worker killed before it could tell: recomputed

    def violate(self, kind: str, detail: str) -> None:
        self.violations.setdefault(kind, []).append(detail)


class Invariants:
    """The checks after a run: `Chaos` holds these attributes and inherits the methods."""

    config: ChaosConfig
    folder: Path
    db: PrivatePostgres | PrivateMariaDB
    returns: Path
    procs: list[Proc]
    result: ChaosResult
    seen: dict[int, tuple[str, float | None]]

    # --- the invariants -------------------------------------------------------------------

    def check(self) -> None:
        import optuna

        r = self.result
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.load_study(study_name="chaos", storage=self.db.url)
        trials = study.get_trials(deepcopy=False)
        by_number = {t.number: t for t in trials}
        r.states = Counter(t.state.name for t in trials)
        with open(self.folder / "trials.txt", "w") as f:  # for reading a violation afterwards
            for t in trials:
                f.write(
                    f"{t.number} {t.state.name} value={t.value} x={t.params.get('x')} "
                    f"worker={t.user_attrs.get('worker')} start={t.datetime_start} "
                    f"end={t.datetime_complete} retry_of={t.system_attrs.get('retry_history')} "
                    f"reason={t.user_attrs.get('fail_reason')}\n"
                )
        retried = {t.system_attrs["retry_history"][-1] for t in trials
                   if t.system_attrs.get("retry_history")}  # fmt: skip
        r.retries = sum(1 for t in trials if t.system_attrs.get("retry_history"))
        finished = ("COMPLETE", "PRUNED")
        r.counted = sum(
            1 for t in trials
            if t.state.name in finished or t.state.name == "FAIL" and t.number not in retried
        )  # fmt: skip
        n = self.config.n_trials
        if r.counted != n:
            r.violate("budget", f"{r.counted} trials counted as finished, budget {n}")
        roots = [t for t in trials if not t.system_attrs.get("retry_history")]
        if len(roots) != n:
            r.violate("budget", f"{len(roots)} distinct trials (retries excluded), budget {n}")
        ledger = self.db.query(
            "SELECT claimed, retry_slots, trial_limit FROM hpsearch_ledger"
        ) or [(None, None, None)]
        claimed, retry_slots, limit = ledger[0]
        r.ledger = f"{claimed}-{retry_slots}/{limit}"
        if claimed is None or claimed - retry_slots != n:
            r.violate("ledger", f"ledger says {r.ledger} (claimed-retry_slots/limit)")
        for t in trials:
            if t.state.name in ("RUNNING", "WAITING"):
                r.violate(t.state.name.lower(), f"trial {t.number} {t.state.name}")
        for number, (state, value) in self.seen.items():
            final = by_number.get(number)
            now = None if final is None else (final.state.name, final.value)
            if now is None or now[0] != state or (value is not None and now[1] != value):
                r.violate("lost", f"trial {number} was {state} {value}, now {now}")
        # Parameters completed twice: a retry of a trial that had in fact finished.
        completed = Counter(t.params.get("x") for t in trials if t.state.name == "COMPLETE")
        for x, count in completed.items():
            if count > 1:
                r.violate("duplicate", f"x={x} COMPLETE {count} times")
        self._check_returns(trials)
        self._check_stale(trials)
        self._check_exits()

    def _check_returns(self, trials: list[Any]) -> None:
        r = self.result
        recorded = {
            (t.params.get("x"), t.user_attrs.get("worker", "").split(":")[-1].split("#")[0])
            for t in trials
            if t.state.name == "COMPLETE"
        }
        by_pid = {p.pid: p for p in self.procs}
        lines = self.returns.read_text().splitlines() if self.returns.exists() else []
        entries = [json.loads(line) for line in lines]
        last_by_pid: dict[int, float] = {}
        for e in entries:
            last_by_pid[e["pid"]] = max(last_by_pid.get(e["pid"], 0), e["t"])
        for e in entries:
            if (e["x"], str(e["pid"])) in recorded:
                continue
            proc = by_pid.get(e["pid"])
            # Killed (or stopped) after its objective returned, before its next trial: the value
            # never reached the database and the trial's retry computes it again. Expected.
            stopped = proc is not None and (proc.killed_at or proc.termed_at) is not None
            if stopped and last_by_pid[e["pid"]] == e["t"]:
                r.lost_to_kills += 1
                continue
            r.violate(
                "unrecorded",
                f"pid {e['pid']} returned {e['value']:.4g} for x={e['x']:.6g}, not COMPLETE in "
                "the study",
            )

    def _check_stale(self, trials: list[Any]) -> None:
        """A trial failed for missed heartbeats while its worker lived: a database outage
        mistaken for a crash (the worker's result would be thrown away)."""
        by_pid = {str(p.pid): p for p in self.procs}
        for t in trials:
            reason = t.user_attrs.get("fail_reason") or ""
            if "stopped sending heartbeats" not in reason:
                continue
            pid = (t.user_attrs.get("worker") or "").split(":")[-1].split("#")[0]
            proc = by_pid.get(pid)
            if proc is None or proc.killed_at is not None or proc.termed_at is not None:
                continue  # it did die (or was stopped, maybe while the database was away)
            if proc.code not in (0, None):
                continue  # it crashed: reported by _check_exits
            self.result.violate("false_stale", f"trial {t.number} failed, worker {pid} alive")

    def _check_exits(self) -> None:
        r = self.result
        for p in self.procs:
            if p.killed_at is not None:
                continue
            text = p.log.read_text(errors="replace")
            if "cannot reach storage" in text or "cannot open storage" in text:
                r.start_refused += 1  # started while the database was down: exits at once
                continue
            if p.termed_at is not None:
                if p.code == -signal.SIGTERM and "study 'chaos' on" not in text:
                    r.term_outside += 1  # still importing: no handler yet, no trial to fail
                elif p.code == -signal.SIGTERM and " done: " in text:
                    r.term_outside += 1  # it had finished and was exiting: nothing left to stop
                elif p.code != 0:
                    r.violate("sigterm", f"worker {p.pid} exited {p.code} after SIGTERM")
                continue
            if p.code == 0:
                continue
            tail = " | ".join(text.strip().splitlines()[-3:])[-400:]
            r.violate("crash", f"worker {p.pid} exited {p.code} on its own: {tail}")
