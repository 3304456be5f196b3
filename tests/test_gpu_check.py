"""`benchmarks/gpu_check.py` on a machine without a GPU: the real CPU run, and its arithmetic.

The GPU run itself needs a GPU (docs/batch-size.md, "Checking on a GPU"); here the CPU path runs
for real in a subprocess, and what the script computes or decides without a GPU is checked on
its own: the memory fraction of the 8 GiB cap, the verdict on a fit, the table, and that a
section that crashes or hangs becomes a row instead of losing the others.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
GiB = 2**30


@pytest.fixture(scope="module")
def gpu_check() -> Iterator[ModuleType]:
    saved = list(sys.path)  # the script puts benchmarks/ first on the path: undo it after
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    yield module
    sys.path[:] = saved


@pytest.fixture(scope="module")
def sections(gpu_check: ModuleType) -> ModuleType:
    return sys.modules["gpu_check_sections"]  # beside the script, loaded by it


def _table(text: str) -> list[list[str]]:
    """The rows of the markdown table, as cells, without header and separator."""
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    return [[c.strip() for c in line.strip("|").split(" | ")] for line in lines[2:]]


@pytest.mark.slow  # a real run: a child process, torch imported twice, a little CPU training
def test_the_cpu_run_says_what_it_skipped_and_why(tmp_path: Path) -> None:
    out = tmp_path / "results.md"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--cpu", "--out", str(out)],
        capture_output=True, text=True, timeout=240, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    rows = _table(out.read_text())
    by_section: dict[str, list[list[str]]] = {}
    for row in rows:
        by_section.setdefault(row[0], []).append(row)
    assert list(by_section) == ["versions", "fit", "oom_trial", "throughput", "study"]
    assert rows[0][1] == "software"  # versions come first
    assert "torch" in rows[0][3]
    assert ["versions", "nvidia-smi -L"] in [r[:2] for r in by_section["versions"]]
    for section in ("fit", "oom_trial", "study"):
        ((_, check, result, detail),) = by_section[section]
        assert (check, result) == ("-", "skipped")
        assert detail.startswith("no CUDA device: ")
        assert len(detail) > 40  # and why
        assert f"[{section}] skipped: no CUDA device" in proc.stderr
    throughput = {r[1]: r for r in by_section["throughput"]}
    assert throughput["trainer / plain loop"][2] == "info"  # the target is for a GPU
    assert float(throughput["trainer / plain loop"][3].split()[0]) > 0
    assert throughput["GPU utilisation"][2] == "skipped"
    assert all(r[2] in ("info", "skipped") for r in rows), rows


@pytest.mark.parametrize(
    ("total", "expected"),
    [
        (143_771 * 2**20, 8192 / 143_771),  # an H200 as nvidia-smi reports it: 143771 MiB
        (80 * GiB, 0.1),
        (8 * GiB, 1.0),  # a real 8 GiB card needs no cap
        (6 * GiB, 1.0),  # a smaller card cannot stand in for a larger one: all of it
    ],
)
def test_the_8_gib_cap_as_a_memory_fraction(
    sections: ModuleType, total: int, expected: float
) -> None:
    fraction = sections.memory_fraction(8 * GiB, total)
    assert fraction == pytest.approx(expected)
    assert fraction * total <= 8 * GiB + 1


def test_a_memory_fraction_needs_real_sizes(sections: ModuleType) -> None:
    with pytest.raises(ValueError, match="positive"):
        sections.memory_fraction(8 * GiB, 0)


@pytest.mark.parametrize(
    ("model", "precision", "limit", "fp32", "result"),
    [
        ("resnet50", "fp32", 64, None, "ok"),
        ("resnet50", "fp32", 32, None, "ok"),
        ("resnet50", "fp32", 256, None, "FAIL"),  # 8 GB cards are not reported to hold it
        ("resnet50", "fp32", 8, None, "FAIL"),
        ("resnet50", "bf16", 128, 64, "ok"),
        ("resnet50", "bf16", 32, 64, "FAIL"),  # bf16 must hold at least what fp32 holds
        ("small_cnn", "fp32", 512, None, "info"),  # no published figure to hold it to
    ],
)
def test_a_fit_is_judged_against_what_8_gb_cards_hold(
    sections: ModuleType, model: str, precision: str, limit: int, fp32: int | None, result: str
) -> None:
    assert sections.judge_fit(model, precision, limit, fp32)[0] == result


def _child(body: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(body)]


def test_a_section_that_crashes_becomes_a_row_and_keeps_its_rows(gpu_check: ModuleType) -> None:
    row = gpu_check.Row("fit", "resnet50 fp32: probe answer", "ok", "64").line()
    argv = _child(f"""
        import sys
        print({row!r}, flush=True)
        sys.exit("cuDNN went away")
    """)
    first, failed = gpu_check.collect("fit", argv, timeout=60)
    assert first == gpu_check.Row("fit", "resnet50 fp32: probe answer", "ok", "64")
    assert (failed.section, failed.check, failed.result) == ("fit", "section", "error")
    assert failed.detail == "exit code 1; cuDNN went away"


def test_a_section_that_hangs_is_stopped_with_its_children(gpu_check: ModuleType) -> None:
    row = gpu_check.Row("study", "started", "info").line()
    # The section's own child (a probe, `hpsearch run`) holds the pipe too: it must die with it,
    # or reading the pipe would wait out its 10 minutes, far past the test's timeout. A shell
    # prints the row within the 5 s limit even on a loaded machine; Python's start-up may not.
    argv = ["sh", "-c", f"printf '%s\\n' {shlex.quote(row)}; sleep 600 & sleep 600"]
    kept, stopped = gpu_check.collect("study", argv, timeout=5)
    assert kept.check == "started"
    assert stopped.result == "error"
    match = re.fullmatch(r"watchdog: stopped after (\d+) s \(its limit\)", stopped.detail)
    assert match, stopped.detail
    assert int(match.group(1)) >= 5  # (later on a loaded machine)


def test_a_section_that_raises_in_process_becomes_a_row(gpu_check: ModuleType) -> None:
    def broken() -> list[object]:
        raise RuntimeError("no driver")

    (row,) = gpu_check.guarded("versions", broken)
    assert (row.result, row.detail) == ("error", "RuntimeError: no driver")


def test_the_table_escapes_cells_and_counts_results(gpu_check: ModuleType) -> None:
    rows = [
        gpu_check.Row("fit", "a | b", "ok", "x\ny"),
        gpu_check.Row("fit", "c", "FAIL", ""),
        gpu_check.Row("study", "-", "skipped", "no CUDA device: why"),
    ]
    text = gpu_check.markdown(rows, "here")
    assert "here; rows: 1 ok, 1 FAIL, 0 error, 1 skipped." in text
    assert "| fit | a \\| b | ok | x y |" in text
    assert len(_table(text)) == 3


def test_nvidia_smi_utilisation_lines(gpu_check: ModuleType) -> None:
    speed = importlib.import_module("gpu_check_speed")  # benchmarks/ is on the path for now
    assert speed.parse_utilisation("87\n") == 87.0
    assert speed.parse_utilisation("[N/A]") is None  # some virtual GPUs report no utilisation


def test_utilisation_is_asked_of_nvidia_smi_while_it_runs(
    gpu_check: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "nvidia-smi"  # answers as the real one does for the script's query
    fake.write_text("#!/bin/sh\necho 42\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    speed = importlib.import_module("gpu_check_speed")
    start = time.perf_counter()
    sampler = speed.Utilisation()
    deadline = time.monotonic() + 120  # a hang guard: it samples every 100 ms
    while len(sampler.samples) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    sampler.stop()
    mean, count = sampler.mean(start, time.perf_counter())
    assert mean == 42.0
    assert count >= 2
    assert sampler.mean(0.0, start) == (None, 0)  # nothing from before it started


def test_sections_the_budget_cannot_hold_are_skipped_not_started(
    gpu_check: ModuleType, tmp_path: Path
) -> None:
    emitted: list[int] = []
    rows = gpu_check.run_all(
        cuda=True, budget=1.0, tmp=tmp_path, emit=lambda done: emitted.append(len(done))
    )  # as on a GPU machine, but with one second: only the instant versions section runs
    skipped = {r.section: r.detail for r in rows if r.section != "versions"}
    assert list(skipped) == ["fit", "oom_trial", "throughput", "study"]
    assert all(d.startswith("watchdog: ") for d in skipped.values()), skipped
    assert len(emitted) == 5  # the table is written after every section
    assert not any(tmp_path.iterdir())  # no section child started
