"""A trial whose worker is killed, signalled or stopped resumes on another machine from its last
epoch: real `hpsearch run` processes on PostgreSQL, real CPU training of a 10-epoch trainer
study on a generated image folder, and a shared artifact folder standing in for the shared
volume (NFS, a PVC) that a requeued Slurm task or a rescheduled pod finds again.

Each "machine" has its own `--artifacts` folder; only the shared store is common to both. The
first worker is held during epoch 6 (tests/gated_worker.py) so the kill lands there whatever
the machine's speed; the other finishes the trial. The result must be the one of a run never
interrupted: the same ten recorded steps, the same best checkpoint bit for bit, and the epoch
budget counting each epoch once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import optuna
import pytest
import torch
from data_factory import make_image_folder
from optuna.artifacts import get_all_artifact_meta
from optuna.trial import FrozenTrial, TrialState

from hpsearch.cli import main
from hpsearch.objective import trainer_options
from hpsearch.spec import TrainerObjective, load_spec
from hpsearch.storage.optuna_compat import study_storage
from hpsearch.train.checkpoints import load_checkpoint
from hpsearch.train.loop import fit

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

HERE = Path(__file__).resolve().parent
EPOCHS = 10
STUDY = """
name: {name}
metric: val_accuracy
sampler: {{type: random, seed: 0}}
pruner: {{type: none}}
budget: {{n_trials: 1, epochs: 30}}
workers: {{heartbeat_interval: 1, grace_period: 3, max_retries: 2}}
artifact_store: {{type: filesystem, path: {shared}}}
objective:
  trainer: image_classification
  model: small_cnn
  dataset: {{path: {images}}}
  device: cpu
  cpu_threads: 1
  epochs: {epochs}
  batch_size: 8
  optimizer: sgd
  momentum: 0.9
  dropout: 0.2
  seed: 3
  keep_checkpoints: 1
search_space:
  lr: {{type: float, low: 0.01, high: 0.1}}
enqueue:
  # The trial's lr whichever machine asks first: the creator and a joining worker sample
  # with different seeds, and both start together.
  - {{lr: {lr}}}
"""
LR = 0.05


@dataclass(frozen=True)
class Result:
    """What a study ended with: its one counted trial, its steps, best weights and epochs."""

    trial: FrozenTrial | None
    steps: dict[int, float]
    best: dict[str, torch.Tensor]
    metrics: dict[str, float]
    epochs_used: int
    shared_files: list[str]


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("images")
    make_image_folder(root, per_class=10, size=16)
    return root


def _study(folder: Path, images: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "study.yaml"
    shared = folder / "shared"
    path.write_text(STUDY.format(name=name, shared=shared, images=images, epochs=EPOCHS, lr=LR))
    return path


def _worker(
    path: Path, url: str, machine: str, *extra: str, gate: Path | None = None
) -> subprocess.Popen[str]:
    """`hpsearch run` as machine `machine` (its own artifacts folder); with `gate`, the first
    trial it trains holds in epoch 6 until `gate/release` exists (tests/gated_worker.py)."""
    program = [str(HERE / "gated_worker.py")] if gate is not None else ["-m", "hpsearch"]
    argv = [sys.executable, *program, "run", str(path), "--storage", url]
    argv += ["--artifacts", str(path.parent / machine), *extra]
    env = None
    if gate is not None:
        gate.mkdir()
        env = {**os.environ, "HPSEARCH_TEST_GATE": f"6:{gate}", "PYTHONPATH": str(HERE)}
    worker = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    _STARTED.append(worker)
    return worker


_STARTED: list[subprocess.Popen[str]] = []


@pytest.fixture(autouse=True)
def _no_worker_left() -> Iterator[None]:
    """A failed test leaves no worker behind (one held at its gate would wait 10 minutes)."""
    yield
    while _STARTED:
        worker = _STARTED.pop()
        if worker.poll() is None:
            worker.kill()
            worker.communicate()


def _held(gates: dict[Path, subprocess.Popen[str]]) -> tuple[Path, subprocess.Popen[str]]:
    """Wait (a hang guard, not a timing) until one worker is held in epoch 6; returns it."""
    deadline = time.monotonic() + 180
    while True:
        for gate, worker in gates.items():
            if (gate / "reached").exists():
                return gate, worker
            if worker.poll() is not None:
                raise AssertionError(f"a worker exited before epoch 6:\n{worker.communicate()[0]}")
        assert time.monotonic() < deadline, "no worker reached epoch 6"
        time.sleep(0.1)


def _two_machines(path: Path, url: str) -> tuple[subprocess.Popen[str], subprocess.Popen[str]]:
    """Two workers started together (their start-up overlaps); returns (the one holding the
    trial in epoch 6, the other, which lingers and takes the retry)."""
    a = _worker(path, url, "machine-a", gate=path.parent / "gate-a")
    b = _worker(path, url, "machine-b", gate=path.parent / "gate-b")
    _, victim = _held({path.parent / "gate-a": a, path.parent / "gate-b": b})
    return victim, b if victim is a else a


def _finish(worker: subprocess.Popen[str]) -> str:
    out, _ = worker.communicate(timeout=180)
    assert worker.returncode == 0, out
    return out


def _result(path: Path, url: str, name: str, capsys: pytest.CaptureFixture[str]) -> Result:
    study = optuna.load_study(study_name=name, storage=url)
    done = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    assert len(done) == 1, [(t.state, t.user_attrs.get("fail_reason")) for t in study.trials]
    trial = done[0]
    saved = load_checkpoint(Path(trial.user_attrs["checkpoint"]))
    capsys.readouterr()
    assert main(["status", str(path), "--storage", url, "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    budget = status["budget"]
    shared = sorted(p.name for p in (path.parent / "shared").iterdir())
    # `hpsearch status` says how much the study's checkpoints take in the shared store.
    kept = Path(trial.user_attrs["checkpoint"])
    assert status["checkpoints"]["shared_bytes"] == kept.stat().st_size
    return Result(
        trial, dict(trial.intermediate_values), saved["model"], saved["metrics"],
        budget["epochs_used"], shared,
    )  # fmt: skip


@pytest.fixture(scope="module")
def straight(images: Path, tmp_path_factory: pytest.TempPathFactory) -> Result:
    """The same trial, trained in one go here, by the same code the workers run."""
    folder = tmp_path_factory.mktemp("straight")
    path = _study(folder, images, "straight")
    loaded = load_spec(path)
    objective = loaded.spec.objective
    assert isinstance(objective, TrainerObjective)
    params = {"lr": LR}  # the study's enqueued first trial
    steps: dict[int, float] = {}

    def report(metrics: Mapping[str, float], epoch: int) -> None:
        steps[epoch] = metrics["val_accuracy"]

    options = trainer_options(loaded, objective, {**params, "seed": 3})
    fit(options, report, monitor="val_accuracy", checkpoint_path=folder / "best.pt")
    saved = load_checkpoint(folder / "best.pt")
    return Result(None, steps, saved["model"], saved["metrics"], 0, [])


def _same_as_straight(result: Result, straight: Result, *, resumed_after: int, out: str) -> None:
    assert result.trial is not None
    assert result.trial.system_attrs["failed_trial"] == 0  # the retry finished the trial
    assert f"resuming after epoch {resumed_after}/{EPOCHS}" in out
    assert sorted(result.steps) == list(
        range(1, EPOCHS + 1)
    )  # a database returns them in any order
    assert result.steps == straight.steps
    # `train_images_per_s` measures the machine's speed in that epoch, not the training.
    speed = "train_images_per_s"
    assert {k: v for k, v in result.metrics.items() if k != speed} == {
        k: v for k, v in straight.metrics.items() if k != speed
    }
    assert result.best.keys() == straight.best.keys()
    for name, tensor in straight.best.items():
        assert torch.equal(result.best[name], tensor), name
    # Each epoch counted once: the epoch in flight when the worker died was never reported.
    assert result.epochs_used == EPOCHS
    # What stays in the shared store: the best checkpoint only (no resume checkpoints).
    assert result.shared_files == [Path(result.trial.user_attrs["checkpoint"]).name]


def test_a_sigkilled_trial_resumes_on_another_machine_as_if_never_stopped(
    images: Path, postgres_url: str, tmp_path: Path, unique_name: str, straight: Result,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    path = _study(tmp_path, images, unique_name)
    victim, survivor = _two_machines(path, postgres_url)
    victim.kill()
    victim.wait()
    out = _finish(survivor)
    result = _result(path, postgres_url, unique_name, capsys)
    _same_as_straight(result, straight, resumed_after=5, out=out)


def test_a_sigtermed_trial_resumes_on_another_machine(
    images: Path, postgres_url: str, tmp_path: Path, unique_name: str, straight: Result,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    path = _study(tmp_path, images, unique_name)
    victim, survivor = _two_machines(path, postgres_url)
    victim.send_signal(signal.SIGTERM)
    _finish(victim)  # handed back: failed with a retry mark and queued again
    out = _finish(survivor)
    _same_as_straight(
        _result(path, postgres_url, unique_name, capsys), straight, resumed_after=5, out=out
    )


def test_a_stopped_study_resumes_its_handed_back_trial_after_its_last_epoch(
    images: Path, postgres_url: str, tmp_path: Path, unique_name: str, straight: Result,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    path = _study(tmp_path, images, unique_name)
    gate = tmp_path / "gate"
    _, victim = _held({gate: _worker(path, postgres_url, "machine-a", gate=gate)})
    assert main(["stop", str(path), "--storage", postgres_url]) == 0
    (gate / "release").touch()  # epoch 6 ends, is saved, and its report meets the stop
    _finish(victim)
    out = _finish(_worker(path, postgres_url, "machine-b", "--resume"))
    # Epoch 6 was saved but not recorded (the stop came at its report): the retry records it.
    _same_as_straight(
        _result(path, postgres_url, unique_name, capsys), straight, resumed_after=6, out=out
    )


def test_a_damaged_latest_checkpoint_resumes_from_the_one_before_with_a_warning(
    images: Path, postgres_url: str, tmp_path: Path, unique_name: str, straight: Result,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    path = _study(tmp_path, images, unique_name)
    victim, survivor = _two_machines(path, postgres_url)
    # Epoch 5's checkpoint is in the shared store; the retry cannot start before the kill.
    study = optuna.load_study(study_name=unique_name, storage=postgres_url)
    metas = get_all_artifact_meta(study.trials[0], storage=study_storage(study))
    (latest,) = [m for m in metas if m.filename == "epoch-00005.pt"]
    damaged = tmp_path / "shared" / latest.artifact_id
    damaged.write_bytes(damaged.read_bytes()[:1000])  # a copy cut short on the shared volume
    victim.kill()
    victim.wait()
    out = _finish(survivor)
    warnings = [line for line in out.splitlines() if "resume checkpoint" in line]
    assert len(warnings) == 1, out
    assert "epoch-00005.pt skipped: its checksum does not match" in warnings[0]
    _same_as_straight(
        _result(path, postgres_url, unique_name, capsys), straight, resumed_after=4, out=out
    )
