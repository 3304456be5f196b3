"""`hpsearch run`'s progress: a line per finished trial, and on a terminal a live bar below them.

The bar shows trials done of the budget, the best value so far, an estimate of the time left
and the running trial's epoch; it is redrawn in place and cleared before every log line, so the
log reads as it does in a file. Off a terminal (CI, a log file) only the plain lines are written.
"""

from __future__ import annotations

import logging
import shutil
import sys
import time
from typing import IO, Any

import optuna
from optuna.trial import FrozenTrial

from hpsearch.budget import Ledger, LedgerState
from hpsearch.inspect.format import fmt_duration
from hpsearch.storage.attrs import EPOCHS_ATTR, FAIL_REASON_ATTR

_log = logging.getLogger("hpsearch")


class Progress:
    """The numbers behind the lines and the bar, fed by the worker's callbacks."""

    def __init__(self, *, live: bool, stream: IO[str] | None = None) -> None:
        self.stream = stream or sys.stderr
        self.live = live
        self.state: LedgerState | None = None
        self.best: str = ""
        self.trial: tuple[int, int, Any] | None = None  # number, epoch, planned epochs
        self._shown = False

    # --- the worker's callbacks ----------------------------------------------------------

    def on_trial(self, study: optuna.Study, trial: FrozenTrial, ledger: Ledger | None) -> None:
        if not _log.isEnabledFor(logging.INFO):
            return  # -q: skip the queries behind the line
        self.state = ledger.state() if ledger is not None else None
        self.trial = None
        if len(study.directions) == 1:
            try:
                best = study.best_trial
                self.best = f"best {best.value:.6g} (trial {best.number})"
            except ValueError:
                pass
        _log.info("[%s] trial %d %s%s%s", self.done(), trial.number, trial.state.name,
                  _outcome(trial), self._suffix())  # fmt: skip

    def on_step(self, trial: optuna.Trial, step: int, value: float) -> None:
        self.trial = (trial.number, step, trial.user_attrs.get(EPOCHS_ATTR))
        self.draw()

    # --- what is shown -------------------------------------------------------------------

    def done(self) -> str:
        state = self.state
        if state is None:
            return "?"
        done = state.claimed - state.retry_slots
        return f"{done}/{state.trial_limit}" if state.trial_limit else str(done)

    def eta(self, now: float | None = None) -> str | None:
        """Time left by the rate so far, for the first limit that will be reached."""
        state = self.state
        if state is None or state.started_at is None:
            return None
        now = time.time() if now is None else now
        elapsed = max(now - state.started_at, 1e-9)
        left: list[float] = []
        done = state.claimed - state.retry_slots
        if state.trial_limit and done:
            left.append(max(state.trial_limit - done, 0) * elapsed / done)
        if state.epoch_limit and state.epochs_used:
            left.append(
                max(state.epoch_limit - state.epochs_used, 0) * elapsed / state.epochs_used
            )
        if state.timeout_s:
            left.append(max(state.timeout_s - elapsed, 0.0))
        return fmt_duration(min(left)) if left else None

    def _suffix(self) -> str:
        eta = self.eta()
        parts = [p for p in (self.best, f"ETA {eta}" if eta else "") if p]
        return " | " + " | ".join(parts) if parts else ""

    def bar(self, width: int) -> str:
        state = self.state
        cells = 20
        filled = 0
        if state is not None and state.trial_limit:
            done = state.claimed - state.retry_slots
            filled = min(cells, round(cells * done / state.trial_limit))
        text = f"[{'#' * filled}{'.' * (cells - filled)}] {self.done()}"
        if self.trial is not None:
            number, epoch, planned = self.trial
            text += f" | trial {number} epoch {epoch}" + (f"/{planned}" if planned else "")
        text += self._suffix()
        return text[: max(width - 1, 10)]

    def draw(self) -> None:
        if not self.live:
            return
        width = shutil.get_terminal_size((100, 20)).columns
        self.stream.write("\r\x1b[K" + self.bar(width))
        self.stream.flush()
        self._shown = True

    def clear(self) -> None:
        if self.live and self._shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._shown = False


class BarHandler(logging.StreamHandler):
    """A log handler that clears the live bar, writes the record, then draws the bar again."""

    def __init__(self, progress: Progress, formatter: logging.Formatter | None) -> None:
        super().__init__(progress.stream)
        self.progress = progress
        if formatter is not None:
            self.setFormatter(formatter)

    def emit(self, record: logging.LogRecord) -> None:
        self.progress.clear()
        super().emit(record)
        self.progress.draw()


def install(progress: Progress) -> None:
    """On a terminal, route hpsearch's log through `BarHandler` so lines and bar do not mix."""
    if not progress.live:
        return
    logger = logging.getLogger("hpsearch")
    formatter = logger.handlers[0].formatter if logger.handlers else None
    logger.handlers[:] = [BarHandler(progress, formatter)]


def _outcome(trial: FrozenTrial) -> str:
    if trial.state.name == "PRUNED":
        return f" at step {trial.last_step}"
    if trial.values is not None:
        return " value=" + ",".join(f"{v:.6g}" for v in trial.values)
    if trial.state.name == "FAIL":
        return f" ({trial.user_attrs.get(FAIL_REASON_ATTR, 'failed')})"
    return ""
