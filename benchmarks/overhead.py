"""Per-trial overhead of `hpsearch run` against a plain Optuna script, side by side in one run.

Both run a trivial objective (x**2) with the same TPE sampler (seed 0) on the same kind of
storage, alternating (plain, hpsearch, plain, hpsearch, ...) so machine noise hits both alike.
Printed: median seconds per trial of each, and the ratio hpsearch / plain (target: < 1.10).

    .venv/bin/python benchmarks/overhead.py [--trials 200] [--repeats 3]
        [--storages sqlite,postgresql]

hpsearch does more per trial than the plain script, on purpose: the study-wide budget claim, a
heartbeat (crash recovery), and the provenance attributes (worker, host, versions, git commit).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import optuna
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from hpsearch.cli import main  # noqa: E402

SERVERS = {
    "postgresql": "postgresql+psycopg://root@127.0.0.1:5432/test",
    "mysql": "mysql+pymysql://root@127.0.0.1:3306/test",
}
OBJECTIVE = "def square(params, report):\n    return params['x'] ** 2\n"
STUDY = """
name: {name}
direction: minimize
sampler: {{type: tpe, seed: 0}}
pruner: {{type: none}}
objective: {{function: objective.py:square}}
search_space: {{x: {{type: float, low: -10, high: 10}}}}
"""


def plain(url: str, trials: int) -> float:
    study = optuna.create_study(
        study_name=f"plain-{uuid.uuid4().hex[:8]}",
        storage=url,
        sampler=optuna.samplers.TPESampler(seed=0),
        direction="minimize",
    )
    started = time.perf_counter()
    study.optimize(lambda t: t.suggest_float("x", -10, 10) ** 2, n_trials=trials)
    return (time.perf_counter() - started) / trials


def hpsearch(url: str, trials: int, folder: Path) -> float:
    path = folder / f"{uuid.uuid4().hex[:8]}.yaml"
    path.write_text(STUDY.format(name=f"hp-{path.stem}"))
    started = time.perf_counter()
    code = main(["run", str(path), "--storage", url, "--n-trials", str(trials), "-q"])
    assert code == 0
    return (time.perf_counter() - started) / trials


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


def main_() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--storages", default="sqlite,postgresql")
    args = parser.parse_args()
    optuna.logging.set_verbosity(logging.WARNING)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "objective.py").write_text(OBJECTIVE)
        for kind in args.storages.split(","):
            admin = None
            if kind == "sqlite":
                url = f"sqlite:///{folder / 'bench.db'}"
            else:
                url, admin = server_database(kind)
            try:
                plain_s, hp_s = [], []
                for _ in range(args.repeats):
                    plain_s.append(plain(url, args.trials))
                    hp_s.append(hpsearch(url, args.trials, folder))
            finally:
                if admin is not None:
                    drop(kind, url, admin)
            p, h = statistics.median(plain_s), statistics.median(hp_s)
            rows.append((kind, p * 1000, h * 1000, h / p))
    print(f"\nper-trial cost, {args.trials} trials, median of {args.repeats} alternating runs")
    print(f"{'storage':<12}{'plain optuna ms':>17}{'hpsearch ms':>13}{'ratio':>8}")
    for kind, p, h, ratio in rows:
        print(f"{kind:<12}{p:>17.1f}{h:>13.1f}{ratio:>8.2f}")


if __name__ == "__main__":
    main_()
