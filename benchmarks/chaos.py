"""Chaos run: workers and the database are killed and restarted at random during one study.

A private database server (PostgreSQL, or MariaDB with `--db mysql`; never the machine's shared
ones) holds one study; `--workers N` `hpsearch run` processes work on it while a seeded schedule
SIGKILLs and SIGTERMs workers (preferring ones inside a trial), restarts them, and kills the
database with `kill -9` and restarts it. Then the schedule stops, every worker slot is filled
once more, the study runs to its end, and these invariants are checked:

- lost: every trial seen finished during the run is still there, with the same state and value;
- unrecorded: every value an objective returned is in the study as a COMPLETE trial, unless its
  worker was killed before it could tell the database (`lost@kill`: the retry recomputes it);
- running / waiting: no trial is left RUNNING or WAITING once the workers have exited;
- budget: exactly n_trials trials finished as COMPLETE, PRUNED or FAIL-not-retried (a retry of a
  crashed trial takes the crashed trial's place), as many distinct trials, and the ledger agrees;
- duplicate: no parameters completed twice (a retry of a trial that had in fact finished);
- false_stale: no trial failed for missed heartbeats while its worker was alive (a database
  outage mistaken for a crash);
- crash / sigterm / hung: no worker exited non-zero on its own (database faults must not kill
  workers), every SIGTERMed worker exited 0 within 15 s, and every worker exited by the end.

A worker started while the database is down exits at once with "cannot reach storage" (the
`refused` column): that is not counted as a crash; its slot is started again later.

    .venv/bin/python benchmarks/chaos.py [--runs 3] [--seed 1] [--workers 6] [--trials 120]
        [--chaos 60] [--db-kills 4] [--db postgresql|mysql] [--keep DIR] [--code DIR]

Each run copies the `hpsearch` package first (the workers run that copy), is bounded (the chaos
window, then at most `--drain` seconds to finish) and cleans up after itself; `--keep` copies
its logs and a `trials.txt` dump. Exit code 1 when any invariant was violated. PostgreSQL
refuses to run as root, so as root its server runs as the `postgres` user (`runuser`).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PG_BIN = Path(os.environ.get("HPSEARCH_PG_BIN", "/usr/lib/postgresql/15/bin"))

OBJECTIVE = '''
import json, os, time

def work(params, report):
    """A few report() steps with a short sleep each; some prune, some fail on their own."""
    x = params["x"]
    for step in range(params["steps"]):
        time.sleep(params["step_s"])
        report({"loss": (x - 2) ** 2 + 1 / (step + 1)}, step)
    if 4.6 < x < 5.0:
        raise ValueError("a deterministic failure of the objective itself")
    value = (x - 2) ** 2
    line = json.dumps({"pid": os.getpid(), "x": x, "value": value, "t": time.time()})
    with open(params["log"], "a") as f:  # one small O_APPEND write: atomic across processes
        f.write(line + "\\n")
    return {"loss": value}
'''

STUDY = """
name: chaos
metric: loss
direction: minimize
sampler: {{type: random, seed: {seed}}}
pruner: {{type: threshold, upper: 36}}
budget: {{n_trials: {n_trials}}}
objective: {{function: objective.py:work, steps: {steps}, step_s: {step_s}, log: {log}}}
search_space:
  x: {{type: float, low: -5, high: 5}}
workers: {{heartbeat_interval: 1, grace_period: 3, max_retries: 2}}
enqueue: {enqueue}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivatePostgres:
    """A throwaway PostgreSQL cluster on a free port, that can be killed with -9 and restarted."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.data = folder / "pgdata"
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.as_postgres = os.geteuid() == 0  # postgres refuses to run as root
        folder.mkdir(parents=True, exist_ok=True)
        if self.as_postgres:
            shutil.chown(folder, "postgres")
        self._run(
            [str(PG_BIN / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres",
             "--no-sync", "-E", "UTF8"],
        )  # fmt: skip

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _argv(self, argv: list[str]) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *argv] if self.as_postgres else argv

    def _run(self, argv: list[str]) -> None:
        subprocess.run(self._argv(argv), check=True, capture_output=True)

    def start(self, timeout: float = 30) -> None:
        # fsync=off: only the server process is killed, never the machine, so the page cache
        # keeps every commit; it makes restarts and commits fast.
        argv = [str(PG_BIN / "postgres"), "-D", str(self.data), "-p", str(self.port),
                "-k", str(self.folder), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off",
                "-c", "max_connections=200"]  # fmt: skip
        log = open(self.folder / "postgres.log", "ab")  # noqa: SIM115 - the server keeps it
        self.process = subprocess.Popen(
            self._argv(argv), stdout=log, stderr=log, start_new_session=True
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.accepts():
                return
            if self.process.poll() is not None:
                time.sleep(0.5)  # the old postmaster's shared memory may linger a moment
                self.process = subprocess.Popen(
                    self._argv(argv),
                    stdout=open(self.folder / "postgres.log", "ab"),  # noqa: SIM115
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            time.sleep(0.1)
        raise RuntimeError(f"private postgres did not start; see {self.folder / 'postgres.log'}")

    def accepts(self) -> bool:
        import psycopg

        try:
            with psycopg.connect(
                host="127.0.0.1", port=self.port, user="postgres", dbname="postgres",
                connect_timeout=2,
            ) as c:  # fmt: skip
                c.execute("SELECT 1")
            return True
        except psycopg.Error:
            return False

    def kill(self) -> None:
        """kill -9 the server and all its backends (its own process group), like a crash."""
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait()
        self.process = None
        # Backends notice the postmaster's death and exit; wait until none holds the port.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and self._port_busy():
            time.sleep(0.05)

    def _port_busy(self) -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    @property
    def up(self) -> bool:
        return self.process is not None

    def close(self) -> None:
        self.kill()

    def query(self, sql: str) -> list[tuple[Any, ...]] | None:
        """Run a query on the private server; None while it is down (or the table missing)."""
        import psycopg

        try:
            with psycopg.connect(
                host="127.0.0.1", port=self.port, user="postgres", dbname="postgres",
                connect_timeout=2,
            ) as c:  # fmt: skip
                return list(c.execute(sql).fetchall())
        except psycopg.Error:
            return None


class PrivateMariaDB:
    """A throwaway MariaDB server on a free port, that can be killed with -9 and restarted."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.data = folder / "data"
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        folder.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["mariadb-install-db", "--no-defaults", f"--datadir={self.data}", "--user=root",
             "--auth-root-authentication-method=normal", "--skip-test-db"],
            check=True, capture_output=True,
        )  # fmt: skip

    @property
    def url(self) -> str:
        return f"mysql+pymysql://root@127.0.0.1:{self.port}/chaos"

    def start(self, timeout: float = 60) -> None:
        # Commits flushed to the OS only: the server process is killed, never the machine.
        argv = ["mariadbd", "--no-defaults", f"--datadir={self.data}", f"--port={self.port}",
                "--bind-address=127.0.0.1", f"--socket={self.folder / 'sock'}", "--user=root",
                "--skip-grant-tables", "--innodb-flush-log-at-trx-commit=2",
                "--max-connections=300", f"--log-error={self.folder / 'mariadb.log'}"]  # fmt: skip
        self.process = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._execute("CREATE DATABASE IF NOT EXISTS chaos", database=None) is not None:
                return
            time.sleep(0.2)
        raise RuntimeError(f"private mariadb did not start; see {self.folder / 'mariadb.log'}")

    def kill(self) -> None:
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait()
        self.process = None

    @property
    def up(self) -> bool:
        return self.process is not None

    def close(self) -> None:
        self.kill()

    def query(self, sql: str) -> list[tuple[Any, ...]] | None:
        return self._execute(sql, database="chaos")

    def _execute(self, sql: str, database: str | None) -> list[tuple[Any, ...]] | None:
        import pymysql

        try:
            c = pymysql.connect(
                host="127.0.0.1", port=self.port, user="root", database=database,
                connect_timeout=2, autocommit=True,
            )  # fmt: skip
        except pymysql.Error:
            return None
        try:
            with c.cursor() as cursor:
                cursor.execute(sql)
                return list(cursor.fetchall())
        except pymysql.Error:
            return None
        finally:
            c.close()


FINISHED_SQL = """
SELECT t.number, t.state, v.value FROM trials t
JOIN studies s ON s.study_id = t.study_id AND s.study_name = 'chaos'
LEFT JOIN trial_values v ON v.trial_id = t.trial_id AND v.objective = 0
WHERE t.state IN ('COMPLETE', 'PRUNED', 'FAIL')
"""


BUSY_SQL = """
SELECT a.value_json FROM trials t JOIN trial_user_attributes a ON a.trial_id = t.trial_id
WHERE t.state = 'RUNNING' AND a.key = 'worker'
"""


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


class Chaos:
    def __init__(self, config: ChaosConfig, folder: Path, code: Path = ROOT) -> None:
        self.config = config
        self.folder = folder
        self.rng = random.Random(config.seed)
        self.db: PrivatePostgres | PrivateMariaDB = (
            PrivateMariaDB(folder / "db")
            if config.db == "mysql"
            else PrivatePostgres(folder / "pg")
        )
        self.returns = folder / "returns.jsonl"
        self.study = folder / "study.yaml"
        (folder / "objective.py").write_text(textwrap.dedent(OBJECTIVE))
        self.study.write_text(
            STUDY.format(
                seed=config.seed, n_trials=config.n_trials, steps=config.steps,
                step_s=config.step_s, log=self.returns,
                enqueue=json.dumps([{"x": x} for x in (0.5, -0.5, 1.5)[: config.enqueue]]),
            )
        )  # fmt: skip
        # The code under test, copied once: every worker of the run runs the same version, even
        # while the working tree is being edited.
        self.code = folder / "code"
        shutil.copytree(code / "hpsearch", self.code / "hpsearch",
                        ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
        self.procs: list[Proc] = []
        self.slots: dict[int, Proc] = {}
        self.result = ChaosResult(config)
        self.seen: dict[int, tuple[str, float | None]] = {}
        self.db_down_until: float | None = None

    # --- workers --------------------------------------------------------------------------

    def start_worker(self, slot: int) -> None:
        log = self.folder / f"worker-{len(self.procs):03d}-slot{slot}.log"
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(self.code)}
        argv = [sys.executable, "-m", "hpsearch", "run", str(self.study), "--storage",
                self.db.url, "--worker-id", str(slot)]  # fmt: skip
        with open(log, "wb") as out:
            # `python -m` puts its working folder first on sys.path: the copy, not the checkout.
            popen = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=self.code
            )
        proc = Proc(slot, popen, log, time.monotonic())
        log.rename(log.with_name(f"{log.stem}-pid{popen.pid}.log"))
        proc.log = log.with_name(f"{log.stem}-pid{popen.pid}.log")
        self.procs.append(proc)
        self.slots[slot] = proc
        self.result.worker_starts += 1

    def reap(self) -> None:
        for proc in self.procs:
            if proc.code is None and proc.popen.poll() is not None:
                proc.code, proc.ended = proc.popen.returncode, time.monotonic()

    def alive(self) -> list[Proc]:
        self.reap()
        return [p for p in self.slots.values() if p.code is None and p.termed_at is None]

    def kill_worker(self, sig: signal.Signals) -> None:
        """Signal a random worker, one inside a trial when there is one."""
        alive = self.alive()
        busy = self.busy_pids()
        alive = [p for p in alive if p.pid in busy] or alive
        if not alive:
            return
        proc = self.rng.choice(alive)
        now = time.monotonic()
        if sig == signal.SIGKILL:
            proc.killed_at = now
            self.result.sigkills += 1
        else:
            proc.termed_at = now
            self.result.sigterms += 1
        proc.popen.send_signal(sig)

    def busy_pids(self) -> set[int]:
        rows = self.db.query(BUSY_SQL) if self.db.up else None
        return {int(json.loads(w).split(":")[-1].split("#")[0]) for (w,) in rows or []}

    def refill(self, probability: float = 1.0) -> None:
        self.reap()
        for slot in range(self.config.workers):
            proc = self.slots.get(slot)
            if (proc is None or proc.code is not None) and self.rng.random() < probability:
                self.start_worker(slot)

    # --- the database ---------------------------------------------------------------------

    def kill_db(self) -> None:
        self.db.kill()
        self.result.db_restarts += 1
        self.db_down_until = time.monotonic() + self.rng.uniform(*self.config.db_down)

    def maybe_restart_db(self, force: bool = False) -> None:
        if self.db_down_until is not None and (force or time.monotonic() >= self.db_down_until):
            self.db.start()
            self.db_down_until = None

    def snapshot(self) -> None:
        rows = self.db.query(FINISHED_SQL) if self.db.up else None
        for number, state, value in rows or []:
            self.seen.setdefault(number, (state, value))

    # --- the run --------------------------------------------------------------------------

    def run(self) -> ChaosResult:
        c = self.config
        started = time.monotonic()
        self.db.start()
        for slot in range(c.workers):
            self.start_worker(slot)
        # The chaos starts with the first trial (the study exists and workers are in trials).
        while time.monotonic() < started + 60 and not self.db.query("SELECT 1 FROM trials"):
            time.sleep(0.1)
        begin = time.monotonic()
        chaos_end = begin + c.chaos_s
        script = sorted((begin + t, action) for t, action in c.script)
        # Database kills spread over the chaos window, workers' events in between.
        db_times = sorted(begin + self.rng.uniform(1, c.chaos_s - 4) for _ in range(c.db_kills))
        next_event = begin + self.rng.uniform(*c.event_gap)
        next_snapshot = begin
        next_done_check = begin
        while time.monotonic() < chaos_end:
            now = time.monotonic()
            if now >= next_done_check:
                if self._study_done():
                    break
                next_done_check = now + 1.0
            self.maybe_restart_db()
            if c.script:
                while script and now >= script[0][0]:
                    self.act(script.pop(0)[1])
            elif db_times and now >= db_times[0]:
                db_times.pop(0)
                self.act("db")
            elif now >= next_event:
                roll = self.rng.random()
                self.act("sigkill" if roll < 0.45 else "sigterm" if roll < 0.7 else "refill")
                next_event = now + self.rng.uniform(*c.event_gap)
            if now >= next_snapshot:
                self.snapshot()
                next_snapshot = now + 1.0
            self._check_terms()
            time.sleep(0.05)
        # Calm: the database back, every slot filled, the study runs to its end.
        self.maybe_restart_db(force=True)
        drain_end = time.monotonic() + c.drain_s
        while time.monotonic() < drain_end:
            self._check_terms()
            self.reap()
            if not self._study_done():
                self.refill()
            elif not [p for p in self.procs if p.code is None]:
                break
            self.snapshot()
            time.sleep(0.5)
        for p in self.procs:  # bounded: whatever still runs is a violation, then killed
            if p.popen.poll() is None:
                self.result.violate("hung", f"worker {p.pid} still running after the drain")
                p.killed_at = time.monotonic()
                p.popen.kill()
                p.popen.wait()
        self.reap()
        self.result.seconds = time.monotonic() - started
        time.sleep(0.1)
        self.check()
        return self.result

    def act(self, action: str) -> None:
        if action == "sigkill":
            self.kill_worker(signal.SIGKILL)
        elif action == "sigterm":
            self.kill_worker(signal.SIGTERM)
        elif action == "db":
            if self.db.up:
                self.kill_db()
        elif action == "refill":
            self.refill(probability=1.0 if self.config.script else 0.7)
        else:
            raise ValueError(f"unknown chaos action {action!r}")

    def _study_done(self) -> bool:
        """The ledger is spent and nothing runs or waits: workers are about to exit."""
        rows = self.db.query("SELECT state, count(*) FROM trials GROUP BY state")
        ledger = self.db.query("SELECT claimed - retry_slots, trial_limit FROM hpsearch_ledger")
        if not rows or not ledger:
            return False
        states = dict(rows)
        return (
            ledger[0][0] >= ledger[0][1]
            and not states.get("RUNNING")
            and not states.get("WAITING")
        )

    def _check_terms(self) -> None:
        self.reap()
        for p in self.procs:
            if p.termed_at is not None and p.code is None:
                if time.monotonic() - p.termed_at > 15:
                    self.result.violate("sigterm", f"worker {p.pid} ignored SIGTERM for 15 s")
                    p.popen.kill()
                    p.popen.wait()
                    p.code = -9
                    p.killed_at = time.monotonic()

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

    def close(self) -> None:
        for p in self.procs:
            if p.popen.poll() is None:
                p.popen.kill()
                p.popen.wait()
        self.db.close()


def run_once(config: ChaosConfig, keep: Path | None = None, code: Path = ROOT) -> ChaosResult:
    folder = Path(tempfile.mkdtemp(prefix="hpsearch-chaos-"))
    os.chmod(folder, 0o755)
    chaos = Chaos(config, folder, code)
    try:
        return chaos.run()
    finally:
        chaos.close()
        if keep is not None:
            skip = shutil.ignore_patterns("pgdata", "data", "sock", ".s.PGSQL*", "code")
            shutil.copytree(folder, keep / f"seed{config.seed}", dirs_exist_ok=True, ignore=skip)
        shutil.rmtree(folder, ignore_errors=True)


COLUMNS = (
    "seed", "secs", "SIGKILL", "SIGTERM", "db kill", "starts", "refused", "COMPLETE", "PRUNED",
    "FAIL", "retries", "counted", "ledger", "lost@kill", "violations",
)  # fmt: skip


def row(r: ChaosResult) -> list[str]:
    s = r.states
    violations = ", ".join(f"{k} {len(v)}" for k, v in sorted(r.violations.items())) or "none"
    return [str(r.config.seed), f"{r.seconds:.0f}", str(r.sigkills), str(r.sigterms),
            str(r.db_restarts), str(r.worker_starts), str(r.start_refused), str(s["COMPLETE"]),
            str(s["PRUNED"]), str(s["FAIL"]), str(r.retries), f"{r.counted}/{r.config.n_trials}",
            r.ledger, str(r.lost_to_kills), violations]  # fmt: skip


def table(results: list[ChaosResult]) -> str:
    rows = [list(COLUMNS), *(row(r) for r in results)]
    widths = [max(len(x[i]) for x in rows) for i in range(len(COLUMNS))]
    lines = [" | ".join(v.ljust(w) for v, w in zip(x, widths, strict=True)) for x in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--seed", type=int, default=1, help="first seed; run i uses seed+i")
    parser.add_argument("--workers", type=int, default=6)
    parser.add_argument("--trials", type=int, default=120)
    parser.add_argument("--chaos", type=float, default=60.0, help="seconds of chaos per run")
    parser.add_argument("--drain", type=float, default=100.0, help="seconds to finish after")
    parser.add_argument("--db-kills", type=int, default=4)
    parser.add_argument(
        "--db-down", default="0.5,6", metavar="LO,HI", help="seconds the database stays down"
    )
    parser.add_argument("--db", choices=("postgresql", "mysql"), default="postgresql")
    parser.add_argument("--keep", type=Path, help="copy each run's logs into this folder")
    parser.add_argument(
        "--code", type=Path, default=ROOT, help="test the `hpsearch` package in this folder "
        "(e.g. an older version: git archive HEAD hpsearch | tar -x -C DIR)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    # SIGTERM (a CI timeout) unwinds like Ctrl-C, so each run's `finally` kills what it started.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    results = []
    low, _, high = args.db_down.partition(",")
    down = (float(low), float(high or low))
    for i in range(args.runs):
        config = ChaosConfig(
            seed=args.seed + i, db=args.db, workers=args.workers,
            db_down=down, n_trials=args.trials,
            chaos_s=args.chaos, drain_s=args.drain, db_kills=args.db_kills,
        )  # fmt: skip
        result = run_once(config, keep=args.keep, code=args.code)
        results.append(result)
        print(table([result]).splitlines()[-1] if i else table([result]), flush=True)
        for kind, details in sorted(result.violations.items()):
            for detail in details[:5]:
                print(f"    {kind}: {detail}", flush=True)
            if len(details) > 5:
                print(f"    {kind}: ... {len(details) - 5} more", flush=True)
    print()
    print(table(results))
    return 1 if any(r.violations for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
