"""What a non-expert must hear before a study starts: at `validate` and at the start of `run`.

Each finding is one line naming the file, line and key, with the fix. Pretrained weights this
machine cannot get are an error (every trial would fail after its set-up); the rest are
warnings: images upscaled far beyond their size, a frozen backbone without pretrained weights,
and an epoch so slow (measured by the timing probe) that the budget cannot be reached.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpsearch.guide.inspect_data import median_short_side
from hpsearch.guide.timing import Speed, cached, device_of, fmt_seconds, measure, upper_bound
from hpsearch.guide.weights import weights_status
from hpsearch.spec import (
    CategoricalParam,
    IntParam,
    KeyPath,
    LoadedSpec,
    PowerOfTwoParam,
    StudySpec,
)
from hpsearch.train.options import TrainerOptions
from hpsearch.train.summary import DataSummary

UPSCALE_LIMIT = 4.0  # images enlarged more than this add cost without detail
SLOW_EPOCH_S = 3600.0  # without a time budget, an epoch slower than this is worth a word
CPU_STEP_OVERHEAD_S = 0.5  # the upper bound's per-step cost (threads waiting on a busy CPU)


@dataclass
class Findings:
    """The warnings, and the time estimate `validate` prints."""

    warnings: list[str] = field(default_factory=list)
    time: str | None = None


def representative_values(spec: StudySpec) -> dict[str, Any]:
    """The trial the checks reason about: the first enqueued one (else each range's low)."""
    return dict(spec.enqueue[0]) if spec.enqueue else {}


def check(
    loaded: LoadedSpec,
    options: TrainerOptions,
    summary: DataSummary,
    *,
    timeout_s: float | None,
    gpu_hours: float | None,
    workers: int = 1,
    cache_dir: Path | None = None,
) -> Findings:
    """Check a trainer study before it runs.

    Raises:
        SpecError: `pretrained: true` whose weights are neither cached nor downloadable.
    """
    check_weights(loaded, options)
    found = Findings()
    found.warnings += _gpu_model_on_cpu(loaded, options)
    found.warnings += _frozen_without_weights(loaded, options)
    found.warnings += _upscaled(loaded, options, summary)
    time_warnings, found.time = _time(
        loaded,
        options,
        summary,
        timeout_s=timeout_s,
        gpu_hours=gpu_hours,
        workers=workers,
        cache_dir=cache_dir,
    )
    found.warnings += time_warnings
    return found


def _gpu_model_on_cpu(loaded: LoadedSpec, options: TrainerOptions) -> list[str]:
    """Say it plainly when `device: auto` finds no GPU for a model made for one."""
    if options.device != "auto" or options.model == "small_cnn" or device_of(options) != "cpu":
        return []
    message = (
        f"no GPU here, so {options.model} will train on this machine's CPU (the study's "
        "estimated time is on it); run on a GPU machine, pick small_cnn, or write device: cpu "
        "to accept it"
    )
    return [str(loaded.error(("objective", "device"), message))]


def check_weights(loaded: LoadedSpec, options: TrainerOptions) -> None:
    """`pretrained: true` must find its weights in torch's cache or be able to download them."""
    if not options.pretrained:
        return
    param = loaded.spec.search_space.get("model")
    models = param.choices if isinstance(param, CategoricalParam) else [options.model]
    for model in dict.fromkeys(str(m) for m in models):
        if model == "small_cnn":
            continue
        status = weights_status(model)
        if not status.available:
            raise loaded.error(("objective", "pretrained"), status.problem())


def _where(loaded: LoadedSpec, name: str, options: Mapping[str, Any]) -> KeyPath:
    if name in loaded.spec.search_space:
        return ("search_space", name)
    return ("objective", name) if name in options else ("objective",)


def _frozen_without_weights(loaded: LoadedSpec, options: TrainerOptions) -> list[str]:
    if options.pretrained or options.weights is not None:
        return []
    param = loaded.spec.search_space.get("freeze_backbone_epochs")
    if isinstance(param, IntParam):
        most = param.high
    elif isinstance(param, CategoricalParam):
        most = max(int(c) for c in param.choices if isinstance(c, int | float))
    else:
        most = options.freeze_backbone_epochs
    if most <= 0:
        return []
    where = _where(loaded, "freeze_backbone_epochs", loaded.spec.objective.options)
    message = (
        f"freezes the backbone for up to {most} epoch(s), but it has no pretrained weights "
        "(pretrained: false, no `weights:`), so the new head learns from random features; "
        "set `pretrained: true` (or `weights:`), or freeze_backbone_epochs: 0"
    )
    return [str(loaded.error(where, message))]


def _upscaled(loaded: LoadedSpec, options: TrainerOptions, summary: DataSummary) -> list[str]:
    if options.dataset.image_size is None or not summary.sizes:
        return []
    side = median_short_side(dict(summary.sizes))
    factor = options.dataset.image_size / side
    if factor <= UPSCALE_LIMIT:
        return []
    message = (
        f"{options.dataset.image_size} upscales the images {factor:.1f}x (their median shorter "
        f"side is {side} px): {factor**2:.0f}x the pixels to train on and no detail gained; "
        f"set image_size to at most {int(UPSCALE_LIMIT * side)}, or remove it to train at their "
        "own size"
    )
    return [str(loaded.error(("objective", "dataset", "image_size"), message))]


def _epoch_range(spec: StudySpec, options: TrainerOptions) -> tuple[int, int]:
    param = spec.search_space.get("epochs")
    if isinstance(param, IntParam):
        return param.low, param.high
    if isinstance(param, CategoricalParam):
        values = [int(c) for c in param.choices if isinstance(c, int | float)]
        return min(values), max(values)
    return options.epochs, options.epochs


def _batch_low(spec: StudySpec, options: TrainerOptions) -> int:
    param = spec.search_space.get("batch_size")
    return param.low if isinstance(param, PowerOfTwoParam | IntParam) else options.batch_size


def _time(
    loaded: LoadedSpec,
    options: TrainerOptions,
    summary: DataSummary,
    *,
    timeout_s: float | None,
    gpu_hours: float | None,
    workers: int,
    cache_dir: Path | None,
) -> tuple[list[str], str | None]:
    """Warn when an epoch makes the budget unreachable; the probe runs only if it could."""
    spec = loaded.spec
    fewest, most = _epoch_range(spec, options)
    trained = summary.num_train
    if options.max_train_batches is not None:
        trained = min(trained, options.max_train_batches * options.batch_size)
    steps = -(-trained // max(1, min(_batch_low(spec, options), options.batch_size)))
    limits = (timeout_s * workers if timeout_s else None, gpu_hours * 3600 if gpu_hours else None)
    allowed = [s for s in limits if s]
    allowed_s = min(allowed) if allowed else None

    def epoch(speed: Speed) -> float:
        seconds = speed.epoch_s(trained, summary.num_val)
        return seconds if speed.measured else seconds + steps * _overhead(speed)

    bound = upper_bound(options, summary.image_size)
    size, channels, classes = summary.image_size, options.in_channels, len(summary.classes)
    # A figure measured here before (by `init`'s probe) is the one to state: `init` said "about
    # 6 min", and `validate` must not then say "at most 5.2 h" for the same study.
    known = cached(
        options, image_size=size, channels=channels, num_classes=classes, cache_dir=cache_dir
    )
    if known is None and not _could_matter(epoch(bound) * fewest, epoch(bound), allowed_s):
        bounded = f"at most {fmt_seconds(epoch(bound))} per epoch ({bound.how()})"
        total = _study_total(spec, epoch(bound), most, allowed_s, workers, "at most")
        return [], f"{bounded}; no timing probe needed{total}"
    speed = known or measure(
        options, image_size=size, channels=channels, num_classes=classes, cache_dir=cache_dir
    )
    if speed is None:  # the probe itself ran out of time: very slow, but how slow is unknown
        speed = bound
    epoch_s = epoch(speed)
    line = f"about {fmt_seconds(epoch_s)} per epoch ({speed.how()})"
    line += _study_total(spec, epoch_s, most, allowed_s, workers, "about")
    shape = f"{options.model} at {summary.image_size} px on {speed.device}"
    fix = (
        "use a GPU, a smaller model (resnet18, mobilenet_v3_small) or a smaller dataset.image_size"
    )
    if allowed_s is not None and epoch_s * fewest > allowed_s:
        key = "gpu_hours" if gpu_hours and gpu_hours * 3600 == allowed_s else "timeout"
        message = (
            f"the budget cannot finish one training: {fewest} epoch(s) of {shape} take about "
            f"{fmt_seconds(epoch_s * fewest)} ({fmt_seconds(epoch_s)} per epoch, {speed.how()}), "
            f"but the budget allows {fmt_seconds(allowed_s)}; raise the budget, lower epochs, "
            f"or {fix}"
        )
        return [str(loaded.error(("budget", key), message))], line
    if allowed_s is None and epoch_s > SLOW_EPOCH_S:
        n = spec.budget.n_trials
        total = (
            f"; {n} trainings of up to {most} epochs take up to {fmt_seconds(n * most * epoch_s)}"
            if n
            else ""
        )
        message = f"an epoch of {shape} takes about {fmt_seconds(epoch_s)} ({speed.how()}){total}"
        return [str(loaded.error(("objective", "model"), f"{message}; {fix}"))], line
    return [], line


def _study_total(
    spec: StudySpec, epoch_s: float, most: int, allowed_s: float | None, workers: int, how: str
) -> str:
    """The whole study's time on this machine: its trainings at their longest, or its budget."""
    n = spec.budget.n_trials
    if n is None:
        return f"; the study runs until its budget ({fmt_seconds(allowed_s)})" if allowed_s else ""
    total = n * most * epoch_s / max(1, workers)
    text = f"; the study: {n} trainings of up to {most} epochs, {how} {fmt_seconds(total)}"
    text += " on this machine" + (f" with {workers} workers" if workers > 1 else "")
    if allowed_s is not None and allowed_s < total * max(1, workers):
        text += f", cut at the budget's {fmt_seconds(allowed_s)}"
    return text + " (pruning shortens it)"


def _overhead(speed: Speed) -> float:
    return CPU_STEP_OVERHEAD_S if speed.device == "cpu" else 0.05


def _could_matter(training_s: float, epoch_s: float, allowed_s: float | None) -> bool:
    """Whether even the slow upper bound could trigger a warning (else no probe is needed)."""
    if allowed_s is not None:
        return training_s > allowed_s
    return epoch_s > SLOW_EPOCH_S
