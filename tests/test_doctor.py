"""`hpsearch doctor`: every check on real storages, and a problem always comes with its fix."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from hpsearch.cli import main


def test_healthy_sqlite_launch(
    quadratic_study: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = quadratic_study(n_trials=2)
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    assert main(["run", str(path), "--storage", url, "-q"]) == 0
    assert main(["doctor", str(path), "--storage", url]) == 0
    out = capsys.readouterr().out
    for check in ("storage", "schema", "clock", "versions", "connections", "sqlite", "gpus"):
        assert f"ok       {check}" in out
    assert "as recorded in the study" in out
    assert out.rstrip().endswith("all checks passed")


@pytest.mark.parametrize("server", ["postgres", "mysql"])
def test_too_many_planned_workers_for_the_server(
    request: pytest.FixtureRequest, quadratic_study: Callable[..., Path],
    capsys: pytest.CaptureFixture[str], server: str,
) -> None:  # fmt: skip
    url = request.getfixturevalue(f"{server}_url")
    code = main(["doctor", str(quadratic_study()), "--storage", url, "--planned-workers", "5000"])
    out = capsys.readouterr().out
    assert code == 1
    assert "PROBLEM  connections  5000 workers may open 20000 connections" in out
    assert "raise max_connections or run `hpsearch storage-proxy`" in out
    assert "ok       clock" in out
    assert out.rstrip().endswith("1 problem(s)")


def test_unreachable_storage_is_reported_not_raised(
    quadratic_study: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    url = "postgresql://nobody@127.0.0.1:1/none"
    assert main(["doctor", str(quadratic_study()), "--storage", url]) == 1
    out = capsys.readouterr().out
    assert (
        "PROBLEM  storage      cannot reach storage postgresql+psycopg://nobody@127.0.0.1:1" in out
    )
    assert "PROBLEM  schema       skipped: the storage is not reachable" in out
