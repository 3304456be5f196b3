"""The binary search for the largest fitting power of two, and gradient-accumulation plans."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from hpsearch.batch_size.probe import ProbeOutcome
from hpsearch.errors import BatchSizeError


class NoFittingBatchSize(BatchSizeError):
    """Even the smallest batch size of the range does not fit this device."""

    def __init__(self, message: str, tried: Sequence[ProbeOutcome] = ()) -> None:
        super().__init__(message)
        self.tried = tuple(tried)


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

    A binary search over the k_hi - k_lo + 2 possible answers (including "none"): at most
    ceil(log2(k_hi - k_lo + 2)) probes, plus one for a hint. The hint is probed first and then
    its neighbour, so a right hint costs two probes, but only where that cannot break the bound.
    Invariant: `lo` passed a probe (or is the sentinel k_lo - 1) and the answer is in
    [lo, hi], so the result is always a size that ran. A probe that failed for a reason other
    than memory aborts the search: monotonicity says nothing about it.
    """
    if k_lo > k_hi:
        raise ValueError(f"k_lo must be <= k_hi, but got k_lo={k_lo} and k_hi={k_hi}.")
    tried: list[ProbeOutcome] = []
    lo, hi = k_lo - 1, k_hi
    budget = (hi - lo).bit_length() + (k_hint is not None)  # ceil(log2(answers)) (+1)
    preferred = k_hint
    while lo < hi:
        mid = (lo + hi + 1) // 2  # upper middle, so `lo = mid` always makes progress
        if preferred is not None and lo < preferred <= hi:
            worst = max(hi - preferred + 1, preferred - lo)  # answers left after probing it
            if 1 + (worst - 1).bit_length() <= budget:
                mid = preferred
        outcome = probe(2**mid)
        tried.append(outcome)
        budget -= 1
        if outcome.reason in ("error", "timeout"):
            raise BatchSizeError(
                f"the batch-size probe must train {2**mid} samples or run out of memory, but it "
                f"failed on {device} with {outcome.reason}: {outcome.detail}; fix the trainer "
                "options, or raise the probe timeout."
            )
        # After the hint, its neighbour: a right hint is then confirmed at once.
        preferred = (mid + 1 if outcome.ok else mid - 1) if mid == k_hint == preferred else None
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
