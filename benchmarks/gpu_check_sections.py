"""The sections of `benchmarks/gpu_check.py`: each a generator of table rows.

`gpu_check.py` runs each section in a child process of its own (`--section NAME`), so a CUDA
allocator capped or fragmented by one section, a crash or a hang cannot spoil the next. A
section yields a `Row` per check as soon as it knows it, and the child prints each at once, so
a section stopped by the watchdog keeps the rows it had. The throughput section lives in
`gpu_check_speed.py`; `gpu_check.run_section` picks one by name.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
GiB = 2**30
CAP = 8 * GiB  # the user's card: ResNet-50 at 224 px on an 8 GB GPU


@dataclass(frozen=True)
class Target:
    """Where and what the GPU sections train; a CPU smoke run of the code swaps in a tiny one."""

    device: str = "cuda:0"
    model: str = "resnet50"
    size: int = 224

    @property
    def cuda(self) -> bool:
        return self.device.startswith("cuda")


TARGET = Target()
CLASSES = 1000  # an ImageNet-sized head, as the "ResNet-50 at 224x224x3" means
MARGIN = 0.10  # hpsearch's default `batch_size_fit.margin`
# What 8 GB cards are commonly reported to train for ResNet-50 at 224 px (issue 15); bf16
# stores activations in half the bytes, so it must fit at least the fp32 answer.
PLAUSIBLE = {("resnet50", "fp32"): (32, 64), ("resnet50", "bf16"): (32, 256)}
ROW_PREFIX = "GPU_CHECK_ROW "
RESULTS = ("ok", "FAIL", "skipped", "info", "error")


@dataclass(frozen=True)
class Row:
    """One line of the results table; `result` is one of RESULTS."""

    section: str
    check: str
    result: str
    detail: str = ""

    def line(self) -> str:
        return ROW_PREFIX + json.dumps(asdict(self))

    @classmethod
    def parse(cls, line: str) -> Row | None:
        """The row a child printed, or None for any other output line."""
        if not line.startswith(ROW_PREFIX):
            return None
        return cls(**json.loads(line[len(ROW_PREFIX) :]))


@dataclass(frozen=True)
class Context:
    """What a section gets: a scratch folder and the monotonic time it must be done by."""

    tmp: Path
    deadline: float

    def left(self) -> float:
        return max(1.0, self.deadline - time.monotonic())


def memory_fraction(cap_bytes: int, total_bytes: int) -> float:
    """The share of a card that makes it stand in for one of `cap_bytes` (1.0 if it is smaller)."""
    if cap_bytes <= 0 or total_bytes <= 0:
        raise ValueError(f"both sizes must be positive, but got {cap_bytes} and {total_bytes}")
    return min(1.0, cap_bytes / total_bytes)


def judge_fit(model: str, precision: str, limit: int, fp32_limit: int | None) -> tuple[str, str]:
    """(result, why) for a probe's answer against what 8 GB cards are reported to hold."""
    bounds = PLAUSIBLE.get((model, precision))
    if bounds is None:
        return "info", "no published reference for this model"
    low, high = bounds
    if not low <= limit <= high:
        return "FAIL", f"outside the {low}-{high} commonly reported for 8 GB cards"
    if fp32_limit is not None and limit < fp32_limit:
        return "FAIL", f"bf16 must fit at least fp32's {fp32_limit}"
    return "ok", f"within the {low}-{high} commonly reported for 8 GB cards"


def make_image_folder(root: Path, *, classes: int, per_class: int, size: int) -> Path:
    """`classes` folders of `per_class` JPEGs whose class shows (stripes), like tests' factory.

    The script makes its own data so that it needs nothing from tests/ on the GPU machine.
    JPEG, not PNG: thousands of 224-px images are written and decoded in seconds.
    """
    from PIL import Image

    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:size, 0:size]
    for label in range(classes):
        folder = root / f"class{label}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            phase = int(rng.integers(0, 4))
            lines = [(y + phase) // 2 % 2, (x + phase) // 2 % 2][label % 2]
            base = np.stack([lines * 200, np.roll(lines, 1, axis=0) * 120, (1 - lines) * 90], -1)
            pixels = np.clip(base + rng.integers(0, 40, size=(size, size, 3)), 0, 255)
            Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{i:04d}.jpg", quality=90)
    return root


def _seconds(value: float) -> str:
    return f"{value:.1f} s"


# --- fit: the probe's answer under an 8 GiB cap, then one real step at it and at twice it ---


def fit(ctx: Context) -> Iterator[Row]:
    from hpsearch import batch_size as bs

    real = bs.describe_device(TARGET.device)
    # The fitter keys its caches by the device's memory: name the capped card as what it is.
    capped = bs.DeviceInfo("cuda", f"{real.name} capped at 8 GiB", CAP, real.software)
    fraction = memory_fraction(CAP, real.total_bytes)
    yield Row(
        "fit", "8 GiB cap", "info",
        f"{real.label}: set_per_process_memory_fraction({fraction:.4f}) in each probe child, "
        f"x (1 - margin {MARGIN}) while fitting; margin 0 for the single steps",
    )  # fmt: skip
    fp32: dict[str, int] = {}
    for model in (TARGET.model, "small_cnn"):
        for precision in ("fp32", "bf16"):
            name = f"{model} {precision}"
            try:
                yield from _fit_one(ctx, bs, capped, model, precision, fp32)
            except Exception as e:  # one configuration's failure must not lose the others
                yield Row("fit", name, "error", f"{type(e).__name__}: {str(e)[:300]}")


def _fit_one(
    ctx: Context, bs: Any, capped: Any, model: str, precision: str, fp32: dict[str, int]
) -> Iterator[Row]:
    from hpsearch.batch_size.device import human_bytes
    from hpsearch.train.options import DatasetOptions, TrainerOptions

    name = f"{model} {precision}"
    options = TrainerOptions(
        dataset=DatasetOptions(name="digits"),  # never loaded: probes train on random tensors
        model=model,
        precision=precision,
        device=TARGET.device,
    )
    shape = (3, TARGET.size, TARGET.size)

    def probe(batch_size: int, *, margin: float = MARGIN, single: bool = False) -> Any:
        return bs.probe_in_subprocess(
            options, batch_size, device=TARGET.device, input_shape=shape, num_classes=CLASSES,
            margin=margin, memory_cap_bytes=CAP, steps=1 if single else 3,
            evaluate=not single, timeout=min(180.0, ctx.left()),
        )  # fmt: skip

    # The fitter every worker runs (caches, binary search, probe children), on a scratch cache;
    # only the probe is swapped, for one that caps the child's allocator at 8 GiB.
    request = bs.FitRequest(
        options=options, low=8, high="auto", device=TARGET.device, input_shape=shape,
        num_classes=CLASSES, margin=MARGIN, refresh=True,
    )  # fmt: skip
    start = time.monotonic()
    rng = bs.resolve_high(
        request,
        local_cache=bs.LocalCache(ctx.tmp / f"cache-{model}-{precision}"),
        shared=bs.InMemorySharedLimits(),
        hooks=bs.DeviceHooks(device_info=capped, probe=probe),
    )
    wall = time.monotonic() - start
    limit = rng.limit
    if precision == "fp32":
        fp32[model] = limit
    result, why = judge_fit(
        model, precision, limit, fp32.get(model) if precision != "fp32" else None
    )
    tried = ", ".join(f"{o.batch_size} {'fits' if o.ok else o.reason}" for o in rng.tried)
    yield Row(
        "fit", f"{name}: probe answer", result,
        f"**{limit}** ({why}); {len(rng.tried)} probes in {_seconds(wall)} "
        f"({_seconds(sum(o.seconds for o in rng.tried))} training): {tried}",
    )  # fmt: skip
    for size, must_fit in ((limit, True), (2 * limit, False)):
        o = probe(size, margin=0.0, single=True)
        peak = human_bytes(o.peak_bytes) if o.peak_bytes is not None else "-"
        if must_fit:
            ok = o.ok
            said = "fits" if o.ok else f"did not train: {o.reason} {o.detail}"
        else:
            ok = o.reason == "oom"
            said = {True: "ran out of memory", False: f"{o.reason}: {o.detail}"}[ok]
            if o.ok:
                said = "also trained: the 10% margin held it (the fit is conservative)"
        yield Row(
            "fit", f"{name}: one step at {size} ({'fit' if must_fit else '2x fit'})",
            "ok" if ok else "FAIL",
            f"{said}; peak reserved {peak}, {_seconds(o.seconds)}"[:400],
        )  # fmt: skip


# --- oom_trial: a real CUDA out-of-memory error inside a trial, through hpsearch's worker ---

_OOM_STUDY = """
name: gpu-check-oom
metric: val_accuracy
sampler: {{type: random, seed: 0}}
pruner: {{type: none}}
budget: {{n_trials: 2}}
batch_size_fit: {{policy: per_device, margin: {margin}}}
objective:
  trainer: image_classification
  model: {model}
  precision: fp32
  device: {device}
  dataset: {{path: {data}, image_size: {size}, normalize: imagenet}}
  epochs: 1
  max_train_batches: 2
  keep_checkpoints: 1
search_space:
  batch_size: {{type: power_of_two, low: 8, high: auto}}
enqueue:
  - {{batch_size: {big}}}
  - {{batch_size: {small}}}
"""
OOM_BIG, OOM_SMALL = 256, 16  # fp32 ResNet-50: ~22 GiB at 256 (far above 8), ~1.5 GiB at 16


def oom_trial(ctx: Context) -> Iterator[Row]:
    """The probe children see the whole card; this worker process is held to 8 GiB, as if
    another process took the rest: the enqueued 256 passes the fit and runs out of memory."""
    os.environ["HPSEARCH_CACHE_DIR"] = str(ctx.tmp / "cache")  # probe afresh; leave ~ alone
    import optuna
    import torch

    import hpsearch
    from hpsearch import batch_size as bs
    from hpsearch.objective.trainer import StudyLimits

    data = make_image_folder(ctx.tmp / "data", classes=2, per_class=160, size=TARGET.size)
    path = ctx.tmp / "oom.yaml"
    path.write_text(
        _OOM_STUDY.format(
            margin=MARGIN, data=data, big=OOM_BIG, small=OOM_SMALL, model=TARGET.model,
            device=TARGET.device, size=TARGET.size,
        )
    )  # fmt: skip
    if TARGET.cuda:
        total = bs.describe_device(TARGET.device).total_bytes  # from a child: no CUDA here yet
        torch.cuda.set_per_process_memory_fraction(memory_fraction(CAP, total), 0)
    start = time.monotonic()
    study = hpsearch.run(
        path, storage=f"sqlite:///{ctx.tmp / 'oom.db'}", artifacts=str(ctx.tmp / "artifacts")
    )
    wall = time.monotonic() - start
    trials = study.trials
    first = trials[0] if trials else None
    reason = first.user_attrs.get("fail_reason", "") if first else ""
    failed = first is not None and first.state == optuna.trial.TrialState.FAIL
    yield Row(
        "oom_trial", f"trial 0 at {OOM_BIG} under 8 GiB ends FAIL oom",
        "ok" if failed and reason.startswith("oom:") else "FAIL",
        f"state {first.state.name if first else 'none'}; fail_reason `{reason[:160]}`",
    )  # fmt: skip
    entries = [bs.LimitEntry.from_dict(v) for _, v in StudyLimits(study).items()]
    lowered = [e for e in entries if e.source == "observed_oom" and e.failure == OOM_BIG]
    probed = max((o.batch_size for e in entries for o in e.tried if o.ok), default=0)
    yield Row(
        "oom_trial", "shared limit lowered below the failed size",
        "ok" if lowered and lowered[0].limit < OOM_BIG else "FAIL",
        f"probe on the whole card: {probed}; study's shared limit after the OOM: "
        f"{[e.limit for e in entries]} (failure {[e.failure for e in entries]})",
    )  # fmt: skip
    second = trials[1] if len(trials) > 1 else None
    done = second is not None and second.state == optuna.trial.TrialState.COMPLETE
    peak = torch.cuda.max_memory_reserved(0) / GiB if TARGET.cuda else 0.0
    yield Row(
        "oom_trial", f"next trial (batch {OOM_SMALL}) runs in the same worker",
        "ok" if done else "FAIL",
        f"state {second.state.name if second else 'none'}, value "
        f"{second.value if second else None}; {len(trials)} trials in {_seconds(wall)}; peak "
        f"reserved {peak:.2f} GiB of the 8 GiB cap",
    )  # fmt: skip


# --- study: `hpsearch run` on a generated 224-px ImageFolder, high: auto, bf16, channels_last ---

_STUDY = """
name: gpu-check-study
metric: val_accuracy
sampler: {{type: tpe, seed: 0}}
pruner: {{type: none}}
budget: {{n_trials: 3}}
batch_size_fit: {{policy: per_device, margin: {margin}}}
objective:
  trainer: image_classification
  model: {model}
  precision: bf16
  channels_last: true
  device: {device}
  dataset: {{path: {data}, image_size: {size}, val_fraction: 0.2}}
  epochs: 2
  keep_checkpoints: 1
search_space:
  batch_size: {{type: power_of_two, low: 8, high: auto}}
  lr: {{type: float, low: 1.0e-3, high: 0.1, log: true}}
"""


def study(ctx: Context) -> Iterator[Row]:
    import optuna

    from hpsearch.objective.trainer import StudyLimits

    data = make_image_folder(ctx.tmp / "data", classes=2, per_class=128, size=TARGET.size)
    path = ctx.tmp / "study.yaml"
    path.write_text(
        _STUDY.format(
            margin=MARGIN, data=data, model=TARGET.model, device=TARGET.device, size=TARGET.size
        )
    )
    url = f"sqlite:///{ctx.tmp / 'study.db'}"
    env = {
        **os.environ,
        "HPSEARCH_CACHE_DIR": str(ctx.tmp / "cache"),  # probe afresh; leave ~/.cache alone
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    command = [sys.executable, "-m", "hpsearch", "run", str(path), "--storage", url,
               "--artifacts", str(ctx.tmp / "artifacts")]  # fmt: skip
    start = time.monotonic()
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=ctx.left() - 5)
    wall = time.monotonic() - start
    tail = (proc.stderr.strip().splitlines() or [""])[-1][:300]
    yield Row(
        "study", "`hpsearch run` of 3 ResNet-50 trials (bf16, channels_last, high: auto)",
        "ok" if proc.returncode == 0 else "FAIL",
        f"exit {proc.returncode} in {_seconds(wall)}" + (f": {tail}" if proc.returncode else ""),
    )  # fmt: skip
    loaded = optuna.load_study(study_name="gpu-check-study", storage=url)
    states = [t.state.name for t in loaded.trials]
    sizes = [int(t.user_attrs.get("batch_size", 0)) for t in loaded.trials]
    values = [round(t.value, 3) if t.value is not None else None for t in loaded.trials]
    limits = [int(v.get("limit", 0)) for _, v in StudyLimits(loaded).items()]
    yield Row(
        "study", "3 trials COMPLETE within the fitted limit",
        "ok" if states == ["COMPLETE"] * 3 and all(s <= max(limits, default=0) for s in sizes)
        else "FAIL",
        f"fitted limit {limits}; batch sizes {sizes}; val_accuracy {values}; states {states}",
    )  # fmt: skip
