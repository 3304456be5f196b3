"""Hugging Face Trainer: `HuggingFaceReporter(report)`, a callback reporting each evaluation.

    reporter = HuggingFaceReporter(report)
    trainer = transformers.Trainer(model=model, args=TrainingArguments(
        output_dir=str(report.directory), eval_strategy="epoch", save_strategy="epoch", ...),
        callbacks=[reporter], ...)
    trainer.train()
    return reporter.metrics  # the last evaluation's: `eval_loss`, ...

The metrics are the Trainer's own names (`eval_loss`, `eval_<name>` from `compute_metrics`): the
study's `metric:` is one of them. Not optuna-integration's `TransformersPruningCallback`-style
raising: a raise inside `train()` skips the save of the evaluated epoch; this callback sets
`control.should_training_stop`, the Trainer saves and returns, and hpsearch ends the trial
PRUNED once the function returns.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hpsearch.integrations.common import keep, numeric_metrics, require

require("transformers", "huggingface")

import optuna  # noqa: E402 - after the one-line error for a missing extra
from transformers import (  # noqa: E402
    TrainerCallback,
    TrainerControl,
    TrainerState,
    TrainingArguments,
)
from transformers.trainer_utils import get_last_checkpoint  # noqa: E402


class HuggingFaceReporter(TrainerCallback):
    """Report the metrics of each evaluation, at the epoch it ends (counting from 1)."""

    def __init__(self, report: Callable[..., None]) -> None:
        self._report = report
        self.pruned = False
        self.metrics: dict[str, float] = {}  # the last reported: what the function may return

    def on_evaluate(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        metrics: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if not state.is_world_process_zero or not metrics:
            return
        # Epochs when evaluating per epoch; the optimizer step otherwise (`eval_strategy=steps`).
        step = (
            round(state.epoch)
            if args.eval_strategy == "epoch" and state.epoch
            else state.global_step
        )
        self.metrics = numeric_metrics(metrics)
        try:
            self._report(self.metrics, int(step))
        except optuna.TrialPruned:
            self.pruned = True
            control.should_training_stop = True
            if args.save_strategy != "no":  # the evaluated epoch's checkpoint, as after a last one
                control.should_save = True

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if state.is_world_process_zero:
            keep(self._report, state.best_model_checkpoint or get_last_checkpoint(args.output_dir))
