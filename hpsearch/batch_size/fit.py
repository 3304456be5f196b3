"""The batch-size range of one worker: caches first, probes for the rest, then a fleet policy."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from hpsearch.batch_size.cache import (
    LimitEntry,
    LocalCache,
    SharedLimits,
    cache_key,
    config_key_of,
    config_signature,
    load_entry,
    merge_entries,
    pow2_below,
    store_entry,
)
from hpsearch.batch_size.device import DeviceInfo, describe_device, human_bytes, meminfo
from hpsearch.batch_size.probe import (
    MemoryEstimate,
    ProbeOutcome,
    estimate_in_subprocess,
    probe_in_subprocess,
)
from hpsearch.batch_size.search import (
    FitResult,
    NoFittingBatchSize,
    exponent_range,
    floor_log2,
    largest_fitting_exponent,
    micro_batch_for,
)
from hpsearch.errors import BatchSizeError
from hpsearch.train.options import TrainerOptions

log = logging.getLogger(__name__)

Policy = Literal["per_device", "fleet_min", "accumulate"]
POLICIES: tuple[str, ...] = ("per_device", "fleet_min", "accumulate")
AUTO_CEILING = 16384  # `high: auto` still needs a finite top; Lightning's max_val is 8192
CPU_SAFETY = 1.5  # the tensor-byte estimate misses allocator slack and oneDNN scratch (notes §5.2)


@dataclass(frozen=True)
class BatchRange:
    """The batch-size range one worker samples from, and how its device runs a sampled size."""

    low: int  # smallest power of two of the range
    high: int  # the search space's upper bound (a power of two)
    limit: int  # the largest batch this device runs in one step
    policy: str
    device: str
    key: str  # pass to `lower_limit` after an OOM in a trial
    source: str  # where `limit` came from: "probe", "cache", "observed_oom", "cpu_estimate"
    note: str  # one line for the log: what was decided and why
    tried: tuple[ProbeOutcome, ...] = ()  # the probe table behind `limit`, for `fit-batch`

    @property
    def k_low(self) -> int:
        """The exponents to sample: `trial.suggest_int("log2_batch_size", k_low, k_high)`."""
        return floor_log2(self.low)

    @property
    def k_high(self) -> int:
        return floor_log2(self.high)

    def plan(self, batch_size: int) -> tuple[int, int]:
        """(micro_batch, accumulation_steps) for a sampled or enqueued batch size."""
        if self.policy == "accumulate":
            return micro_batch_for(batch_size, self.limit)
        if batch_size > self.limit:
            # Enqueued and retried trials carry fixed params that may come from a larger GPU.
            raise BatchSizeError(
                f"batch_size must be at most {self.limit} on {self.device}, but the trial asks "
                f"for {batch_size}; run it on a larger device or use fit_policy: accumulate."
            )
        return batch_size, 1


@dataclass(frozen=True)
class FitRequest:
    """What to fit: one training configuration on one device, and the range to search in."""

    options: TrainerOptions  # the trial's own options: every memory-relevant value it uses
    low: int
    high: int | Literal["auto"]
    device: str  # concrete: "cpu", "cuda" or "cuda:N"
    input_shape: tuple[int, ...]  # (channels, height, width) of one sample
    num_classes: int
    policy: str = "per_device"
    margin: float = 0.10  # of the device memory left free
    cpu_max_batch_size: int = 256
    refresh: bool = False  # ignore what the caches know and probe again
    auto_ceiling: int = AUTO_CEILING
    resident_bytes: int = 0  # what the trial keeps on the GPU besides the model (a dataset)
    probe_timeout: float = 600.0

    def check(self) -> None:
        """Raises BatchSizeError when the request cannot be answered."""
        if self.policy not in POLICIES:
            raise BatchSizeError(
                f"fit_policy must be one of {', '.join(POLICIES)}, but got {self.policy!r}."
            )
        if not 0 <= self.margin < 1:
            raise BatchSizeError(f"the memory margin must be in [0, 1), but got {self.margin}.")
        if self.high == "auto" and self.policy == "accumulate":
            raise BatchSizeError(
                "fit_policy: accumulate searches the effective batch size, which needs a number "
                "as batch_size.high, but got high: auto; set e.g. high: 1024."
            )


@dataclass(frozen=True)
class DeviceHooks:
    """Stand-ins for the real device, for tests (a fake GPU's memory cannot exist here)."""

    device_info: DeviceInfo | None = None
    probe: Callable[[int], ProbeOutcome] | None = None
    estimate: Callable[[], MemoryEstimate] | None = None
    available_ram: int | None = None


@dataclass(frozen=True)
class _Job:
    """What one `resolve_high` call knows, handed to the GPU and CPU halves."""

    request: FitRequest
    options: TrainerOptions
    info: DeviceInfo
    key: str
    config_key: str
    local_cache: LocalCache
    shared: SharedLimits


def resolve_high(
    request: FitRequest,
    *,
    local_cache: LocalCache,
    shared: SharedLimits,
    hooks: DeviceHooks | None = None,
) -> BatchRange:
    """The batch-size range for this worker's next trials under the request's fit policy.

    Looks the limit up in the local and shared caches, probes what they do not answer (each
    probe a child process; never on CPU), stores what it learned in both, then applies the
    policy.
    """
    request.check()
    hooks = hooks or DeviceHooks()
    high = request.auto_ceiling if request.high == "auto" else request.high
    k_lo, k_hi = exponent_range(request.low, high)
    # Under `accumulate` a device may hold less than `low` and accumulate the rest.
    k_floor = 0 if request.policy == "accumulate" else k_lo
    options = request.options
    if request.policy == "accumulate":
        options = options.model_copy(update={"micro_batch_size": None})
    info = hooks.device_info or describe_device(request.device)
    config = config_signature(
        options,
        input_shape=request.input_shape,
        num_classes=request.num_classes,
        margin=request.margin,
    )
    config["resident_bytes"] = request.resident_bytes
    job = _Job(
        request=request,
        options=options,
        info=info,
        key=cache_key(info, config),
        config_key=config_key_of(config),
        local_cache=local_cache,
        shared=shared,
    )

    if info.kind == "cpu":
        entry, note = _cpu_limit(job, hooks.estimate, hooks.available_ram)
        source = "cpu_estimate"
        if entry.limit < 2**k_floor:
            raise NoFittingBatchSize(
                f"batch_size.low={2**k_floor} must fit {info.label}, but {note}; lower "
                "batch_size.low or free memory."
            )
        own = min(entry.limit, 2**k_hi)
    else:
        probe = hooks.probe
        if probe is None:

            def probe(batch_size: int) -> ProbeOutcome:
                return probe_in_subprocess(
                    options,
                    batch_size,
                    device=request.device,
                    input_shape=request.input_shape,
                    num_classes=request.num_classes,
                    margin=request.margin,
                    resident_bytes=request.resident_bytes,
                    timeout=request.probe_timeout,
                )

        entry, own, source = _gpu_limit(job, probe, k_floor, k_hi)
        note = f"{info.label} fits batch size {own} of [{2**k_floor}, {2**k_hi}] ({source})"

    high_out = own
    if request.policy == "fleet_min":
        fleet = [own] + [
            other.limit
            for other in (_parse(raw) for _, raw in shared.items())
            # Devices that cannot fit `low` leave the study and must not shrink it.
            if other is not None and other.config_key == job.config_key and other.limit >= 2**k_lo
        ]
        high_out = min(min(fleet), 2**k_hi)
        note += f"; fleet_min over {len(fleet) - 1} shared limits: high {high_out}"
    elif request.policy == "accumulate":
        high_out = 2**k_hi
        note += f"; accumulate: micro-batches of at most {own} make up batches up to {high_out}"
    log.debug("batch size: %s", note)
    return BatchRange(
        low=2**k_lo,
        high=high_out,
        limit=own,
        policy=request.policy,
        device=info.label,
        key=job.key,
        source=source,
        note=note,
        tried=entry.tried,
    )


def _parse(raw: Mapping[str, Any]) -> LimitEntry | None:
    with contextlib.suppress(KeyError, TypeError, ValueError):
        return LimitEntry.from_dict(raw)
    return None


def _gpu_limit(
    job: _Job, probe: Callable[[int], ProbeOutcome], k_floor: int, k_hi: int
) -> tuple[LimitEntry, int, str]:
    """Answer from the caches where they can, probe the rest, store the merged result.

    The lock makes a second worker on this machine wait for the first one's probe and reuse
    it instead of probing the same GPU type at the same time.
    """
    with job.local_cache.probing(job.key):
        known = None
        if not job.request.refresh:
            known = merge_entries(
                load_entry(job.local_cache, job.key), load_entry(job.shared, job.key)
            )
        k_fit = floor_log2(known.limit) if known and known.limit >= 1 else -1
        k_fail = (known.failure - 1).bit_length() if known and known.failure else k_hi + 1
        launched: list[ProbeOutcome] = []

        def cached_or_probe(batch_size: int) -> ProbeOutcome:
            k = floor_log2(batch_size)
            if k <= k_fit or k >= k_fail:
                return ProbeOutcome(batch_size, k <= k_fit, "cached", None, None, 0.0)
            launched.append(probe(batch_size))
            return launched[-1]

        stores = (job.local_cache, job.shared)
        try:
            fit = largest_fitting_exponent(cached_or_probe, k_floor, k_hi, device=job.info.label)
        except NoFittingBatchSize as e:
            if not launched:
                e.args = (f"{e.args[0]} (cached; `hpsearch fit-batch --refresh` re-probes)",)
            else:  # remember the failure, so the other workers do not probe it again
                failed = _entry(job, 0, 2**k_floor, launched)
                store_entry(
                    failed if job.request.refresh else merge_entries(known, failed) or failed,
                    job.key,
                    stores,
                )
            raise
        if not launched:
            assert known is not None  # no probe ran, so the caches answered every question
            if job.shared.get(job.key) is None:  # publish what only this machine knew
                store_entry(known, job.key, (job.shared,))
            return known, fit.batch_size, "cache" if known.source == "probe" else known.source
        failures = [o.batch_size for o in launched if not o.ok]
        probed = _entry(job, fit.batch_size, min(failures, default=None), launched)
        entry = probed if job.request.refresh else merge_entries(known, probed) or probed
        if any(o.detail.startswith("device busy") for o in launched):
            log.warning(
                "not caching the batch-size fit on %s: another process used the GPU",
                job.info.label,
            )
        else:
            store_entry(entry, job.key, stores)
        return entry, fit.batch_size, "probe"


def _entry(
    job: _Job, limit: int, failure: int | None, tried: Sequence[ProbeOutcome]
) -> LimitEntry:
    return LimitEntry(limit, failure, "probe", job.info.label, job.config_key, tried=tuple(tried))


def _cpu_limit(
    job: _Job,
    estimate: Callable[[], MemoryEstimate] | None,
    available_ram: int | None,
) -> tuple[LimitEntry, str]:
    """`cpu_max_batch_size`, bounded by a tensor-byte estimate against free RAM.

    Never a probe: on Linux running out of host memory summons the OOM killer (SIGKILL), not
    an exception, and it may kill another process than ours.
    """
    request = job.request
    known = None
    if not request.refresh:
        known = merge_entries(
            load_entry(job.local_cache, job.key), load_entry(job.shared, job.key)
        )
    measured = known.estimate if known is not None else None
    if measured is None:
        with job.local_cache.probing(job.key):  # one measurement per machine, like one probe
            fresh = load_entry(job.local_cache, job.key)  # another worker may have just made it
            measured = fresh.estimate if fresh is not None and not request.refresh else None
            if measured is None and estimate is not None:
                measured = estimate()
            elif measured is None:
                measured = estimate_in_subprocess(
                    job.options,
                    device=request.device,
                    input_shape=request.input_shape,
                    num_classes=request.num_classes,
                )
    free = available_ram if available_ram is not None else meminfo("MemAvailable")
    budget = free * (1 - request.margin) / CPU_SAFETY - measured.fixed_bytes
    per_sample = max(measured.per_sample_bytes, 1)
    by_ram = 2 ** floor_log2(int(budget // per_sample)) if budget >= per_sample else 0
    cap = request.cpu_max_batch_size
    limit = min(2 ** floor_log2(cap), by_ram)
    note = (
        f"CPU: batch size at most {limit} = min(cpu_max_batch_size={cap}, "
        f"{by_ram} by an estimate of {human_bytes(per_sample)} per sample against "
        f"{human_bytes(free)} free RAM); a CPU is never probed by running out of memory"
    )
    failure = known.failure if known is not None else None
    if failure is not None and limit >= failure:  # an OOM seen in a trial still holds
        limit = pow2_below(failure)
        note += f"; {limit} after an out-of-memory error at {failure}"
    events = known.oom_events if known is not None else ()
    entry = LimitEntry(
        limit,
        failure,
        "cpu_estimate",
        job.info.label,
        job.config_key,
        oom_events=events,
        estimate=measured,
    )
    changed = known is None or known.limit != limit or known.failure != failure
    if changed:  # free RAM is re-read before each trial; write (and say) only what changed
        store_entry(entry, job.key, (job.local_cache, job.shared))
    # Say so once (a user may expect the GPU behaviour), not before every trial.
    log.log(logging.WARNING if changed else logging.DEBUG, "%s", note)
    return entry, note


# --- presentation ----------------------------------------------------------------------------


def format_table(result: FitResult | Sequence[ProbeOutcome]) -> str:
    """The probe table for `hpsearch fit-batch`: batch size, fits?, peak memory, seconds."""
    rows = result.tried if isinstance(result, FitResult) else tuple(result)
    header = ("batch size", "fits", "peak memory", "seconds", "note")
    lines = [header]
    for o in sorted(rows, key=lambda o: o.batch_size):
        peak = human_bytes(o.peak_bytes) if o.peak_bytes is not None else "-"
        fits = "yes" if o.ok else "no"
        note = o.reason if o.reason not in ("ok",) else ""
        if o.detail:
            note = f"{note}: {o.detail}" if note else o.detail
        lines.append((str(o.batch_size), fits, peak, f"{o.seconds:.1f}", note[:70]))
    widths = [max(len(line[i]) for line in lines) for i in range(4)]
    out = []
    for line in lines:
        cells = [
            line[0].rjust(widths[0]),
            line[1].ljust(widths[1]),
            line[2].rjust(widths[2]),
            line[3].rjust(widths[3]),
            line[4],
        ]
        out.append("  ".join(cells).rstrip())
    return "\n".join(out)
