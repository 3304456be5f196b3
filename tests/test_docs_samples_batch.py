"""docs/batch-size.md's two sample lines are what the batch-size fitter says.

Neither can come from this machine (a 2 GiB GPU that fits nothing, another machine's free RAM),
so the fitter runs for real with those answers injected: a GTX 1050 that runs out of memory at
every size, and a measured estimate against a free RAM. The page's lines must be its words,
numbers included.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from hpsearch.batch_size import (
    DeviceHooks,
    DeviceInfo,
    FitRequest,
    InMemorySharedLimits,
    LocalCache,
    MemoryEstimate,
    NoFittingBatchSize,
    ProbeOutcome,
    resolve_high,
)
from hpsearch.train.options import DatasetOptions, TrainerOptions

PAGE = Path(__file__).resolve().parent.parent / "docs" / "batch-size.md"
OPTIONS = TrainerOptions(dataset=DatasetOptions(name="digits"), model="resnet18")
GiB, MiB = 2**30, 2**20


def _sample(marker: str) -> str:
    """The first fenced block after `marker` on the page, its lines joined as one."""
    text = PAGE.read_text()
    opening = text.index("```\n", text.index(marker)) + 4
    return " ".join(text[opening : text.index("```\n", opening)].split())


def _fit(tmp_path: Path, device: str, hooks: DeviceHooks) -> None:
    request = FitRequest(OPTIONS, 8, "auto", device, (3, 32, 32), 10)
    resolve_high(
        request, local_cache=LocalCache(tmp_path), shared=InMemorySharedLimits(), hooks=hooks
    )


def test_the_no_fitting_size_sample_is_the_fitters_error(tmp_path: Path) -> None:
    def out_of_memory(batch_size: int) -> ProbeOutcome:
        return ProbeOutcome(batch_size, False, "oom", None, None, 0.5)

    gpu = DeviceInfo("cuda", "NVIDIA GeForce GTX 1050", 2 * GiB, "fake")
    with pytest.raises(NoFittingBatchSize) as error:
        _fit(tmp_path, "cuda:0", DeviceHooks(device_info=gpu, probe=out_of_memory))
    assert str(error.value) == _sample("says so in one line and leaves the study:")


def test_the_cpu_sample_is_the_fitters_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def never(batch_size: int) -> ProbeOutcome:
        raise AssertionError("a CPU is never probed")

    def estimate() -> MemoryEstimate:
        return MemoryEstimate(fixed_bytes=100 * MiB, per_sample_bytes=10 * MiB)

    cpu = DeviceInfo("cpu", "cpu", 16 * GiB, "fake")
    hooks = DeviceHooks(device_info=cpu, probe=never, estimate=estimate, available_ram=4 * GiB)
    with caplog.at_level(logging.INFO, logger="hpsearch.batch_size"):
        _fit(tmp_path, "cpu", hooks)
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("CPU:")]
    assert line == _sample("hpsearch logs which of\nthe two bounds applied, e.g.")
