"""The status table as text, at most 100 columns wide."""

from __future__ import annotations

import textwrap
from typing import Any

from hpsearch.inspect.format import (
    STATES,
    fmt_bytes,
    fmt_duration,
    fmt_rate,
    fmt_value,
    plural,
)
from hpsearch.inspect.savings import describe
from hpsearch.inspect.status import Status

WIDTH = 100
LABEL = 9  # width of the label column


class _Lines:
    """The table's lines: `row` starts a labelled row, `more` continues the one above."""

    def __init__(self, width: int) -> None:
        self.width = width
        self.lines: list[str] = []

    def row(self, label: str, text: str) -> None:
        indent = " " * LABEL
        self.lines.append(
            textwrap.fill(
                text,
                self.width,
                initial_indent=f"{label:<{LABEL}}",
                subsequent_indent=indent + "  ",
            )
        )

    def more(self, text: str) -> None:
        indent = " " * (LABEL + 2)
        self.lines.append(
            textwrap.fill(text, self.width, initial_indent=indent, subsequent_indent=indent)
        )


def render(s: Status, *, width: int = WIDTH) -> str:
    """The status table, every line at most `width` columns."""
    out = _Lines(width)
    goal = ", ".join(f"{d} {m}" for d, m in zip(s.directions, s.metrics, strict=True))
    out.row("study", f"{s.study} | {goal} | {s.storage}")
    t = s.trials
    states = ", ".join(f"{t[k.lower()]} {k.lower()}" for k in STATES)
    retries = f" | {plural(s.retries, 'retry', 'retries')}" if s.retries else ""
    out.row("trials", f"{t['total']} total: {states}{retries}")
    out.row("budget", _budget(s.budget))
    if s.stopped is not None:
        record = s.stopped
        out.row("stopped", f"at {record.get('at')} by {record.get('by')}: {record.get('reason')}")
    out.row("disk", _disk(s.checkpoints))
    _best(out, s)
    out.row("speed", _speed(s))
    out.row("pruning", describe(s.pruning))
    _workers(out, s)
    _stuck(out, s)
    return "\n".join(out.lines)


def _budget(b: dict[str, Any]) -> str:
    """`trials 12/40 | time 1h 2m of 4h | GPU-hours 3.1 of 10`, and what was spent if any."""
    limit = f"/{b['trial_limit']}" if b["trial_limit"] is not None else " (no limit)"
    elapsed = fmt_duration(b["elapsed_s"]) if b["elapsed_s"] is not None else "not started"
    timeout = f" of {fmt_duration(b['timeout_s'])}" if b["timeout_s"] is not None else ""
    gpu_limit = f" of {b['gpu_hours_limit']:.4g}" if b["gpu_hours_limit"] is not None else ""
    spent = f" | spent: {b['spent']}" if b["spent"] else ""
    return (
        f"trials {b['trials_claimed']}{limit} | time {elapsed}{timeout} | "
        f"GPU-hours {b['gpu_hours']:.3g}{gpu_limit}{spent}"
    )


def _best(out: _Lines, s: Status) -> None:
    """The best trial and its parameters; for several objectives, the Pareto front's trials."""
    if s.best is not None:
        value = fmt_value(s.best["values"][0])
        out.row("best", f"{s.metrics[0]} {value} (trial {s.best['number']})")
        params = ", ".join(f"{k}: {fmt_value(v)}" for k, v in s.best["params"].items())
        if params:
            out.more(params)
        if s.best.get("checkpoint"):
            out.more(f"checkpoint: {s.best['checkpoint']}")
    elif s.pareto_front:
        numbers = ", ".join(map(str, s.pareto_front[:12]))
        extra = f" and {len(s.pareto_front) - 12} more" if len(s.pareto_front) > 12 else ""
        out.row(
            "best", f"Pareto front of {plural(len(s.pareto_front), 'trial')}: {numbers}{extra}"
        )
        out.more("see `hpsearch best` for their parameters")
    else:
        out.row("best", "no completed trial yet")


def _speed(s: Status) -> str:
    """Trials per hour, the median trial's duration, and when the budget ends (the ETA)."""
    if s.throughput_per_hour is not None and s.throughput_window_s is not None:
        window = fmt_duration(s.throughput_window_s)
        speed = f"{fmt_rate(s.throughput_per_hour)} trials/h over {window}"
    else:
        speed = "no finished trial yet"
    if s.median_duration_s is not None:
        speed += f" | median trial {fmt_duration(s.median_duration_s)}"
    return speed + _eta(s)


def _eta(s: Status) -> str:
    """` | ETA 2h 5m (30 trials to go, by n_trials)`, or why there is none."""
    if s.stopped is not None:
        return " | stopped: no ETA"
    if s.eta_s == 0 and s.remaining_trials == 0:
        return " | done"
    if s.eta_s is None:
        return " | ETA unknown"
    to_go = ""
    if s.remaining_trials is not None:
        to_go = f"{plural(s.remaining_trials, 'trial')} to go, "
    return f" | ETA {fmt_duration(s.eta_s)} ({to_go}by {s.eta_limited_by})"


def _workers(out: _Lines, s: Status) -> None:
    """The live workers (the first 8, one a line) and what each is doing."""
    live = [w for w in s.workers if w.live]
    seen = f" of {len(s.workers)} seen" if len(s.workers) != len(live) else ""
    out.row(
        "workers",
        f"{len(live)} live{seen} (running a trial, or finished one in the last "
        f"{fmt_duration(s.recent_window_s)})",
    )
    name_width = min(max((len(w.worker) for w in live[:8]), default=0), 40)
    for w in live[:8]:
        if w.running:
            doing = f"running trial {', '.join(map(str, w.running))}"
            if w.running_s is not None:
                doing += f" for {fmt_duration(w.running_s)}"
        else:
            # A worker whose clock runs ahead of this machine's records ends in the future.
            doing = f"last trial ended {fmt_duration(max(0.0, w.last_finished_s_ago or 0.0))} ago"
        out.more(f"{w.worker:<{name_width}}  {doing} | {w.finished} finished")
    if len(live) > 8:
        out.more(f"... and {len(live) - 8} more (see --json)")


def _stuck(out: _Lines, s: Status) -> None:
    """The stuck trials (the first 8, one a line), or `none`."""
    if not s.stuck:
        out.row("stuck", "none")
        return
    for i, st in enumerate(s.stuck[:8]):
        text = f"trial {st.number} on {st.worker or 'an unknown worker'}: {st.reason}"
        if i == 0:
            out.row("stuck", text)
        else:
            out.more(text)
    if len(s.stuck) > 8:
        out.more(f"... and {len(s.stuck) - 8} more (see --json)")


def _disk(c: dict[str, Any]) -> str:
    """`checkpoints 12.3 MB here (/artifacts/demo) | 40.1 MB in /shared/ckpt`."""
    text = f"checkpoints {fmt_bytes(c['local_bytes'])} here ({c['local_dir']})"
    if c.get("shared"):
        size = "not measured" if c["shared_bytes"] is None else fmt_bytes(c["shared_bytes"])
        text += f" | {size} in {c['shared']}"
    return text
