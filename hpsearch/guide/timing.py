"""How long an epoch takes here: a short timing probe (a few real steps), cached per machine.

The probe trains a few steps on synthetic batches in a child process (the batch-size probe's
`time` mode), so this process never initialises CUDA before the batch-size fit. A probe costs a
few seconds; a FLOP count gives an upper bound first, and the probe runs only when that bound
says the time could matter.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hpsearch.batch_size.cache import default_cache_dir
from hpsearch.batch_size.device import visible_gpus
from hpsearch.batch_size.probe import run_child
from hpsearch.guide.presets import gflops
from hpsearch.train.options import TrainerOptions

# Deliberately slow rates for the upper bound (in torchvision's GFLOPS, which count
# multiply-adds; a training step is ~3 forward passes): an oversubscribed 2-core machine, 2 torch
# threads on cores busy with other work, trained ResNet-18 at 32 px at 1.3 G per second.
SLOW_FLOPS = {"cpu": 5e8, "cuda": 2e11}
PROBE_GFLOP_PER_STEP = 20.0  # on a CPU, the probe's batch is kept to about this much work
PROBE_TIMEOUT_S = 120.0
_CACHE_VERSION = 1


@dataclass(frozen=True)
class Speed:
    """Seconds per training image and per validation image on one device."""

    train_image_s: float
    eval_image_s: float
    measured: bool  # the timing probe ran; else an upper bound from the FLOP count
    device: str
    batch_size: int

    def epoch_s(self, num_train: int, num_val: int) -> float:
        return num_train * self.train_image_s + num_val * self.eval_image_s

    def how(self) -> str:
        """Where the figure comes from, in words."""
        if self.measured:
            per = self.train_image_s
            each = f"{per * 1000:.3g} ms" if per < 1 else f"{per:.3g} s"
            return f"timing probe on {self.device}: {each} per training image"
        return f"a deliberately slow upper bound from the FLOP count on {self.device}"


def device_of(options: TrainerOptions) -> str:
    """The concrete device trials will use, decided without initialising CUDA here."""
    if options.device != "auto":
        return options.device
    return "cuda" if visible_gpus() else "cpu"


def upper_bound(options: TrainerOptions, image_size: int) -> Speed:
    """A pessimistic speed from the model's FLOPs: real training is faster than this."""
    device = device_of(options)
    rate = SLOW_FLOPS["cpu" if device == "cpu" else "cuda"]
    forward = gflops(options.model, image_size) * 1e9 / rate
    return Speed(3 * forward, forward, False, device, options.batch_size)


def probe_batch_size(options: TrainerOptions, image_size: int, device: str) -> int:
    """The probe's batch: the trial's own on a GPU; on a CPU only as much as a short step allows.

    On a CPU time grows linearly with the batch, so a small batch measures the same seconds
    per image in a fraction of the time.
    """
    if device != "cpu":
        return options.batch_size
    per_image = 3 * gflops(options.model, image_size)
    fits = max(2, int(PROBE_GFLOP_PER_STEP / max(per_image, 1e-9)))
    return max(2, min(options.batch_size, 1 << (fits.bit_length() - 1)))


def cached(
    options: TrainerOptions,
    *,
    image_size: int,
    channels: int,
    num_classes: int,
    cache_dir: Path | None = None,
) -> Speed | None:
    """What an earlier probe on this machine measured for these options (`hpsearch init`'s, an
    earlier `validate`'s), without probing; None when nothing was measured.

    On a CPU the probe's batch is only a sample size (time grows linearly with the batch), so a
    probe at any batch size answers; on a GPU only the trial's own batch does.
    """
    device = device_of(options)
    batch = probe_batch_size(options, image_size, device)
    known = _read((cache_dir or default_cache_dir()) / "timing.json")
    batches = [batch] + ([1 << k for k in range(1, 13)] if device == "cpu" else [])
    for size in batches:
        found = known.get(_key(options, device, size, image_size, channels, num_classes))
        if found is not None:
            return Speed(**found)
    return None


def measure(
    options: TrainerOptions,
    *,
    image_size: int,
    channels: int,
    num_classes: int,
    cache_dir: Path | None = None,
) -> Speed | None:
    """Time a few training steps of these options on their device; None if the probe timed out."""
    device = device_of(options)
    batch = probe_batch_size(options, image_size, device)
    key = _key(options, device, batch, image_size, channels, num_classes)
    cache = (cache_dir or default_cache_dir()) / "timing.json"
    known = _read(cache).get(key)
    if known is not None:
        return Speed(**known)
    request = {
        "mode": "time",
        "options": options.model_dump(mode="json"),
        "batch_size": batch,
        "device": device,
        "input_shape": [channels, image_size, image_size],
        "num_classes": num_classes,
        "steps": 3,
    }
    try:
        code, result, tail = run_child(request, PROBE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return None
    if code != 0 or "train_step_s" not in result:
        from hpsearch.errors import HpsearchError

        raise HpsearchError(
            f"the timing probe must train {options.model} for a few steps on {device}, but it "
            f"failed: {result.get('detail') or tail}; check the trainer options."
        )
    speed = Speed(
        train_image_s=result["train_step_s"] / batch,
        eval_image_s=result["eval_batch_s"] / batch,
        measured=True,
        device=device,
        batch_size=batch,
    )
    _write(cache, key, asdict(speed))
    return speed


def _key(options: TrainerOptions, device: str, batch: int, *shape: int) -> str:
    from importlib.metadata import version

    # What the time of a step depends on besides the machine itself.
    parts: list[Any] = [
        _CACHE_VERSION,
        options.model,
        device,
        batch,
        *shape,
        options.precision,
        options.channels_last,
        options.optimizer,
        options.cpu_threads,
        version("torch"),
        os.uname().nodename,
    ]
    if device != "cpu":
        from hpsearch.batch_size.device import describe_device

        parts.append(describe_device("cuda" if device == "auto" else device).label)
    return "|".join(map(str, parts))


def _read(path: Path) -> dict[str, dict[str, Any]]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}  # no cache yet, or a damaged one: only a lost shortcut
    return data if isinstance(data, dict) else {}


def _write(path: Path, key: str, value: dict[str, Any]) -> None:
    data = _read(path)
    data[key] = value
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1))
        os.replace(tmp, path)  # readers never see half a file
    except OSError:
        pass  # a read-only home: the next run probes again


def fmt_seconds(seconds: float) -> str:
    """`0.4 s`, `42 s`, `17 min`, `3.2 h`, `2.5 days`: for sentences, not tables."""
    if seconds < 10:
        return f"{seconds:.2g} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"
