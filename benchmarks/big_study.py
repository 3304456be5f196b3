"""`status`, `best` and `report` on a 20,000-trial study, against Optuna's own CLI, in one run.

Builds a study as hpsearch's workers write one (`big_study_build.py`: the quickstart's trainer,
epochs 10-20, a learning curve per trial, about 60% pruned, 35% complete, 5% failed) on SQLite
and on PostgreSQL, then runs each command as its own process and reads that process's CPU time
(user + system) and peak memory (max RSS) from `os.wait4`:

    .venv/bin/python benchmarks/big_study.py [--trials 20000] [--storages sqlite,postgresql]
        [--repeats 3] [--postgres postgresql+psycopg://root@127.0.0.1:5432/test]

The SQLite study is built once per size and build script and kept in the temporary folder
(`hpsearch-big-study/`); PostgreSQL gets a database of its own, dropped at the end. The limits
(issue 22): `status` and `best` at most 1 s of CPU (and a `status --watch` refresh: the CPU it
adds per refresh, every 10 s by default), `report` at most 15 s and 400 MB,
`hpsearch --help` and `--version` no slower than `optuna --help` (the same run's median, with
5% for noise). `optuna trials` (every trial read and printed) is the yardstick beside each
figure. Each figure is the median of --repeats runs (`report`: of --report-repeats).
`--trials 2000` is a quick run; `--hpsearch PATH` times another checkout's command (before and
after a change) on the same study.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from big_study_build import STUDY_NAME, build, write_study_file

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
DEFAULT_POSTGRES = os.environ.get(
    "HPSEARCH_TEST_POSTGRES", "postgresql+psycopg://root@127.0.0.1:5432/test"
)
_IMPORT = "import hpsearch.cli, hpsearch.commands.status, hpsearch.inspect.status"
HELP_NOISE = 1.05  # `--help` within 5% of optuna's: the same run's noise, not a slowdown


@dataclass(frozen=True)
class Command:
    name: str
    argv: list[str]
    cpu_limit: float | str | None = None  # seconds, or the name of the command to match
    rss_limit_mb: float | None = None
    repeats: str = "repeats"  # the option that says how often it runs


@dataclass(frozen=True)
class Figure:
    cpu_s: float
    rss_mb: float


# Each command runs as on a user's machine, where an install has compiled its modules: with
# PYTHONDONTWRITEBYTECODE set (some CI and container images set it), an editable checkout
# compiles hpsearch's 90-odd modules again in every process, 0.25 s of CPU that no user pays.
_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def measure(argv: list[str], cwd: Path) -> Figure:
    """One run of `argv`: its own CPU time and peak memory (not any other child's)."""
    process = subprocess.Popen(
        argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=_ENV
    )
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    err = process.stderr.read().decode() if process.stderr else ""
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:3])} exited {process.returncode}: {err[-2000:]}")
    return Figure(usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024)  # KiB on Linux


def commands(study: Path, url: str, out: Path, hpsearch: str) -> list[Command]:
    hp = [hpsearch]
    on = [str(study), "--storage", url, "-q"]
    optuna = [str(BIN / "optuna")]
    named = ["--storage", url, "--study-name", STUDY_NAME]
    return [
        Command("hpsearch status", [*hp, "status", *on], 1.0),
        Command("hpsearch status --json", [*hp, "status", *on, "--json"], 1.0),
        Command("hpsearch best", [*hp, "best", *on], 1.0),
        Command(
            "hpsearch report",
            [*hp, "report", *on, "-o", str(out), "--force"],
            15.0,
            400,
            "report_repeats",
        ),  # fmt: skip
        Command("hpsearch --help", [*hp, "--help"], "optuna --help"),
        Command("hpsearch --version", [*hp, "--version"], "optuna --help"),
        Command("optuna trials", [*optuna, "trials", *named, "-f", "json"]),
        # hpsearch's start-up alone (this environment's): Python, pydantic, SQLAlchemy, Optuna.
        Command("start-up: import hpsearch status", [sys.executable, "-c", _IMPORT]),
        Command("optuna best-trial", [*optuna, "best-trial", *named, "-f", "json"]),
        Command("optuna --help", [*optuna, "--help"]),
    ]


def run_all(
    study: Path, url: str, args: argparse.Namespace
) -> tuple[list[tuple[Command, Figure]], float]:
    """Every command, --repeats times each, interleaved so machine noise hits all alike."""
    out = study.with_name("report.html")
    out.unlink(missing_ok=True)
    todo = [c for c in commands(study, url, out, args.hpsearch) if getattr(args, c.repeats)]
    for c in todo:  # once untimed: modules compiled and cached, the file in the page cache
        if c.repeats == "repeats":
            measure(c.argv, study.parent)
    runs: dict[str, list[Figure]] = {c.name: [] for c in todo}
    for round_ in range(max(args.repeats, args.report_repeats)):
        for c in todo:
            if round_ < getattr(args, c.repeats):
                runs[c.name].append(measure(c.argv, study.parent))
    size_mb = out.stat().st_size / 1e6 if out.exists() else 0.0
    results = [
        (c, Figure(statistics.median(f.cpu_s for f in runs[c.name]),
                   statistics.median(f.rss_mb for f in runs[c.name])))
        for c in todo
    ]  # fmt: skip
    json_status, plain = results[1]
    if json_status.name == "hpsearch status --json":
        watch = Command("hpsearch status --watch (a refresh)", [], 1.0)
        argv = [*json_status.argv, "--watch", "0.5"]
        results.insert(2, (watch, watch_refresh(argv, study, plain)))
    return results, size_mb


def watch_refresh(argv: list[str], study: Path, plain: Figure, refreshes: int = 8) -> Figure:
    """The CPU of one `status --watch` refresh: the run's, less a plain `status --json`'s, over
    the refreshes after the first (a refresh cut short by Ctrl-C counts too: an upper bound)."""
    process = subprocess.Popen(argv, cwd=study.parent, stdout=subprocess.PIPE, env=_ENV)
    assert process.stdout is not None
    for _ in range(refreshes):
        process.stdout.readline()
    process.send_signal(signal.SIGINT)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    cpu = usage.ru_utime + usage.ru_stime
    return Figure(max(0.0, cpu - plain.cpu_s) / (refreshes - 1), usage.ru_maxrss / 1024)


def table(kind: str, results: list[tuple[Command, Figure]]) -> str:
    by_name = {c.name: f for c, f in results}
    yardstick = by_name["optuna trials"].cpu_s
    lines = [
        f"\n{kind}",
        "",
        "| command | CPU s | max RSS MB | vs `optuna trials` | limit | within? |",
        "| --- | ---: | ---: | ---: | --- | --- |",
    ]
    for c, f in results:
        limit, ok = "", ""
        if isinstance(c.cpu_limit, str):
            allowed = by_name[c.cpu_limit].cpu_s * HELP_NOISE
            limit, ok = f"<= `{c.cpu_limit}` ({allowed:.2f} s)", _yes(f.cpu_s <= allowed)
        elif c.cpu_limit is not None:
            limit, ok = f"<= {c.cpu_limit:g} s", _yes(f.cpu_s <= c.cpu_limit)
        if c.rss_limit_mb is not None:
            limit += f", <= {c.rss_limit_mb:g} MB"
            ok = _yes(ok == "yes" and f.rss_mb <= c.rss_limit_mb)
        ratio = f"{f.cpu_s / yardstick:.2f}x"
        lines.append(f"| `{c.name}` | {f.cpu_s:.2f} | {f.rss_mb:.0f} | {ratio} | {limit} | {ok} |")
    return "\n".join(lines)


def _yes(ok: bool) -> str:
    return "yes" if ok else "**no**"


def sqlite_study(folder: Path, trials: int) -> tuple[str, float]:
    """The cached SQLite study of `trials` trials (built when missing); (URL, build seconds)."""
    script = (HERE / "big_study_build.py").read_bytes()
    key = hashlib.sha256(script + str(trials).encode()).hexdigest()[:12]
    cache = Path(tempfile.gettempdir()) / "hpsearch-big-study" / f"{trials}-{key}.db"
    took = 0.0
    if not cache.is_file():
        cache.parent.mkdir(parents=True, exist_ok=True)
        building = cache.with_suffix(".building")
        building.unlink(missing_ok=True)
        started = time.perf_counter()
        build(f"sqlite:///{building}", folder / "study.yaml", trials)
        took = time.perf_counter() - started
        shutil.move(building, cache)
    return f"sqlite:///{cache}", took


def postgres_study(admin_url: str, folder: Path, trials: int) -> tuple[str, float]:
    """A database of its own with the study; (URL, build seconds). Drop it with `drop`."""
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    name = f"hpsearch_big_{uuid.uuid4().hex[:8]}"
    with admin.connect() as c:
        c.execute(sa.text(f"CREATE DATABASE {name}"))
    admin.dispose()
    url = sa.engine.make_url(admin_url).set(database=name).render_as_string(False)
    started = time.perf_counter()
    build(url, folder / "study.yaml", trials)
    return url, time.perf_counter() - started


def drop(admin_url: str, url: str) -> None:
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(
            sa.text(f"DROP DATABASE IF EXISTS {sa.engine.make_url(url).database} WITH (FORCE)")
        )
    admin.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20_000)
    parser.add_argument("--storages", default="sqlite,postgresql")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--report-repeats", type=int, default=1, help="0: no report")
    parser.add_argument(
        "--hpsearch", default=str(BIN / "hpsearch"), help="the hpsearch command to time "
        "(another checkout's, to compare; default: this environment's)",
    )  # fmt: skip
    parser.add_argument(
        "--postgres", default=DEFAULT_POSTGRES, help="server to make a database on"
    )
    args = parser.parse_args()
    print(f"{args.trials:,} trials; CPU s and max RSS of each command's process, median of "
          f"{args.repeats} runs (report: {args.report_repeats})", flush=True)  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        study = write_study_file(folder, args.trials)
        for kind in args.storages.split(","):
            if kind == "sqlite":
                url, took = sqlite_study(folder, args.trials)
            elif kind == "postgresql":
                url, took = postgres_study(args.postgres, folder, args.trials)
            else:
                raise SystemExit(f"--storages: sqlite or postgresql, not {kind!r}")
            try:
                results, size_mb = run_all(study, url, args)
            finally:
                if kind == "postgresql":
                    drop(args.postgres, url)
            built = f"built in {took:.0f} s" if took else "built before, cached"
            print(table(f"{kind} ({built}; report {size_mb:.1f} MB)", results), flush=True)


if __name__ == "__main__":
    main()
