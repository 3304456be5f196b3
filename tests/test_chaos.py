"""A short chaos run: workers killed and stopped, the database killed and restarted, mid-study.

The full, random run is `benchmarks/chaos.py`; these are fixed, shorter schedules of it on a
private PostgreSQL server (never the machine's shared one, which other tests use), each followed
by every invariant the benchmark checks: three workers with two SIGKILLs, a SIGTERM and a
`kill -9` of the database; and a database outage longer than the grace period while a trial runs
and other workers look for stale trials.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _chaos() -> ModuleType:
    spec = importlib.util.spec_from_file_location("hpsearch_chaos", ROOT / "benchmarks/chaos.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def _missing_postgres(chaos: ModuleType) -> str | None:
    if not (chaos.PG_BIN / "postgres").exists():
        return f"no PostgreSQL server binaries in {chaos.PG_BIN} (set HPSEARCH_PG_BIN)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no `postgres` user to run the server as"
    return None


@pytest.mark.db
@pytest.mark.timeout(300)  # a hang guard: about a minute of scripted chaos
def test_workers_and_the_database_killed_mid_study_lose_nothing() -> None:
    chaos = _chaos()
    missing = _missing_postgres(chaos)
    if missing is not None:
        if os.environ.get("CI"):
            pytest.fail(missing)
        pytest.skip(missing)
    config = chaos.ChaosConfig(
        seed=7,
        workers=3,
        n_trials=24,
        steps=3,
        step_s=0.15,
        chaos_s=30.0,
        drain_s=40.0,
        db_kills=0,
        db_down=(2.0, 2.0),
        # Seconds after the first trial starts. The database is killed while trials run (their
        # workers must wait it out), a second SIGKILL lands while it is back, SIGTERM near the end.
        script=(
            (1.0, "sigkill"),
            (2.0, "db"),
            (5.0, "sigkill"),
            (6.0, "refill"),
            (7.5, "sigterm"),
            (9.0, "refill"),
        ),  # fmt: skip
    )
    result = chaos.run_once(config)
    print(chaos.table([result]))
    assert result.violations == {}
    assert (result.sigkills, result.sigterms, result.db_restarts) == (2, 1, 1)
    assert result.counted == 24
    assert result.ledger == "24-0/24"
    assert result.retries >= 1  # a killed worker's trial was retried


@pytest.mark.db
@pytest.mark.timeout(300)  # a hang guard: about a minute of scripted chaos
def test_a_live_trial_is_not_failed_for_the_databases_outage() -> None:
    """After a restart no heartbeat is recent; lingering workers must not take that for crashes.

    One worker runs the only trial (10 s); two linger (the budget is spent) and look for stale
    trials every second. The database is down for 6 s, twice the grace period, mid-trial.
    """
    chaos = _chaos()
    missing = _missing_postgres(chaos)
    if missing is not None:
        if os.environ.get("CI"):
            pytest.fail(missing)
        pytest.skip(missing)
    config = chaos.ChaosConfig(
        seed=3, workers=3, n_trials=1, enqueue=0, steps=5, step_s=2.0, chaos_s=14.0,
        drain_s=40.0, db_kills=0, db_down=(6.0, 6.0), script=((1.5, "db"),),
    )  # fmt: skip
    result = chaos.run_once(config)
    print(chaos.table([result]))
    assert result.violations == {}
    assert result.db_restarts == 1
    assert (result.states["COMPLETE"], result.retries) == (1, 0)  # finished at the first try
