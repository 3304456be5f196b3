"""The sample outputs in the docs come from real runs, and stay in step with them.

Each test runs the page's own steps (getting-started: on the page's own generated images, its
script), then compares the page's block with what the command prints now, after normalising what
differs from run to run: times of day, durations, paths, counts of cores and RAM, every number,
and the names of studies, datasets and workers. Where the page shows a longer study than a test
can run (getting-started's 20 trainings), the test runs the same steps shorter and compares the
structure: the lines, labels and phrases.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from hpsearch.batch_size.device import visible_gpus

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "getting-started.md"

pytestmark = pytest.mark.skipif(
    bool(visible_gpus()), reason="the page's samples are from a machine without a GPU"
)


def _block(page: str, marker: str) -> str:
    """The first fenced block after `marker` on docs/`page`."""
    text = (ROOT / "docs" / page).read_text()
    opening = text.index("```\n", text.index(marker) + len(marker)) + 4
    return text[opening : text.index("```\n", opening)]


def _output_after(command: str) -> str:
    """The output block that follows getting-started's ```sh block running `command`."""
    return _block("getting-started.md", f"```sh\n{command}\n```\n")


NAMES = r"\b(shapes|quickstart|digits|resnet18-cifar10-sweep|demo)\b"


def _normalised(output: str) -> list[str]:
    lines = []
    for line in output.strip().splitlines():
        line = re.sub(r"\b\d\d:\d\d:\d\d\b", "T", line)
        line = re.sub(r"sqlite:///\S+", "URL", line)
        line = re.sub(r"[\w.-]+:\d+#\d+", "WORKER", line)
        line = re.sub(NAMES, "NAME", line)
        line = re.sub(r"(?<!\w)/\S+", "PATH", line)
        line = re.sub(r"\d([\d.,]*\d)?(e-?\d+)?", "N", line)
        line = re.sub(r"\bN ?(ms|s|m|min|h|d|days)(N(m|s))?\b", "N U", line)
        lines.append(line.rstrip())
    return lines


def _env(folder: Path) -> dict[str, str]:
    # This user's data and cache folders stay untouched (the timing cache, the default storage).
    env = {**os.environ, "HPSEARCH_HOME": str(folder / "data"), "PYTHONUNBUFFERED": "1"}
    return {**env, "HPSEARCH_CACHE_DIR": str(folder / "cache")}


def _hpsearch(folder: Path, *argv: str, code: int = 0) -> str:
    """What `hpsearch ARGV` shows in a terminal (stderr, then stdout), run in `folder`."""
    done = subprocess.run(
        [sys.executable, "-m", "hpsearch", *argv],
        cwd=folder, env=_env(folder), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == code, done.stderr
    return done.stderr + done.stdout


@pytest.fixture(scope="module")
def tutorial(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The page's steps 0-2, run for real: its script, `hpsearch init shapes`, `validate`."""
    folder = tmp_path_factory.mktemp("tuning")
    text = PAGE.read_text()
    script = text[text.index("```python\n") + 10 :]
    (folder / "make_shapes.py").write_text(script[: script.index("```\n")])
    subprocess.run([sys.executable, "make_shapes.py"], cwd=folder, check=True, timeout=120)
    return {
        "folder": str(folder),
        "init": _hpsearch(folder, "init", "shapes"),
        "validate": _hpsearch(folder, "validate", "study.yaml"),
    }


@pytest.fixture(scope="module")
def tutorial_run(tutorial: dict[str, str]) -> dict[str, str]:
    """The page's steps 3-5 on its study, shortened: 6 trainings of 2 to 4 epochs (not 20 of
    10 to 60), so that the run takes seconds."""
    folder = Path(tutorial["folder"])
    study = (folder / "study.yaml").read_text()
    study = study.replace("{type: int, low: 10, high: 60}", "{type: int, low: 2, high: 4}")
    (folder / "study.yaml").write_text(study.replace("epochs: 30}", "epochs: 3}"))
    return {
        "run": _hpsearch(folder, "run", "study.yaml", "--n-trials", "6"),
        "status": _hpsearch(folder, "status", "study.yaml"),
        "advise": _hpsearch(folder, "advise", "study.yaml", "-o", "study-next.yaml"),
        "best": _hpsearch(folder, "best", "study.yaml"),
        "folder": str(folder),
    }


@pytest.mark.parametrize(
    ("step", "command"),
    [("init", "hpsearch init shapes"), ("validate", "hpsearch validate study.yaml")],
)
def test_the_getting_started_sample_is_what_the_command_prints(
    tutorial: dict[str, str], step: str, command: str
) -> None:
    """getting-started's `validate` sample showed `sampler: tpe pruner: median` and the old
    default storage long after both had changed."""
    assert _normalised(_output_after(command)) == _normalised(tutorial[step])


def _rows(output: str) -> list[str]:
    """`status` as one line per label, its wrapped lines joined, spaces dropped (the table wraps
    at 100 columns, so where depends on the lengths of paths and numbers)."""
    rows: list[str] = []
    for line in output.strip().splitlines():
        if line.startswith(" ") and rows:  # a path wraps after a hyphen
            rows[-1] += ("" if rows[-1].endswith("-") else " ") + line.strip()
        else:
            rows.append(line)
    return [re.sub(r"\s+", "", row) for row in _normalised("\n".join(rows))]


@pytest.mark.slow  # 6 real trainings
@pytest.mark.parametrize(
    ("page", "marker"),
    [
        ("getting-started.md", "(docs/inspect.md explains every line):"),
        ("inspect.md", "A compact table, at most 100 columns wide"),
    ],
)
def test_the_status_samples_have_the_lines_status_prints(
    tutorial_run: dict[str, str], page: str, marker: str
) -> None:
    """inspect.md's `status` sample showed a `pruning` line in words the command had stopped
    using."""
    shown, real = _rows(_block(page, marker)), _rows(tutorial_run["status"])
    if "pruningnotrialpruned" in real:  # 6 trainings need not prune one: no figures to compare
        shown, real = (
            [row for row in rows if not row.startswith("pruning")] for rows in (shown, real)
        )
    assert shown == real


@pytest.mark.slow  # 6 real trainings
def test_the_best_sample_is_what_best_prints(tutorial_run: dict[str, str]) -> None:
    sample = _block("inspect.md", "`epochs_run`, `seed`, ...):")
    assert _normalised(sample) == _normalised(tutorial_run["best"])


@pytest.mark.slow  # 6 real trainings
def test_the_run_sample_has_the_lines_run_logs(tutorial_run: dict[str, str]) -> None:
    """Every kind of line getting-started's `run` sample shows (its 20 trainings shortened to 6
    here) is one the run logged, in the same words."""
    logged = set(_normalised(tutorial_run["run"]))
    # Whether a trial of 6 is pruned is up to the pruner: those lines are checked when one was.
    if not any("PRUNED" in line for line in logged):
        logged.add("T INFO [N/N] trial N PRUNED at step N | best N (trial N) | ETA N U")
        logged |= {line.replace("N complete (", "N complete, N pruned (") for line in logged}
    shown = _normalised(_block("getting-started.md", "then one progress line:"))
    assert [line for line in shown if line not in logged and not line.endswith("...")] == []


def _paragraphs(output: str) -> list[str]:
    """`advise` without what depends on the trials found: its head, its topics, its pruning
    figures and the file it wrote. `ranges` is shown only when a best trial sits at a bound, and
    `pruning` only when a trial was pruned, which 6 trials of the page's study may not be."""
    lines = _normalised(output)
    kept = lines[:2] + [line for line in lines[2:] if line and not line.startswith(" ")]
    kept += [line for line in lines if line.startswith("  pruning saved")]
    return [line for line in kept if line not in ("ranges", "pruning")]


@pytest.mark.slow  # 6 real trainings
def test_the_getting_started_advice_has_the_topics_advise_prints(
    tutorial_run: dict[str, str],
) -> None:
    sample = _output_after("hpsearch advise study.yaml -o study-next.yaml")
    shown, real = _paragraphs(sample), _paragraphs(tutorial_run["advise"])
    if not any(line.startswith("  pruning saved") for line in real):  # none of 6 was pruned
        shown = [line for line in shown if not line.startswith("  pruning saved")]
    assert shown == real


@pytest.mark.slow  # 6 real trainings
def test_the_dashboard_sample_is_what_dashboard_prints(tutorial_run: dict[str, str]) -> None:
    """getting-started's `dashboard` lines; the server it then runs is stopped, unvisited."""
    server = subprocess.Popen(
        [sys.executable, "-m", "hpsearch", "dashboard", "study.yaml", "--port", "0"],
        cwd=tutorial_run["folder"], env=_env(Path(tutorial_run["folder"])),
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    guard = threading.Timer(300, server.kill)  # a server that never prints fails, not hangs
    guard.start()
    try:
        assert server.stdout is not None
        printed = "".join(server.stdout.readline() for _ in range(3))
    finally:
        guard.cancel()
        server.terminate()
        server.wait(timeout=60)
    assert _normalised(_output_after("hpsearch dashboard study.yaml")) == _normalised(printed)


LR_DEMO = """\
name: lr-demo
metric: score
direction: maximize
sampler: {type: tpe, seed: 0}
pruner: {type: none}
budget: {n_trials: 30}
objective: {function: objectives.py:lr_only}
search_space:
  lr: {type: float, low: 1.0e-4, high: 0.1, log: true}
  x: {type: float, low: 0.0, high: 1.0}
  batch_size: {type: power_of_two, low: 16, high: 128}
"""
LR_ONLY = """\
import math

def lr_only(params, report):
    \"\"\"Depends on lr alone, best at lr = 1: above the top of the searched range.\"\"\"
    return -math.log10(params["lr"]) ** 2
"""


@pytest.mark.slow  # a 30-trial study, then fANOVA
def test_the_advise_sample_is_what_advise_prints(tmp_path: Path) -> None:
    """inspect.md's `advise` sample: the study it describes, run for real."""
    (tmp_path / "lr.yaml").write_text(LR_DEMO)
    (tmp_path / "objectives.py").write_text(LR_ONLY)
    _hpsearch(tmp_path, "run", "lr.yaml", "-q")
    sample = _block("inspect.md", "after 30 trials:")
    assert _normalised(sample) == _normalised(_hpsearch(tmp_path, "advise", "lr.yaml"))


def test_the_study_file_mistake_samples_are_what_validate_prints(tmp_path: Path) -> None:
    """study-file.md's mistakes, made for real: a misspelt budget key on line 6, a log range from
    0 on line 12; the first is reported with a count of the others, then the next once fixed."""
    lines = LR_DEMO.replace("n_trials", "n_trails").replace("1.0e-4", "0.0").splitlines()
    lines[8:8] = [f"  {x}: {{type: float, low: 0.0, high: 1.0}}" for x in "yzw"]  # lr: line 12
    (tmp_path / "studies").mkdir()
    (tmp_path / "studies" / "objectives.py").write_text(LR_ONLY)
    (tmp_path / "studies" / "x.yaml").write_text("\n".join(lines) + "\n")
    first = _hpsearch(tmp_path, "validate", "studies/x.yaml", code=2)
    assert first == _block("study-file.md", "and exit code 2;")
    fixed = (tmp_path / "studies" / "x.yaml").read_text().replace("n_trails", "n_trials")
    (tmp_path / "studies" / "x.yaml").write_text(fixed)
    second = _hpsearch(tmp_path, "validate", "studies/x.yaml", code=2)
    assert second == _block("study-file.md", "Once that is fixed:")


def test_the_data_summary_sample_is_what_validate_prints(tutorial: dict[str, str]) -> None:
    """trainer.md's `summarize(dataset)` sample: the `data:` part of getting-started's
    `validate`, on the same images."""
    shown = tutorial["validate"].split("\n  data:\n")[1].split("\n  time:")[0]
    summary = "\n".join(line.removeprefix("    ") for line in shown.splitlines())
    sample = _block("trainer.md", "prints the summary from `summarize(dataset)`")
    assert _normalised(sample) == _normalised(summary)
