"""The device a worker trains on: what it is (name, memory, software) and which GPUs exist.

Both are read without initialising CUDA in this process: the batch-size probe must find a clean
GPU, and the launcher gives each child its own `CUDA_VISIBLE_DEVICES` before it starts.
"""

from __future__ import annotations

import contextlib
import functools
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from hpsearch.batch_size.probe import describe_device_in_subprocess
from hpsearch.errors import BatchSizeError


@dataclass(frozen=True)
class DeviceInfo:
    """What the memory limit depends on besides the configuration; a fake in tests."""

    kind: str  # "cuda" | "cpu" | ...
    name: str
    total_bytes: int
    software: str  # torch / CUDA / cuDNN versions: kernels and workspaces change with them

    @property
    def label(self) -> str:
        return f"{self.kind} ({self.name}, {human_bytes(self.total_bytes)})"


@functools.lru_cache(maxsize=8)  # a device does not change while the worker runs
def describe_device(device: str, *, timeout: float = 300.0) -> DeviceInfo:
    """This machine's device; a GPU is asked from a child so this process never touches CUDA."""
    if device == "auto" or not device.startswith(("cpu", "cuda")):
        raise BatchSizeError(
            f"the batch-size fitter needs a concrete device (cpu, cuda or cuda:N), but got "
            f"{device!r}; resolve `auto` first (hpsearch.train.runtime.resolve_device)."
        )
    if device == "cpu":
        from importlib.metadata import version

        return DeviceInfo("cpu", "cpu", meminfo("MemTotal"), f"torch {version('torch')}")
    info = describe_device_in_subprocess(device, timeout=timeout)
    return DeviceInfo(info["kind"], info["name"], info["total_bytes"], info["software"])


def human_bytes(n: int | float) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def meminfo(field_name: str) -> int:
    """A /proc/meminfo field in bytes, falling back to sysconf where there is no /proc."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) * 1024
    pages = "SC_AVPHYS_PAGES" if field_name == "MemAvailable" else "SC_PHYS_PAGES"
    return int(os.sysconf(pages) * os.sysconf("SC_PAGE_SIZE"))


def visible_gpus() -> list[str]:
    """The GPU indices of this machine, read without initialising CUDA."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [g.strip() for g in visible.split(",") if g.strip() and g.strip() != "-1"]
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=30, check=True,
        ).stdout  # fmt: skip
        return [line.strip() for line in out.splitlines() if line.strip()]
    except (OSError, subprocess.SubprocessError):
        folder = Path("/proc/driver/nvidia/gpus")
        return [str(i) for i in range(len(list(folder.iterdir())))] if folder.is_dir() else []
