"""What a batch-size limit is keyed by, and where it is remembered: this machine, the study."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from filelock import FileLock

from hpsearch.batch_size.device import DeviceInfo
from hpsearch.batch_size.probe import MemoryEstimate, ProbeOutcome
from hpsearch.train.options import TrainerOptions

log = logging.getLogger(__name__)

CACHE_VERSION = 1  # bump when the probe changes what it measures: old entries stop matching


# Every TrainerOptions field is either here or in MEMORY_NEUTRAL (a test checks), so a new
# option cannot silently share cache entries with configurations that use more memory.
MEMORY_FIELDS = ("model", "micro_batch_size", "optimizer", "precision", "channels_last")
MEMORY_NEUTRAL = frozenset(
    {
        "dataset",  # only its input shape matters, and the caller passes that
        "pretrained",  # the weights' values, not their size
        "weights",
        "freeze_backbone_epochs",  # the probe trains unfrozen, the most memory training reaches
        "batch_size",  # the variable being probed
        "lr",
        "cpu_threads",  # CPU threads share one copy of the tensors
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
    sig: dict[str, Any] = {name: getattr(options, name) for name in MEMORY_FIELDS}
    # SGD without momentum keeps no per-parameter state; Adam always keeps two buffers.
    sig["momentum_buffer"] = options.optimizer != "sgd" or options.momentum > 0
    sig.update(input_shape=list(input_shape), num_classes=num_classes, margin=margin)
    return sig


def cache_key(device: DeviceInfo, config: Mapping[str, Any]) -> str:
    """A stable short hash of (device, configuration, cache version)."""
    payload = {"v": CACHE_VERSION, "device": asdict(device), "config": dict(config)}
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def config_key_of(config: Mapping[str, Any]) -> str:
    """The configuration half alone: the same training on any device (for `fleet_min`)."""
    text = json.dumps({"v": CACHE_VERSION, **config}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:20]


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
    limit = max(below) if below else pow2_below(failure or 1)
    newer, older = (a, b) if a.updated >= b.updated else (b, a)
    events = {json.dumps(e, sort_keys=True): e for e in older.oom_events + newer.oom_events}
    return replace(
        newer,
        limit=limit,
        failure=failure,
        tried=newer.tried or older.tried,
        oom_events=tuple(events.values()),
    )


def pow2_below(n: int) -> int:
    """The largest power of two strictly below n (0 when n <= 1)."""
    return 0 if n <= 1 else 2 ** ((n - 1).bit_length() - 1)


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


def load_entry(store: SharedLimits | LocalCache, key: str) -> LimitEntry | None:
    """The entry for `key` in one store; a malformed one counts as missing (costs a probe)."""
    raw = store.get(key)
    try:
        return None if raw is None else LimitEntry.from_dict(raw)
    except (KeyError, TypeError, ValueError) as e:
        log.warning("ignoring malformed batch-size entry %s (%s)", key, e)
        return None


def store_entry(entry: LimitEntry, key: str, stores: Iterable[SharedLimits | LocalCache]) -> None:
    """Write `entry` under `key` into every store."""
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
        limit=pow2_below(failed_batch_size),
        failure=failed_batch_size,
        source="observed_oom",
        device="",
        config_key="",
        oom_events=(event,),
    )
    new_limit = observed.limit
    for store in (local_cache, shared):
        known = load_entry(store, key)
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
