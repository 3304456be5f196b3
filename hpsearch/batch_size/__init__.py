"""The largest power-of-two batch size that fits this device, for this model and input size.

`search` (the binary search over exponents, accumulation plans), `fit` (one worker's range:
caches, probes, fleet policies), `cache` (what a limit is keyed by; this machine's cache and the
study's shared one), `probe` (the throw-away child process that trains a few steps at one size:
`python -m hpsearch.batch_size.probe`), `device` (what the device is, which GPUs exist), `oom`
(out-of-memory errors in all their forms). Never imports optuna: the study's shared store comes
in as a `SharedLimits`.
"""

from __future__ import annotations

from hpsearch.batch_size.cache import (
    InMemorySharedLimits,
    LimitEntry,
    LocalCache,
    SharedLimits,
    cache_key,
    config_signature,
    lower_limit,
)
from hpsearch.batch_size.device import DeviceInfo, describe_device, visible_gpus
from hpsearch.batch_size.fit import (
    AUTO_CEILING,
    POLICIES,
    BatchRange,
    DeviceHooks,
    FitRequest,
    format_table,
    resolve_high,
)
from hpsearch.batch_size.oom import is_oom, is_oom_message, oom_summary
from hpsearch.batch_size.probe import MemoryEstimate, ProbeOutcome, probe_in_subprocess
from hpsearch.batch_size.search import (
    FitResult,
    NoFittingBatchSize,
    exponent_range,
    largest_fitting_exponent,
    micro_batch_for,
)

__all__ = [
    "AUTO_CEILING",
    "POLICIES",
    "BatchRange",
    "DeviceHooks",
    "DeviceInfo",
    "FitRequest",
    "FitResult",
    "InMemorySharedLimits",
    "LimitEntry",
    "LocalCache",
    "MemoryEstimate",
    "NoFittingBatchSize",
    "ProbeOutcome",
    "SharedLimits",
    "cache_key",
    "config_signature",
    "describe_device",
    "exponent_range",
    "format_table",
    "is_oom",
    "is_oom_message",
    "largest_fitting_exponent",
    "lower_limit",
    "micro_batch_for",
    "oom_summary",
    "probe_in_subprocess",
    "resolve_high",
    "visible_gpus",
]
