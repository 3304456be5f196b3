"""Recognise out-of-memory errors in all the forms PyTorch and its backends raise them."""

from __future__ import annotations

import sys

# Substrings of real messages (tests/test_oom.py quotes each one with the issue it came from).
# Lightning and accelerate match only `RuntimeError`s with one argument and miss the cuBLAS, MPS
# and wrapped forms; see shared/notes/batch-size-fit.md §1.3 and §2.1.
OOM_MARKERS: tuple[str, ...] = (
    "CUDA out of memory",  # caching allocator (torch.OutOfMemoryError text)
    "CUDA error: out of memory",  # raw cudaMalloc inside a kernel or library (AcceleratorError)
    "HIP out of memory",  # ROCm caching allocator
    "HIP error: out of memory",
    "XPU out of memory",  # Intel GPUs
    "MPS backend out of memory",  # Apple GPUs
    "CUBLAS_STATUS_ALLOC_FAILED",  # cublasCreate(handle) under memory pressure
    "CUDNN_STATUS_ALLOC_FAILED",  # cuDNN workspace allocation
    "DefaultCPUAllocator: can't allocate memory",  # Linux / macOS CPU allocator
    "DefaultCPUAllocator: not enough memory",  # the Windows wording of the same
    "PT_DEVMEM Allocation failed",  # Habana HPU
)
# Deliberately absent: "CUDNN_STATUS_NOT_SUPPORTED" (Lightning and accelerate count it, after
# pytorch/pytorch#4107). It also means a genuinely unsupported layout or size, and calling it an
# OOM would silently lower a cached limit for a bug that a smaller batch does not fix.


def is_oom_message(text: str) -> bool:
    """Whether an error text (an exception message or a child process's stderr) is an OOM."""
    return any(marker in text for marker in OOM_MARKERS)


def is_oom(exc: BaseException) -> bool:
    """Whether `exc`, or any exception it was raised from or while handling, is out-of-memory.

    Follows `__cause__` (`raise X from oom`) and `__context__` (an exception raised inside an
    `except` block), because user wrappers and DataLoader workers re-raise OOMs under other types.
    """
    # torch is only consulted if something already imported it: an exception cannot be a torch
    # exception otherwise, and the CLI must not pay for importing torch here.
    torch = sys.modules.get("torch")
    oom_types: tuple[type[BaseException], ...] = (MemoryError,)
    if torch is not None and hasattr(torch, "OutOfMemoryError"):
        oom_types = (MemoryError, torch.OutOfMemoryError)
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, oom_types):
            return True
        if isinstance(current, Exception) and is_oom_message(str(current)):
            return True
        current = current.__cause__ or current.__context__
    return False


def oom_summary(exc: BaseException, *, limit: int = 200) -> str:
    """The first line of the innermost OOM message in the chain, for a trial's `oom` record."""
    seen: set[int] = set()
    current: BaseException | None = exc
    best = str(exc)
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        text = str(current)
        if is_oom_message(text) or isinstance(current, MemoryError):
            best = text
        current = current.__cause__ or current.__context__
    for line in best.splitlines():
        if is_oom_message(line):
            return line.strip()[:limit]
    return (best.strip().splitlines() or [type(exc).__name__])[0][:limit]
