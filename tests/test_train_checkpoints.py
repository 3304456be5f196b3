"""Checkpoints: atomic save with a score sidecar, one name per trial, removal."""

from __future__ import annotations

import json
from pathlib import Path

from torch import nn

from hpsearch.train.checkpoints import (
    checkpoint_path,
    load_checkpoint,
    remove_checkpoint,
    save_checkpoint,
    trial_checkpoints,
)


def save(directory: Path, name: str, score: float, *, mode: str = "max") -> Path:
    path = directory / name
    save_checkpoint(
        path,
        model=nn.Linear(2, 2),
        options={"lr": 0.1},
        metrics={"val_accuracy": score, "val_loss": -score},
        classes=["a", "b"],
        preprocessing={"image_size": 8},
        monitor="val_accuracy",
        mode=mode,
    )
    return path


def test_save_writes_checkpoint_then_sidecar(tmp_path: Path) -> None:
    path = save(tmp_path / "deep" / "dir", "t.pt", 0.75)
    assert json.loads((path.parent / "t.pt.json").read_text()) == {
        "score": 0.75,
        "monitor": "val_accuracy",
        "mode": "max",
    }
    loaded = load_checkpoint(path)
    assert loaded["options"] == {"lr": 0.1}
    assert loaded["classes"] == ["a", "b"]
    assert set(loaded["model"]) == {"weight", "bias"}
    assert sorted(p.name for p in path.parent.iterdir()) == ["t.pt", "t.pt.json"]


def test_each_trial_has_one_checkpoint_name_and_others_are_not_listed(tmp_path: Path) -> None:
    assert checkpoint_path(tmp_path, 12) == tmp_path / "trial-00012.pt"
    for number in (3, 12):
        save(tmp_path, checkpoint_path(tmp_path, number).name, 0.5)
    (tmp_path / ".trial-00007.pt.123.tmp").write_bytes(b"being written")
    (tmp_path / "notes.pt").write_bytes(b"someone else's")
    assert trial_checkpoints(tmp_path) == {
        3: tmp_path / "trial-00003.pt",
        12: checkpoint_path(tmp_path, 12),
    }


def test_remove_takes_the_sidecar_too_and_a_missing_file_is_no_error(tmp_path: Path) -> None:
    path = save(tmp_path, "trial-00001.pt", 0.5)
    remove_checkpoint(path)
    assert not list(tmp_path.iterdir())
    remove_checkpoint(path)  # another worker removed it first
