"""The batch-size fitter: the exponent search, the fit policies, lower_limit and the CPU path.

Every "device" here is a fake with a known limit (a GPU memory limit cannot exist on this
machine); the real subprocess probe is tested in tests/test_batch_size_probe.py.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hpsearch.batch_size import (
    BatchRange,
    DeviceHooks,
    DeviceInfo,
    FitRequest,
    FitResult,
    InMemorySharedLimits,
    LocalCache,
    MemoryEstimate,
    NoFittingBatchSize,
    ProbeOutcome,
    SharedLimits,
    exponent_range,
    format_table,
    largest_fitting_exponent,
    lower_limit,
    micro_batch_for,
    resolve_high,
)
from hpsearch.errors import BatchSizeError
from hpsearch.train.options import DatasetOptions, TrainerOptions

GiB, MiB = 2**30, 2**20


def outcome(batch_size: int, ok: bool, peak: int | None = None) -> ProbeOutcome:
    return ProbeOutcome(batch_size, ok, "ok" if ok else "oom", peak, peak, 0.5)


def limit_probe(limit: int, calls: list[int]) -> Callable[[int], ProbeOutcome]:
    def probe(batch_size: int) -> ProbeOutcome:
        calls.append(batch_size)
        return outcome(batch_size, batch_size <= limit)

    return probe


# --- the search -------------------------------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(
    k_lo=st.integers(0, 12),
    span=st.integers(0, 12),
    limit=st.integers(0, 2**26),
    hint=st.none() | st.integers(-2, 26),
)
def test_search_finds_the_largest_fitting_power_of_two(
    k_lo: int, span: int, limit: int, hint: int | None
) -> None:
    k_hi = k_lo + span
    calls: list[int] = []
    probe = limit_probe(limit, calls)
    bound = math.ceil(math.log2(k_hi - k_lo + 2)) + (hint is not None)
    # Every probed size is a power of two inside the range.
    if 2**k_lo > limit:
        with pytest.raises(NoFittingBatchSize) as info:
            largest_fitting_exponent(probe, k_lo, k_hi, k_hint=hint)
        assert all(not o.ok for o in info.value.tried)
    else:
        result = largest_fitting_exponent(probe, k_lo, k_hi, k_hint=hint)
        brute = max(k for k in range(k_lo, k_hi + 1) if 2**k <= limit)
        assert result.k == brute
        # Never an untested size: the answer is a probe that passed.
        assert any(o.batch_size == result.batch_size and o.ok for o in result.tried)
    assert len(calls) <= bound
    assert all(2**k_lo <= b <= 2**k_hi and b & (b - 1) == 0 for b in calls)


@settings(max_examples=300, deadline=None)
@given(low=st.integers(1, 5000), extra=st.integers(0, 100_000), limit=st.integers(1, 2**20))
def test_a_non_power_of_two_cap_is_never_exceeded(low: int, extra: int, limit: int) -> None:
    high = low + extra
    try:
        k_lo, k_hi = exponent_range(low, high)
    except BatchSizeError:
        assert 2 ** ((low - 1).bit_length()) > high  # truly no power of two inside
        return
    calls: list[int] = []
    try:
        result = largest_fitting_exponent(limit_probe(limit, calls), k_lo, k_hi)
    except NoFittingBatchSize:
        return
    assert low <= result.batch_size <= high
    assert max(calls) <= high


def test_lightning_regression_cap_100_never_returns_an_untested_128() -> None:
    """Lightning's power mode returns 128 untested for max_val=100 (notes §1.4)."""
    calls: list[int] = []
    result = largest_fitting_exponent(limit_probe(10**9, calls), *exponent_range(2, 100))
    assert result.batch_size == 64
    assert 128 not in calls


def test_classic_fixture_resnet50_on_8_gib() -> None:
    """Illustrative linear memory model from notes §3.5: 0.5 GiB fixed, 90 MiB/img in fp32
    (45 MiB with AMP), an 8 GiB card with a 10% margin: fp32 fits 64, AMP fits 128."""

    def device(per_image: int) -> Callable[[int], ProbeOutcome]:
        def probe(b: int) -> ProbeOutcome:
            peak = GiB // 2 + per_image * b
            return outcome(b, peak <= 8 * GiB * 0.9, peak)

        return probe

    assert largest_fitting_exponent(device(90 * MiB), 3, 10).batch_size == 64
    assert largest_fitting_exponent(device(45 * MiB), 3, 10).batch_size == 128


def test_a_good_hint_needs_fewer_probes() -> None:
    calls: list[int] = []
    result = largest_fitting_exponent(limit_probe(64, calls), 0, 10, k_hint=6)
    assert result.batch_size == 64
    assert calls == [64, 128]


def test_no_fitting_size_names_low_and_device() -> None:
    with pytest.raises(NoFittingBatchSize, match=r"batch_size.low=8 must fit cuda \(Tiny"):
        largest_fitting_exponent(limit_probe(4, []), 3, 8, device="cuda (Tiny, 1.0 GiB)")


def test_a_non_memory_failure_aborts_the_search() -> None:
    def probe(b: int) -> ProbeOutcome:
        return ProbeOutcome(b, False, "error", None, None, 0.1, "ValueError: bad head")

    with pytest.raises(BatchSizeError, match="failed on this device with error: ValueError"):
        largest_fitting_exponent(probe, 3, 8)
    with pytest.raises(BatchSizeError, match="but got low=9 and high=4"):
        exponent_range(9, 4)
    with pytest.raises(BatchSizeError, match=r"\[9, 15\] holds none; widen the range"):
        exponent_range(9, 15)


def test_searches_share_no_state() -> None:
    """accelerate's finder keeps its reduced size between calls (notes §2.2); ours must not."""
    assert largest_fitting_exponent(limit_probe(16, []), 0, 10).batch_size == 16
    assert largest_fitting_exponent(limit_probe(512, []), 0, 10).batch_size == 512


def test_micro_batches_make_up_the_batch() -> None:
    assert micro_batch_for(32, 64) == (32, 1)
    assert micro_batch_for(1024, 64) == (64, 16)
    assert micro_batch_for(96, 64) == (32, 3)  # the micro-batch must divide the batch
    assert micro_batch_for(48, 40) == (16, 3)
    with pytest.raises(BatchSizeError, match="limit=0"):
        micro_batch_for(8, 0)


def test_format_table() -> None:
    rows = [outcome(64, False), outcome(16, True, 3 * GiB + GiB // 2), outcome(32, True, 7 * GiB)]
    table = format_table(FitResult(k=5, tried=tuple(rows)))
    lines = table.splitlines()
    assert lines[0].split() == ["batch", "size", "fits", "peak", "memory", "seconds", "note"]
    assert [line.split()[:2] for line in lines[1:]] == [["16", "yes"], ["32", "yes"], ["64", "no"]]
    assert "3.5 GiB" in lines[1]
    assert "oom" in lines[3]


# --- policies across fake devices ---------------------------------------------------------------


@dataclass
class FakeGpu:
    """A GPU type with a known largest batch size; counts the probes it runs."""

    name: str
    limit: int
    calls: list[int] = field(default_factory=list)

    @property
    def info(self) -> DeviceInfo:
        return DeviceInfo("cuda", self.name, 8 * GiB, "fake")

    def probe(self, batch_size: int) -> ProbeOutcome:
        self.calls.append(batch_size)
        return outcome(batch_size, batch_size <= self.limit, batch_size * MiB)


OPTIONS = TrainerOptions(dataset=DatasetOptions(name="digits"), model="resnet18")


def resolve(gpu: FakeGpu, cache: LocalCache, shared: SharedLimits, **kw: Any) -> BatchRange:
    """A fit on a fake GPU (its memory limit cannot exist here): the probe answers by size."""
    args: dict[str, Any] = dict(
        options=OPTIONS, low=8, high="auto", device="cuda:0", input_shape=(3, 32, 32)
    )
    probe = kw.pop("probe", gpu.probe)
    args.update(kw)
    hooks = DeviceHooks(device_info=gpu.info, probe=probe)
    request = FitRequest(num_classes=10, **args)
    return resolve_high(request, local_cache=cache, shared=shared, hooks=hooks)


@pytest.fixture
def machines(tmp_path: Path) -> tuple[LocalCache, LocalCache, InMemorySharedLimits]:
    """Two machines (their own local caches) in one study (one shared store)."""
    return LocalCache(tmp_path / "a"), LocalCache(tmp_path / "b"), InMemorySharedLimits()


def test_per_device_each_worker_ends_at_its_own_limit(machines: tuple) -> None:
    cache_a, cache_b, shared = machines
    small, big = FakeGpu("Small", 64), FakeGpu("Big", 512)
    r_small, r_big = resolve(small, cache_a, shared), resolve(big, cache_b, shared)
    assert (r_small.low, r_small.high, r_small.k_low, r_small.k_high) == (8, 64, 3, 6)
    assert (r_big.high, r_big.limit, r_big.source) == (512, 512, "probe")
    assert r_small.plan(64) == (64, 1)
    with pytest.raises(BatchSizeError, match="at most 64 on cuda \\(Small"):
        r_small.plan(128)  # an enqueued trial from the big GPU
    assert len(small.calls) <= math.ceil(math.log2(14 - 3 + 2))


def test_the_first_worker_of_a_gpu_type_probes_and_the_rest_reuse(machines: tuple) -> None:
    cache_a, cache_b, shared = machines
    first, second, third = FakeGpu("Same", 64), FakeGpu("Same", 64), FakeGpu("Same", 64)
    resolve(first, cache_a, shared)
    again = resolve(second, cache_b, shared)  # another machine: from the study
    local = resolve(third, cache_a, LocalCache(cache_b.directory / "x"))
    assert first.calls
    assert not second.calls
    assert not third.calls
    assert (again.high, again.source, local.high) == (64, "cache", 64)
    assert [o.batch_size for o in again.tried] == first.calls  # the table travels along


def test_fleet_min_every_worker_uses_the_smallest_known_limit(machines: tuple) -> None:
    cache_a, cache_b, shared = machines
    small, big = FakeGpu("Small", 64), FakeGpu("Big", 512)
    assert resolve(big, cache_b, shared, policy="fleet_min").high == 512  # alone so far
    assert resolve(small, cache_a, shared, policy="fleet_min").high == 64
    later = resolve(big, cache_b, shared, policy="fleet_min")  # its next trial
    assert (later.high, later.limit) == (64, 512)
    assert len(big.calls) <= 4
    # A device that cannot fit `low` leaves the study instead of shrinking it.
    with pytest.raises(NoFittingBatchSize):
        resolve(FakeGpu("Tiny", 4), cache_a, shared, policy="fleet_min")
    assert resolve(big, cache_b, shared, policy="fleet_min").high == 64
    # Another configuration's limits do not count.
    other = OPTIONS.model_copy(update={"model": "resnet50"})
    assert resolve(big, cache_b, shared, policy="fleet_min", options=other).high == 512


def test_accumulate_keeps_the_range_and_splits_what_does_not_fit(machines: tuple) -> None:
    cache_a, cache_b, shared = machines
    small, big = FakeGpu("Small", 64), FakeGpu("Big", 512)
    r_small = resolve(small, cache_a, shared, policy="accumulate", high=1024)
    r_big = resolve(big, cache_b, shared, policy="accumulate", high=1024)
    assert (r_small.high, r_big.high) == (1024, 1024)
    assert r_small.plan(1024) == (64, 16)
    assert r_big.plan(1024) == (512, 2)
    assert r_big.plan(256) == (256, 1)
    # A device smaller than `low` still serves, by accumulating micro-batches below it.
    tiny = resolve(FakeGpu("Tiny", 4), cache_a, shared, policy="accumulate", high=1024)
    assert (tiny.low, tiny.limit, tiny.plan(8)) == (8, 4, (4, 2))
    with pytest.raises(BatchSizeError, match="needs a number as batch_size.high"):
        resolve(big, cache_b, shared, policy="accumulate")


def test_a_worker_that_cannot_fit_low_says_so_and_the_cache_remembers(machines: tuple) -> None:
    cache_a, cache_b, shared = machines
    tiny = FakeGpu("Tiny", 4)
    with pytest.raises(NoFittingBatchSize, match=r"batch_size.low=8 must fit cuda \(Tiny"):
        resolve(tiny, cache_a, shared)
    probes = len(tiny.calls)
    with pytest.raises(NoFittingBatchSize, match="cached; `hpsearch fit-batch --refresh`"):
        resolve(tiny, cache_b, shared)
    assert len(tiny.calls) == probes


def test_mid_trial_oom_lowers_the_limit_everywhere(machines: tuple) -> None:
    cache_a, cache_b, shared = machines
    gpu, peer = FakeGpu("Same", 64), FakeGpu("Same", 64)
    rng = resolve(gpu, cache_a, shared)
    assert lower_limit(rng.key, 64, local_cache=cache_a, shared=shared, where="epoch 3") == 32
    after, on_peer = resolve(gpu, cache_a, shared), resolve(peer, cache_b, shared)
    assert (after.high, after.source, on_peer.high) == (32, "observed_oom", 32)
    assert not peer.calls
    entry = shared.get(rng.key)
    assert entry is not None
    assert entry["oom_events"][0]["where"] == "epoch 3"
    # A larger cap later must not re-probe above the failure either.
    assert resolve(gpu, cache_a, shared, high=16384).high == 32
    # refresh forgets what was known and probes again.
    calls = len(gpu.calls)
    assert resolve(gpu, cache_a, shared, refresh=True).high == 64
    assert len(gpu.calls) > calls


def test_a_higher_cap_later_probes_only_above_the_cached_limit(machines: tuple) -> None:
    cache_a, _, shared = machines
    gpu = FakeGpu("Big", 512)
    assert resolve(gpu, cache_a, shared, high=64).high == 64  # capped: 512 is not known yet
    gpu.calls.clear()
    assert resolve(gpu, cache_a, shared, high=4096).high == 512
    assert gpu.calls
    assert min(gpu.calls) > 64


def test_memory_relevant_options_get_their_own_entry(machines: tuple) -> None:
    cache_a, _, shared = machines
    gpu = FakeGpu("Same", 64)
    base = resolve(gpu, cache_a, shared)
    neutral = OPTIONS.model_copy(update={"lr": 0.5, "seed": 3, "dropout": 0.2, "epochs": 90})
    assert resolve(gpu, cache_a, shared, options=neutral).key == base.key
    for update in ({"precision": "bf16"}, {"optimizer": "adam"}, {"channels_last": True}):
        changed = OPTIONS.model_copy(update=update)
        assert resolve(gpu, cache_a, shared, options=changed).key != base.key
    assert resolve(gpu, cache_a, shared, margin=0.2).key != base.key


def test_every_trainer_option_is_classified_for_the_cache_key() -> None:
    from hpsearch.batch_size import cache as c

    fields = set(TrainerOptions.model_fields)
    assert fields == set(c.MEMORY_FIELDS) | c.MEMORY_NEUTRAL, (
        "classify new TrainerOptions fields in batch_size.cache.MEMORY_FIELDS or MEMORY_NEUTRAL"
    )


def test_a_busy_gpu_is_not_cached(machines: tuple) -> None:
    cache_a, _, shared = machines

    def busy(b: int) -> ProbeOutcome:
        return ProbeOutcome(b, b <= 64, "ok", 1, 1, 0.1, "device busy: 40% free at start")

    rng = resolve(FakeGpu("Same", 64), cache_a, shared, probe=busy)
    assert rng.high == 64
    assert cache_a.get(rng.key) is None
    assert shared.get(rng.key) is None


# --- CPU --------------------------------------------------------------------------------------


def test_cpu_uses_the_cap_bounded_by_free_ram_and_never_probes(
    machines: tuple, caplog: pytest.LogCaptureFixture
) -> None:
    """Free RAM is injected: 4 GiB * 0.9 / 1.5 - 100 MiB over 10 MiB per sample = 235 -> 128."""
    cache_a, _, shared = machines
    measured: list[int] = []

    def estimate() -> MemoryEstimate:
        measured.append(1)
        return MemoryEstimate(fixed_bytes=100 * MiB, per_sample_bytes=10 * MiB)

    def never(batch_size: int) -> ProbeOutcome:
        raise AssertionError("a CPU must never be probed by running out of memory")

    cpu = DeviceInfo("cpu", "cpu", 16 * GiB, "fake")

    def on_cpu(free: int, **kw: Any) -> BatchRange:
        request = FitRequest(OPTIONS, 8, "auto", "cpu", (3, 32, 32), 10, **kw)
        hooks = DeviceHooks(device_info=cpu, probe=never, estimate=estimate, available_ram=free)
        return resolve_high(request, local_cache=cache_a, shared=shared, hooks=hooks)

    with caplog.at_level(logging.WARNING, logger="hpsearch.batch_size"):
        rng = on_cpu(4 * GiB)
    assert (rng.high, rng.source) == (128, "cpu_estimate")
    assert "never probed by running out of memory" in caplog.text
    capped = on_cpu(4 * GiB, cpu_max_batch_size=100)
    assert capped.high == 64
    assert measured == [1]
    with pytest.raises(NoFittingBatchSize, match="batch_size.low=8 must fit cpu"):
        on_cpu(200 * MiB)
    lower_limit(rng.key, 64, local_cache=cache_a, shared=shared)
    again = on_cpu(4 * GiB)
    assert again.high == 32
