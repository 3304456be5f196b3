"""`hpsearch init`'s decisions: model, input, preset, batch size, epochs and budget, each with why.

Rules, in order: small images get the small CNN at their own size; larger ones a torchvision
model fine-tuned from ImageNet weights when this machine has them (from scratch otherwise), sized
to the GPU's memory; the timing probe then checks that the budget buys enough trainings, and
steps down to a smaller input or model when it does not.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hpsearch.guide.budget import BudgetChoice, budget_section
from hpsearch.guide.inspect_data import DataFacts
from hpsearch.guide.machine import MachineFacts
from hpsearch.guide.preflight import UPSCALE_LIMIT
from hpsearch.guide.presets import MODEL_FACTS, Knob, Preset, preset_for
from hpsearch.guide.timing import Speed, fmt_seconds, measure
from hpsearch.guide.weights import WeightsStatus, weights_status
from hpsearch.train.options import TrainerOptions

_log = logging.getLogger(__name__)

SMALL_IMAGE_PX = 48  # at or below: the small CNN at the images' own size
BIG_GPU_BYTES = 8 * 2**30  # ResNet-50 at 224 px trains at batch 64+ in bf16 from about here
MIN_TRAININGS = 8  # a time budget should buy at least this many full trainings
MAX_TRAINING_S = 12 * 3600  # with a count budget, one full training should take at most this
DEFAULT_BATCH = 32
IMBALANCED = 3.0  # largest / smallest class from which balanced accuracy is the metric


@dataclass(frozen=True)
class Why:
    """A value written to the study file, and the comment that says why."""

    value: Any
    why: str


@dataclass
class Plan:
    """Everything `init` writes, decided; `hpsearch.guide.initfile` renders it."""

    name: str
    data: DataFacts
    machine: MachineFacts
    budget: BudgetChoice
    metric: Why
    preset: Preset
    objective: dict[str, Why]  # fixed trainer options, in the order written
    dataset: dict[str, Why]
    space: dict[str, Why]  # search-space entries
    enqueue: dict[str, Any]
    budget_keys: Why
    speed: Speed | None
    epoch_s: float | None
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Candidate:
    model: str
    pretrained: bool
    image_size: int | None  # None: the images' own (single) size
    why_model: str
    why_size: str

    def side(self, data: DataFacts) -> int:
        return self.image_size or data.short_side


def plan_study(
    data: DataFacts,
    machine: MachineFacts,
    budget: BudgetChoice,
    *,
    name: str,
    data_path: str,
    model: str | None = None,
    max_epochs: int | None = None,
    say: Callable[[str], None] = _log.info,
) -> Plan:
    """Decide the study for this data, machine and budget (probing speed as needed)."""
    channels = 1 if data.grey_share >= 0.95 else 3
    weights: dict[str, WeightsStatus] = {}
    notes: list[str] = []

    def pretrained_ok(m: str) -> bool:
        if m == "small_cnn":
            return False
        if m not in weights:
            weights[m] = weights_status(m)
        return weights[m].available

    chosen, speed, epoch_s = _pick(
        _candidates(data, machine, model, pretrained_ok), data, machine, budget, channels, say,
        notes,
    )  # fmt: skip
    preset = preset_for(chosen.model, chosen.pretrained)
    for m, status in weights.items():
        notes.append(_weights_note(status, used=m == chosen.model and chosen.pretrained))
    epochs, trainings = _epochs(preset, budget, epoch_s, max_epochs)
    batch, batch_default = _batch(data)
    objective: dict[str, Why] = {"model": Why(chosen.model, chosen.why_model)}
    if chosen.model != "small_cnn":
        objective["pretrained"] = Why(chosen.pretrained, _pretrained_why(chosen))
    space, enqueue = _search_or_fix(preset, trainings, batch, batch_default, epochs, objective)
    objective["device"] = Why(machine.device_option, _device_why(machine))
    if chosen.model == "small_cnn" and not machine.gpu:
        objective["cpu_threads"] = Why(
            1,
            "one thread per trial: a small model gains nothing "
            "from more, and threads waiting for a core cost a lot",
        )
    keys, budget_why = budget_section(budget)
    if epoch_s is not None:
        most = epochs[0]["high"] if isinstance(epochs[0], dict) else int(epochs[0])
        notes.insert(0, _time_note(epoch_s, speed, budget, trainings, most))
    if not machine.gpu and chosen.model != "small_cnn":
        notes.insert(0, f"no GPU here: {chosen.model} will train on this machine's CPU")
    return Plan(
        name=name,
        data=data,
        machine=machine,
        budget=budget,
        metric=_metric(data),
        preset=preset,
        objective=objective,
        dataset=_dataset(data, chosen, channels, data_path),
        space=space,
        enqueue=enqueue,
        budget_keys=Why(keys, budget_why),
        speed=speed,
        epoch_s=epoch_s,
        notes=notes,
    )


def _search_or_fix(
    preset: Preset,
    trainings: int,
    batch: tuple[Any, str],
    batch_default: int,
    epochs: tuple[Any, str],
    objective: dict[str, Why],
) -> tuple[dict[str, Why], dict[str, Any]]:
    """The search space and the first trial's values (the preset's); the rest in `objective`.

    A knob is searched only with a budget of at least its `min_trainings` trainings.
    """
    space: dict[str, Why] = {}
    enqueue: dict[str, Any] = {}
    for knob in preset.knobs:
        value, spec = _scaled(knob, preset, batch_default)
        if spec is not None and trainings >= knob.min_trainings:
            space[knob.name] = Why(spec, f"{knob.why} [{knob.source}]")
            enqueue[knob.name] = value
        elif spec is not None:
            objective[knob.name] = Why(
                value,
                f"{knob.why} [{knob.source}]; searched with a "
                f"budget of {knob.min_trainings}+ trainings",
            )
        else:
            objective[knob.name] = Why(value, f"{knob.why} [{knob.source}]")
    for key, (value, why) in (("batch_size", batch), ("epochs", epochs)):
        if isinstance(value, dict):
            space[key] = Why(value, why)
            enqueue[key] = batch_default if key == "batch_size" else _default_epochs(value, preset)
        else:
            objective[key] = Why(value, why)
    return space, enqueue


def _metric(data: DataFacts) -> Why:
    """Balanced accuracy for imbalanced classes: plain accuracy rewards the largest class."""
    imbalanced = data.imbalance >= IMBALANCED
    return Why(
        "val_balanced_accuracy" if imbalanced else "val_accuracy",
        f"classes are imbalanced ({data.imbalance:.1f}x): the mean recall per class"
        if imbalanced
        else "the share of validation images classified correctly",
    )


def _pick(
    candidates: list[_Candidate],
    data: DataFacts,
    machine: MachineFacts,
    budget: BudgetChoice,
    channels: int,
    say: Callable[[str], None],
    notes: list[str],
) -> tuple[_Candidate, Speed | None, float | None]:
    """The first candidate the budget affords (timed by the probe), else the fastest one."""
    best: tuple[_Candidate, Speed | None, float | None] | None = None
    for candidate in candidates:
        side = candidate.side(data)
        say(f"timing {candidate.model} at {side} px on {machine.kind} ...")
        options = _probe_options(candidate, data, machine, channels)
        probed = measure(options, image_size=side, channels=channels,
                         num_classes=len(data.classes))  # fmt: skip
        if probed is None:  # the probe itself timed out: slower than any budget here
            best = best or (candidate, None, None)
            continue
        seconds = probed.epoch_s(data.num_train, data.num_val)
        say(f"  about {fmt_seconds(seconds)} per epoch ({probed.how()})")
        epochs = preset_for(candidate.model, candidate.pretrained).epochs[1]
        if _enough(budget, seconds, epochs):
            return candidate, probed, seconds
        if best is None or best[2] is None or seconds < best[2]:
            best = (candidate, probed, seconds)
    assert best is not None, "there is always a candidate"
    notes.append(
        f"even the cheapest choice tried ({best[0].model} at {best[0].side(data)} px) leaves "
        "few trainings in this budget; a larger budget or a GPU would help"
    )
    return best


def _candidates(
    data: DataFacts, machine: MachineFacts, model: str | None, pretrained_ok: Callable[[str], bool]
) -> list[_Candidate]:
    side = data.short_side
    if model is not None:
        models, why = [model], "--model"
    elif side <= SMALL_IMAGE_PX:
        models = ["small_cnn"]
        why = (
            f"{side}-px images: ImageNet models expect >= 64 px (more than {UPSCALE_LIMIT:.0f}x "
            "upscaling); a small CNN trains fast at their own size"
        )
    elif machine.gpu and machine.memory_bytes >= BIG_GPU_BYTES:
        models = ["resnet50", "resnet18"]
        why = "ResNet-50: the usual transfer-learning backbone (kornblith2019), fits this GPU"
    elif machine.gpu:
        models, why = ["resnet18", "mobilenet_v3_large"], "a small GPU: ResNet-18 fits it"
    else:
        models, why = ["resnet18", "mobilenet_v3_large"], "ResNet-18: light enough for a CPU"
    out = []
    for i, m in enumerate(models):
        reason = why if i == 0 else f"{m}: cheaper than {models[0]} (see the timing note)"
        pretrained = pretrained_ok(m)
        for size, why_size in _sizes(m, pretrained, data, machine):
            out.append(_Candidate(m, pretrained, size, reason, why_size))
    return out


def _sizes(
    model: str, pretrained: bool, data: DataFacts, machine: MachineFacts
) -> list[tuple[int | None, str]]:
    side = data.short_side
    if model == "small_cnn":
        if data.one_size and side <= 64:
            return [(None, "")]
        size = min(side, 64)
        return [(size, f"the median shorter side is {side} px; small_cnn suits small inputs")]
    facts = MODEL_FACTS[model]
    if pretrained:
        base = max(facts.min_size, _round16(min(facts.weights_size, UPSCALE_LIMIT * side)))
        why = (
            "the size the ImageNet weights were trained at"
            if base == facts.weights_size
            else f"at most {UPSCALE_LIMIT:.0f}x the images' {side} px"
        )
    else:
        base = max(facts.min_size, _round16(min(facts.weights_size, side)))
        why = f"the images' median shorter side ({side} px), at most {facts.weights_size}"
    sizes: list[tuple[int | None, str]] = [(base, why)]
    if not machine.gpu:  # cheaper inputs to step down to when the budget is short
        sizes += [
            (s, "smaller than usual, so the budget buys enough trainings on a CPU")
            for s in (160, 112)
            if s < base
        ]
    return sizes


def _round16(x: float) -> int:
    return int(x // 16 * 16)


def _probe_options(
    candidate: _Candidate, data: DataFacts, machine: MachineFacts, channels: int
) -> TrainerOptions:
    preset = preset_for(candidate.model, candidate.pretrained)
    fixed = {k.name: k.default for k in preset.knobs if k.name in ("optimizer", "momentum")}
    return TrainerOptions.model_validate(
        {
            "dataset": {
                "path": str(data.root),
                "image_size": candidate.side(data),
                "channels": channels,
            },
            "model": candidate.model,
            "batch_size": DEFAULT_BATCH,
            "device": machine.kind,
            "cpu_threads": 1 if candidate.model == "small_cnn" and not machine.gpu else None,
            **fixed,
        }
    )


def _enough(budget: BudgetChoice, epoch_s: float, epochs: int) -> bool:
    training_s = epoch_s * epochs
    if budget.seconds is not None:
        return budget.seconds / training_s >= MIN_TRAININGS
    return training_s <= MAX_TRAINING_S


def _epochs(
    preset: Preset, budget: BudgetChoice, epoch_s: float | None, max_epochs: int | None
) -> tuple[tuple[Any, str], int]:
    """(the epochs entry, written as a range or a fixed value, with why; trainings it buys)."""
    low, default, high = preset.epochs
    kind = "fine-tuning" if preset.pretrained else "training from scratch"
    why = f"a usual range for {kind} (not from a paper); the pruner stops weak runs early"
    if max_epochs is not None and max_epochs < high:
        high, why = max_epochs, f"--max-epochs {max_epochs}"
    trainings = budget.trainings
    if budget.seconds is not None and epoch_s is not None:
        fit = int(budget.seconds / (MIN_TRAININGS * epoch_s))
        if fit < high:
            high = max(1, fit)
            why = (
                f"at most {high}: {MIN_TRAININGS}+ trainings of ~{fmt_seconds(epoch_s)} "
                f"epochs fit the budget"
            )
        trainings = int(budget.seconds / (epoch_s * min(default, high)))
    low = min(low, max(1, high // 3))
    if low >= high:
        return (high, f"{why}; one value, so not searched"), trainings or 1
    return ({"type": "int", "low": low, "high": high}, why), trainings or 1


def _default_epochs(space: dict[str, Any], preset: Preset) -> int:
    return int(min(max(preset.epochs[1], space["low"]), space["high"]))


def _batch(data: DataFacts) -> tuple[tuple[Any, str], int]:
    """Powers of two up to what the device holds, but with at least 4 steps per epoch."""
    cap = 1 << max(1, (data.num_train // 4).bit_length() - 1)
    if cap < 2 * 16:
        size = max(2, min(DEFAULT_BATCH, cap))
        return (size, f"{data.num_train} training images: at least 4 steps per epoch"), size
    high: Any = "auto" if cap >= 256 else cap
    why = (
        "powers of two up to the largest this device holds (docs/batch-size.md)"
        if high == "auto"
        else f"up to {cap}: at least 4 steps per epoch on {data.num_train} images"
    )
    return ({"type": "power_of_two", "low": 16, "high": high}, why), min(DEFAULT_BATCH, cap)


def _scaled(knob: Knob, preset: Preset, batch: int) -> tuple[Any, dict[str, Any] | None]:
    """The knob's default and space, an lr scaled linearly to `batch` (goyal2017)."""
    if not (knob.scaled and preset.reference_batch):
        return knob.default, knob.space
    factor = batch / preset.reference_batch
    assert knob.space is not None
    space = {
        **knob.space,
        "low": _sig(knob.space["low"] * factor),
        "high": _sig(min(knob.space["high"] * factor, 1.0)),
    }
    return _sig(knob.default * factor), space


def _sig(x: float) -> float:
    return float(f"{x:.3g}")


def _dataset(data: DataFacts, chosen: _Candidate, channels: int, data_path: str) -> dict[str, Why]:
    out = {
        "path": Why(data_path, "one sub-folder per class; relative to this file"),
        "val_fraction": Why(data.val_fraction, "held out of every class for validation"),
        "channels": Why(channels, _channels_why(data, channels)),
        "normalize": Why(
            "imagenet" if chosen.pretrained else "dataset",
            "the statistics the ImageNet weights were trained with"
            if chosen.pretrained
            else "the training split's own mean and std",
        ),
        "augment": Why(
            ["hflip", "random_crop"],
            "flips and shifts [he2016]; drop hflip if a "
            "mirrored image means something else (text, left/right)",
        ),
    }
    if chosen.image_size is not None:
        out["image_size"] = Why(chosen.image_size, chosen.why_size)
    return out


def _channels_why(data: DataFacts, channels: int) -> str:
    sampled = sum(data.modes.values())
    grey = round(data.grey_share * sampled)
    if channels == 1:
        return f"{grey} of {sampled} sampled files are grey"
    return f"{sampled - grey} of {sampled} sampled files are colour (RGB, RGBA, palette)"


def _weights_note(status: WeightsStatus, *, used: bool) -> str:
    if status.cached:
        return f"{status.model}: ImageNet weights found in torch's cache ({status.path})"
    if status.reachable:
        return f"{status.model}: ImageNet weights download once from {status.host} on first use"
    fix = "; trained from scratch (to fine-tune, put the file there and run `hpsearch init` again)"
    return (
        f"{status.model}: no ImageNet weights here (not in {status.path}, and {status.host} "
        f"cannot be reached){fix if not used else ''}"
    )


def _pretrained_why(chosen: _Candidate) -> str:
    if chosen.pretrained:
        return "fine-tune ImageNet weights: far better than from scratch on small data"
    return "no ImageNet weights on this machine (see the note above): from scratch"


def _device_why(machine: MachineFacts) -> str:
    if machine.gpu:
        return f"the GPU ({machine.name}) when present; bf16 autocast there"
    return "this machine has no GPU"


def _time_note(
    epoch_s: float, speed: Speed | None, budget: BudgetChoice, trainings: int, most: int
) -> str:
    how = speed.how() if speed is not None else "estimate"
    text = f"about {fmt_seconds(epoch_s)} per epoch ({how})"
    if budget.seconds is not None:
        text += f"; the budget buys about {trainings} full trainings, more with pruning"
        return text + f"; the study takes the budget, {fmt_seconds(budget.seconds)}"
    total = trainings * most * epoch_s
    return (
        f"{text}; the study: {trainings} trainings of up to {most} epochs, about "
        f"{fmt_seconds(total)} on this machine (pruning shortens it)"
    )


def slug(text: str) -> str:
    """A study name from a folder name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "study"
