"""Issue 23, findings N6 and N8-N14: nothing silently wrong, round two."""

from __future__ import annotations

import contextlib
import re
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
import sqlalchemy as sa
from conftest import server_database
from optuna.trial import TrialState

from hpsearch.cli import main
from hpsearch.errors import HpsearchError, StorageError
from hpsearch.storage import normalise


def _study(url: str, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=url)


@pytest.mark.parametrize("value", ["float('inf')", "-float('inf')", "{'acc': 1e309}"])
def test_an_infinite_value_fails_like_nan_and_never_meets_the_target(
    write_study: Callable[..., Path], tmp_path: Path, unique_name: str, value: str
) -> None:
    """N6: +inf ended COMPLETE, became the best and met the target."""
    (tmp_path / "inf.py").write_text(
        f"def inf(params, report):\n    report({value}, 1)\n    return {value}\n"
    )
    path = write_study(f"""
        name: {unique_name}
        metric: acc
        direction: maximize
        objective: {{function: inf.py:inf}}
        search_space: {{x: {{type: float, low: 0, high: 1}}}}
        budget: {{n_trials: 2, target: 0.5, max_failures: 10}}
    """)  # fmt: skip
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    assert main(["run", str(path), "--storage", url, "-q"]) == 1  # no trial completed
    trials = _study(url, unique_name).trials
    assert len(trials) == 2  # the target was never met
    assert all(t.state == TrialState.FAIL for t in trials)
    assert all("infinite" in t.user_attrs["fail_reason"] for t in trials)


def test_an_infinite_result_of_a_command_fails(
    write_study: Callable[..., Path], tmp_path: Path, unique_name: str
) -> None:
    (tmp_path / "inf.py").write_text("print('hpsearch-result acc=inf')\n")
    path = write_study(f"""
        name: {unique_name}
        metric: acc
        objective: {{command: "{sys.executable} inf.py {{x}}"}}
        search_space: {{x: {{type: float, low: 0, high: 1}}}}
        budget: {{n_trials: 1}}
    """)  # fmt: skip
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    assert main(["run", str(path), "--storage", url, "-q"]) == 1
    (trial,) = _study(url, unique_name).trials
    assert trial.state == TrialState.FAIL
    assert "infinite" in trial.user_attrs["fail_reason"]


@pytest.mark.parametrize(
    ("url", "option"),
    [
        ("mysql+pymysql://root@h:3306/test?init_command=DROP+DATABASE+test", "init_command"),
        ("mysql://root@127.0.0.1/test?charset=utf8mb4&local_infile=1", "local_infile"),
        ("mariadb://root@h/test?read_default_file=/etc/passwd", "read_default_file"),
        ("postgresql+psycopg://root@h/test?options=-c+statement_timeout%3D1", "options"),
        ("postgresql://root@h/test?service=evil", "service"),
        ("postgresql://root@h/test?sslkeylogfile=/tmp/keys", "sslkeylogfile"),
        ("sqlite:///db.sqlite?vfs=unix-none", "vfs"),
        ("grpc://proxy:13000?init_command=x", "init_command"),
    ],
)  # fmt: skip
def test_a_storage_url_option_outside_the_allowlist_is_refused(url: str, option: str) -> None:
    """N3: the query reached the driver, so `status` ran `init_command`."""
    with pytest.raises(
        StorageError, match=rf"option '{option}' is not accepted|takes no options"
    ) as caught:
        normalise(url, "--storage", base=Path("."), password=None)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    "url",
    ["postgresql+psycopg://u@h/db?sslmode=require&connect_timeout=5&application_name=x",
     "mysql+pymysql://u@h/db?charset=utf8mb4&ssl_ca=/ca.pem", "sqlite:///db.sqlite?timeout=5"],
)  # fmt: skip
def test_connection_settings_stay_allowed(url: str) -> None:
    normalise(url, "--storage", base=Path("."), password=None)


@pytest.mark.parametrize("command", ["status", "best", "report", "export", "doctor", "run"])
def test_no_command_runs_the_statement_of_a_storage_url(
    mysql_url: str,
    quadratic_study: Callable[..., Path],
    tmp_path: Path,
    command: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    table = f"pwned_{command}"
    url = f"{mysql_url}?init_command=CREATE+TABLE+{table}+(x+int)"
    path = quadratic_study()
    extra = ["-o", str(tmp_path / "out.csv")] if command in {"export", "report"} else []
    assert main([command, str(path), "--storage", url, *extra]) == 2
    err = capsys.readouterr().err
    assert "init_command" in err
    assert len(err.strip().splitlines()) == 1
    engine = sa.create_engine(mysql_url)
    try:
        assert table not in sa.inspect(engine).get_table_names()
    finally:
        engine.dispose()


SECRET = "Sup3r@s3cr/t?x#y"


@pytest.mark.parametrize(
    "template",
    ["postgresql+psycopg://user:{p}@127.0.0.1:5432/test", "mysql+pymysql://user:{p}@127.0.0.1/test",
     "postgresql://user:{p}@127.0.0.1:port/test", "postgres ql://user:{p}@host/test",
     "user:{p}@host/db", "postgresql://user:{p}@host/db?options=x"],
)  # fmt: skip
def test_a_raw_password_in_the_environment_never_prints(
    quadratic_study: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    template: str,
) -> None:
    """N8: a raw `@` in the password of HPSEARCH_STORAGE printed what followed it."""
    monkeypatch.setenv("HPSEARCH_STORAGE", template.format(p=SECRET))
    path = quadratic_study()
    for command in (["status", str(path)], ["doctor", str(path)], ["validate", str(path)]):
        main(command)
    out = capsys.readouterr()
    shown = out.out + out.err + caplog.text
    for piece in ("Sup3r", "s3cr", "/t?x", "x#y", SECRET[6:]):
        assert piece not in shown, (piece, shown)


def _dump(path: Path) -> list[str]:
    """Every row of the SQLite database (its budget ledger and the study's attributes too)."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        return list(db.iterdump())


@pytest.mark.parametrize(
    "flags",
    [["--n-trials", "99999999999999999999"], ["--n-trials", "3000000000"],
     ["--timeout", "99999999999999999999h"], ["--timeout", "1e400"],
     ["--workers", "99999999999"]],
)  # fmt: skip
def test_a_huge_number_on_the_command_line_is_one_line_and_changes_nothing(
    quadratic_study: Callable[..., Path],
    tmp_path: Path,
    unique_name: str,
    capsys: pytest.CaptureFixture[str],
    flags: list[str],
) -> None:
    """N9: `--n-trials 99999999999999999999` changed the study's budget, then a traceback."""
    path = quadratic_study(n_trials=2)
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    assert main(["run", str(path), "--storage", url, "-q"]) == 0
    before = _dump(tmp_path / "db.sqlite")
    capsys.readouterr()
    assert main(["run", str(path), "--storage", url, "--change-budget", *flags]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    assert _dump(tmp_path / "db.sqlite") == before


@pytest.mark.parametrize(
    "budget",
    ["{n_trials: 99999999999999999999}", "{n_trials: 3000000000}", "{epochs: 9223372036854775807}",
     "{timeout: 99999999999999999999d}", "{gpu_hours: 1e300}", "{max_failures: 4294967296}"],
)  # fmt: skip
def test_a_huge_number_in_the_file_is_one_line_at_validate(
    write_study: Callable[..., Path], unique_name: str, capsys: pytest.CaptureFixture[str],
    budget: str,
) -> None:  # fmt: skip
    path = write_study(f"""
        name: {unique_name}
        objective: {{function: objective.py:quadratic}}
        search_space: {{x: {{type: float, low: 0, high: 1}}}}
        budget: {budget}
        workers: {{heartbeat_interval: 30}}
    """)  # fmt: skip
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert "budget" in err


@pytest.mark.parametrize(
    ("call", "kwargs"),
    [("run", {"n_trials": -1}), ("run", {"n_trials": 0}), ("run", {"objective": 42}),
     ("run", {"n_trials": "5"}), ("run", {"n_trials": 2.5}), ("run", {"n_trials": True}),
     ("run", {"timeout": float("nan")}), ("run", {"timeout": -3}), ("run", {"storage": 5}),
     ("run", {"name": ""}), ("run", {"change_budget": "yes"}), ("run", {"artifacts": 3}),
     ("create_study", {"n_trials": 10**20}), ("create_study", {"timeout": "2h"}),
     ("create_study", {"name": ["a"]}), ("storage_url", {"storage": b"sqlite://"})],
)  # fmt: skip
def test_the_python_api_checks_its_arguments_with_hpsearch_errors(
    quadratic_study: Callable[..., Path], tmp_path: Path, call: str, kwargs: dict[str, object]
) -> None:
    """N10: the API raised raw TypeError / ValidationError, and ran with n_trials=-1."""
    import hpsearch

    path = quadratic_study()
    function = getattr(hpsearch, call)
    if call != "storage_url":
        kwargs = {"storage": f"sqlite:///{tmp_path / 'db.sqlite'}", **kwargs}
    with pytest.raises(HpsearchError) as caught:
        function(path, **kwargs)
    assert "\n" not in str(caught.value)
    assert next(iter(kwargs if len(kwargs) == 1 else list(kwargs)[1:])) in str(caught.value)
    assert not (tmp_path / "db.sqlite").exists()  # refused before anything was opened


@pytest.mark.parametrize("bad", [42, None, ["study.yaml"], ""])
def test_the_python_api_load_checks_its_path(bad: object) -> None:
    import hpsearch

    with pytest.raises(HpsearchError, match="hpsearch.load"):
        hpsearch.load(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("content", "said"),
    [(b"name: my study\n", "a text file (it begins 'name: my study')"),
     (b"\x89PNG\r\n\x1a\n" + bytes(64), "a PNG image"), (bytes(range(256)) * 4, "binary data")],
)  # fmt: skip
def test_doctor_says_what_a_file_that_is_not_a_database_is(
    quadratic_study: Callable[..., Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    content: bytes,
    said: str,
) -> None:
    """N11: doctor called any file "reachable" with an "empty database"."""
    target = tmp_path / "study.db"
    target.write_bytes(content)
    assert main(["doctor", str(quadratic_study()), "--storage", f"sqlite:///{target}"]) == 1
    out = capsys.readouterr().out
    assert f"is {said}" in out
    assert "not an SQLite database" in out
    assert "empty database" not in out
    assert target.read_bytes() == content


def test_doctor_writes_no_database_where_there_is_none(
    quadratic_study: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "none.db"
    assert main(["doctor", str(quadratic_study()), "--storage", f"sqlite:///{target}"]) == 0
    assert "no database yet" in capsys.readouterr().out
    assert not target.exists()


def test_doctor_names_the_tables_of_another_program(
    quadratic_study: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    databases = server_database("mysql")  # a database of its own, never the session's
    mysql_url = next(databases)
    engine = sa.create_engine(mysql_url)
    with engine.begin() as c:
        c.execute(sa.text("CREATE TABLE invoices (id int)"))
    engine.dispose()
    assert main(["doctor", str(quadratic_study()), "--storage", mysql_url]) == 1
    out = capsys.readouterr().out
    assert "holds other tables (invoices) and no Optuna study" in out
    databases.close()


def _writers(path: Path, url: str, data: Path) -> dict[str, Callable[[Path, list[str]], int]]:
    study = [str(path), "--storage", url]
    return {
        "export": lambda out, force: main(["export", *study, "-o", str(out), *force]),
        "report": lambda out, force: main(["report", *study, "-o", str(out), *force]),
        "advise": lambda out, force: main(["advise", *study, "-o", str(out), *force]),
        "init": lambda out, force: main(["init", str(data), "-o", str(out), *force]),
        "examples": lambda out, force: main(["examples", "-o", str(out.parent), *force]),
    }


@pytest.mark.parametrize("writer", ["export", "report", "advise", "init", "examples"])
def test_no_output_is_replaced_unasked_or_written_through_a_link(
    quadratic_study: Callable[..., Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    writer: str,
) -> None:
    """N12: `examples -o` wrote through dangling links; `export -o`, `report -o` overwrote."""
    path = quadratic_study(n_trials=3)
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    assert main(["run", str(path), "--storage", url, "-q"]) == 0
    write = _writers(path, url, tmp_path)[writer]
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    name = {"examples": "quickstart.yaml", "export": "result.csv"}.get(writer, "result.out")
    out = out_dir / name
    out.write_text("mine")
    capsys.readouterr()
    assert write(out, []) == 2
    assert "--force" in capsys.readouterr().err
    assert out.read_text() == "mine"

    out.unlink()
    elsewhere = tmp_path / "elsewhere" / "planted"
    (tmp_path / "elsewhere").mkdir()
    out.symlink_to(elsewhere)  # dangling: writing through it would create `planted`
    assert write(out, []) == 2
    assert re.search("is a link|exist already", capsys.readouterr().err)
    assert not elsewhere.exists()
    if writer != "init":  # init would inspect the data first: its refusal is the point here
        assert write(out, ["--force"]) == 0
        assert not elsewhere.exists()
        assert not out.is_symlink()
        assert out.is_file()


def _best_trial(
    quadratic_study: Callable[..., Path],
    tmp_path: Path,
    unique_name: str,
    user_attrs: dict[str, object] | None = None,
    system_attrs: dict[str, object] | None = None,
) -> tuple[Path, str]:
    """A study whose best trial (number 1) carries these attributes, as a hand-edited or
    hostile database would."""
    path = quadratic_study(n_trials=1)
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    assert main(["run", str(path), "--storage", url, "-q"]) == 0
    study = _study(url, unique_name)
    (first,) = study.trials
    study.add_trial(optuna.trial.create_trial(
        params=first.params, distributions=first.distributions, value=-1.0,
        user_attrs=user_attrs or {}, system_attrs=system_attrs or {},
    ))  # fmt: skip
    return path, url


@pytest.mark.parametrize(
    "record",
    ["not json", '{"filename": "trial-00001.pt"}', "[1, 2]",
     '{"artifact_id": "../../../secret.txt", "filename": "trial-00001.pt", "mimetype": "x", '
     '"encoding": null}',
     '{"artifact_id": 7, "filename": "trial-00001.pt", "mimetype": "x", "encoding": null}'],
)  # fmt: skip
def test_a_bad_artifact_record_is_one_line_and_nothing_is_copied(
    quadratic_study: Callable[..., Path],
    tmp_path: Path,
    unique_name: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    record: str,
) -> None:
    """N13: a bad artifact entry made `best --download` print a traceback; an id with `../`
    read outside the artifact store."""
    path, url = _best_trial(
        quadratic_study, tmp_path, unique_name, system_attrs={"artifacts:x": record}
    )
    (tmp_path / "store").mkdir()
    (tmp_path / "secret.txt").write_text("not the study's")
    monkeypatch.setenv("HPSEARCH_ARTIFACT_STORE", str(tmp_path / "store"))
    capsys.readouterr()
    download = tmp_path / "down"
    assert main(["best", str(path), "--storage", url, "--download", str(download)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    assert not list(download.glob("*")) if download.exists() else True


@pytest.mark.parametrize("planted", ["secret.txt", "other/checkpoints/trial-00001.pt"])
def test_a_checkpoint_attribute_naming_another_file_is_not_copied(
    quadratic_study: Callable[..., Path],
    tmp_path: Path,
    unique_name: str,
    capsys: pytest.CaptureFixture[str],
    planted: str,
) -> None:
    target = tmp_path / planted
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("private")
    path, url = _best_trial(
        quadratic_study, tmp_path, unique_name, user_attrs={"checkpoint": str(target)}
    )
    capsys.readouterr()
    download = tmp_path / "down"
    assert main(["best", str(path), "--storage", url, "--download", str(download)]) == 2
    err = capsys.readouterr().err
    assert "is not this study's checkpoint" in err
    assert not (download / "trial-00001.pt").exists()


def test_the_study_s_own_local_checkpoint_is_still_copied(
    quadratic_study: Callable[..., Path], tmp_path: Path, unique_name: str
) -> None:
    own = tmp_path / "artifacts" / unique_name / "checkpoints" / "trial-00001.pt"
    own.parent.mkdir(parents=True)
    own.write_bytes(b"weights")
    path, url = _best_trial(
        quadratic_study, tmp_path, unique_name, user_attrs={"checkpoint": str(own)}
    )
    download = tmp_path / "down"
    assert main(["best", str(path), "--storage", url, "--download", str(download)]) == 0
    assert (download / "trial-00001.pt").read_bytes() == b"weights"


HUGE_LINE = """
import sys
chunk = b"x" * (1 << 20)
for _ in range(400):  # one 400 MB line, written a megabyte at a time
    sys.stdout.buffer.write(chunk)
sys.stdout.buffer.write(b"\\nhpsearch-report step=1 value=0.5\\nhpsearch-result value=0.75\\n")
"""
# The peak is this process's own (VmHWM): `ru_maxrss` also carries the peak of the process it
# was forked from across `exec` (a pytest worker that trained a model reads as 1 GB).
READ_IT = """
import sys
from pathlib import Path
from hpsearch.objective.command import run_command
steps = []
result = run_command([sys.executable, "-c", sys.argv[1]], env={}, cwd=Path("."),
                     report=lambda metrics, step: steps.append((dict(metrics), step)))
with open("/proc/self/status") as status:
    peak = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
print(result, steps, peak // 1024)
"""


def test_a_command_s_huge_output_line_is_read_in_bounded_memory(tmp_path: Path) -> None:
    """N14: a 400 MB output line took 945 MB of memory; now the line is cut as it is read."""
    done = subprocess.run(
        [sys.executable, "-c", READ_IT, HUGE_LINE],
        capture_output=True, text=True, timeout=600, cwd=tmp_path, check=True,
    )  # fmt: skip
    peak_mb = int(done.stdout.split()[-1])
    assert "{'value': 0.75}" in done.stdout  # the metric lines after it are still read
    assert "({'value': 0.5}, 1)" in done.stdout
    assert peak_mb < 300, f"peak RSS {peak_mb} MB for a 400 MB line"
