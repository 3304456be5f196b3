"""What `hpsearch init` learns from this machine: its GPU and that GPU's memory, or its CPU."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

from hpsearch.batch_size.device import describe_device, human_bytes, meminfo, visible_gpus
from hpsearch.errors import HpsearchError

DeviceChoice = Literal["auto", "cpu", "cuda"]


@dataclass(frozen=True)
class MachineFacts:
    """The device trials will train on, as `init` sizes the study for it."""

    kind: str  # "cuda" or "cpu"
    name: str
    memory_bytes: int  # the GPU's memory, or the machine's RAM
    gpus: int
    cpu_cores: int

    @property
    def gpu(self) -> bool:
        return self.kind == "cuda"

    @property
    def device_option(self) -> str:
        """The trainer's `device:` for this machine (`auto` picks the GPU where there is one)."""
        return "auto" if self.gpu else "cpu"

    def line(self) -> str:
        if self.gpu:
            more = f" (and {self.gpus - 1} more)" if self.gpus > 1 else ""
            return f"GPU {self.name}, {human_bytes(self.memory_bytes)}{more}"
        return f"CPU only: {self.cpu_cores} cores, {human_bytes(self.memory_bytes)} RAM"


def cpu_cores() -> int:
    """Cores this process may run on (a container's or taskset's share, not the host's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def inspect_machine(device: DeviceChoice = "auto") -> MachineFacts:
    """This machine's training device; a GPU is described by a child, never in this process."""
    gpus = visible_gpus()
    if device == "cuda" and not gpus:
        raise HpsearchError(
            "--device cuda: no GPU is visible here (nvidia-smi and CUDA_VISIBLE_DEVICES show "
            "none); run `hpsearch init` on the GPU machine, or use --device cpu"
        )
    if device == "cpu" or not gpus:
        return MachineFacts("cpu", "cpu", meminfo("MemTotal"), 0, cpu_cores())
    info = describe_device("cuda")
    return MachineFacts("cuda", info.name, info.total_bytes, len(gpus), cpu_cores())
