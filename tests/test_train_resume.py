"""Resume checkpoints of the loop: a trial stopped after epoch k and resumed ends exactly as one
run straight through (real CPU training on a generated image folder, augmentation, dropout and
momentum included), and a damaged latest checkpoint falls back to the one before it."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import torch
from data_factory import make_image_folder

from hpsearch.train.checkpoints import load_checkpoint
from hpsearch.train.loop import fit
from hpsearch.train.options import TrainerOptions
from hpsearch.train.resume import load_state
from hpsearch.train.resume_files import ResumeFolder, file_name, verify

EPOCHS = 5


def trained(metrics: Any) -> Any:
    """The metrics of the training itself: a resumed run must equal a straight one in these.
    (`train_images_per_s` measures the machine's speed in that epoch, not the training.)"""
    if isinstance(metrics, dict):
        return {k: trained(v) for k, v in metrics.items() if k != "train_images_per_s"}
    return metrics


class Killed(Exception):
    """Stands in for the SIGKILL of the worker after an epoch was saved."""


class Recorder:
    def __init__(self, *, kill_after: int | None = None) -> None:
        self.calls: list[tuple[dict[str, float], int]] = []
        self.kill_after = kill_after

    def __call__(self, metrics: Mapping[str, float], epoch: int) -> None:
        self.calls.append((dict(metrics), epoch))
        if epoch == self.kill_after:
            raise Killed


@pytest.fixture(scope="module")
def options(tmp_path_factory: pytest.TempPathFactory) -> TrainerOptions:
    root = tmp_path_factory.mktemp("images")
    make_image_folder(root, per_class=10, size=16)
    return TrainerOptions(
        dataset={"path": str(root), "augment": ["hflip", "random_crop"]},
        model="small_cnn", epochs=EPOCHS, batch_size=8, lr=0.05, optimizer="sgd",
        momentum=0.9, dropout=0.2, lr_schedule="cosine", device="cpu", cpu_threads=1, seed=3,
    )  # fmt: skip


def _run(options: TrainerOptions, folder: Path, report: Recorder, **kw: Any) -> dict[str, float]:
    resume = ResumeFolder(folder / "r")
    return fit(options, report, checkpoint_path=folder / "best.pt", resume_from=resume, **kw)


def _last_state(folder: Path) -> dict[str, Any]:
    path = ResumeFolder(folder / "r").latest()
    assert path is not None
    state = load_state(path)
    assert state is not None
    return state


def _resume_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage() for r in caplog.records
        if r.levelno == logging.WARNING and r.name == "hpsearch.train.resume_files"
    ]  # fmt: skip


def test_a_trial_killed_after_epoch_k_and_resumed_ends_as_one_never_stopped(
    options: TrainerOptions, tmp_path: Path
) -> None:
    straight = Recorder()
    expected = _run(options, tmp_path / "straight", straight)
    killed = Recorder(kill_after=2)
    with pytest.raises(Killed):
        _run(options, tmp_path / "resumed", killed)
    resumed = Recorder()
    result = _run(options, tmp_path / "resumed", resumed)
    assert trained(result) == trained(expected)
    # The resumed run reports the saved epochs again (its caller skips what it recorded),
    # then trains only the rest: one curve, the same values as the straight run.
    assert [e for _, e in resumed.calls] == list(range(1, EPOCHS + 1))
    assert [trained(m) for m, _ in resumed.calls] == [trained(m) for m, _ in straight.calls]
    a, b = _last_state(tmp_path / "straight"), _last_state(tmp_path / "resumed")
    assert a["epoch"] == b["epoch"] == EPOCHS
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    best_a, best_b = (load_checkpoint(tmp_path / f / "best.pt") for f in ("straight", "resumed"))
    assert trained(best_a["metrics"]) == trained(best_b["metrics"])
    for name, tensor in best_a["model"].items():
        assert torch.equal(tensor, best_b["model"][name]), name


def test_a_damaged_latest_checkpoint_falls_back_to_the_one_before(
    options: TrainerOptions, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(Killed):
        _run(options, tmp_path, Recorder(kill_after=3))
    folder = tmp_path / "r"
    assert sorted(p.name for p in folder.glob("*.pt")) == [file_name(2), file_name(3)]
    latest = folder / file_name(3)
    latest.write_bytes(latest.read_bytes()[:-100])  # a copy cut short
    assert verify(latest) is not None
    caplog.set_level(logging.INFO, logger="hpsearch.train.loop")
    resumed = Recorder()
    _run(options, tmp_path, resumed)
    warnings = _resume_warnings(caplog)
    assert len(warnings) == 1
    assert "epoch-00003.pt skipped: its checksum does not match" in warnings[0]
    assert "resuming after epoch 2" in warnings[0]
    assert "resuming after epoch 2/5" in caplog.text


def test_no_whole_checkpoint_starts_over_with_one_warning(
    options: TrainerOptions, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "r"
    folder.mkdir()
    (folder / file_name(4)).write_bytes(b"half a checkpoint")  # killed before its checksum
    report = Recorder()
    _run(options.model_copy(update={"epochs": 1}), tmp_path, report)
    assert [e for _, e in report.calls] == [1]
    warnings = _resume_warnings(caplog)
    assert len(warnings) == 1
    assert "checksum file is missing" in warnings[0]
    assert "starting at epoch 1" in warnings[0]
