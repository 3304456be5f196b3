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


def render(s: Status, *, width: int = WIDTH) -> str:
    """The status table, every line at most `width` columns."""
    lines: list[str] = []

    def row(label: str, text: str) -> None:
        indent = " " * LABEL
        lines.append(
            textwrap.fill(
                text, width, initial_indent=f"{label:<{LABEL}}", subsequent_indent=indent + "  "
            )
        )

    def more(text: str) -> None:
        indent = " " * (LABEL + 2)
        lines.append(textwrap.fill(text, width, initial_indent=indent, subsequent_indent=indent))

    goal = ", ".join(f"{d} {m}" for d, m in zip(s.directions, s.metrics, strict=True))
    row("study", f"{s.study} | {goal} | {s.storage}")
    t = s.trials
    states = ", ".join(f"{t[k.lower()]} {k.lower()}" for k in STATES)
    retries = f" | {plural(s.retries, 'retry', 'retries')}" if s.retries else ""
    row("trials", f"{t['total']} total: {states}{retries}")

    b = s.budget
    limit = f"/{b['trial_limit']}" if b["trial_limit"] is not None else " (no limit)"
    elapsed = fmt_duration(b["elapsed_s"]) if b["elapsed_s"] is not None else "not started"
    timeout = f" of {fmt_duration(b['timeout_s'])}" if b["timeout_s"] is not None else ""
    gpu_limit = f" of {b['gpu_hours_limit']:.4g}" if b["gpu_hours_limit"] is not None else ""
    spent = f" | spent: {b['spent']}" if b["spent"] else ""
    row(
        "budget",
        f"trials {b['trials_claimed']}{limit} | time {elapsed}{timeout} | "
        f"GPU-hours {b['gpu_hours']:.3g}{gpu_limit}{spent}",
    )

    if s.stopped is not None:
        record = s.stopped
        row("stopped", f"at {record.get('at')} by {record.get('by')}: {record.get('reason')}")
    row("disk", _disk(s.checkpoints))

    if s.best is not None:
        value = fmt_value(s.best["values"][0])
        row("best", f"{s.metrics[0]} {value} (trial {s.best['number']})")
        params = ", ".join(f"{k}: {fmt_value(v)}" for k, v in s.best["params"].items())
        if params:
            more(params)
        if s.best.get("checkpoint"):
            more(f"checkpoint: {s.best['checkpoint']}")
    elif s.pareto_front:
        numbers = ", ".join(map(str, s.pareto_front[:12]))
        extra = f" and {len(s.pareto_front) - 12} more" if len(s.pareto_front) > 12 else ""
        row("best", f"Pareto front of {plural(len(s.pareto_front), 'trial')}: {numbers}{extra}")
        more("see `hpsearch best` for their parameters")
    else:
        row("best", "no completed trial yet")

    if s.throughput_per_hour is not None and s.throughput_window_s is not None:
        window = fmt_duration(s.throughput_window_s)
        speed = f"{fmt_rate(s.throughput_per_hour)} trials/h over {window}"
    else:
        speed = "no finished trial yet"
    if s.median_duration_s is not None:
        speed += f" | median trial {fmt_duration(s.median_duration_s)}"
    if s.stopped is not None:
        speed += " | stopped: no ETA"
    elif s.eta_s == 0 and s.remaining_trials == 0:
        speed += " | done"
    elif s.eta_s is not None:
        to_go = ""
        if s.remaining_trials is not None:
            to_go = f"{plural(s.remaining_trials, 'trial')} to go, "
        speed += f" | ETA {fmt_duration(s.eta_s)} ({to_go}by {s.eta_limited_by})"
    else:
        speed += " | ETA unknown"
    row("speed", speed)

    row("pruning", describe(s.pruning))

    live = [w for w in s.workers if w.live]
    seen = f" of {len(s.workers)} seen" if len(s.workers) != len(live) else ""
    row(
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
            doing = f"last trial ended {fmt_duration(w.last_finished_s_ago or 0.0)} ago"
        more(f"{w.worker:<{name_width}}  {doing} | {w.finished} finished")
    if len(live) > 8:
        more(f"... and {len(live) - 8} more (see --json)")

    if s.stuck:
        for i, st in enumerate(s.stuck[:8]):
            text = f"trial {st.number} on {st.worker or 'an unknown worker'}: {st.reason}"
            if i == 0:
                row("stuck", text)
            else:
                more(text)
        if len(s.stuck) > 8:
            more(f"... and {len(s.stuck) - 8} more (see --json)")
    else:
        row("stuck", "none")
    return "\n".join(lines)


def _disk(c: dict[str, Any]) -> str:
    """`checkpoints 12.3 MB here (/artifacts/demo) | 40.1 MB in /shared/ckpt`."""
    text = f"checkpoints {fmt_bytes(c['local_bytes'])} here ({c['local_dir']})"
    if c.get("shared"):
        size = "not measured" if c["shared_bytes"] is None else fmt_bytes(c["shared_bytes"])
        text += f" | {size} in {c['shared']}"
    return text
