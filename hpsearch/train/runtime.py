"""Where and how precisely a trial computes: device, autocast precision, seeds."""

from __future__ import annotations

import random
from contextlib import AbstractContextManager, nullcontext

import numpy as np
import torch

from hpsearch.errors import HpsearchError

_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str) -> torch.device:
    """`auto` is the current CUDA device when there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = device.index or 0
        if index >= count:
            raise HpsearchError(
                f"`device` must name a visible CUDA device, but got {name!r} while {count} "
                "are visible; use `device: auto`, `cpu`, or check CUDA_VISIBLE_DEVICES."
            )
    return device


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for plain fp32.

    `auto` is bf16 on CUDA devices that support it (no loss scaling needed), fp16 on older
    ones, and fp32 on the CPU, where autocast is rarely faster.
    """
    if precision != "auto":
        return _DTYPES[precision]
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast(device: torch.device, dtype: torch.dtype | None) -> AbstractContextManager[object]:
    """nanoGPT's switch: one context for every forward pass instead of scattered ifs."""
    if dtype is None:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def use_channels_last(option: bool | None, model: str, device: torch.device) -> bool:
    """The `channels_last` option, or its default: on CUDA, and for small_cnn on the CPU.

    Measured on 2 CPU cores (oneDNN): small_cnn steps 30-37% faster in channels_last, while
    torchvision's ResNets step about 13% slower, so the CPU default depends on the model.
    """
    if option is not None:
        return option
    return device.type == "cuda" or model == "small_cnn"


def grad_scaler(device: torch.device, dtype: torch.dtype | None) -> torch.amp.GradScaler:
    """Loss scaling for fp16 only; disabled, it passes every call straight through."""
    return torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)


def set_cpu_threads(threads: int | None) -> None:
    """Set torch's intra-op CPU threads for this process (None leaves torch's default).

    For small models, one thread is barely slower than all cores on an idle machine, and many
    times faster on a busy one: OpenMP threads that spin-wait for a core collapse throughput.
    """
    if threads is not None and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all CUDA devices too) for one trial."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
