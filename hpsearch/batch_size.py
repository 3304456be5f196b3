"""The largest power-of-two batch size that fits a device: search, cache and fleet policies."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Protocol

from hpsearch._probe_child import (
    MemoryEstimate,
    ProbeOutcome,
    describe_device_in_subprocess,
    estimate_in_subprocess,
    probe_in_subprocess,
)
from hpsearch.errors import BatchSizeError
from hpsearch.train.options import TrainerOptions

__all__ = [
    "BatchRange",
    "DeviceInfo",
    "FitResult",
    "InMemorySharedLimits",
    "LimitEntry",
    "LocalCache",
    "NoFittingBatchSize",
    "ProbeOutcome",
    "SharedLimits",
    "cache_key",
    "config_signature",
    "describe_device",
    "exponent_range",
    "format_table",
    "largest_fitting_exponent",
    "lower_limit",
    "micro_batch_for",
    "probe_in_subprocess",
    "resolve_high",
]

log = logging.getLogger(__name__)

Policy = Literal["per_device", "fleet_min", "accumulate"]
POLICIES: tuple[str, ...] = ("per_device", "fleet_min", "accumulate")
CACHE_VERSION = 1  # bump when the probe changes what it measures: old entries stop matching
AUTO_CEILING = 16384  # `high: auto` still needs a finite top; Lightning's max_val is 8192
CPU_SAFETY = 1.5  # the tensor-byte estimate misses allocator slack and oneDNN scratch (notes §5.2)


class NoFittingBatchSize(BatchSizeError):
    """Even the smallest batch size of the range does not fit this device."""

    def __init__(self, message: str, tried: Sequence[ProbeOutcome] = ()) -> None:
        super().__init__(message)
        self.tried = tuple(tried)


# --- search ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class FitResult:
    """The largest fitting exponent and every probe the search ran, in order."""

    k: int
    tried: tuple[ProbeOutcome, ...]
    device: str = "this device"

    @property
    def batch_size(self) -> int:
        return 2**self.k


def floor_log2(n: int) -> int:
    return n.bit_length() - 1


def exponent_range(low: int, high: int) -> tuple[int, int]:
    """Exponents [k_lo, k_hi] of the powers of two in [low, high]; a cap of 100 gives 2**6."""
    if low < 1 or high < low:
        raise BatchSizeError(
            f"batch_size needs 1 <= low <= high, but got low={low} and high={high}; "
            "fix the range in the study file."
        )
    k_lo, k_hi = (low - 1).bit_length(), floor_log2(high)
    if k_lo > k_hi:
        raise BatchSizeError(
            f"batch_size of type power_of_two needs a power of two between low and high, but "
            f"[{low}, {high}] holds none; widen the range, e.g. high: {2**k_lo}."
        )
    return k_lo, k_hi


def largest_fitting_exponent(
    probe: Callable[[int], ProbeOutcome],
    k_lo: int,
    k_hi: int,
    *,
    k_hint: int | None = None,
    device: str = "this device",
) -> FitResult:
    """Largest k in [k_lo, k_hi] with `probe(2**k).ok`, assuming fitting is monotone in k.

    Binary search over the k_hi - k_lo + 2 possible answers (including "none"), so at most
    ceil(log2(k_hi - k_lo + 2)) probes, one more when a hint is given and wrong. Invariant: `lo`
    is an exponent that passed a probe (or the sentinel k_lo - 1) and the answer lies in
    [lo, hi]; so the result is always a size that ran. A probe that failed for a reason other
    than memory aborts the search: monotonicity says nothing about it.
    """
    if k_lo > k_hi:
        raise ValueError(f"k_lo must be <= k_hi, but got k_lo={k_lo} and k_hi={k_hi}.")
    tried: list[ProbeOutcome] = []
    lo, hi = k_lo - 1, k_hi
    hint = k_hint
    while lo < hi:
        mid = (lo + hi + 1) // 2  # upper middle, so `lo = mid` always makes progress
        if hint is not None and lo < hint <= hi:
            mid = hint
        hint = None
        outcome = probe(2**mid)
        tried.append(outcome)
        if outcome.reason in ("error", "timeout"):
            raise BatchSizeError(
                f"the batch-size probe must train {2**mid} samples or run out of memory, but it "
                f"failed on {device} with {outcome.reason}: {outcome.detail}; fix the trainer "
                "options, or raise the probe timeout."
            )
        if outcome.ok:
            lo = mid
        else:
            hi = mid - 1
    if lo < k_lo:
        raise NoFittingBatchSize(
            f"batch_size.low={2**k_lo} must fit {device}, but it ran out of memory there; lower "
            "batch_size.low, pick a smaller model or image size, or use precision: bf16.",
            tried,
        )
    return FitResult(k=lo, tried=tuple(tried), device=device)


# --- what a limit is keyed by ----------------------------------------------------------------


@dataclass(frozen=True)
class DeviceInfo:
    """What the memory limit depends on besides the configuration; a fake in tests."""

    kind: str  # "cuda" | "cpu" | ...
    name: str
    total_bytes: int
    software: str  # torch / CUDA / cuDNN versions: kernels and workspaces change with them

    @property
    def label(self) -> str:
        return f"{self.kind} ({self.name}, {_human_bytes(self.total_bytes)})"


def describe_device(device: str, *, timeout: float = 300.0) -> DeviceInfo:
    """This machine's device; a GPU is asked from a child so this process never touches CUDA."""
    if device == "cpu":
        from importlib.metadata import version

        return DeviceInfo("cpu", "cpu", _meminfo("MemTotal"), f"torch {version('torch')}")
    info = describe_device_in_subprocess(device, timeout=timeout)
    return DeviceInfo(info["kind"], info["name"], info["total_bytes"], info["software"])


# Every TrainerOptions field is either here or in _MEMORY_NEUTRAL (a test checks), so a new
# option cannot silently share cache entries with configurations that use more memory.
_MEMORY_FIELDS = ("model", "micro_batch_size", "optimizer", "precision", "channels_last")
_MEMORY_NEUTRAL = frozenset(
    {
        "dataset",  # only its input shape matters, and the caller passes that
        "pretrained",  # the weights' values, not their size
        "weights",
        "freeze_backbone_epochs",  # the probe trains unfrozen, the most memory training reaches
        "batch_size",  # the variable being probed
        "lr",
        "epochs",
        "momentum",  # only whether it is zero matters; see `momentum_buffer` below
        "weight_decay",
        "lr_schedule",
        "warmup_epochs",
        "label_smoothing",
        "dropout",  # a dropout mask is a few bytes per classifier activation
        "device",  # the DeviceInfo half of the key
        "num_workers",  # data loading happens in host memory
        "seed",
        "max_train_batches",
    }
)


def config_signature(
    options: TrainerOptions,
    *,
    input_shape: Sequence[int],
    num_classes: int,
    margin: float,
) -> dict[str, Any]:
    """Everything that changes peak memory at a fixed batch size, as a JSON-able dict."""
    sig: dict[str, Any] = {name: getattr(options, name) for name in _MEMORY_FIELDS}
    # SGD without momentum keeps no per-parameter state; Adam always keeps two buffers.
    sig["momentum_buffer"] = options.optimizer != "sgd" or options.momentum > 0
    sig.update(input_shape=list(input_shape), num_classes=num_classes, margin=margin)
    return sig


def cache_key(device: DeviceInfo, config: Mapping[str, Any]) -> str:
    """A stable short hash of (device, configuration, cache version)."""
    payload = {"v": CACHE_VERSION, "device": asdict(device), "config": dict(config)}
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def _config_key(config: Mapping[str, Any]) -> str:
    text = json.dumps({"v": CACHE_VERSION, **config}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:20]


# --- cache entries and stores ----------------------------------------------------------------


@dataclass(frozen=True)
class LimitEntry:
    """What is known for one key: every size <= `limit` ran; every size >= `failure` did not."""

    limit: int  # largest batch size known to run (a power of two; 0: not even 1 fits)
    failure: int | None  # smallest batch size known to fail, None if none failed yet
    source: str  # "probe" | "observed_oom" | "cpu_estimate"
    device: str  # DeviceInfo.label, for people reading the cache
    config_key: str  # same configuration on any device, for `fleet_min`
    updated: float = field(default_factory=time.time)
    tried: tuple[ProbeOutcome, ...] = ()
    oom_events: tuple[dict[str, Any], ...] = ()
    estimate: MemoryEstimate | None = None  # CPU only: the limit is re-derived from free RAM

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["tried"] = [asdict(t) for t in self.tried]
        out["oom_events"] = list(self.oom_events)
        out["estimate"] = None if self.estimate is None else asdict(self.estimate)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LimitEntry:
        return cls(
            limit=int(data["limit"]),
            failure=None if data.get("failure") is None else int(data["failure"]),
            source=str(data.get("source", "probe")),
            device=str(data.get("device", "")),
            config_key=str(data.get("config_key", "")),
            updated=float(data.get("updated", 0.0)),
            tried=tuple(ProbeOutcome(**t) for t in data.get("tried", ())),
            oom_events=tuple(data.get("oom_events", ())),
            estimate=MemoryEstimate(**data["estimate"]) if data.get("estimate") else None,
        )


def merge_entries(a: LimitEntry | None, b: LimitEntry | None) -> LimitEntry | None:
    """Combine two observations of one key, conservatively.

    Both describe the same device type and configuration, so sizes that ran anywhere run here,
    unless some size at or below them failed somewhere (an OOM seen mid-trial beats an older
    probe): then the limit drops below the smallest failure.
    """
    if a is None or b is None:
        return a or b
    failures = [f for f in (a.failure, b.failure) if f is not None]
    failure = min(failures) if failures else None
    below = [e.limit for e in (a, b) if failure is None or e.limit < failure]
    limit = max(below) if below else _pow2_below(failure or 1)
    newer, older = (a, b) if a.updated >= b.updated else (b, a)
    events = {json.dumps(e, sort_keys=True): e for e in older.oom_events + newer.oom_events}
    return replace(
        newer,
        limit=limit,
        failure=failure,
        tried=newer.tried or older.tried,
        oom_events=tuple(events.values()),
    )


def _pow2_below(n: int) -> int:
    """The largest power of two strictly below n (0 when n <= 1)."""
    return 0 if n <= 1 else 2 ** floor_log2(n - 1)


class SharedLimits(Protocol):
    """Limits shared by every worker of a study; the lead implements it on study user attrs."""

    def get(self, key: str) -> dict[str, Any] | None: ...

    def put(self, key: str, value: dict[str, Any]) -> None: ...

    def items(self) -> Iterable[tuple[str, dict[str, Any]]]: ...


class InMemorySharedLimits:
    """A dict-backed SharedLimits: for tests, and for `fit-batch` without a study storage."""

    def __init__(self) -> None:
        self._data: dict[str, dict[str, Any]] = {}

    def get(self, key: str) -> dict[str, Any] | None:
        value = self._data.get(key)
        return None if value is None else json.loads(json.dumps(value))

    def put(self, key: str, value: dict[str, Any]) -> None:
        self._data[key] = json.loads(json.dumps(value))  # what a JSON user attr would store

    def items(self) -> Iterable[tuple[str, dict[str, Any]]]:
        return list(self._data.items())


def default_cache_dir() -> Path:
    """`$HPSEARCH_CACHE_DIR`, else `$XDG_CACHE_HOME/hpsearch`, else `~/.cache/hpsearch`."""
    if os.environ.get("HPSEARCH_CACHE_DIR"):
        return Path(os.environ["HPSEARCH_CACHE_DIR"])
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "hpsearch"


class LocalCache:
    """One JSON file per machine, rewritten atomically under a file lock (one worker per GPU)."""

    def __init__(self, directory: Path | str | None = None) -> None:
        self.directory = Path(directory) if directory is not None else default_cache_dir()
        self.path = self.directory / "batch_size.json"

    def get(self, key: str) -> dict[str, Any] | None:
        return self._read().get(key)

    def items(self) -> Iterable[tuple[str, dict[str, Any]]]:
        return list(self._read().items())

    def put(self, key: str, value: dict[str, Any]) -> None:
        with self._lock("batch_size.json"):
            data = self._read()
            data[key] = value
            self._write(data)

    @contextlib.contextmanager
    def probing(self, key: str) -> Iterator[None]:
        """Hold while probing `key`, so the other workers on this machine wait and reuse it."""
        with self._lock(f"probe-{key}"):
            yield

    @contextlib.contextmanager
    def _lock(self, name: str) -> Iterator[None]:
        from filelock import FileLock  # a dependency of torch, so always installed with it

        self.directory.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.directory / f".{name}.lock")):
            yield

    def _read(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            # A broken cache must not stop the fleet; it only costs a re-probe, and is rewritten.
            log.warning("ignoring unreadable batch-size cache %s (%s)", self.path, e)
            return {}
        return data if isinstance(data, dict) else {}

    def _write(self, data: dict[str, dict[str, Any]]) -> None:
        # Write a sibling file and rename it over the cache: readers (which take no lock) see
        # the old file or the new one, never half of one.
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".batch_size.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(data, f, indent=1, sort_keys=True)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise


def _load(store: SharedLimits | LocalCache, key: str) -> LimitEntry | None:
    raw = store.get(key)
    try:
        return None if raw is None else LimitEntry.from_dict(raw)
    except (KeyError, TypeError, ValueError) as e:
        log.warning("ignoring malformed batch-size entry %s (%s)", key, e)
        return None


def _store(entry: LimitEntry, key: str, stores: Iterable[SharedLimits | LocalCache]) -> None:
    for store in stores:
        store.put(key, entry.to_dict())


def lower_limit(
    key: str,
    failed_batch_size: int,
    *,
    local_cache: LocalCache,
    shared: SharedLimits,
    where: str = "",
) -> int:
    """Record an OOM seen in a real trial at `failed_batch_size` (the micro-batch it ran).

    The limit for `key` drops to the largest power of two below it, in both caches, so the
    next trial on every worker with this device samples below it. Returns the new limit.
    """
    event = {"batch_size": failed_batch_size, "where": where, "at": time.time()}
    observed = LimitEntry(
        limit=_pow2_below(failed_batch_size),
        failure=failed_batch_size,
        source="observed_oom",
        device="",
        config_key="",
        oom_events=(event,),
    )
    new_limit = observed.limit
    for store in (local_cache, shared):
        known = _load(store, key)
        merged = merge_entries(known, observed) or observed
        if known is not None:  # keep the device and config naming of the probe that made it
            merged = replace(merged, device=known.device, config_key=known.config_key)
        store.put(key, replace(merged, source="observed_oom").to_dict())
        new_limit = min(new_limit, merged.limit)
    where_text = f" ({where})" if where else ""
    log.warning(
        "out of memory at batch size %d%s: limit for %s lowered to %d",
        failed_batch_size,
        where_text,
        key,
        new_limit,
    )
    return new_limit


# --- policies --------------------------------------------------------------------------------


def micro_batch_for(batch_size: int, limit: int) -> tuple[int, int]:
    """(micro_batch, accumulation_steps) making up `batch_size` with micro-batches <= `limit`.

    The micro-batch is the largest power of two that fits and divides the batch, so every
    optimizer step still sees exactly `batch_size` samples.
    """
    if batch_size < 1 or limit < 1:
        raise BatchSizeError(
            f"gradient accumulation needs batch_size >= 1 and a device limit >= 1, but got "
            f"batch_size={batch_size} and limit={limit}; this device cannot train this model."
        )
    if batch_size <= limit:
        return batch_size, 1
    micro = 2 ** floor_log2(limit)
    while batch_size % micro:
        micro //= 2
    return micro, batch_size // micro


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
        """The exponent range to sample: `trial.suggest_int("log2_batch_size", k_low, k_high)`."""
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


def resolve_high(
    options: TrainerOptions,
    *,
    low: int,
    high: int | Literal["auto"],
    device: str,
    input_shape: Sequence[int],
    num_classes: int,
    local_cache: LocalCache,
    shared: SharedLimits,
    policy: str = "per_device",
    refresh: bool = False,
    margin: float = 0.10,
    cpu_max_batch_size: int = 256,
    auto_ceiling: int = AUTO_CEILING,
    probe_timeout: float = 600.0,
    device_info: DeviceInfo | None = None,
    probe: Callable[[int], ProbeOutcome] | None = None,
    estimate: Callable[[], MemoryEstimate] | None = None,
    available_ram: int | None = None,
) -> BatchRange:
    """The batch-size range for this worker's next trials under a fit policy.

    Looks the limit up in the local and shared caches, probes what they do not answer (in
    child processes, never on CPU), stores what it learned in both, then applies `policy`.
    `device_info`, `probe`, `estimate` and `available_ram` replace the real device in tests.
    """
    if policy not in POLICIES:
        raise BatchSizeError(
            f"fit_policy must be one of {', '.join(POLICIES)}, but got {policy!r}."
        )
    if not 0 <= margin < 1:
        raise BatchSizeError(f"the memory margin must be in [0, 1), but got {margin}.")
    if high == "auto" and policy == "accumulate":
        raise BatchSizeError(
            "fit_policy: accumulate searches the effective batch size, which needs a number as "
            "batch_size.high, but got high: auto; set e.g. high: 1024."
        )
    k_lo, k_hi = exponent_range(low, auto_ceiling if high == "auto" else high)
    # Under `accumulate` a device may hold less than `low` and accumulate the rest.
    k_floor = 0 if policy == "accumulate" else k_lo
    if policy == "accumulate":
        options = options.model_copy(update={"micro_batch_size": None})
    info = device_info or describe_device(device)
    config = config_signature(
        options, input_shape=input_shape, num_classes=num_classes, margin=margin
    )
    key, config_key = cache_key(info, config), _config_key(config)

    if info.kind == "cpu":
        entry, source, note = _cpu_limit(
            options, device, input_shape, num_classes, key, config_key, info, local_cache,
            shared, refresh, margin, cpu_max_batch_size, estimate, available_ram,
        )  # fmt: skip
        if entry.limit < 2**k_floor:
            raise NoFittingBatchSize(
                f"batch_size.low={2**k_floor} must fit {info.label}, but {note}; lower "
                "batch_size.low or free memory."
            )
        own = min(entry.limit, 2**k_hi)
    else:
        if probe is None:
            probe_options = options

            def probe(batch_size: int) -> ProbeOutcome:
                return probe_in_subprocess(
                    probe_options, batch_size, device=device, input_shape=input_shape,
                    num_classes=num_classes, margin=margin, timeout=probe_timeout,
                )  # fmt: skip

        entry, fit, source = _gpu_limit(
            probe, key, config_key, info, local_cache, shared, refresh, k_floor, k_hi
        )
        own = fit.batch_size
        note = f"{info.label} fits batch size {own} within [{2**k_floor}, {2**k_hi}] ({source})"

    high_out, limit = own, own
    if policy == "fleet_min":
        fleet = [own]
        for _, raw in shared.items():
            with contextlib.suppress(KeyError, TypeError, ValueError):
                other = LimitEntry.from_dict(raw)
                # Devices that cannot fit `low` leave the study and must not shrink it.
                if other.config_key == config_key and other.limit >= 2**k_lo:
                    fleet.append(other.limit)
        high_out = min(min(fleet), 2**k_hi)
        note += f"; fleet_min over {len(fleet) - 1} shared limits gives high {high_out}"
    elif policy == "accumulate":
        high_out = 2**k_hi
        note += f"; accumulate: micro-batches of at most {own} make up batches up to {high_out}"
    log.info("batch size: %s", note)
    return BatchRange(
        low=2**k_lo, high=high_out, limit=limit, policy=policy, device=info.label, key=key,
        source=source, note=note, tried=entry.tried,
    )  # fmt: skip


def _gpu_limit(
    probe: Callable[[int], ProbeOutcome],
    key: str,
    config_key: str,
    info: DeviceInfo,
    local_cache: LocalCache,
    shared: SharedLimits,
    refresh: bool,
    k_floor: int,
    k_hi: int,
) -> tuple[LimitEntry, FitResult, str]:
    """Answer from the caches where they can, probe the rest, store the merged result."""
    with local_cache.probing(key):
        known = None if refresh else merge_entries(_load(local_cache, key), _load(shared, key))
        k_fit = floor_log2(known.limit) if known and known.limit >= 1 else -1
        k_fail = (known.failure - 1).bit_length() if known and known.failure else k_hi + 1
        launched: list[ProbeOutcome] = []

        def cached_or_probe(batch_size: int) -> ProbeOutcome:
            k = floor_log2(batch_size)
            if k <= k_fit or k >= k_fail:
                return ProbeOutcome(batch_size, k <= k_fit, "cached", None, None, 0.0)
            outcome = probe(batch_size)
            launched.append(outcome)
            return outcome

        try:
            fit = largest_fitting_exponent(cached_or_probe, k_floor, k_hi, device=info.label)
        except NoFittingBatchSize as e:
            if launched:
                failed = LimitEntry(
                    0, 2**k_floor, "probe", info.label, config_key, tried=tuple(launched)
                )
                _store(failed if refresh else merge_entries(known, failed) or failed, key,
                       (local_cache, shared))  # fmt: skip
            else:
                e.args = (f"{e.args[0]} (cached; `hpsearch fit-batch --refresh` re-probes)",)
            raise
        if not launched:
            assert known is not None  # no probe ran, so the caches answered every question
            if shared.get(key) is None:
                _store(known, key, (shared,))
            return known, fit, known.source if known.source != "probe" else "cache"
        failures = [o.batch_size for o in launched if not o.ok]
        probed = LimitEntry(
            limit=fit.batch_size,
            failure=min(failures) if failures else None,
            source="probe",
            device=info.label,
            config_key=config_key,
            tried=tuple(launched),
        )
        entry = probed if refresh else merge_entries(known, probed) or probed
        if any(o.detail.startswith("device busy") for o in launched):
            log.warning("not caching the batch-size fit for %s: the GPU was in use", info.label)
        else:
            _store(entry, key, (local_cache, shared))
        return entry, fit, "probe"


def _cpu_limit(
    options: TrainerOptions,
    device: str,
    input_shape: Sequence[int],
    num_classes: int,
    key: str,
    config_key: str,
    info: DeviceInfo,
    local_cache: LocalCache,
    shared: SharedLimits,
    refresh: bool,
    margin: float,
    cpu_max_batch_size: int,
    estimate: Callable[[], MemoryEstimate] | None,
    available_ram: int | None,
) -> tuple[LimitEntry, str, str]:
    """`cpu_max_batch_size`, bounded by a tensor-byte estimate against free RAM.

    Never a probe: on Linux running out of host memory summons the OOM killer (SIGKILL), not
    an exception, and it may kill another process than ours.
    """
    known = None if refresh else _load(local_cache, key)
    measured = known.estimate if known is not None else None
    if measured is None:
        measured = (estimate or (lambda: estimate_in_subprocess(
            options, device=device, input_shape=input_shape, num_classes=num_classes,
        )))()  # fmt: skip
    free = available_ram if available_ram is not None else _meminfo("MemAvailable")
    budget = free * (1 - margin) / CPU_SAFETY - measured.fixed_bytes
    per_sample = max(measured.per_sample_bytes, 1)
    by_ram = 2 ** floor_log2(int(budget // per_sample)) if budget >= per_sample else 0
    limit = min(2 ** floor_log2(max(cpu_max_batch_size, 1)), by_ram)
    note = (
        f"CPU: batch size at most {limit} = min(cpu_max_batch_size={cpu_max_batch_size}, "
        f"{by_ram} by an estimate of {_human_bytes(per_sample)} per sample against "
        f"{_human_bytes(free)} free RAM); CPUs are never probed by running out of memory"
    )
    failure = known.failure if known is not None else None
    if failure is not None and limit >= failure:  # an OOM seen in a trial still holds
        limit = _pow2_below(failure)
        note += f", and {limit} after an OOM at {failure}"
    entry = LimitEntry(
        limit, failure, "cpu_estimate", info.label, config_key, estimate=measured,
        oom_events=known.oom_events if known is not None else (),
    )  # fmt: skip
    _store(entry, key, (local_cache, shared))
    log.warning("%s", note)  # say so: the user may expect the GPU behaviour
    return entry, "cpu_estimate", note


# --- presentation ----------------------------------------------------------------------------


def format_table(result: FitResult | Sequence[ProbeOutcome]) -> str:
    """The probe table for `hpsearch fit-batch`: batch size, fits?, peak memory, seconds."""
    rows = result.tried if isinstance(result, FitResult) else tuple(result)
    header = ("batch size", "fits", "peak memory", "seconds", "note")
    lines = [header]
    for o in sorted(rows, key=lambda o: o.batch_size):
        peak = _human_bytes(o.peak_bytes) if o.peak_bytes is not None else "-"
        fits = "yes" if o.ok else "no"
        note = o.reason if o.reason not in ("ok",) else ""
        if o.detail:
            note = f"{note}: {o.detail}" if note else o.detail
        lines.append((str(o.batch_size), fits, peak, f"{o.seconds:.1f}", note[:70]))
    widths = [max(len(line[i]) for line in lines) for i in range(4)]
    out = []
    for line in lines:
        cells = [line[0].rjust(widths[0]), line[1].ljust(widths[1]), line[2].rjust(widths[2]),
                 line[3].rjust(widths[3]), line[4]]  # fmt: skip
        out.append("  ".join(cells).rstrip())
    return "\n".join(out)


def _human_bytes(n: int | float) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _meminfo(field_name: str) -> int:
    """A /proc/meminfo field in bytes, falling back to sysconf where there is no /proc."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) * 1024
    pages = "SC_AVPHYS_PAGES" if field_name == "MemAvailable" else "SC_PHYS_PAGES"
    return int(os.sysconf(pages) * os.sysconf("SC_PAGE_SIZE"))
