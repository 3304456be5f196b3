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
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))  # its helpers, also when loaded from a file path (tests)

from chaos_checks import ChaosConfig, ChaosResult, Invariants, Proc  # noqa: E402

# PG_BIN is re-exported: tests/test_chaos.py skips without the server binaries it names.
from chaos_databases import PG_BIN, PrivateMariaDB, PrivatePostgres  # noqa: E402, F401

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


class Chaos(Invariants):
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
        started = time.monotonic()
        self.db.start()
        for slot in range(self.config.workers):
            self.start_worker(slot)
        # The chaos starts with the first trial (the study exists and workers are in trials).
        while time.monotonic() < started + 60 and not self.db.query("SELECT 1 FROM trials"):
            time.sleep(0.1)
        self._chaos(time.monotonic())
        # Calm: the database back, every slot filled, the study runs to its end.
        self.maybe_restart_db(force=True)
        self._drain()
        self._kill_hung()
        self.reap()
        self.result.seconds = time.monotonic() - started
        time.sleep(0.1)
        self.check()
        return self.result

    def _chaos(self, begin: float) -> None:
        """Strike until the chaos window ends, or the study does."""
        c = self.config
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
            next_event = self._strike(now, script, db_times, next_event)
            if now >= next_snapshot:
                self.snapshot()
                next_snapshot = now + 1.0
            self._check_terms()
            time.sleep(0.05)

    def _strike(
        self,
        now: float,
        script: list[tuple[float, str]],
        db_times: list[float],
        next_event: float,
    ) -> float:
        """Do what is due at `now`; returns when the next worker event is due.

        With a script, only the script's actions; else a database kill, else a worker's event
        (one per call). What was done is popped from `script` / `db_times`.
        """
        if self.config.script:
            while script and now >= script[0][0]:
                self.act(script.pop(0)[1])
        elif db_times and now >= db_times[0]:
            db_times.pop(0)
            self.act("db")
        elif now >= next_event:
            roll = self.rng.random()
            self.act("sigkill" if roll < 0.45 else "sigterm" if roll < 0.7 else "refill")
            return now + self.rng.uniform(*self.config.event_gap)
        return next_event

    def _drain(self) -> None:
        """Refill the slots until the study is done and every worker has exited."""
        drain_end = time.monotonic() + self.config.drain_s
        while time.monotonic() < drain_end:
            self._check_terms()
            self.reap()
            if not self._study_done():
                self.refill()
            elif not [p for p in self.procs if p.code is None]:
                break
            self.snapshot()
            time.sleep(0.5)

    def _kill_hung(self) -> None:
        """Bounded: whatever still runs after the drain is a violation, then killed."""
        for p in self.procs:
            if p.popen.poll() is None:
                self.result.violate("hung", f"worker {p.pid} still running after the drain")
                p.killed_at = time.monotonic()
                p.popen.kill()
                p.popen.wait()

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
