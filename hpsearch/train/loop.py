"""The training loop: one trial trains, evaluates and reports once per epoch (no Optuna here)."""

# Read top to bottom: `setup_training` builds what a step needs, `TrainingSetup.step` is one
# optimizer step, `TrainingSetup.evaluate` one pass over validation, `fit` the whole trial.

from __future__ import annotations

import functools
import itertools
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from hpsearch.train import resume
from hpsearch.train.checkpoints import save_checkpoint
from hpsearch.train.data import Data, load_data
from hpsearch.train.models import Classifier, build_model, freeze_backbone
from hpsearch.train.options import METRICS, TrainerOptions
from hpsearch.train.runtime import (
    autocast,
    grad_scaler,
    resolve_device,
    resolve_precision,
    seed_everything,
    set_cpu_threads,
    use_channels_last,
)
from hpsearch.train.schedules import make_scheduler

logger = logging.getLogger(__name__)

# Called once per epoch with the metrics and the epoch (from 1). It may raise, e.g. Optuna's
# TrialPruned: fit lets the exception through untouched, which is how pruning stops a trial.
Report = Callable[[Mapping[str, float], int], None]


@dataclass
class TrainingSetup:
    """A model on its device with its optimizer, schedule, loss and precision settings."""

    model: Classifier
    optimizer: torch.optim.Optimizer
    scheduler: LambdaLR
    loss_fn: nn.Module
    ctx: AbstractContextManager[object]  # autocast, or nullcontext for fp32
    scaler: torch.amp.GradScaler
    device: torch.device
    memory_format: torch.memory_format
    micro_batch_size: int | None
    num_classes: int
    steps: int = 0  # optimizer steps taken

    def step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One optimizer step on the batch; returns its mean loss as a tensor (no host sync).

        With `micro_batch_size`, gradients of the micro-batches are accumulated first, each
        loss weighted by its share of the batch, so the step equals a full-batch step (except
        for BatchNorm, which normalises each micro-batch on its own).
        """
        x = x.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)
        y = y.to(self.device, non_blocking=True)
        sizes = _chunk_sizes(len(y), self.micro_batch_size or len(y))
        parts = []
        for xs, ys in zip(x.split(sizes), y.split(sizes), strict=True):
            with self.ctx:
                loss = self.loss_fn(self.model(xs), ys)
            if len(sizes) > 1:
                loss = loss * (len(ys) / len(y))  # this micro-batch's share of the batch mean
            # The scaler is a pass-through unless training in fp16.
            self.scaler.scale(loss).backward()
            parts.append(loss.detach())
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self.steps += 1
        return parts[0] if len(parts) == 1 else torch.stack(parts).sum()

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> float:
        """`step`, returning the loss as a float (the batch-size fitter's probe)."""
        return float(self.step(x, y))

    @torch.inference_mode()
    def evaluate(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, float]:
        """Validation metrics over already-preprocessed batches; leaves the model in eval mode.

        `val_loss` is plain cross-entropy, without label smoothing, so trials that search
        `label_smoothing` stay comparable.
        """
        self.model.eval()
        loss = torch.zeros((), device=self.device, dtype=torch.float64)
        hits = torch.zeros(self.num_classes, device=self.device, dtype=torch.long)
        seen = torch.zeros(self.num_classes, device=self.device, dtype=torch.long)
        for x, y in batches:
            x = x.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)
            y = y.to(self.device, non_blocking=True)
            with self.ctx:
                logits = self.model(x)
            loss += F.cross_entropy(logits.float(), y, reduction="sum")
            hits += torch.bincount(y[logits.argmax(1) == y], minlength=self.num_classes)
            seen += torch.bincount(y, minlength=self.num_classes)
        n, present = int(seen.sum()), seen > 0
        recall = hits[present].double() / seen[present].double()
        return {
            "val_accuracy": float(hits.sum()) / max(n, 1),
            "val_loss": float(loss) / max(n, 1),
            "val_balanced_accuracy": float(recall.mean()) if len(recall) else 0.0,
        }


def _chunk_sizes(n: int, chunk: int) -> list[int]:
    """Micro-batch sizes; a last chunk of one joins the previous one (see `fit` on BatchNorm)."""
    sizes = [min(chunk, n - start) for start in range(0, n, chunk)]
    if len(sizes) > 1 and sizes[-1] == 1:
        sizes[-2:] = [sizes[-2] + 1]
    return sizes


def _optimizer(options: TrainerOptions, model: nn.Module) -> torch.optim.Optimizer:
    # No weight decay on biases and norm scales (1-D tensors), as in nanoGPT's
    # configure_optimizers: decaying them only fights the normalisation. Without decay, one
    # group: each group is a separate update call per step.
    params = list(model.parameters())
    groups: list[dict[str, Any]] = [{"params": params, "weight_decay": 0.0}]
    if options.weight_decay > 0:
        groups = [
            {"params": [p for p in params if p.ndim >= 2], "weight_decay": options.weight_decay},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
        ]
    if options.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=options.lr, momentum=options.momentum)
    # For Adam(W), `momentum` is beta1, the same role (0.9 is both defaults).
    betas = (options.momentum, 0.999)
    if options.optimizer == "adam":
        return torch.optim.Adam(groups, lr=options.lr, betas=betas)
    return torch.optim.AdamW(groups, lr=options.lr, betas=betas)


def setup_training(
    options: TrainerOptions,
    *,
    num_classes: int,
    in_channels: int,
    device: torch.device | str,
    steps_per_epoch: int = 1,
) -> TrainingSetup:
    """Build the model, optimizer, schedule, loss and precision for `options` on `device`.

    Needs no dataset: the batch-size fitter calls it, then `train_step` on synthetic tensors.
    """
    device = torch.device(device)
    dtype = resolve_precision(options.precision, device)
    channels_last = use_channels_last(options.channels_last, options.model, device)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = build_model(
        options.model,
        num_classes,
        in_channels,
        pretrained=options.pretrained,
        weights=options.weights,
        dropout=options.dropout,
    )
    model = model.to(device=device, memory_format=memory_format)  # type: ignore[call-overload]
    optimizer = _optimizer(options, model)
    scheduler = make_scheduler(
        optimizer,
        options.lr_schedule,
        steps_per_epoch=steps_per_epoch,
        epochs=options.epochs,
        warmup_epochs=options.warmup_epochs,
    )
    micro = options.micro_batch_size
    return TrainingSetup(
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        loss_fn=nn.CrossEntropyLoss(label_smoothing=options.label_smoothing),
        ctx=autocast(device, dtype),
        scaler=grad_scaler(device, dtype),
        device=device,
        memory_format=memory_format,
        micro_batch_size=micro if micro is not None and micro < options.batch_size else None,
        num_classes=num_classes,
    )


def _better(value: float, best: float, mode: str) -> bool:
    if math.isnan(best):
        return not math.isnan(value)
    return value > best if mode == "max" else value < best


def _train_epoch(setup: TrainingSetup, data: Data, steps: int) -> tuple[float, int]:
    """Train on up to `steps` batches; returns (mean training loss, images seen)."""
    losses: list[torch.Tensor] = []
    sizes: list[int] = []
    for x, y in itertools.islice(data.train, steps):
        if len(y) == 1 and sizes:
            # A last batch of one image: BatchNorm cannot normalise a single value per
            # channel (an error wherever features are 1x1), and one image is a poor step.
            continue
        x = data.transform(x.to(setup.device, non_blocking=True), train=True)
        # Losses stay on the device until the epoch ends: no host sync per step.
        losses.append(setup.step(x, y))
        sizes.append(len(y))
    weights = torch.tensor(sizes, device=setup.device, dtype=torch.float32)
    return float(torch.stack(losses).float() @ weights) / sum(sizes), sum(sizes)


def _val_batches(data: Data, device: torch.device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    for x, y in data.val:
        yield data.transform(x.to(device, non_blocking=True), train=False), y


@dataclass
class _Progress:
    """The epochs a trial reported so far, its best one, and (when resuming is on) the best
    epoch's weights on the CPU, which a resumed trial's best checkpoint is written from."""

    monitor: str
    mode: str
    keep_weights: bool
    history: list[dict[str, float]] = field(default_factory=list)
    best: dict[str, float] = field(default_factory=dict)
    best_weights: dict[str, torch.Tensor] | None = None

    def add(self, metrics: dict[str, float], model: nn.Module) -> bool:
        """Record an epoch; True when it is the best so far."""
        self.history.append(metrics)
        if self.best and not _better(metrics[self.monitor], self.best[self.monitor], self.mode):
            return False
        self.best = dict(metrics)
        if self.keep_weights:
            self.best_weights = _cpu_copy(model.state_dict())
        return True


def _cpu_copy(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in state.items()}


def _resume_state(setup: TrainingSetup, data: Data, progress: _Progress) -> dict[str, Any]:
    """Everything the next epoch needs to run as if the trial had never stopped."""
    epoch = int(progress.history[-1]["epoch"])
    best_is_last = progress.best.get("epoch") == epoch
    return {
        "format": resume.FORMAT,
        "epoch": epoch,
        "history": progress.history,
        "model": _cpu_copy(setup.model.state_dict()),
        "best_model": None if best_is_last else progress.best_weights,
        "optimizer": setup.optimizer.state_dict(),
        "scheduler": setup.scheduler.state_dict(),
        "scaler": setup.scaler.state_dict(),
        "steps": setup.steps,
        "rng": resume.rng_state(getattr(data.train, "generator", None)),
    }


def _restore(
    store: resume.ResumeStore, setup: TrainingSetup, data: Data, progress: _Progress
) -> int:
    """Load the latest resume checkpoint, if any, into `setup` and `progress`; returns the
    first epoch still to train (1 when there is nothing to resume)."""
    path = store.latest()
    state = None if path is None else resume.load_state(path)
    if state is None:
        return 1
    setup.model.load_state_dict(state["model"])
    setup.optimizer.load_state_dict(state["optimizer"])
    setup.scheduler.load_state_dict(state["scheduler"])
    setup.scaler.load_state_dict(state["scaler"])
    setup.steps = int(state["steps"])
    for metrics in state["history"]:
        progress.add(dict(metrics), setup.model)
    if state["best_model"] is not None:
        progress.best_weights = state["best_model"]
    # Last: building the model and loading the data above drew from the generators.
    resume.set_rng_state(state["rng"], getattr(data.train, "generator", None))
    return int(state["epoch"]) + 1


def fit(
    options: TrainerOptions,
    report: Report,
    *,
    monitor: str = "val_accuracy",
    mode: str = "max",
    checkpoint_path: Path | None = None,
    cache_dir: Path | None = None,
    log: logging.Logger | None = None,
    resume_from: resume.ResumeStore | None = None,
    resume_every_s: float = 0.0,
) -> dict[str, float]:
    """Train one trial: each epoch trains, evaluates, maybe checkpoints, then calls `report`.

    Args:
        options: the trial's validated options.
        report: called as `report(metrics, epoch)` after every epoch, epoch counting from 1;
            whatever it raises propagates (that is how a pruner stops the trial).
        monitor: the metric that picks the best epoch (one of `METRICS`), with `mode`.
        checkpoint_path: where the best epoch's checkpoint goes (plus a `.json` score sidecar).
        cache_dir: where the image-folder scan and dataset statistics are cached.
        log: the logger for progress lines (default: this module's).
        resume_from: where resume checkpoints are saved after each epoch and the latest is
            loaded from first (see `hpsearch.train.resume`); a resumed trial reports its
            earlier epochs again (the caller skips what it recorded) and goes on after them.
        resume_every_s: at least this many seconds between two resume checkpoints.

    Returns:
        The best epoch's metrics plus `epochs_run` and `best_epoch`.
    """
    log = log or logger
    if monitor not in METRICS or mode not in ("max", "min"):
        raise ValueError(
            f"`monitor` must be one of {METRICS} and `mode` max or min, but got "
            f"{monitor!r} and {mode!r}."
        )
    seed_everything(options.seed)
    set_cpu_threads(options.cpu_threads)
    device = resolve_device(options.device)
    data = load_data(options, device=device, cache_dir=cache_dir)
    steps = len(data.train)
    if options.max_train_batches is not None:
        steps = min(steps, options.max_train_batches)
    setup = setup_training(
        options,
        num_classes=len(data.classes),
        in_channels=data.in_channels,
        device=device,
        steps_per_epoch=steps,
    )
    size = f"{data.in_channels}x{data.image_size}x{data.image_size}"
    source = options.dataset.name or options.dataset.path
    log.info(
        f"training {options.model} on {source}: {len(data.classes)} classes, "
        f"{data.num_train} images of {size}, {steps} steps/epoch, device {device}"
    )
    progress = _Progress(monitor, mode, keep_weights=resume_from is not None)
    first = 1
    if resume_from is not None and (first := _restore(resume_from, setup, data, progress)) > 1:
        log.info(f"resuming after epoch {first - 1}/{options.epochs}")
        _save_best(checkpoint_path, progress, options, data)
        for metrics in progress.history:  # the caller records the epochs it has not yet
            report(dict(metrics), int(metrics["epoch"]))
    saved = time.monotonic()
    for epoch in range(first, options.epochs + 1):
        metrics = _epoch(setup, data, options, epoch, steps, log)
        if progress.add(metrics, setup.model) and checkpoint_path is not None:
            _save_best(checkpoint_path, progress, options, data, model=setup.model)
        if resume_from is not None and time.monotonic() - saved >= resume_every_s:
            resume_from.save(
                epoch, functools.partial(torch.save, _resume_state(setup, data, progress))
            )
            saved = time.monotonic()
        report(dict(metrics), epoch)
        if not math.isfinite(metrics["train_loss"]):
            # A diverged run (lr far too high) cannot recover: stop instead of burning budget.
            log.warning(f"epoch {epoch}: training loss is {metrics['train_loss']}; stopping")
            break
    best = progress.best
    epochs_run = progress.history[-1]["epoch"]
    return {**best, "epochs_run": epochs_run, "best_epoch": best["epoch"]}


def _epoch(
    setup: TrainingSetup,
    data: Data,
    options: TrainerOptions,
    epoch: int,
    steps: int,
    log: logging.Logger,
) -> dict[str, float]:
    """Train one epoch and evaluate it; returns its metrics."""
    # Two-stage fine-tuning: only the new head learns for the first epochs. Frozen
    # BatchNorm layers also stay in eval mode, so their statistics keep their loaded values.
    frozen = epoch <= options.freeze_backbone_epochs
    freeze_backbone(setup.model, frozen)
    setup.model.train()
    if frozen:
        setup.model.backbone.eval()
    start = time.perf_counter()
    train_loss, seen = _train_epoch(setup, data, steps)
    metrics = {**setup.evaluate(_val_batches(data, setup.device)), "train_loss": train_loss}
    metrics["epoch"] = float(epoch)
    seconds = time.perf_counter() - start
    # Kept with the trial beside the losses (`hpsearch:curves`): what the schedule and the
    # hardware did this epoch. Not named `lr`: that is the searched peak learning rate, and a
    # trial's attribute `lr=0.00025` beside its parameter `lr: 0.001` read as a contradiction.
    metrics["scheduled_lr"] = float(setup.optimizer.param_groups[0]["lr"])
    metrics["train_images_per_s"] = seen / max(seconds, 1e-9)
    shown = ", ".join(f"{k} {metrics[k]:.4f}" for k in METRICS)
    log.info(
        f"epoch {epoch}/{options.epochs}: {shown} ({seconds:.1f}s, "
        f"{seen / seconds:.0f} train images/s)"
    )
    return metrics


def _save_best(
    path: Path | None,
    progress: _Progress,
    options: TrainerOptions,
    data: Data,
    *,
    model: nn.Module | None = None,
) -> None:
    """The best epoch's checkpoint: from the live model, or from the kept weights (resumed)."""
    weights = model if model is not None else progress.best_weights
    if path is None or weights is None:
        return
    save_checkpoint(
        path,
        model=weights,
        options=options.model_dump(mode="json"),
        metrics=progress.best,
        classes=data.classes,
        preprocessing=data.preprocessing(),
        monitor=progress.monitor,
        mode=progress.mode,
    )
