"""`hpsearch status`, `best`, `export` and `report` on real trials in real databases."""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import optuna
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
import yaml
from optuna.storages._rdb.models import TrialHeartbeatModel
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from hpsearch.cli import main
from hpsearch.inspect import advice, advice_text, facts, report, sampling, source
from hpsearch.inspect.source import open_view
from hpsearch.inspect.status import collect
from hpsearch.inspect.table import render
from hpsearch.spec import load_spec
from hpsearch.storage import resolve
from hpsearch.storage.optuna_compat import trial_id

REPO = Path(__file__).resolve().parents[1]

OBJECTIVE = '''
def train(params, report):
    """Minimum 0 at x=2; fails above x=4; one report per epoch, counted from 1."""
    x = params["x"]
    if x > 4:
        raise RuntimeError("out of memory (simulated)")
    for epoch in range(1, params["epochs"] + 1):
        report({"loss": (x - 2) ** 2 + 1 / epoch}, epoch)
    return {"loss": (x - 2) ** 2}


def two(params, report):
    x = params["x"]
    for step in range(1, 3):
        report({"loss": (x - 2) ** 2 + 1 / step, "size": 0.0}, step)
    return {"loss": (x - 2) ** 2, "size": abs(x) + params["batch_size"] / 64}
'''

# Trials 0-3 are enqueued, so the states are known: 0 and 1 complete, 2 fails, 3 is pruned at
# epoch 1 (worse than the 75th percentile of trials 0 and 1). The rest are random.
STUDY = """
name: {name}
metric: loss
direction: minimize
sampler: {{type: random, seed: 7}}
pruner: {{type: percentile, percentile: 75, n_startup_trials: 2}}
budget: {{n_trials: {n_trials}}}
workers: {{heartbeat_interval: 5, grace_period: 20}}
objective: {{function: objective.py:train}}
search_space:
  x: {{type: float, low: -5, high: 5}}
  batch_size: {{type: power_of_two, low: 8, high: 256}}
  epochs: {{type: int, low: 3, high: 6}}
  optimizer: {{type: categorical, choices: [adam, sgd]}}
enqueue:
  - {{x: 1.0, batch_size: 8, epochs: 6, optimizer: sgd}}
  - {{x: -1.0, batch_size: 128, epochs: 5, optimizer: adam}}
  - {{x: 4.5, batch_size: 16, epochs: 3, optimizer: sgd}}
  - {{x: -4.0, batch_size: 64, epochs: 6, optimizer: adam}}
"""
N_TRIALS = 12
BEST = N_TRIALS  # the trial told by hand after the run, as the built-in trainer records one
BEST_PARAMS = {"x": 2.0, "batch_size": 32, "epochs": 6, "optimizer": "adam"}


@dataclass(frozen=True)
class Populated:
    kind: str
    url: str
    path: Path
    name: str
    stale: int  # RUNNING, heartbeat older than the grace period, worker "ghost:1#0"
    fresh: int  # RUNNING, asked by hand: no heartbeat, no worker

    def trials(self) -> list[FrozenTrial]:
        study = optuna.load_study(study_name=self.name, storage=self.url)
        return study.get_trials()

    def args(self, command: str, *extra: str) -> list[str]:
        return [command, str(self.path), "--storage", self.url, "-q", *extra]


def _checkpoint(populated: Populated) -> Path:
    return populated.path.parent / "ckpt" / f"trial-{BEST}" / "best.pt"


def _url(kind: str, request: pytest.FixtureRequest, folder: Path) -> str:
    if kind == "sqlite":
        return f"sqlite:///{folder / 'hpsearch.db'}"
    return str(request.getfixturevalue({"postgresql": "postgres_url", "mysql": "mysql_url"}[kind]))


def _populate(kind: str, request: pytest.FixtureRequest, folder: Path) -> Populated:
    name = f"inspect-{uuid.uuid4().hex[:8]}"
    url = _url(kind, request, folder)
    (folder / "objective.py").write_text(OBJECTIVE)
    path = folder / "study.yaml"
    path.write_text(STUDY.format(name=name, n_trials=N_TRIALS).lstrip())
    assert main(["run", str(path), "--storage", url, "-q"]) == 0

    storage = optuna.storages.RDBStorage(url)
    study = optuna.load_study(study_name=name, storage=storage)
    # The best trial, told by hand with the attributes the built-in trainer records.
    study.enqueue_trial({"x": 2.0, "batch_size": 32, "epochs": 6, "optimizer": "adam"})
    best = study.ask(study.trials[0].distributions)
    assert best.number == BEST
    checkpoint = folder / "ckpt" / f"trial-{BEST}" / "best.pt"  # a real file: export lists it
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_text("weights")
    best.set_user_attr("checkpoint", str(checkpoint))
    best.set_user_attr("device", "cpu")
    best.set_user_attr("epochs_run", 6)
    for epoch in range(1, 7):
        best.report(1 / epoch, epoch)
    study.tell(best, 0.0)
    # A trial whose worker died a minute ago: its last heartbeat is 60 s old (grace: 20 s).
    stale = study.ask()
    stale.set_user_attr("worker", "ghost:1#0")
    storage.record_heartbeat(trial_id(stale))
    beats = TrialHeartbeatModel.__table__
    with storage.engine.begin() as c:
        now = source.naive(c.execute(sa.select(sa.func.now())).scalar_one())
        c.execute(
            sa.update(beats)
            .where(beats.c.trial_id == trial_id(stale))
            .values(heartbeat=now - dt.timedelta(seconds=60))
        )
    fresh = study.ask()  # RUNNING, asked by hand: no heartbeat, no worker
    states = Counter(t.state for t in study.get_trials())
    storage.engine.dispose()
    assert states[TrialState.COMPLETE] >= 5
    assert states[TrialState.PRUNED] >= 1
    return Populated(kind, url, path, name, stale.number, fresh.number)


@pytest.fixture(scope="module")
def _studies() -> dict[str, Populated]:
    return {}


@pytest.fixture
def populated(
    request: pytest.FixtureRequest,
    _studies: dict[str, Populated],
    tmp_path_factory: pytest.TempPathFactory,
) -> Populated:
    """A study run by `hpsearch run` (complete, pruned, failed), one trial told by hand, two
    RUNNING; made once per backend for the module (parametrise `populated` indirectly)."""
    kind = getattr(request, "param", "sqlite")
    if kind not in _studies:
        _studies[kind] = _populate(kind, request, tmp_path_factory.mktemp(f"inspect-{kind}"))
    return _studies[kind]


def both_servers(test: object) -> object:
    """Run a test on SQLite and PostgreSQL (MySQL runs the status numbers test)."""
    mark = pytest.mark.parametrize("populated", ["sqlite", "postgresql"], indirect=True)
    return mark(test)


# --- status ------------------------------------------------------------------------------------


@pytest.mark.parametrize("populated", ["sqlite", "postgresql", "mysql"], indirect=True)
def test_status_json_has_the_studys_numbers(
    populated: Populated, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(populated.args("status", "--json")) == 0
    data = json.loads(capsys.readouterr().out)
    trials = populated.trials()
    counts = Counter(t.state.name.lower() for t in trials)
    assert counts["complete"]
    assert counts["pruned"]
    assert counts["fail"]
    assert counts["running"] == 2
    assert data["trials"] == {
        "total": len(trials),
        **{s: counts[s] for s in ("complete", "pruned", "fail", "running", "waiting")},
    }
    assert data["best"] == {
        "number": BEST,
        "values": [0.0],
        "params": BEST_PARAMS,
        "checkpoint": str(_checkpoint(populated)),
    }
    budget = data["budget"]
    assert (budget["source"], budget["trials_claimed"], budget["trial_limit"]) == (
        "ledger",
        N_TRIALS,
        N_TRIALS,
    )
    assert budget["spent"] == f"n_trials reached ({N_TRIALS}/{N_TRIALS})"
    # No `gpu_hours` limit, so no ledger count: the finished trials' durations (one device per
    # worker). MySQL keeps whole seconds, so there they may add up to 0.
    ran = [t.duration.total_seconds() for t in trials if t.duration]
    assert budget["gpu_hours"] == pytest.approx(sum(ran) / 3600, rel=1e-6, abs=1e-9)
    # Pruned: the `epochs` parameter planned, the last reported epoch ran.
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    planned = sum(t.params["epochs"] for t in pruned)
    steps = sum(t.last_step or 0 for t in pruned)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    without = planned + sum(t.user_attrs.get("epochs_run", t.last_step or 0) for t in complete)
    assert data["pruning"] == {
        "pruned_trials": len(pruned),
        "counted_trials": len(pruned),
        "epochs_run": steps,
        "epochs_planned": planned,
        "epochs_saved": planned - steps,
        # the share: against what every finished trial would have trained unpruned
        "epochs_without_pruning": without,
        "saved_share": pytest.approx((planned - steps) / without),
        "unit": "steps",
    }
    assert data["remaining_trials"] == 2  # the budget is spent; the two RUNNING trials remain
    assert data["throughput_per_hour"] > 0
    assert [s["number"] for s in data["stuck"]] == [populated.stale]
    stuck = data["stuck"][0]
    assert stuck["worker"] == "ghost:1#0"
    assert stuck["reason"].startswith("no heartbeat for ")
    assert 50 < stuck["heartbeat_age_s"] < 600
    worker = trials[0].user_attrs["worker"]
    assert [w["worker"] for w in data["live_workers"]] == [worker]
    assert data["live_workers"][0]["finished"] == N_TRIALS
    assert data["workers_seen"] == 2  # the run's worker and the ghost


def test_status_table_reads_at_100_columns(populated: Populated) -> None:
    loaded = load_spec(populated.path)
    view = open_view(loaded, resolve(loaded, flag=populated.url))
    try:
        table = render(collect(view))
    finally:
        view.close()
    lines = table.splitlines()
    assert all(len(line) <= 100 for line in lines), table
    labels = [line.split()[0] for line in lines if not line.startswith(" ")]
    assert labels == [
        "study",
        "trials",
        "budget",
        "disk",
        "best",
        "speed",
        "pruning",
        "workers",
        "stuck",
    ]
    assert f"trials   {N_TRIALS + 3} total: " in table
    assert f"best     loss 0 (trial {BEST})" in table
    assert "x: 2, batch_size: 32, epochs: 6, optimizer: adam" in table
    assert "log2_" not in table
    assert f"trial {populated.stale} on ghost:1#0: no heartbeat for " in table
    assert f"budget   trials {N_TRIALS}/{N_TRIALS} | " in table


def test_status_watch_refreshes_and_nothing_imports_torch(populated: Populated) -> None:
    # One subprocess: `best` and `export`, then `status --watch` until Ctrl-C; torch must never
    # be imported (the inspect commands run on machines without a GPU stack).
    code = textwrap.dedent(
        """
        import contextlib, io, signal, sys
        # Ctrl-C as a terminal delivers it, whatever the test runner's process left inherited
        # (an ignored or blocked SIGINT survives exec).
        print("inherited SIGINT:", signal.getsignal(signal.SIGINT),
              signal.pthread_sigmask(signal.SIG_BLOCK, []), file=sys.stderr, flush=True)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        from hpsearch.cli import main
        out, common = sys.argv[1], sys.argv[2:]
        with contextlib.redirect_stdout(io.StringIO()):
            assert main(["best", *common]) == 0
            assert main(["export", *common, "-o", out]) == 0
        assert "torch" not in sys.modules, "torch was imported"
        sys.exit(main(["status", *common, "--json", "--watch", "0.2"]))
        """
    )
    out = populated.path.with_name("watch.csv")
    args = [str(out), str(populated.path), "--storage", populated.url, "-q"]
    process = subprocess.Popen(
        [sys.executable, "-c", code, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, cwd=REPO,
    )  # fmt: skip
    assert process.stdout is not None
    first, second = process.stdout.readline(), process.stdout.readline()
    process.send_signal(signal.SIGINT)
    try:
        _, err = process.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        process.kill()
        _, err = process.communicate()
        pytest.fail(f"status --watch did not stop on SIGINT; its stderr: {err[-3000:]}")
    assert process.returncode == 0, err
    assert first
    assert json.loads(first)["trials"] == json.loads(second)["trials"]
    assert out.read_text().startswith("number,state,value,")


# --- best --------------------------------------------------------------------------------------


@both_servers
def test_best_prints_yaml_that_enqueue_accepts(
    populated: Populated, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main(populated.args("best", "--top", "3")) == 0
    out = capsys.readouterr().out
    entries = yaml.safe_load(out)
    complete = sorted(
        (t for t in populated.trials() if t.state == TrialState.COMPLETE),
        key=lambda t: (t.value, t.number),
    )
    assert len(entries) == 3
    assert entries[0] == BEST_PARAMS
    for entry, trial in zip(entries, complete, strict=False):
        assert entry["batch_size"] == trial.params["batch_size"]
        assert f"# trial {trial.number} " in out
    assert f"# trial {BEST} in " in out
    assert ": loss = 0\n" in out
    assert f"# checkpoint: {_checkpoint(populated)}" in out
    assert "# attrs: device=cpu, epochs_run=6" in out
    assert "# checkpoint: none recorded" in out  # the runners-up have none

    # Pasted under `enqueue:`, the entries make a valid study file.
    study = yaml.safe_load(populated.path.read_text())
    study["enqueue"] = entries
    pasted = tmp_path / "again.yaml"
    (tmp_path / "objective.py").write_text(OBJECTIVE)
    pasted.write_text(yaml.safe_dump(study, sort_keys=False))
    assert [dict(e) for e in load_spec(pasted).spec.enqueue] == entries


def test_best_of_two_objectives_is_the_pareto_front(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "objective.py").write_text(OBJECTIVE)
    path = tmp_path / "two.yaml"
    path.write_text(
        textwrap.dedent(
            """
            name: two
            metric: [loss, size]
            directions: [minimize, minimize]
            sampler: {type: random, seed: 3}
            pruner: {type: none}
            budget: {n_trials: 8}
            objective: {function: objective.py:two}
            search_space:
              x: {type: float, low: -5, high: 5}
              batch_size: {type: power_of_two, low: 8, high: 64}
            """
        )
    )
    url = f"sqlite:///{tmp_path / 'two.db'}"
    assert main(["run", str(path), "--storage", url, "-q"]) == 0
    capsys.readouterr()
    assert main(["best", str(path), "--storage", url, "-q"]) == 0
    out = capsys.readouterr().out
    front = optuna.load_study(study_name="two", storage=url).best_trials
    entries = yaml.safe_load(out)
    assert len(entries) == len(front) > 1
    assert f"Pareto front ({len(front)} of 8 completed trials)" in out
    by_loss = sorted(front, key=lambda t: (t.values[0], t.number))
    assert [e["x"] for e in entries] == [t.params["x"] for t in by_loss]
    assert all(e["batch_size"] in (8, 16, 32, 64) for e in entries)

    # The report of a study this small: learning curves from the `loss@step` attributes,
    # importances skipped with a note, the Pareto front drawn.
    report = tmp_path / "two.html"
    assert main(["report", str(path), "--storage", url, "-q", "-o", str(report)]) == 0
    page = report.read_text()
    assert '<section id="pareto-front">' in page
    assert "Intermediate values of loss" in page
    assert "needs at least 5 completed trial(s)" not in page  # 8 trials: importances drawn


def test_best_and_status_refuse_bad_flags(
    populated: Populated, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(populated.args("best", "--top", "0")) == 2
    assert capsys.readouterr().err == "hpsearch: error: --top must be >= 1, but got 0\n"
    assert main(populated.args("status", "--watch", "0")) == 2
    assert capsys.readouterr().err == "hpsearch: error: --watch must be > 0 seconds, but got 0\n"


# --- export ------------------------------------------------------------------------------------


def _expected(populated: Populated) -> dict[int, dict[str, object]]:
    out: dict[int, dict[str, object]] = {}
    for t in populated.trials():
        params = dict(t.params)
        if "log2_batch_size" in params:
            params["batch_size"] = 2 ** params.pop("log2_batch_size")
        steps = t.intermediate_values
        out[t.number] = {
            "state": t.state.name,
            "value": t.value if t.values else None,
            "params": params,
            "steps": len(steps),
            "last_step": max(steps) if steps else None,
            "last_intermediate": steps[max(steps)] if steps else None,
            "best_intermediate": min(steps.values()) if steps else None,
            "attrs": t.user_attrs,
        }
    return out


def _check_rows(rows: list[dict[str, object]], populated: Populated, *, typed: bool) -> None:
    expected = _expected(populated)

    def same(got: object, want: object) -> bool:
        if want is None:
            return got in (None, "")
        if typed:
            return got == want
        if isinstance(want, bool | str):
            return got == str(want)
        return float(str(got)) == float(want)  # type: ignore[arg-type]

    assert sorted(int(str(r["number"])) for r in rows) == sorted(expected)
    for row in rows:
        want = expected[int(str(row["number"]))]
        assert row["state"] == want["state"]
        for key in ("value", "steps", "last_step", "last_intermediate", "best_intermediate"):
            assert same(row[key], want[key]), (key, row[key], want[key])
        for name, value in want["params"].items():  # type: ignore[attr-defined]
            assert same(row[f"params_{name}"], value), name
        for key in ("worker", "fail_reason", "prune_reason", "checkpoint"):
            assert same(row[f"user_attrs_{key}"], want["attrs"].get(key)), key  # type: ignore[attr-defined]
        assert row["duration_s"] in (None, "") or float(str(row["duration_s"])) >= 0


@both_servers
def test_export_csv_and_json_round_trip(
    populated: Populated, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(source, "PAGE_SIZE", 4)  # several pages even for a small study
    out_csv, out_json = tmp_path / "trials.csv", tmp_path / "trials.json"
    assert main(populated.args("export", "--format", "csv", "-o", str(out_csv))) == 0
    assert main(populated.args("export", "-o", str(out_json))) == 0  # format from the suffix
    with out_csv.open(newline="") as f:
        csv_rows = list(csv.DictReader(f))
    json_rows = [json.loads(line) for line in out_json.read_text().splitlines()]
    assert len(csv_rows) == len(json_rows) == N_TRIALS + 3
    _check_rows(csv_rows, populated, typed=False)
    _check_rows(json_rows, populated, typed=True)
    assert list(csv_rows[0])[:6] == [
        "number", "state", "value", "datetime_start", "datetime_complete", "duration_s",
    ]  # fmt: skip
    assert "params_log2_batch_size" not in csv_rows[0]
    failed = next(r for r in json_rows if r["state"] == "FAIL")
    assert failed["user_attrs_fail_reason"] == "RuntimeError: out of memory (simulated)"
    assert json_rows[0]["datetime_start"].endswith("+00:00")


def test_export_parquet_has_typed_columns(populated: Populated, tmp_path: Path) -> None:
    out = tmp_path / "trials.parquet"
    assert main(populated.args("export", "--format", "parquet", "-o", str(out))) == 0
    table = pq.read_table(out)
    assert table.num_rows == N_TRIALS + 3
    types = {f.name: str(f.type) for f in table.schema}
    assert types["number"] == "int64"
    assert types["value"] == "double"
    assert types["params_batch_size"] == "int64"
    assert types["params_optimizer"] == "string"
    assert types["datetime_start"] == "timestamp[ms, tz=UTC]"
    _check_rows(table.to_pylist(), populated, typed=True)


def test_trials_are_read_in_pages(populated: Populated) -> None:
    loaded = load_spec(populated.path)
    view = open_view(loaded, resolve(loaded, flag=populated.url))
    try:
        paged = list(view.trials(page_size=3))
        assert paged == populated.trials()  # each trial as Optuna builds it, field by field
        cut = trial_id(next(t for t in view.trials() if t.number == 5))
        assert [t.number for t in view.trials(page_size=2, up_to_id=cut)] == list(range(6))
    finally:
        view.close()


def test_export_needs_a_known_format(
    populated: Populated, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main(populated.args("export", "-o", str(tmp_path / "t.txt"))) == 2
    assert capsys.readouterr().err == (
        f"hpsearch: error: -o {tmp_path / 't.txt'}: cannot tell the format from the suffix "
        "'.txt'; pass --format csv|json|parquet or use .csv, .json, .jsonl or .parquet\n"
    )


# --- report ------------------------------------------------------------------------------------


def test_report_is_one_offline_file_with_every_figure(
    populated: Populated, tmp_path: Path
) -> None:
    out = tmp_path / "report.html"
    assert main(populated.args("report", "-o", str(out))) == 0
    page = out.read_text()
    for section in ("status", "best", "history", "intermediate", "importances", "parallel",
                    "slice"):  # fmt: skip
        assert f'<section id="{section}">' in page
    assert page.count('class="plotly-graph-div"') == 4 + 4  # 4 plots + one slice per parameter
    titles = ("Optimization History Plot", "Intermediate Values Plot",
              "Importance for loss: mean of fANOVA and PED-ANOVA (as the advice)",
              "Parallel Coordinate Plot", "Slice Plot")  # fmt: skip
    assert all(title in page for title in titles)
    assert "(pruned)" in page  # pruned learning curves are marked
    # plotly.js is inlined once (its own code mentions CDN URLs, for maps we never draw);
    # outside it, no script is loaded from anywhere and no URL appears.
    start = page.index('<script type="text/javascript">')
    end = page.index("</script>", start)
    bundle, rest = page[start:end], page[:start] + page[end:]
    assert "plotly.js v" in bundle
    assert len(bundle) > 3_000_000
    assert re.findall(r"<script\b[^>]*>", rest) == ["<script>"] * page.count("Plotly.newPlot(")
    assert not re.search(r"https?://", rest)
    assert "x: 2, batch_size: 32, epochs: 6, optimizer: adam" in page  # the status table


# --- errors and read-only opening ---------------------------------------------------------------


def test_status_of_a_missing_database_creates_nothing(
    populated: Populated, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "nothing" / "here.db"
    assert main(["status", str(populated.path), "--storage", f"sqlite:///{db}", "-q"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"hpsearch: error: no study database at {db}: nothing has run yet; ")
    assert not db.exists()


def test_unknown_study_lists_the_studies_there(
    populated: Populated, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(populated.args("best", "--name", "nope")) == 2
    err = capsys.readouterr().err
    assert err.startswith("hpsearch: error: study 'nope' is not in storage sqlite:///")
    assert f"(studies there: {populated.name}); pass --name" in err


def _made_by_optuna(tmp_path: Path) -> tuple[Path, str]:
    """A study file and a 3-trial study of that name made by Optuna alone, not by hpsearch."""
    (tmp_path / "objective.py").write_text(OBJECTIVE)
    path = tmp_path / "plain.yaml"
    path.write_text(STUDY.format(name="plain", n_trials=5).lstrip())
    url = f"sqlite:///{tmp_path / 'plain.db'}"
    study = optuna.create_study(study_name="plain", storage=url)
    study.optimize(lambda t: (t.suggest_float("x", -5, 5) - 2) ** 2, n_trials=3)
    return path, url


def test_a_study_made_by_optuna_alone_is_read_without_creating_tables(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, url = _made_by_optuna(tmp_path)
    engine = sa.create_engine(url)
    before = set(sa.inspect(engine).get_table_names())
    assert main(["status", str(path), "--storage", url, "-q", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["budget"]["source"] == "study file"
    assert data["budget"]["trial_limit"] == 5
    assert data["budget"]["trials_claimed"] == 3
    assert data["remaining_trials"] == 2
    assert main(["export", str(path), "--storage", url, "-q", "-o", str(tmp_path / "p.csv")]) == 0
    report = tmp_path / "r.html"
    assert main(["report", str(path), "--storage", url, "-q", "-o", str(report)]) == 0
    page = report.read_text()
    assert "needs at least 5 completed trial(s); this study has 3." in page
    assert "not drawn: no trial reported intermediate values" in page
    assert page.count('class="plotly-graph-div"') == 3  # history, parallel coordinates, 1 slice
    assert set(sa.inspect(engine).get_table_names()) == before
    assert "hpsearch_ledger" not in before
    engine.dispose()


def test_a_reader_writes_no_version_rows_and_loads_no_alembic(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Optuna's storage records its version and stamps alembic's revision when it opens a
    # database that lacks them; a reader writes nothing, and alembic's import alone costs
    # `status` 0.2 s of CPU (benchmarks/big_study.py).
    path, url = _made_by_optuna(tmp_path)
    engine = sa.create_engine(url)
    with engine.begin() as c:
        c.execute(sa.text("DELETE FROM alembic_version"))
        c.execute(sa.text("DELETE FROM version_info"))
    code = (
        "import sys; from hpsearch.cli import main; "
        f"code = main(['status', {str(path)!r}, '--storage', {url!r}, '-q']); "
        "print('alembic' in sys.modules); sys.exit(code)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "3 total: 3 complete" in done.stdout
    assert done.stdout.splitlines()[-1] == "False"
    main(["doctor", str(path), "--storage", url])  # reads the schema version: none recorded
    assert (
        "no schema version recorded: the next `hpsearch run` records it" in capsys.readouterr().out
    )
    with engine.connect() as c:
        assert c.execute(sa.text("SELECT COUNT(*) FROM alembic_version")).scalar_one() == 0
        assert c.execute(sa.text("SELECT COUNT(*) FROM version_info")).scalar_one() == 0
    engine.dispose()


@pytest.mark.parametrize("populated", ["postgresql"], indirect=True)
def test_no_command_prints_the_database_password(
    populated: Populated, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The test server trusts local connections, so any password works, and none may show.
    monkeypatch.setenv("HPSEARCH_DB_PASSWORD", "s3cret-Pa55")
    monkeypatch.setenv("HPSEARCH_STORAGE", populated.url)
    study = str(populated.path)
    for args in (["status", study], ["status", study, "--json"], ["best", study],
                 ["status", study, "--name", "missing"]):  # fmt: skip
        main([*args, "-v"])
        out, err = capsys.readouterr()
        assert "s3cret" not in out + err
        if args[0] == "status":
            assert "root:***@127.0.0.1" in out + err


def test_nan_free_json_lines(populated: Populated, tmp_path: Path) -> None:
    out = tmp_path / "t.jsonl"
    assert main(populated.args("export", "-o", str(out))) == 0
    for line in out.read_text().splitlines():
        json.loads(line, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert os.path.getsize(out) > 0


# --- big studies: what status, best and report read ----------------------------------------


@both_servers
def test_status_and_best_never_read_every_trial(
    populated: Populated, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # On a 20,000-trial study, building every trial costs seconds (benchmarks/big_study.py):
    # status reads a few columns by SQL, best asks Optuna's best-trial query.
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("every trial was read")

    monkeypatch.setattr(source.StudyView, "trials", refuse)
    monkeypatch.setattr(optuna.storages.RDBStorage, "get_all_trials", refuse)
    assert main(populated.args("status", "--json")) == 0
    assert json.loads(capsys.readouterr().out)["best"]["number"] == BEST
    assert main(populated.args("best")) == 0
    assert f"# trial {BEST} " in capsys.readouterr().out


@both_servers
def test_the_figures_status_counts_by_sql_are_those_of_the_trials(populated: Populated) -> None:
    loaded = load_spec(populated.path)
    view = open_view(loaded, resolve(loaded, flag=populated.url))
    try:
        counted = facts.read_summary(view)
        assert counted == facts.summarise(view, view.trials())
        assert counted.workers
        assert counted.durations
        assert counted.counts["PRUNED"]
        assert any(planned and ran for _, planned, ran in counted.runs)
        assert counted.complete_step
    finally:
        view.close()


def test_a_big_studys_report_draws_a_sample_and_says_so(populated: Populated) -> None:
    trials = populated.trials()
    drawn = sampling.sample(trials, [StudyDirection.MINIMIZE], "loss", limit=6, curves=3)
    assert len(drawn.trials) == 6
    assert len(drawn.curves) == 3
    # Every trial that improved the best value is drawn: the history's best line is exact.
    best, records = float("inf"), set()
    for t in trials:
        if t.state == TrialState.COMPLETE and t.values[0] < best:
            best = t.values[0]
            records.add(t.number)
    assert records <= {t.number for t in drawn.trials}
    assert BEST in {t.number for t in drawn.curves}  # the best curves come first
    loaded = load_spec(populated.path)
    view = open_view(loaded, resolve(loaded, flag=populated.url))
    try:
        page = report.build(view, plot_trials=6, curves=3)
        unsampled = report.build(view)
    finally:
        view.close()
    assert f"This study has {len(trials)} trials: the plots below draw 6 of them" in page
    assert '<section id="sample">' in page
    assert "Optimization History Plot" in page
    assert "This study has" not in unsampled


def test_importances_come_from_a_sample_of_a_big_study(populated: Populated) -> None:
    loaded = load_spec(populated.path)
    view = open_view(loaded, resolve(loaded, flag=populated.url))
    try:
        n = sum(t.state == TrialState.COMPLETE for t in populated.trials())
        whole = advice.collect(view)
        sampled = advice.collect(view, importance_trials=n - 1)
    finally:
        view.close()
    assert whole.importance_note is None
    assert sampled.importance_note == (
        f"(importances from a random {n - 1} of the {n} completed trials: more would cost "
        "minutes and not change the ranking)"
    )
    assert sampled.importances
    assert sampled.importance_note in advice_text.render(sampled)
