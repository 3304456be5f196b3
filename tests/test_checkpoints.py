"""Which trials keep a checkpoint (the study's best N completed), and the shared artifact store.

The trainer's `fit` is replaced by one that saves a real checkpoint and then completes, prunes
itself through the real pruner, or crashes, as each enqueued trial asks; the study, the pruner,
the storage, the artifact store and the files are real.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.artifacts import get_all_artifact_meta
from optuna.study import StudyDirection
from optuna.trial import TrialState
from torch import nn

import hpsearch.train.loop
from hpsearch.cli import main
from hpsearch.errors import StorageError
from hpsearch.objective.checkpoints import best_numbers
from hpsearch.spec import FileSystemStore, S3Store, load_spec
from hpsearch.storage.artifacts import ARTIFACT_STORE_ENV, open_store, resolve_store
from hpsearch.train.checkpoints import load_checkpoint, save_checkpoint

MAX, MIN = StudyDirection.MAXIMIZE, StudyDirection.MINIMIZE

# lr -> (the best epoch's val_accuracy, what happens after it). The pruned and the crashed
# trials had a better epoch than any completed one: ranking files by their score would keep
# exactly the checkpoints that must go.
OUTCOMES = {
    0.9: (0.99, "prune"),
    0.8: (0.98, "crash"),
    0.1: (0.60, "complete"),
    0.2: (0.70, "complete"),
    0.3: (0.80, "complete"),
    0.7: (0.97, "prune"),
}
STUDY = """
name: {name}
metric: val_accuracy
sampler: {{type: random, seed: 0}}
pruner: {{type: threshold, lower: 0.5}}
budget: {{n_trials: {n_trials}}}
{extra}
objective:
  trainer: image_classification
  model: small_cnn
  dataset: {{name: digits}}
  device: cpu
  epochs: 2
  keep_checkpoints: 2
search_space:
  lr: {{type: float, low: 0.01, high: 1.0}}
enqueue:
{enqueue}
"""


def scripted_fit(
    options: Any, report: Callable[[Mapping[str, float], int], None], **kwargs: Any
) -> dict[str, float]:
    best, then = OUTCOMES[options.lr]
    metrics = {"val_accuracy": best, "val_loss": 1 - best, "train_loss": 1 - best}
    save_checkpoint(
        kwargs["checkpoint_path"], model=nn.Linear(2, 2), options={"lr": options.lr},
        metrics=metrics, classes=["a", "b"], preprocessing={"image_size": 8},
        monitor="val_accuracy", mode="max",
    )  # fmt: skip
    report(metrics, 1)
    if then == "prune":
        report({**metrics, "val_accuracy": 0.05}, 2)  # the threshold pruner stops it here
    if then == "crash":
        raise RuntimeError("simulated crash after the first epoch")
    return {**metrics, "epochs_run": 2.0, "best_epoch": 1.0}


@pytest.fixture
def scripted_study(
    tmp_path: Path, unique_name: str, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., Path]:
    monkeypatch.setattr(hpsearch.train.loop, "fit", scripted_fit)
    monkeypatch.delenv(ARTIFACT_STORE_ENV, raising=False)

    def make(extra: str = "") -> Path:
        enqueue = "\n".join(f"  - {{lr: {lr}}}" for lr in OUTCOMES)
        body = STUDY.format(name=unique_name, n_trials=len(OUTCOMES), extra=extra, enqueue=enqueue)
        path = tmp_path / "study.yaml"
        path.write_text(body)
        return path

    return make


def _numbers(study: optuna.Study, state: TrialState) -> list[int]:
    return [t.number for t in study.trials if t.state == state]


def _best_two(study: optuna.Study) -> list[int]:
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    return [t.number for t in sorted(complete, key=lambda t: -(t.value or 0))[:2]]


def test_only_the_best_completed_trials_keep_a_checkpoint(
    scripted_study: Callable[..., Path], tmp_path: Path, unique_name: str,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    path = scripted_study()
    artifacts = tmp_path / "artifacts"
    assert main(["run", str(path), "--storage", url, "--artifacts", str(artifacts), "-q"]) == 0
    study = optuna.load_study(study_name=unique_name, storage=url)
    assert len(_numbers(study, TrialState.PRUNED)) == 2
    assert len(_numbers(study, TrialState.FAIL)) == 1
    best = _best_two(study)
    folder = artifacts / unique_name / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        name for n in best for name in (f"trial-{n:05d}.pt", f"trial-{n:05d}.pt.json")
    )
    for trial in study.trials:
        # A completed trial records where its checkpoint went if it ranked when it completed
        # (the first one did, and was pushed out later); the others never record one.
        if trial.state != TrialState.COMPLETE:
            assert "checkpoint" not in trial.user_attrs, trial.number
    assert load_checkpoint(folder / f"trial-{best[0]:05d}.pt")["metrics"]["val_accuracy"] == 0.8

    capsys.readouterr()
    assert main(["best", str(path), "--storage", url, "--top", "3"]) == 0
    out = capsys.readouterr().out
    assert f"# checkpoint: {folder / f'trial-{best[0]:05d}.pt'}" in out
    assert "# checkpoint: not kept (only the best 2 are: keep_checkpoints)" in out


def test_a_shared_file_store_holds_the_best_and_best_downloads_it(
    scripted_study: Callable[..., Path], tmp_path: Path, unique_name: str,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    path = scripted_study(extra="artifact_store: {type: filesystem, path: shared}")
    artifacts = tmp_path / "artifacts"
    assert main(["run", str(path), "--storage", url, "--artifacts", str(artifacts), "-q"]) == 0
    storage = optuna.storages.RDBStorage(url)
    study = optuna.load_study(study_name=unique_name, storage=storage)
    best = _best_two(study)
    store = tmp_path / "shared"
    metas = [m for n in best for m in get_all_artifact_meta(study.trials[n], storage=storage)]
    stored = {m.artifact_id for m in metas}
    # Only the best two are in the store: the third completed trial's upload was removed when
    # it fell out (its entry stays on the finished trial), the others never uploaded.
    assert {p.name for p in store.iterdir()} == stored
    assert not list((artifacts / unique_name / "checkpoints").iterdir())  # moved to the store
    assert study.trials[best[0]].user_attrs["checkpoint"].startswith(str(store))

    capsys.readouterr()
    download = tmp_path / "elsewhere" / "best"
    assert main(["best", str(path), "--storage", url, "--download", str(download)]) == 0
    out = capsys.readouterr().out
    saved = download / f"trial-{best[0]:05d}.pt"
    assert f"# saved trial {best[0]}'s checkpoint to {saved}" in out
    assert load_checkpoint(saved)["options"] == {"lr": 0.3}
    assert main(["best", str(path), "--storage", url, "--download", str(download)]) == 2
    assert "exists already" in capsys.readouterr().err


def test_best_without_the_store_says_how_to_reach_the_checkpoint(
    scripted_study: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    path = scripted_study(extra="artifact_store: {type: filesystem, path: shared}")
    assert main(["run", str(path), "--storage", url, "-q"]) == 0
    path.write_text(
        path.read_text().replace("artifact_store: {type: filesystem, path: shared}", "")
    )
    capsys.readouterr()
    assert main(["best", str(path), "--storage", url, "--download", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert "is in an artifact store, but none is configured here" in err
    assert ARTIFACT_STORE_ENV in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("directions", "trials", "keep", "expected"),
    [
        ([MAX], [(0, [0.5]), (1, [0.9]), (2, [0.7]), (3, [0.9])], 2, [1, 3]),  # ties: earlier
        ([MIN], [(0, [0.5]), (1, [0.9]), (2, [0.1])], 2, [2, 0]),
        ([MAX], [(0, [float("nan")]), (1, [0.1])], 3, [1]),
        ([MAX], [(0, [0.5])], 0, []),
        # Two objectives: the Pareto front (2 and 0; 1 is dominated by 2), by the first.
        ([MIN, MAX], [(0, [1.0, 5.0]), (1, [2.0, 1.0]), (2, [0.5, 2.0])], 3, [2, 0]),
    ],
)
def test_best_numbers_ranks_by_the_study_direction(
    directions: list[StudyDirection], trials: list[tuple[int, list[float]]], keep: int,
    expected: list[int],
) -> None:  # fmt: skip
    assert best_numbers(trials, directions, keep) == expected


def _spec(tmp_path: Path, extra: str = "") -> Any:
    path = tmp_path / "s.yaml"
    path.write_text(
        f"name: s\nobjective: {{function: f.py:f}}\n{extra}\n"
        "search_space: {x: {type: float, low: 0, high: 1}}\n"
    )
    return load_spec(path)


def test_the_environment_overrides_the_study_file(tmp_path: Path) -> None:
    loaded = _spec(tmp_path, "artifact_store: {type: filesystem, path: ckpt}")
    assert resolve_store(loaded, {}) == (
        FileSystemStore(type="filesystem", path="ckpt"),
        f"artifact_store: in {loaded.path}",
    )
    env = {ARTIFACT_STORE_ENV: "s3://models/hpsearch/"}
    assert resolve_store(loaded, env) == (
        S3Store(type="s3", bucket="models", prefix="hpsearch/"),
        ARTIFACT_STORE_ENV,
    )
    shared = open_store(loaded, {ARTIFACT_STORE_ENV: f"file://{tmp_path}/x"})
    assert shared is not None
    assert shared.location("abc") == f"{tmp_path}/x/abc"
    assert open_store(_spec(tmp_path), {}) is None  # the default: local folders
    with pytest.raises(StorageError, match=f"^{ARTIFACT_STORE_ENV}: must be s3://BUCKET/PREFIX"):
        resolve_store(loaded, {ARTIFACT_STORE_ENV: "relative/dir"})


def test_an_s3_store_uses_boto3_s_credentials_and_the_prefix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("boto3")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "EXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "EXAMPLE")
    extra = (
        "artifact_store: {type: s3, bucket: lab-models, prefix: runs/, "
        "endpoint_url: 'http://127.0.0.1:9', region: us-east-1}"
    )
    shared = open_store(_spec(tmp_path, extra), {})
    assert shared is not None
    assert shared.location("abc") == "s3://lab-models/runs/abc"
    assert "EXAMPLE" not in repr(shared) + shared.label


def test_a_file_store_that_cannot_be_written_is_one_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    loaded = _spec(tmp_path, "artifact_store: {type: filesystem, path: file/sub}")
    with pytest.raises(StorageError, match=r"artifact store .*file/sub .* cannot be created"):
        open_store(loaded, {})


TWO_MACHINES = """
name: {name}
metric: val_accuracy
sampler: {{type: random, seed: 1}}
pruner: {{type: median, n_startup_trials: 2}}
budget: {{n_trials: 6}}
artifact_store: {{type: filesystem, path: {store}}}
objective:
  trainer: image_classification
  model: small_cnn
  dataset: {{name: digits}}
  epochs: 2
  max_train_batches: 4
  device: cpu
  cpu_threads: 1
  keep_checkpoints: 2
search_space:
  lr: {{type: float, low: 0.001, high: 0.3, log: true}}
"""


@pytest.mark.slow
def test_two_machines_share_the_best_checkpoint_with_a_third(
    postgres_url: str, tmp_path: Path, unique_name: str, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """Two working folders run real trainer workers on one PostgreSQL study; a third fetches."""
    import subprocess
    import sys

    from hpsearch.train.models import build_model

    monkeypatch.delenv(ARTIFACT_STORE_ENV, raising=False)
    store = tmp_path / "shared-mount"
    body = TWO_MACHINES.format(name=unique_name, store=store)
    machines = [tmp_path / "machine-a", tmp_path / "machine-b", tmp_path / "laptop"]
    for folder in machines:
        folder.mkdir()
        (folder / "study.yaml").write_text(body)
    env = {**os.environ, "HPSEARCH_CACHE_DIR": str(tmp_path / "cache")}
    # One machine after the other, so that each surely trains some trials (started together,
    # the first could finish all six before the second had imported torch): the first runs 3,
    # the second raises the budget to the file's 6 and prunes what fell out of the best two.
    for folder, flags in ((machines[0], ["--n-trials", "3"]), (machines[1], ["--change-budget"])):
        ran = subprocess.run(
            [sys.executable, "-m", "hpsearch", "run", "study.yaml", "--storage", postgres_url,
             "--artifacts", "local-artifacts", "-q", *flags],
            cwd=folder, env=env, capture_output=True, text=True, timeout=240,
        )  # fmt: skip
        assert ran.returncode == 0, ran.stdout + ran.stderr
    storage = optuna.storages.RDBStorage(postgres_url)
    study = optuna.load_study(study_name=unique_name, storage=storage)
    complete = {t.number for t in study.trials if t.state == TrialState.COMPLETE}
    assert len({t.user_attrs["worker"] for t in study.trials}) == 2
    best = _best_two(study)
    # A trial's list of artifacts also names the resume checkpoints it uploaded while it
    # trained (removed from the store when it completed): the best checkpoints are `trial-*`.
    kept = {
        m.artifact_id
        for n in best
        for m in get_all_artifact_meta(study.trials[n], storage=storage)
        if m.filename.startswith("trial-")
    }
    stored = {p.name for p in store.iterdir()}
    assert kept <= stored  # the best two are in the shared store...
    uploaded = {m.artifact_id: t.number for t in study.trials
                for m in get_all_artifact_meta(t, storage=storage)}  # fmt: skip
    assert {uploaded[a] for a in stored} <= complete  # ...and nothing of a pruned trial
    for folder in machines[:2]:  # nothing left in the machines' own folders
        assert not list((folder / "local-artifacts").rglob("*.pt"))

    monkeypatch.chdir(machines[2])
    capsys.readouterr()
    assert main(["best", "study.yaml", "--storage", postgres_url, "--download", "best"]) == 0
    saved = machines[2] / "best" / f"trial-{best[0]:05d}.pt"
    assert (
        f"saved trial {best[0]}'s checkpoint to best/trial-{best[0]:05d}.pt"
        in capsys.readouterr().out
    )
    checkpoint = load_checkpoint(saved)
    model = build_model(
        checkpoint["options"]["model"], len(checkpoint["classes"]),
        checkpoint["preprocessing"]["channels"],
    )  # fmt: skip
    model.load_state_dict(checkpoint["model"])
    assert checkpoint["metrics"]["val_accuracy"] == study.best_value
