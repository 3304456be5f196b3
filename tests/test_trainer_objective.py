"""The built-in trainer inside real studies: fitted batch sizes, mid-trial OOM, fleet policies."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
from optuna.trial import TrialState

import hpsearch.train.loop
from hpsearch.cli import main
from hpsearch.storage.attrs import BATCH_SIZE_LIMIT_PREFIX
from hpsearch.storage.optuna_compat import study_id, study_storage
from hpsearch.study import write_attr

# Real processes and real training: minutes in all, so not in `make test-fast`.
pytestmark = pytest.mark.slow

TRAINER_STUDY = """
name: {name}
metric: val_accuracy
sampler: {{type: random, seed: 3}}
pruner: {{type: none}}
budget: {{n_trials: {n_trials}}}
batch_size_fit: {{policy: {policy}, cpu_max_batch_size: 64}}
objective:
  trainer: image_classification
  model: small_cnn
  dataset: {{name: digits}}
  epochs: 1
  max_train_batches: 2
  device: cpu
  keep_checkpoints: 2
search_space:
  batch_size: {{type: power_of_two, low: 8, high: auto}}
  lr: {{type: float, low: 0.001, high: 0.1, log: true}}
"""


def _limits(study: optuna.Study) -> dict[str, Any]:
    """The batch-size limits the workers share: hpsearch's bookkeeping, in system attributes."""
    return study_storage(study).get_study_system_attrs(study_id(study))


@pytest.fixture
def trainer_study(
    write_study: Callable[..., Path], unique_name: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Callable[..., tuple[Path, str]]:  # fmt: skip
    monkeypatch.setenv("HPSEARCH_CACHE_DIR", str(tmp_path / "cache"))

    def make(n_trials: int = 6, policy: str = "per_device") -> tuple[Path, str]:
        body = TRAINER_STUDY.format(name=unique_name, n_trials=n_trials, policy=policy)
        return write_study(body), f"sqlite:///{tmp_path / 'db.sqlite'}"

    return make


def _sizes(url: str, name: str) -> list[int]:
    study = optuna.load_study(study_name=name, storage=url)
    return [t.user_attrs["batch_size"] for t in study.trials if "batch_size" in t.user_attrs]


def test_trials_record_batch_size_device_seed_and_keep_best_checkpoints(
    trainer_study: Callable[..., tuple[Path, str]], unique_name: str, tmp_path: Path
) -> None:
    path, url = trainer_study(n_trials=4)
    assert (
        main(["run", str(path), "--storage", url, "--artifacts", str(tmp_path / "a"), "-q"]) == 0
    )
    trials = optuna.load_study(study_name=unique_name, storage=url).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4
    for t in trials:
        assert t.user_attrs["batch_size"] == t.params["batch_size"] <= 64
        assert set(t.params) == {"batch_size", "lr"}  # no exponent beside it
        assert t.user_attrs["device"].startswith("cpu")
        assert t.user_attrs["seed"] == t.number
        assert t.user_attrs["epochs_run"] == 1
        assert t.user_attrs["accumulation_steps"] == 1
        # Every metric kept: final values the dashboard lists, curves `export` reads.
        for metric in ("val_loss", "train_loss", "val_balanced_accuracy", "scheduled_lr"):
            assert isinstance(t.user_attrs[metric], float)
        # The schedule's learning rate is not stored under the parameter's name `lr`.
        assert "lr" not in t.user_attrs
        assert t.user_attrs["train_images_per_s"] > 0
        assert t.user_attrs["hpsearch:curves"]["step"] == [1]
    out = tmp_path / "trials.csv"
    assert main(["export", str(path), "--storage", url, "-o", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 4
    for row in rows:
        assert len(json.loads(row["curve_val_loss"])) == 1
        assert len(json.loads(row["curve_train_loss"])) == 1
        assert json.loads(row["curve_val_accuracy"]) == [float(row["value"])]
    # Only the checkpoints that still exist are listed (keep_checkpoints: 2).
    listed = [row["user_attrs_checkpoint"] for row in rows if row["user_attrs_checkpoint"]]
    assert len(listed) == 2
    assert all(Path(p).is_file() for p in listed)
    kept = sorted((tmp_path / "a" / unique_name / "checkpoints").glob("*.pt"))
    assert len(kept) == 2  # keep_checkpoints: the study's best two


def test_mid_trial_oom_fails_the_trial_and_lowers_the_shared_limit(
    trainer_study: Callable[..., tuple[Path, str]], unique_name: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """A CPU cannot run out of memory politely, so the OOM above 16 images is faked; the rest
    (the trainer, the fitter's caches, the study) is real."""
    real_fit = hpsearch.train.loop.fit

    def fit_with_small_gpu(options: Any, *args: Any, **kwargs: Any) -> dict[str, float]:
        if (options.micro_batch_size or options.batch_size) > 16:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_fit(options, *args, **kwargs)

    monkeypatch.setattr(hpsearch.train.loop, "fit", fit_with_small_gpu)
    path, url = trainer_study(n_trials=8)
    path.write_text(path.read_text() + "enqueue: [{batch_size: 64, lr: 0.01}]\n")
    assert main(["run", str(path), "--storage", url, "-q"]) == 0
    study = optuna.load_study(study_name=unique_name, storage=url)
    first, *rest = study.trials
    assert first.state == TrialState.FAIL  # FAIL, not PRUNED: the settings were not weak
    assert first.user_attrs["fail_reason"].startswith("oom: ")
    limits = {k: v for k, v in _limits(study).items() if k.startswith(BATCH_SIZE_LIMIT_PREFIX)}
    # Each OOM lowered the shared limit below the size that failed (64 -> 32, then 32 -> 16 when
    # a 32 failed too); the worker went on, and trials after the last OOM stayed within it.
    assert [v["limit"] for v in limits.values()] == [16]
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    assert all(t.user_attrs["fail_reason"].startswith("oom: ") for t in failed)
    assert len(rest) == 7
    assert rest[-1].state == TrialState.COMPLETE
    last_oom = max(t.number for t in failed)
    assert all(t.user_attrs["batch_size"] <= 16 for t in study.trials if t.number > last_oom)


@pytest.mark.parametrize(("policy", "expected_high"), [("per_device", 64), ("fleet_min", 16)])
def test_a_smaller_device_in_the_fleet_bounds_fleet_min_only(
    trainer_study: Callable[..., tuple[Path, str]], unique_name: str, policy: str,
    expected_high: int,
) -> None:  # fmt: skip
    path, url = trainer_study(n_trials=1, policy=policy)
    assert main(["run", str(path), "--storage", url, "-q"]) == 0  # this CPU: limit 64
    study = optuna.load_study(study_name=unique_name, storage=url)
    ((key, entry),) = [
        (k, v) for k, v in _limits(study).items() if k.startswith(BATCH_SIZE_LIMIT_PREFIX)
    ]
    # A second worker with a smaller GPU joined and shared its limit for the same configuration.
    write_attr(
        study,
        BATCH_SIZE_LIMIT_PREFIX + "small-gpu",
        {**entry, "limit": 16, "device": "cuda (RTX 3050, 8 GiB)"},
    )
    assert main(["run", str(path), "--storage", url, "--n-trials", "12", "-q"]) == 0
    later = optuna.load_study(study_name=unique_name, storage=url).trials[1:]
    distribution = later[-1].distributions["batch_size"]
    assert isinstance(distribution, optuna.distributions.IntDistribution)
    assert distribution.high == expected_high
    assert all(t.params["batch_size"] <= expected_high for t in later)


def test_a_device_that_cannot_fit_low_leaves_the_study_plainly(
    trainer_study: Callable[..., tuple[Path, str]], unique_name: str,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    path, url = trainer_study(n_trials=3)
    path.write_text(path.read_text().replace("cpu_max_batch_size: 64", "cpu_max_batch_size: 4"))
    assert main(["run", str(path), "--storage", url]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("hpsearch: error: worker stopped: ")
    assert "8" in err
    (trial,) = optuna.load_study(study_name=unique_name, storage=url).get_trials(
        states=(TrialState.FAIL,)
    )
    assert trial.user_attrs["fail_reason"].startswith("worker stopped: ")


def test_fit_batch_prints_and_stores_this_machines_limit(
    trainer_study: Callable[..., tuple[Path, str]], unique_name: str,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    path, url = trainer_study()
    assert main(["fit-batch", str(path), "--storage", url]) == 0
    out = capsys.readouterr().out
    assert out.startswith("cpu (")
    assert "largest batch size 64 (cpu_estimate)" in out
    study = optuna.load_study(study_name=unique_name, storage=url)
    assert [
        v["limit"] for k, v in _limits(study).items() if k.startswith(BATCH_SIZE_LIMIT_PREFIX)
    ] == [64]


def test_a_searched_memory_option_gets_a_fit_of_its_own(
    trainer_study: Callable[..., tuple[Path, str]], unique_name: str
) -> None:
    """`high: auto` is fitted for the options each trial uses: Adam keeps two buffers per
    weight that SGD without momentum does not, so each optimizer has its own limit."""
    path, url = trainer_study(n_trials=6)
    body = path.read_text().replace("  device: cpu\n", "  device: cpu\n  momentum: 0.0\n")
    path.write_text(body + "  optimizer: {type: categorical, choices: [sgd, adam]}\n")
    assert main(["run", str(path), "--storage", url, "-q"]) == 0
    study = optuna.load_study(study_name=unique_name, storage=url)
    used = {t.params["optimizer"] for t in study.trials}
    assert used == {"sgd", "adam"}  # seed 3 samples both
    limits = {k: v for k, v in _limits(study).items() if k.startswith(BATCH_SIZE_LIMIT_PREFIX)}
    assert len(limits) == 2
    assert len({v["config_key"] for v in limits.values()}) == 2
