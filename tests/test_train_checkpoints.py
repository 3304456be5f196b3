"""Checkpoints: atomic save with a score sidecar, and keeping only the best N."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from torch import nn

from hpsearch.train.checkpoints import keep_best_checkpoints, load_checkpoint, save_checkpoint


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


@pytest.mark.parametrize(("mode", "kept"), [("max", ["c.pt", "a.pt"]), ("min", ["b.pt", "d.pt"])])
def test_keep_best_by_mode(tmp_path: Path, mode: str, kept: list[str]) -> None:
    for name, score in [("a.pt", 0.8), ("b.pt", 0.1), ("c.pt", 0.9), ("d.pt", 0.5)]:
        save(tmp_path, name, score)
    assert [p.name for p in keep_best_checkpoints(tmp_path, 2, mode=mode)] == kept
    assert sorted(p.name for p in tmp_path.glob("*.pt")) == sorted(kept)
    assert sorted(p.name for p in tmp_path.glob("*.json")) == sorted(k + ".json" for k in kept)


def test_nan_ranks_last_and_unscored_files_stay(tmp_path: Path) -> None:
    save(tmp_path, "nan.pt", float("nan"))
    save(tmp_path, "low.pt", 0.1)
    (tmp_path / "in-progress.pt").write_bytes(b"no sidecar yet")
    assert [p.name for p in keep_best_checkpoints(tmp_path, 1, mode="max")] == ["low.pt"]
    assert sorted(p.name for p in tmp_path.glob("*.pt")) == ["in-progress.pt", "low.pt"]


def test_keep_more_than_exist_and_zero(tmp_path: Path) -> None:
    save(tmp_path, "a.pt", 0.5)
    assert len(keep_best_checkpoints(tmp_path, 3, mode="max")) == 1
    assert keep_best_checkpoints(tmp_path, 0, mode="max") == []
    assert not list(tmp_path.iterdir())


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="`mode` must be 'max' or 'min', but got 'up'."):
        keep_best_checkpoints(tmp_path, 1, mode="up")
    with pytest.raises(ValueError, match="`keep` must be >= 0, but got -1."):
        keep_best_checkpoints(tmp_path, -1, mode="max")
