"""`hpsearch run` whose trainer holds during one epoch until told to go on (tests only).

`HPSEARCH_TEST_GATE=<epoch>:<folder>`: when the first trial this process trains from epoch 1
evaluates that epoch (its training done, before its checkpoint and its report; a resumed trial
never holds), this process touches `<folder>/reached` and waits
until `<folder>/release` exists (10 minutes at most), so a test can kill, stop or signal the
worker during a given epoch without guessing how fast it trains. Nothing else is changed: the
training, the study, the storage and the artifact store are the real ones.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import torch

from hpsearch.cli import main
from hpsearch.train.loop import TrainingSetup

GATE_ENV = "HPSEARCH_TEST_GATE"


def _install() -> None:
    at, folder = os.environ[GATE_ENV].split(":", 1)
    evaluate = TrainingSetup.evaluate
    first_steps: list[int] = []  # optimizer steps at the first evaluation: one epoch's worth

    def gated(
        self: TrainingSetup, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]
    ) -> dict[str, float]:
        if not first_steps:
            first_steps.append(self.steps)
        if self.steps == int(at) * first_steps[0]:  # epoch `at` of a trial started at 1
            Path(folder, "reached").touch()
            deadline = time.monotonic() + 600
            while not Path(folder, "release").exists() and time.monotonic() < deadline:
                time.sleep(0.05)
        return evaluate(self, batches)

    TrainingSetup.evaluate = gated  # type: ignore[method-assign]


if __name__ == "__main__":
    _install()
    sys.exit(main(sys.argv[1:]))
