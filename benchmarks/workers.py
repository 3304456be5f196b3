"""Throughput of 1, 2, 4 and 8 worker processes on PostgreSQL, MariaDB and SQLite, next to plain
Optuna doing the same, plus the database cost of one trial (SQL statements and commits).

    .venv/bin/python benchmarks/workers.py [--trials 400] [--workers 1,4,8]
        [--storages postgresql,mysql,sqlite] [--repeats 3]

Both sides run a trivial objective with the random sampler (so the sampler's cost does not hide
the storage's): plain Optuna as N processes each calling `study.optimize(n_trials=total/N)`
(its usual budget, per process), hpsearch as `hpsearch run --workers N` with a study-wide
`n_trials`. Trials/second counts from the start of the processes to the last one's exit, so
process start-up (imports) is included on both sides alike. Each pair is run `--repeats` times,
alternating which side goes first (a shared machine's load drifts), and the medians compared.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import optuna
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
SERVERS = {
    "postgresql": "postgresql+psycopg://root@127.0.0.1:5432/test",
    "mysql": "mysql+pymysql://root@127.0.0.1:3306/test",
}
STUDY = """
name: {name}
direction: minimize
sampler: {{type: random}}
pruner: {{type: none}}
budget: {{n_trials: {trials}}}
objective: {{function: objective.py:square}}
search_space: {{x: {{type: float, low: -10, high: 10}}}}
"""
PLAIN = """
import sys, optuna
optuna.logging.set_verbosity(optuna.logging.WARNING)
url, name, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
study = optuna.load_study(study_name=name, storage=url, sampler=optuna.samplers.RandomSampler())
study.optimize(lambda t: t.suggest_float("x", -10, 10) ** 2, n_trials=n)
"""


def run_plain(url: str, trials: int, workers: int, folder: Path) -> tuple[float, int]:
    name = f"plain-{uuid.uuid4().hex[:8]}"
    optuna.create_study(study_name=name, storage=url)
    script = folder / "plain.py"
    script.write_text(PLAIN)
    started = time.perf_counter()
    procs = [
        subprocess.Popen([sys.executable, str(script), url, name, str(trials // workers)])
        for _ in range(workers)
    ]
    assert all(p.wait() == 0 for p in procs)
    seconds = time.perf_counter() - started
    return seconds, len(optuna.load_study(study_name=name, storage=url).trials)


def run_hpsearch(url: str, trials: int, workers: int, folder: Path) -> tuple[float, int]:
    name = f"hp-{uuid.uuid4().hex[:8]}"
    path = folder / f"{name}.yaml"
    path.write_text(STUDY.format(name=name, trials=trials))
    started = time.perf_counter()
    argv = [sys.executable, "-m", "hpsearch", "run", str(path), "--storage", url, "-q"]
    if workers > 1:
        argv += ["--workers", str(workers)]
    assert subprocess.run(argv, cwd=ROOT).returncode == 0
    seconds = time.perf_counter() - started
    return seconds, len(optuna.load_study(study_name=name, storage=url).trials)


def statements_per_trial(url: str, folder: Path) -> tuple[float, float, float, float]:
    """SQL statements and commits per trial, one in-process worker, plain then hpsearch."""
    sys.path.insert(0, str(ROOT))
    from hpsearch.cli import main

    counts = {"statements": 0, "commits": 0}

    def count(*args: object, **kwargs: object) -> None:
        counts["statements"] += 1

    def commit(*args: object, **kwargs: object) -> None:
        counts["commits"] += 1

    sa.event.listen(sa.engine.Engine, "before_cursor_execute", count)
    sa.event.listen(sa.engine.Engine, "commit", commit)
    n = 50
    try:
        study = optuna.create_study(study_name=f"count-{uuid.uuid4().hex[:8]}", storage=url,
                                    sampler=optuna.samplers.RandomSampler())  # fmt: skip
        counts.update(statements=0, commits=0)
        study.optimize(lambda t: t.suggest_float("x", -10, 10) ** 2, n_trials=n)
        plain = (counts["statements"] / n, counts["commits"] / n)
        path = folder / "count.yaml"
        path.write_text(STUDY.format(name=f"count-hp-{uuid.uuid4().hex[:8]}", trials=n))
        assert main(["run", str(path), "--storage", url, "-q"]) == 0  # includes opening the study
        counts.update(statements=0, commits=0)
        path.write_text(path.read_text().replace(f"n_trials: {n}", f"n_trials: {2 * n}"))
        assert main(["run", str(path), "--storage", url, "-q", "--change-budget"]) == 0  # next n
        hp = (counts["statements"] / n, counts["commits"] / n)
    finally:
        sa.event.remove(sa.engine.Engine, "before_cursor_execute", count)
        sa.event.remove(sa.engine.Engine, "commit", commit)
    return (*plain, *hp)


def _pair(
    url: str, trials: int, workers: int, folder: Path, repeats: int
) -> tuple[float, int, float, int]:
    """Median trials/second of plain Optuna and of hpsearch, run alternately."""
    plain: list[float] = []
    hp: list[float] = []
    p_n = h_n = 0
    for i in range(repeats):
        for side in ("plain", "hp") if i % 2 == 0 else ("hp", "plain"):
            if side == "plain":
                seconds, p_n = run_plain(url, trials, workers, folder)
                plain.append(p_n / seconds)
            else:
                seconds, h_n = run_hpsearch(url, trials, workers, folder)
                hp.append(h_n / seconds)
    return statistics.median(plain), p_n, statistics.median(hp), h_n


def main_() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=400)
    parser.add_argument("--workers", default="1,4,8")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-statements", action="store_true", help="skip the per-trial count")
    parser.add_argument("--storages", default="postgresql,mysql,sqlite")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rows, costs = [], []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "objective.py").write_text("def square(p, report):\n    return p['x'] ** 2\n")
        for kind in args.storages.split(","):
            admin, name = None, None
            if kind == "sqlite":
                url = f"sqlite:///{folder / 'bench.db'}"
            else:
                admin = sa.create_engine(SERVERS[kind], isolation_level="AUTOCOMMIT")
                name = f"hpsearch_bench_{uuid.uuid4().hex[:8]}"
                with admin.connect() as c:
                    c.execute(sa.text(f"CREATE DATABASE {name}"))
                url = sa.engine.make_url(SERVERS[kind]).set(database=name).render_as_string(False)
            try:
                if not args.no_statements:
                    costs.append((kind, *statements_per_trial(url, folder)))
                for workers in map(int, args.workers.split(",")):
                    rows.append(
                        (kind, workers, *_pair(url, args.trials, workers, folder, args.repeats))
                    )
            finally:
                if admin is not None:
                    with admin.connect() as c:
                        force = " WITH (FORCE)" if kind == "postgresql" else ""
                        c.execute(sa.text(f"DROP DATABASE IF EXISTS {name}{force}"))
                    admin.dispose()
    print(
        f"\n{args.trials} trials per run, trivial objective, random sampler, median of "
        f"{args.repeats}"
    )
    print(f"{'storage':<11}{'workers':>8}{'plain trials/s':>16}{'plain n':>9}"
          f"{'hpsearch trials/s':>19}{'hpsearch n':>12}{'ratio':>7}")  # fmt: skip
    for kind, w, p, pn, h, hn in rows:
        print(f"{kind:<11}{w:>8}{p:>16.1f}{pn:>9}{h:>19.1f}{hn:>12}{h / p:>7.2f}")
    print("\ndatabase cost of one trial (one worker, in-process)")
    header = ("storage", "plain stmts", "plain commits", "hp stmts", "hp commits")
    print(f"{header[0]:<11}{header[1]:>12}{header[2]:>14}{header[3]:>10}{header[4]:>11}")
    for kind, ps, pc, hs, hc in costs:
        print(f"{kind:<11}{ps:>12.1f}{pc:>14.1f}{hs:>10.1f}{hc:>11.1f}")


if __name__ == "__main__":
    main_()
