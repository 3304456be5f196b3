"""PyTorch Lightning: `LightningReporter(report)`, a callback reporting each validation.

    reporter = LightningReporter(report)
    trainer = lightning.Trainer(max_epochs=params["epochs"], callbacks=[reporter],
                                default_root_dir=report.directory)
    trainer.fit(model, train_loader, val_loader)
    return reporter.metrics  # the last validation's, the study's metric among them

Not optuna-integration's `PyTorchLightningPruningCallback`: that one takes an Optuna trial and
raises out of `fit` when pruned, so the trainer neither saves the checkpoint of the epoch nor
closes its loggers as it does after a last epoch. This one asks the trainer to stop
(`trainer.should_stop`), and hpsearch ends the trial PRUNED once the function returns.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hpsearch.integrations.common import keep, numeric_metrics, require

require("lightning", "lightning")

import lightning.pytorch as pl  # noqa: E402 - after the one-line error for a missing extra
import optuna  # noqa: E402


class LightningReporter(pl.Callback):
    """Report `trainer.callback_metrics` after each validation, epoch counting from 1."""

    def __init__(self, report: Callable[..., None]) -> None:
        super().__init__()
        self._report = report
        self.pruned = False
        self.metrics: dict[str, float] = {}  # the last reported: what the function may return

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return  # the few batches before training are no result
        stop = False
        if trainer.is_global_zero:  # one process of a multi-GPU run talks to the study
            self.metrics = numeric_metrics(trainer.callback_metrics)
            try:
                self._report(self.metrics, trainer.current_epoch + 1)
            except optuna.TrialPruned:
                stop = True
        # Every process stops together, or a distributed run waits forever on the stopped one.
        if trainer.strategy.broadcast(stop):
            self.pruned = True
            trainer.should_stop = True

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        checkpoint: Any = trainer.checkpoint_callback
        if trainer.is_global_zero and checkpoint is not None:
            keep(self._report, checkpoint.best_model_path or checkpoint.last_model_path)
