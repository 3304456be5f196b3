"""Your own training loop: the Lightning and Hugging Face callbacks in real studies, with the real
packages on tiny CPU models. A learning rate too small to learn is pruned (a threshold on the
validation loss), a good one completes; both stop cleanly with their checkpoint on disk."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from optuna.trial import FrozenTrial, TrialState

import hpsearch

# A tiny regression: y = x @ w with |y| around 10, so an untrained model's loss is ~100 and a
# trained one's is near 0; lr 1e-6 cannot learn in 5 epochs, lr 0.05 does.
DATA = """
import torch

def data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(128, 4, generator=g)
    y = x @ torch.tensor([[4.0], [-3.0], [5.0], [2.0]])
    return x, y
"""

LIGHTNING = (
    DATA
    + """
import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader, TensorDataset

from hpsearch.integrations.lightning import LightningReporter


class Regressor(L.LightningModule):
    def __init__(self, lr):
        super().__init__()
        self.lr = lr
        self.net = torch.nn.Linear(4, 1)

    def training_step(self, batch, _):
        x, y = batch
        return torch.nn.functional.mse_loss(self.net(x), y)

    def validation_step(self, batch, _):
        x, y = batch
        self.log("val_loss", torch.nn.functional.mse_loss(self.net(x), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)


def objective(params, report):
    torch.manual_seed(0)
    x, y = data()
    train = DataLoader(TensorDataset(x[:96], y[:96]), batch_size=16)
    val = DataLoader(TensorDataset(x[96:], y[96:]), batch_size=32)
    reporter = LightningReporter(report)
    keep = ModelCheckpoint(dirpath=report.directory, monitor="val_loss", save_last=True)
    trainer = L.Trainer(
        max_epochs=5, callbacks=[reporter, keep], accelerator="cpu", logger=False,
        enable_progress_bar=False, enable_model_summary=False,
        default_root_dir=report.directory,
    )
    trainer.fit(Regressor(params["lr"]), train, val)
    return reporter.metrics
"""
)

HUGGING_FACE = (
    DATA
    + """
from transformers import Trainer, TrainingArguments

from hpsearch.integrations.huggingface import HuggingFaceReporter


class Regressor(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Linear(4, 1)

    def forward(self, x, labels=None):
        out = self.net(x)
        return {"loss": torch.nn.functional.mse_loss(out, labels), "logits": out}


def objective(params, report):
    torch.manual_seed(0)
    x, y = data()
    rows = [{"x": a, "labels": b} for a, b in zip(x, y)]
    reporter = HuggingFaceReporter(report)
    args = TrainingArguments(
        output_dir=str(report.directory), num_train_epochs=5, learning_rate=params["lr"],
        per_device_train_batch_size=16, eval_strategy="epoch", save_strategy="epoch",
        save_total_limit=1, logging_strategy="no", report_to=[], use_cpu=True,
        disable_tqdm=True, remove_unused_columns=False, lr_scheduler_type="constant",
        optim="sgd", dataloader_num_workers=0, max_grad_norm=0.0,  # no clipping: plain SGD
    )
    trainer = Trainer(model=Regressor(), args=args, train_dataset=rows[:96],
                      eval_dataset=rows[96:], callbacks=[reporter])
    trainer.train()
    return reporter.metrics
"""
)

STUDY = """
name: {name}
metric: {metric}
direction: minimize
sampler: {{type: random, seed: 0}}
pruner: {{type: threshold, upper: 20.0, n_warmup_steps: 3}}
budget: {{n_trials: 2}}
enqueue:
  - {{lr: 1.0e-6}}
  - {{lr: 0.05}}
objective: {{function: loop.py:objective}}
search_space:
  lr: {{type: float, low: 1.0e-7, high: 0.1, log: true}}
"""


def _tune(tmp_path: Path, name: str, code: str, metric: str) -> list[FrozenTrial]:
    (tmp_path / "loop.py").write_text(textwrap.dedent(code))
    path = tmp_path / "study.yaml"
    path.write_text(STUDY.format(name=name, metric=metric))
    study = hpsearch.run(path, storage=f"sqlite:///{tmp_path / 'db.sqlite'}",
                         artifacts=str(tmp_path / "artifacts"))  # fmt: skip
    return sorted(study.trials, key=lambda t: t.number)


def _check(trials: list[FrozenTrial], checkpoint_suffix: str) -> None:
    slow, good = trials
    assert slow.state == TrialState.PRUNED  # lr 1e-6: stopped by the pruner at epoch 3
    assert sorted(slow.intermediate_values) == [1, 2, 3]  # the training stopped there
    assert "prune_reason" in slow.user_attrs
    assert good.state == TrialState.COMPLETE
    assert sorted(good.intermediate_values) == [1, 2, 3, 4, 5]
    assert good.value is not None
    assert good.value < 1.0
    for trial in (slow, good):  # the stop is clean: each trial's checkpoint was written
        checkpoint = Path(trial.user_attrs["checkpoint"])
        assert checkpoint.exists(), trial.number
        assert checkpoint.name.endswith(checkpoint_suffix)
        assert f"trial-{trial.number:05d}" in str(checkpoint)  # the trial's own folder


@pytest.mark.slow
def test_a_lightning_loop_is_tuned_with_pruning(tmp_path: Path, unique_name: str) -> None:
    pytest.importorskip("lightning", reason="the lightning extra is not installed")
    _check(_tune(tmp_path, unique_name, LIGHTNING, "val_loss"), ".ckpt")


@pytest.mark.slow
def test_a_hugging_face_trainer_is_tuned_with_pruning(tmp_path: Path, unique_name: str) -> None:
    pytest.importorskip("transformers", reason="the huggingface extra is not installed")
    pytest.importorskip("accelerate", reason="the huggingface extra is not installed")
    trials = _tune(tmp_path, unique_name, HUGGING_FACE, "eval_loss")
    _check(trials, "")
    # The Trainer saved the epoch it was stopped at (checkpoint-<step>), as after a last epoch.
    assert Path(trials[0].user_attrs["checkpoint"]).name == "checkpoint-18"  # 3 epochs x 6 steps


def test_a_prune_caught_by_the_trials_code_still_ends_the_trial_pruned(
    write_study: Callable[..., Path], tmp_path: Path, unique_name: str
) -> None:
    """What the callbacks rely on: they catch the prune to stop the trainer cleanly."""
    import optuna

    def catches(params: dict[str, Any], report: Callable[..., None]) -> float:
        for step in range(1, 6):
            try:
                report({"loss": 100.0}, step)
            except optuna.TrialPruned:
                break
        return 100.0

    body = f"""
    name: {unique_name}
    metric: loss
    pruner: {{type: threshold, upper: 1.0}}
    budget: {{n_trials: 1}}
    objective: {{function: objective.py:quadratic}}
    search_space: {{x: {{type: float, low: 0, high: 1}}}}
    """
    study = hpsearch.run(write_study(body), catches, storage=f"sqlite:///{tmp_path / 'd.db'}")
    (trial,) = study.trials
    assert trial.state == TrialState.PRUNED
    assert list(trial.intermediate_values) == [1]
