"""`hpsearch run`'s progress: the numbers behind the per-trial line and the live bar."""

from __future__ import annotations

import io
import logging

from hpsearch.budget import LedgerState
from hpsearch.commands.progress import BarHandler, Progress


def _state(
    claimed: int, *, retries: int = 0, trials: int | None = None, timeout: float | None = None,
    epochs: int | None = None, used: int = 0,
) -> LedgerState:  # fmt: skip
    return LedgerState(
        claimed=claimed, retry_slots=retries, trial_limit=trials, started_at=1000.0,
        timeout_s=timeout, gpu_seconds=0.0, gpu_seconds_limit=None, epochs_used=used,
        epoch_limit=epochs,
    )  # fmt: skip


def test_done_counts_a_retried_trial_once_and_the_eta_takes_the_first_limit() -> None:
    progress = Progress(live=False)
    progress.state = _state(6, retries=1, trials=20)  # 5 done in 100 s: 15 left take 300 s
    assert progress.done() == "5/20"
    assert progress.eta(now=1100.0) == "5m"
    progress.state = _state(6, retries=1, trials=20, timeout=150)  # the timeout comes first
    assert progress.eta(now=1100.0) == "50s"
    progress.state = _state(2, epochs=100, used=25)  # a quarter of the epochs in 100 s
    assert progress.eta(now=1100.0) == "5m"


def test_the_bar_shows_the_running_trials_epoch_and_fits_the_terminal() -> None:
    progress = Progress(live=True, stream=io.StringIO())
    progress.state = _state(10, trials=20)
    progress.trial = (9, 3, 12)
    bar = progress.bar(200)
    assert bar.startswith("[##########..........] 10/20 | trial 9 epoch 3/12")
    assert len(progress.bar(30)) == 29


def test_a_log_line_clears_the_live_bar_and_the_bar_comes_back_below_it() -> None:
    stream = io.StringIO()
    progress = Progress(live=True, stream=stream)
    progress.state = _state(1, trials=4)
    progress.draw()
    logger = logging.getLogger("hpsearch.test_progress")
    handler = BarHandler(progress, logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    try:
        logger.warning("trial 1 COMPLETE")
    finally:
        logger.removeHandler(handler)
    text = stream.getvalue()
    cleared = text.index("\r\x1b[Ktrial 1 COMPLETE\n")
    assert text.rindex("[#####...............] 1/4") > cleared


def test_off_a_terminal_nothing_but_the_lines_is_written() -> None:
    stream = io.StringIO()
    progress = Progress(live=False, stream=stream)
    progress.state = _state(1, trials=4)
    progress.draw()
    progress.clear()
    assert stream.getvalue() == ""
