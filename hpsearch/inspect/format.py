"""The number and duration formats every inspect command shares."""

from __future__ import annotations

from typing import Any

STATES = ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")


def fmt_duration(seconds: float) -> str:
    """`42s`, `17m`, `3h05m`, `2d04h`: short enough for a table cell."""
    s = int(round(seconds))
    if s < 90:
        return f"{s}s"
    m = s // 60
    if m < 90:
        return f"{m}m"
    h, m = divmod(m, 60)
    if h < 48:
        return f"{h}h{m:02d}m"
    d, h = divmod(h, 24)
    return f"{d}d{h:02d}h"


def plural(n: int, word: str, many: str | None = None) -> str:
    """`1 trial`, `2 trials`."""
    return f"{n} {word if n == 1 else many or word + 's'}"


def fmt_rate(value: float) -> str:
    return f"{value:.0f}" if value >= 100 else f"{value:.3g}"


def fmt_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def fmt_bytes(n: int) -> str:
    """1234567 -> '1.2 MB' (powers of 1000, as `df -H`)."""
    size = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"
