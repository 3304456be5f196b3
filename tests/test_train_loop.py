"""The loop: real CPU training on digits and a generated image folder; reports and pruning."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import torch
from data_factory import make_image_folder

from hpsearch.train.checkpoints import load_checkpoint
from hpsearch.train.loop import fit, setup_training
from hpsearch.train.models import build_model
from hpsearch.train.options import METRICS, TrainerOptions
from hpsearch.train.schedules import lr_multiplier


class Pruned(Exception):
    """Stands in for optuna.TrialPruned, which the trainer must never know about."""


class Recorder:
    """A `report` callable that remembers every call and can raise at a given epoch."""

    def __init__(self, *, raise_at: int | None = None) -> None:
        self.calls: list[tuple[dict[str, float], int]] = []
        self.raise_at = raise_at

    def __call__(self, metrics: Mapping[str, float], epoch: int) -> None:
        self.calls.append((dict(metrics), epoch))
        if epoch == self.raise_at:
            raise Pruned(f"pruned at {epoch}")


def digits(**kwargs: Any) -> TrainerOptions:
    return TrainerOptions(dataset={"name": "digits"}, **kwargs)


@pytest.mark.slow  # four epochs of real training on all of digits
def test_digits_learns_and_reports_every_epoch(tmp_path: Path) -> None:
    report = Recorder()
    checkpoint = tmp_path / "ckpt" / "trial-0.pt"
    result = fit(digits(epochs=4, batch_size=64, lr=0.05), report, checkpoint_path=checkpoint)
    assert [epoch for _, epoch in report.calls] == [1, 2, 3, 4]
    for metrics, epoch in report.calls:
        assert set(METRICS) <= set(metrics)
        assert metrics["epoch"] == epoch
    losses = [m["train_loss"] for m, _ in report.calls]
    assert losses[-1] < losses[0] / 2
    assert result["val_accuracy"] > 0.9
    assert result["epochs_run"] == 4
    best = max(report.calls, key=lambda call: call[0]["val_accuracy"])
    assert result["best_epoch"] == best[1]
    saved = load_checkpoint(checkpoint)
    assert saved["metrics"]["epoch"] == result["best_epoch"]
    assert saved["options"]["lr"] == 0.05
    assert saved["classes"][0] == "0"
    assert saved["preprocessing"]["image_size"] == 8
    sidecar = json.loads(checkpoint.with_name("trial-0.pt.json").read_text())
    assert sidecar == {"score": result["val_accuracy"], "monitor": "val_accuracy", "mode": "max"}
    assert not list(checkpoint.parent.glob(".*tmp"))  # atomic writes leave no temp files


def test_checkpoint_reloads_into_a_model(tmp_path: Path) -> None:
    checkpoint = tmp_path / "best.pt"
    fit(digits(epochs=1, max_train_batches=3), Recorder(), checkpoint_path=checkpoint)
    saved = load_checkpoint(checkpoint)
    model = build_model("small_cnn", len(saved["classes"]), saved["preprocessing"]["channels"])
    model.load_state_dict(saved["model"])


def test_raising_report_stops_training_there(tmp_path: Path) -> None:
    report = Recorder(raise_at=2)
    with pytest.raises(Pruned, match="pruned at 2"):
        fit(digits(epochs=6, max_train_batches=5), report, checkpoint_path=tmp_path / "t.pt")
    assert [epoch for _, epoch in report.calls] == [1, 2]
    assert (tmp_path / "t.pt").is_file()  # the best epoch so far survives the pruning


def test_minimised_monitor_picks_lowest_loss() -> None:
    report = Recorder()
    result = fit(digits(epochs=3, max_train_batches=4), report, monitor="val_loss", mode="min")
    assert result["val_loss"] == min(m["val_loss"] for m, _ in report.calls)


def test_diverged_training_stops_early() -> None:
    report = Recorder()
    result = fit(digits(epochs=5, lr=1e30, max_train_batches=5), report)
    assert len(report.calls) < 5
    assert result["epochs_run"] == len(report.calls)
    assert not math.isfinite(report.calls[-1][0]["train_loss"])


@pytest.mark.slow  # two epochs of real training on all of digits
def test_freeze_backbone_trains_only_the_head_first(tmp_path: Path) -> None:
    start = build_model("small_cnn", num_classes=10, in_channels=1)
    weights = tmp_path / "start.pth"
    torch.save(start.state_dict(), weights)
    checkpoint = tmp_path / "ft.pt"
    states: dict[int, dict[str, torch.Tensor]] = {}

    def report(metrics: Mapping[str, float], epoch: int) -> None:
        states[epoch] = load_checkpoint(checkpoint)["model"]

    options = digits(epochs=2, freeze_backbone_epochs=1, weights=str(weights), lr=0.05)
    # monitor=epoch-like: train_loss can only improve with these settings, so each epoch saves
    fit(options, report, checkpoint_path=checkpoint, monitor="train_loss", mode="min")
    original = start.state_dict()
    backbone = [k for k in original if k.startswith("backbone.")]
    assert all(torch.equal(states[1][k], original[k]) for k in backbone)  # BN stats too
    assert not torch.equal(states[1]["head.1.weight"], original["head.1.weight"])
    assert not all(torch.equal(states[2][k], original[k]) for k in backbone)


def test_micro_batches_take_one_step_per_batch_and_match_full_batch() -> None:
    x, y = torch.randn(32, 1, 8, 8), torch.randint(0, 10, (32,))
    updated = []
    for micro in (None, 8):
        torch.manual_seed(0)
        setup = setup_training(
            digits(batch_size=32, micro_batch_size=micro, optimizer="adam", lr=0.01),
            num_classes=10,
            in_channels=1,
            device="cpu",
        )
        setup.model.eval()  # BatchNorm on running statistics: micro-batches then match exactly
        setup.train_step(x, y)
        setup.train_step(x[:20], y[:20])  # a last, partial batch splits as 8 + 8 + 4
        assert setup.steps == 2
        updated.append(setup.model.state_dict())
    for key, value in updated[0].items():
        assert torch.allclose(value, updated[1][key], atol=1e-5), key


def test_micro_batching_inside_fit() -> None:
    report = Recorder()
    fit(digits(epochs=1, batch_size=32, micro_batch_size=8, max_train_batches=5), report)
    assert len(report.calls) == 1


def test_setup_training_needs_no_dataset() -> None:
    setup = setup_training(
        TrainerOptions(dataset={"path": "/nowhere"}, model="resnet18"),
        num_classes=5,
        in_channels=3,
        device="cpu",
    )
    loss = setup.train_step(torch.randn(4, 3, 32, 32), torch.randint(0, 5, (4,)))
    assert math.isfinite(loss)


@pytest.mark.slow
def test_resnet18_on_digits_at_small_size() -> None:
    report = Recorder()
    options = TrainerOptions(
        dataset={"name": "digits", "image_size": 16},
        model="resnet18",
        epochs=1,
        max_train_batches=3,
    )
    result = fit(options, report)
    assert result["epochs_run"] == 1
    assert 0.0 <= result["val_accuracy"] <= 1.0


@pytest.mark.slow
def test_image_folder_with_awkward_files_trains(tmp_path: Path) -> None:
    folder = make_image_folder(tmp_path / "images", per_class=16)
    options = TrainerOptions(
        dataset={"path": str(folder.root), "augment": ["hflip", "random_crop"]},
        epochs=6,
        batch_size=8,
        lr=0.05,
    )
    report = Recorder()
    result = fit(options, report, cache_dir=tmp_path / "cache")
    losses = [m["train_loss"] for m, _ in report.calls]
    # Tiny batches make single epochs spiky; the trend is what must hold.
    assert min(losses[1:]) < losses[0] / 2
    assert result["val_accuracy"] >= 0.9  # three stripe directions are easy to tell apart
    assert result["epochs_run"] == 6


@pytest.mark.parametrize("schedule", ["constant", "cosine", "step", "onecycle"])
def test_schedules_start_low_when_warming_up_and_peak_at_lr(schedule: str) -> None:
    values = [lr_multiplier(schedule, s, total_steps=100, warmup_steps=10) for s in range(100)]
    assert values[0] < 0.2
    assert max(values) == pytest.approx(1.0, abs=0.02)
    assert all(v > 0 for v in values)
    if schedule != "constant":
        assert values[-1] < 0.2


def test_schedule_shapes() -> None:
    def at(schedule: str, step: int) -> float:
        return lr_multiplier(schedule, step, total_steps=100, warmup_steps=0)

    assert at("constant", 0) == at("constant", 99) == 1.0
    assert at("cosine", 50) == pytest.approx(0.5, abs=0.02)
    assert (at("step", 49), at("step", 50), at("step", 75)) == pytest.approx((1, 0.1, 0.01))
    assert at("onecycle", 30) == pytest.approx(1.0)
    assert at("onecycle", 0) == pytest.approx(0.04)


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_autocast_precisions_train_on_cpu(precision: str) -> None:
    setup = setup_training(
        digits(precision=precision, micro_batch_size=8, batch_size=16),
        num_classes=10,
        in_channels=1,
        device="cpu",
    )
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
    losses = [setup.train_step(x, y) for _ in range(5)]
    assert all(math.isfinite(v) for v in losses)
    assert setup.scaler.is_enabled() == (precision == "fp16")
    assert set(setup.evaluate([(x, y)])) == {"val_accuracy", "val_loss", "val_balanced_accuracy"}


def test_cpu_threads_option_sets_torch_threads() -> None:
    before = torch.get_num_threads()
    try:
        fit(digits(epochs=1, max_train_batches=2, cpu_threads=1), Recorder())
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
def test_weight_decay_skips_biases_and_is_zero_when_off(optimizer: str) -> None:
    def decays(weight_decay: float) -> list[tuple[int, float]]:
        setup = setup_training(
            digits(optimizer=optimizer, weight_decay=weight_decay),
            num_classes=10,
            in_channels=1,
            device="cpu",
        )
        groups = setup.optimizer.param_groups
        return [(min(p.ndim for p in g["params"]), g["weight_decay"]) for g in groups]

    assert decays(0.0) == [(1, 0.0)]  # AdamW's own default (0.01) must not sneak in
    assert decays(0.05) == [(2, 0.05), (1, 0.0)]
