"""What `hpsearch run` costs on top of a plain Optuna script, side by side in one run.

Two objectives, each run by a plain Optuna script and by `hpsearch run` with the same TPE sampler
(seed 0) and the same median pruner on the same storage, alternating (plain, hpsearch, plain,
hpsearch, ...) so machine noise hits both alike:

- `trial`: x**2, nothing reported: what a trial costs (target: hpsearch / plain <= 1.10);
- `report`: the same, reporting --steps intermediate values, each followed by the pruner's
  decision (`trial.report` + `trial.should_prune` in the plain script, `report(value, step)` in
  hpsearch's). Every trial reports the same value, so the median pruner prunes none and both
  sides make exactly --steps decisions per trial. The cost of one report + decision is the
  difference of the two objectives' per-trial costs, divided by --steps (target: <= 2).

Per trial: the span from the first trial's start to the last one's end as the storage recorded
them, divided by the trials (the steady state), and the whole wall time (the plain script's
`create_study` and hpsearch's start-up: reading the file, joining the study, the budget
ledger). Medians of --repeats.

    .venv/bin/python benchmarks/overhead.py [--trials 200] [--steps 20] [--repeats 3]
        [--storages sqlite,postgresql,mysql]

hpsearch does more per trial than the plain script, on purpose: the study-wide budget claim, a
heartbeat (crash recovery), the provenance attributes (worker, host, versions, git commit), and
per reported step the claim of the epoch budget where the study has one.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import optuna
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from hpsearch.cli import main  # noqa: E402
from hpsearch.storage import StorageURL, open_storage  # noqa: E402

SERVERS = {
    "postgresql": "postgresql+psycopg://root@127.0.0.1:5432/test",
    "mysql": "mysql+pymysql://root@127.0.0.1:3306/test",
}
OBJECTIVE = """
def square(params, report):
    return params['x'] ** 2

def reporting(params, report):
    for step in range(STEPS):
        report(1.0, step)  # the same for every trial: the median pruner prunes none
    return params['x'] ** 2
"""
STUDY = """
name: {name}
direction: minimize
sampler: {{type: tpe, seed: 0}}
pruner: {{type: median}}
objective: {{function: objective.py:{function}}}
search_space: {{x: {{type: float, low: -10, high: 10}}}}
"""
CASES = {"trial": "square", "report": "reporting"}


@dataclass(frozen=True)
class Timing:
    steady: float  # seconds per trial, first start to last end
    wall: float  # seconds per trial, start-up included


def timing(url: str, name: str, trials: int, wall: float) -> Timing:
    done = optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)
    assert len(done) == trials, name
    assert all(t.state.name == "COMPLETE" for t in done), name
    first = min(t.datetime_start for t in done if t.datetime_start is not None)
    last = max(t.datetime_complete for t in done if t.datetime_complete is not None)
    return Timing((last - first).total_seconds() / trials, wall / trials)


def plain(url: str, trials: int, steps: int) -> Timing:
    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", -10, 10)
        for step in range(steps):
            trial.report(1.0, step)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return x**2

    name = f"plain-{uuid.uuid4().hex[:8]}"
    started = time.perf_counter()
    study = optuna.create_study(
        study_name=name,
        storage=url,
        sampler=optuna.samplers.TPESampler(seed=0),
        pruner=optuna.pruners.MedianPruner(),
        direction="minimize",
    )
    study.optimize(objective, n_trials=trials)
    return timing(url, name, trials, time.perf_counter() - started)


def hpsearch(url: str, trials: int, case: str, folder: Path) -> Timing:
    path = folder / f"{uuid.uuid4().hex[:8]}.yaml"
    name = f"hp-{path.stem}"
    path.write_text(STUDY.format(name=name, function=CASES[case]))
    started = time.perf_counter()
    code = main(["run", str(path), "--storage", url, "--n-trials", str(trials), "-q"])
    assert code == 0
    return timing(url, name, trials, time.perf_counter() - started)


def server_database(kind: str) -> tuple[str, sa.Engine]:
    admin = sa.create_engine(SERVERS[kind], isolation_level="AUTOCOMMIT")
    name = f"hpsearch_bench_{uuid.uuid4().hex[:8]}"
    with admin.connect() as c:
        c.execute(sa.text(f"CREATE DATABASE {name}"))
    return sa.engine.make_url(SERVERS[kind]).set(database=name).render_as_string(False), admin


def drop(kind: str, url: str, admin: sa.Engine) -> None:
    name = sa.engine.make_url(url).database
    with admin.connect() as c:
        force = " WITH (FORCE)" if kind == "postgresql" else ""
        c.execute(sa.text(f"DROP DATABASE IF EXISTS {name}{force}"))
    admin.dispose()


def measure(url: str, args: argparse.Namespace, folder: Path) -> dict[tuple[str, str], Timing]:
    """Median timings per (side, case), the runs alternating between the sides."""
    runs: dict[tuple[str, str], list[Timing]] = {}
    for _ in range(args.repeats):
        for case in CASES:
            steps = args.steps if case == "report" else 0
            runs.setdefault(("plain", case), []).append(plain(url, args.trials, steps))
            runs.setdefault(("hpsearch", case), []).append(
                hpsearch(url, args.trials, case, folder)
            )
    return {
        key: Timing(
            statistics.median(t.steady for t in timings),
            statistics.median(t.wall for t in timings),
        )
        for key, timings in runs.items()
    }


def main_() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--storages", default="sqlite,postgresql,mysql")
    args = parser.parse_args()
    optuna.logging.set_verbosity(logging.WARNING)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "objective.py").write_text(f"STEPS = {args.steps}\n{OBJECTIVE}")
        for kind in args.storages.split(","):
            admin = None
            if kind == "sqlite":
                url = f"sqlite:///{folder / f'bench-{uuid.uuid4().hex[:8]}.db'}"
            else:
                url, admin = server_database(kind)
            try:
                # Optuna's tables made as hpsearch makes them: on MySQL with trial times to the
                # microsecond (Optuna's own are to the second), for both sides alike.
                open_storage(StorageURL(url, "benchmark"))
                results.append((kind, measure(url, args, folder)))
            finally:
                if admin is not None:
                    drop(kind, url, admin)
    print(f"\n{args.trials} trials per run, median of {args.repeats} alternating runs")
    print("\nper trial (targets: steady ratio <= 1.10)")
    print(f"{'storage':<12}{'plain ms':>10}{'hpsearch ms':>13}{'ratio':>7}"
          f"{'plain wall ms':>15}{'hpsearch wall ms':>18}{'ratio':>7}")  # fmt: skip
    for kind, t in results:
        p, h = t["plain", "trial"], t["hpsearch", "trial"]
        steady = f"{p.steady * 1e3:>10.2f}{h.steady * 1e3:>13.2f}{h.steady / p.steady:>7.2f}"
        wall = f"{p.wall * 1e3:>15.2f}{h.wall * 1e3:>18.2f}{h.wall / p.wall:>7.2f}"
        print(f"{kind:<12}{steady}{wall}")
    print(f"\nper report + prune decision, {args.steps} per trial (target: ratio <= 2)")
    print(f"{'storage':<12}{'plain ms':>10}{'hpsearch ms':>13}{'ratio':>7}")
    for kind, t in results:
        p = (t["plain", "report"].steady - t["plain", "trial"].steady) / args.steps
        h = (t["hpsearch", "report"].steady - t["hpsearch", "trial"].steady) / args.steps
        print(f"{kind:<12}{p * 1e3:>10.2f}{h * 1e3:>13.2f}{h / p:>7.2f}")


if __name__ == "__main__":
    main_()
