"""TensorBoard: event files, one folder per trial, `<log_dir>/<study>/trial-00003/`.

Written with torch's `SummaryWriter` (torch is installed with hpsearch; it needs the
`tensorboard` package). Not optuna-integration's `TensorBoardCallback`: it needs TensorFlow,
and it sees a trial only once it has finished, so it has no per-epoch curves.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torch.utils.tensorboard import SummaryWriter

from hpsearch.spec import TensorBoardTracking
from hpsearch.tracking.types import TrialInfo, TrialState


class TensorBoardTracker:
    """See the module docstring. Parameters and the final values go to the HParams tab."""

    def __init__(self, spec: TensorBoardTracking, base: Path) -> None:
        self._root = (base / spec.log_dir).resolve()
        self._writers: dict[int, SummaryWriter] = {}

    def trial_dir(self, trial: TrialInfo) -> Path:
        return self._root / _folder(trial.study) / f"trial-{trial.number:05d}"

    def start(self, trial: TrialInfo) -> None:
        self._writers[trial.number] = SummaryWriter(log_dir=str(self.trial_dir(trial)))

    def step(self, trial: TrialInfo, metrics: Mapping[str, float], step: int) -> None:
        writer = self._writers[trial.number]
        for name, value in metrics.items():
            writer.add_scalar(name, float(value), global_step=step)

    def finish(
        self,
        trial: TrialInfo,
        state: TrialState,
        values: Sequence[float] | None,
        checkpoint: str | None,
    ) -> None:
        writer = self._writers.pop(trial.number, None)
        if writer is None:
            return
        try:
            writer.add_text("state", state)
            final = {f"hparam/value_{i}": float(v) for i, v in enumerate(values or ())}
            # run_name=".": the trial's own folder, not a new time-stamped one beside it.
            writer.add_hparams(_hparams(trial.params), final, run_name=".")
        finally:
            writer.close()


def _hparams(params: Mapping[str, Any]) -> dict[str, bool | int | float | str]:
    """TensorBoard takes numbers, booleans and text; anything else is shown as text."""
    return {k: v if isinstance(v, bool | int | float | str) else str(v) for k, v in params.items()}


def _folder(study: str) -> str:
    """A study name as one folder name (a `--name` may hold `/`); distinct names stay apart."""
    safe = re.sub(r"[^A-Za-z0-9._@+=,:-]", "_", study).lstrip(".") or "study"
    return safe if safe == study else f"{safe}-{hashlib.sha256(study.encode()).hexdigest()[:8]}"
