"""The real subprocess probe, end to end on CPU, under a fake device memory budget.

There is no GPU here, so the GPU's memory limit is faked: the child enforces
HPSEARCH_FAKE_MEMORY_LIMIT_BYTES with a dispatch mode that raises a real torch.OutOfMemoryError
once the live tensor bytes pass it (test-only; see hpsearch/batch_size/probe.py). All else is
real: the child process, the trainer's own setup_training and train steps, exit codes, JSON,
the caches. Three launches import torch (a few seconds each); the others exit before that.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from hpsearch.batch_size import (
    DeviceHooks,
    DeviceInfo,
    FitRequest,
    InMemorySharedLimits,
    LocalCache,
    format_table,
    probe_in_subprocess,
    resolve_high,
)
from hpsearch.batch_size import probe as _probe_child
from hpsearch.train.options import DatasetOptions, TrainerOptions

# Real processes and real training: minutes in all, so not in `make test-fast`.
pytestmark = pytest.mark.slow

# small_cnn on 3x32x32 holds about 0.7 MiB of tensors per sample plus 1 MiB of weights and
# optimizer state (measured with the same counter): 16 fits in 16 MiB, 32 does not.
BUDGET = 16 * 2**20
OPTIONS = TrainerOptions(dataset=DatasetOptions(name="digits"), model="small_cnn", device="cpu")
SHAPE = (3, 32, 32)


def test_the_subprocess_probe_fits_below_the_budget_and_ooms_above(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(_probe_child.FAKE_LIMIT_ENV, str(BUDGET))
    fake_gpu = DeviceInfo("fake", "16 MiB test budget", BUDGET, "test")
    shared = InMemorySharedLimits()
    rng = resolve_high(
        FitRequest(OPTIONS, low=16, high=64, device="cpu", input_shape=SHAPE, num_classes=10),
        local_cache=LocalCache(tmp_path),
        shared=shared,
        hooks=DeviceHooks(device_info=fake_gpu),
    )
    assert (rng.high, rng.source) == (16, "probe")
    by_size = {o.batch_size: o for o in rng.tried}
    assert sorted(by_size) == [16, 32]  # two launches: 32 (middle of 16..64), then 16
    fits, oom = by_size[16], by_size[32]
    assert fits.ok
    assert fits.reason == "ok"
    assert fits.peak_bytes is not None
    assert 8 * 2**20 < fits.peak_bytes <= BUDGET
    assert fits.seconds > 0
    assert not oom.ok
    assert oom.reason == "oom"
    assert _probe_child.FAKE_LIMIT_ENV in oom.detail
    table = format_table(rng.tried)
    assert "16  yes" in table
    assert "32  no" in table
    assert "oom: fake device out of memory" in table
    # Stored in both caches, with the table.
    stored = shared.get(rng.key)
    assert stored is not None
    assert stored["limit"] == 16
    assert stored["failure"] == 32
    assert LocalCache(tmp_path).get(rng.key) == stored


def test_cpu_limit_comes_from_a_measured_estimate_not_a_probe(tmp_path: Path) -> None:
    """The real estimate child on small_cnn; free RAM is injected so the answer is fixed."""
    cache = LocalCache(tmp_path)
    rng = resolve_high(
        FitRequest(OPTIONS, low=8, high="auto", device="cpu", input_shape=SHAPE, num_classes=10),
        local_cache=cache,
        shared=InMemorySharedLimits(),
        hooks=DeviceHooks(available_ram=2**30),
    )
    stored = cache.get(rng.key)
    assert stored is not None
    assert stored["source"] == "cpu_estimate"
    per_sample = stored["estimate"]["per_sample_bytes"]
    fixed = stored["estimate"]["fixed_bytes"]
    assert 0.3 * 2**20 < per_sample < 1.5 * 2**20
    assert 0 < fixed < 8 * 2**20
    by_ram = int((2**30 * 0.9 / 1.5 - fixed) // per_sample)  # see CPU_SAFETY
    assert rng.high == min(256, 1 << (by_ram.bit_length() - 1))
    assert rng.tried == ()


def _fake_python(tmp_path: Path, body: str) -> str:
    script = tmp_path / "python"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(0o755)
    return str(script)


def test_a_killed_child_does_not_fit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On Linux a CPU OOM is a SIGKILL from the kernel, not an exception."""
    monkeypatch.setattr(sys, "executable", _fake_python(tmp_path, "kill -9 $$"))
    outcome = probe_in_subprocess(OPTIONS, 8, device="cpu", input_shape=SHAPE, num_classes=10)
    assert (outcome.ok, outcome.reason, outcome.detail) == (False, "killed", "signal 9")


def test_a_hung_child_times_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "executable", _fake_python(tmp_path, "exec sleep 30"))
    outcome = probe_in_subprocess(
        OPTIONS, 8, device="cpu", input_shape=SHAPE, num_classes=10, timeout=0.5
    )
    assert (outcome.ok, outcome.reason) == (False, "timeout")


def test_a_broken_request_is_an_error_with_its_reason() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "hpsearch.batch_size.probe"],
        input='{"mode": "nonsense"}',
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert proc.returncode == _probe_child.ERROR_EXIT
    assert f'{_probe_child.RESULT_PREFIX}{{"detail": "KeyError: ' in proc.stdout


def test_importing_the_fitter_loads_neither_torch_nor_optuna() -> None:
    """The CLI resolves batch sizes before training; layering forbids optuna here."""
    code = (
        "import sys, hpsearch.batch_size, hpsearch.batch_size.oom\n"
        "print(sorted(m for m in ('torch', 'optuna') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert out.stdout.strip() == "[]"
