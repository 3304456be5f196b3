"""The throughput section of `benchmarks/gpu_check.py`: the trainer against a plain PyTorch loop.

Both train the same model (hpsearch's `build_model`, so the head is the same too) on the same
images, already decoded in device memory, at the same batch size, precision and memory format,
with SGD and an evaluation pass after every epoch. Epoch 1 is a warm-up (cuDNN autotuning, the
allocator); images/s counts the training images of epochs 2..N over their wall time,
evaluation included on both sides. The two alternate, best of two rounds each, so that a
disturbance hits both alike. On CUDA, nvidia-smi samples the GPU's utilisation meanwhile.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from gpu_check_sections import Context, Row, make_image_folder

TARGET = 0.95  # the bar for the trainer's images/s against the plain loop, on a GPU
ROUNDS = 2


def parse_utilisation(text: str) -> float | None:
    """One `nvidia-smi --query-gpu=utilization.gpu --format=csv,noheader,nounits` line, in %."""
    first = text.strip().split(",")[0].strip()
    try:
        return float(first)
    except ValueError:  # "[N/A]" on some virtualised GPUs
        return None


class Utilisation:
    """nvidia-smi asked for GPU 0's utilisation every 100 ms by a background thread.

    One call per sample rather than `nvidia-smi -lms`: piped, its output is block-buffered,
    so lines would arrive in bursts and their timestamps would not say when they were read.
    """

    QUERY = (
        "nvidia-smi",
        "--query-gpu=utilization.gpu",
        "--format=csv,noheader,nounits",
        "-i",
        "0",
    )

    def __init__(self) -> None:
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.wait(0.1):
            try:
                out = subprocess.run(self.QUERY, capture_output=True, text=True, timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                continue
            value = parse_utilisation(out.stdout)
            if value is not None:
                self.samples.append((time.perf_counter(), value))

    def mean(self, start: float, end: float) -> tuple[float | None, int]:
        inside = [v for t, v in self.samples if start <= t <= end]
        return (sum(inside) / len(inside) if inside else None), len(inside)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def _decode(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """uint8 NCHW pixels and labels of a generated folder (all images have one size)."""
    from PIL import Image

    images, labels = [], []
    for label, sub in enumerate(sorted(p for p in folder.iterdir() if p.is_dir())):
        for file in sorted(sub.iterdir()):
            with Image.open(file) as im:
                images.append(np.asarray(im.convert("RGB")).transpose(2, 0, 1))
            labels.append(label)
    return np.stack(images), np.array(labels)


def plain_loop(config: dict[str, Any], train: Path, val: Path) -> list[float]:
    """The ordinary hand-written loop; returns perf_counter() at the end of each epoch."""
    import torch
    import torch.nn.functional as F

    from hpsearch.train.models import build_model
    from hpsearch.train.runtime import resolve_precision, use_channels_last
    from hpsearch.train.transforms import imagenet_stats

    device = torch.device(config["device"])
    torch.manual_seed(0)
    if config.get("cpu_threads"):  # what the trainer's `cpu_threads` does
        torch.set_num_threads(config["cpu_threads"])
    dtype = resolve_precision(config["precision"], device)
    fmt = (torch.channels_last if use_channels_last(None, config["model"], device)
           else torch.contiguous_format)  # fmt: skip
    (xt, yt), (xv, yv) = _decode(train), _decode(val)
    x_train, y_train = torch.from_numpy(xt).to(device), torch.from_numpy(yt).to(device)
    x_val, y_val = torch.from_numpy(xv).to(device), torch.from_numpy(yv).to(device)
    mean, std = (torch.tensor(v, device=device).view(1, -1, 1, 1) for v in imagenet_stats(3))
    model = build_model(config["model"], 2, 3).to(device).to(memory_format=fmt)
    optimizer = torch.optim.SGD(model.parameters(), lr=config["lr"], momentum=0.9)
    batch = config["batch_size"]

    def prepare(x: torch.Tensor) -> torch.Tensor:
        return ((x.float() / 255 - mean) / std).contiguous(memory_format=fmt)

    ends = []
    for _ in range(config["epochs"]):
        model.train()
        order = torch.randperm(len(y_train), device=device)
        for i in range(0, len(order), batch):
            idx = order[i : i + batch]
            with torch.autocast(
                device.type, dtype=dtype or torch.float32, enabled=dtype is not None
            ):
                loss = F.cross_entropy(model(prepare(x_train[idx])), y_train[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        model.eval()
        correct = torch.zeros((), device=device, dtype=torch.long)
        with torch.inference_mode():
            for i in range(0, len(y_val), batch):
                with torch.autocast(
                    device.type, dtype=dtype or torch.float32, enabled=dtype is not None
                ):
                    logits = model(prepare(x_val[i : i + batch]))
                correct += (logits.argmax(1) == y_val[i : i + batch]).sum()
        int(correct)  # waits for the device, as the trainer's metrics do
        ends.append(time.perf_counter())
    return ends


def trainer_loop(config: dict[str, Any], train: Path, val: Path, cache: Path) -> list[float]:
    """`hpsearch.train.loop.fit`, as a trial runs it; perf_counter() at each epoch's report."""
    from hpsearch.train.loop import fit
    from hpsearch.train.options import TrainerOptions

    options = TrainerOptions.model_validate(
        {
            "dataset": {"path": str(train), "val_path": str(val), "normalize": "imagenet"},
            "model": config["model"], "precision": config["precision"],
            "device": config["device"], "batch_size": config["batch_size"],
            "epochs": config["epochs"], "lr": config["lr"], "seed": 0,
            "cpu_threads": config.get("cpu_threads"),
        }
    )  # fmt: skip
    ends: list[float] = []
    fit(options, lambda metrics, epoch: ends.append(time.perf_counter()), cache_dir=cache)
    return ends


def throughput(ctx: Context) -> Iterator[Row]:
    import torch

    cuda = torch.cuda.is_available()
    # On a CPU the same comparison on a tiny model, so that it stays a few seconds.
    config: dict[str, Any] = (
        {"model": "resnet50", "size": 224, "per_class": 1024, "val": 128, "batch_size": 128,
         "precision": "bf16", "epochs": 5, "device": "cuda:0", "lr": 0.01}
        if cuda else
        {"model": "small_cnn", "size": 16, "per_class": 128, "val": 32, "batch_size": 32,
         "precision": "fp32", "epochs": 3, "device": "cpu", "lr": 0.01,
         # One thread: on a small shared CPU, spinning OpenMP threads swamp the comparison.
         "cpu_threads": 1}
    )  # fmt: skip
    train = make_image_folder(
        ctx.tmp / "train", classes=2, per_class=config["per_class"], size=config["size"]
    )
    val = make_image_folder(
        ctx.tmp / "val", classes=2, per_class=config["val"], size=config["size"]
    )
    n_train = 2 * config["per_class"]
    sampler = Utilisation() if cuda and shutil.which("nvidia-smi") else None
    runs: dict[str, list[tuple[float, float | None]]] = {"trainer": [], "plain": []}
    try:
        for _ in range(ROUNDS):
            for name in runs:
                ends = (
                    trainer_loop(config, train, val, ctx.tmp / "cache")
                    if name == "trainer"
                    else plain_loop(config, train, val)
                )
                rate = n_train * (len(ends) - 1) / (ends[-1] - ends[0])
                util = sampler.mean(ends[0], ends[-1])[0] if sampler else None
                runs[name].append((rate, util))
    finally:
        if sampler is not None:
            sampler.stop()
    best = {name: max(r, key=lambda run: run[0]) for name, r in runs.items()}
    setting = (
        f"{config['model']} {config['size']} px, batch {config['batch_size']}, "
        f"{config['precision']}, {n_train} train images x {config['epochs']} epochs on "
        f"{config['device']}; best of {ROUNDS}"
    )
    for name in runs:
        rates = ", ".join(f"{rate:.0f}" for rate, _ in runs[name])
        yield Row(
            "throughput", f"{name} images/s", "info", f"{best[name][0]:.0f} ({rates}); {setting}"
        )
    ratio = best["trainer"][0] / best["plain"][0]
    verdict = ("ok" if ratio >= TARGET else "FAIL") if cuda else "info"
    note = f"target >= {TARGET} on a GPU" + ("" if cuda else "; on this CPU for information only")
    yield Row("throughput", "trainer / plain loop", verdict, f"{ratio:.3f} ({note})")
    if sampler is None:
        why = "no CUDA device" if not cuda else "nvidia-smi not on PATH"
        yield Row("throughput", "GPU utilisation", "skipped", f"{why}: nothing to sample")
    else:
        shown = {n: best[n][1] for n in runs}
        yield Row(
            "throughput", "GPU utilisation (nvidia-smi, ~100 ms)", "info",
            ", ".join(f"{n} {u:.0f}%" if u is not None else f"{n} no samples"
                      for n, u in shown.items()),
        )  # fmt: skip
