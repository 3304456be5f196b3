"""Learning-rate schedules as one pure function of the optimizer step, with linear warmup."""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LambdaLR

# onecycle (Smith & Topor, https://arxiv.org/abs/1708.07120, as torch's OneCycleLR): start at
# lr/25, rise to lr, then anneal to lr/(25*1e4). Defaults as in torch.optim.lr_scheduler.
_ONECYCLE_START = 1 / 25
_ONECYCLE_END = _ONECYCLE_START / 1e4
_ONECYCLE_RISE = 0.3  # share of training spent rising when `warmup_epochs` is 0
_STEP_AT = (0.5, 0.75)  # step: x0.1 after half and after three quarters of training


def _cosine(progress: float, start: float, end: float) -> float:
    return end + (start - end) * 0.5 * (1 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))


def lr_multiplier(schedule: str, step: int, *, total_steps: int, warmup_steps: int) -> float:
    """The factor applied to the base `lr` at optimizer step `step` (0-based).

    constant/cosine/step begin with `warmup_steps` of linear warmup from lr/warmup_steps to lr;
    for onecycle the warmup is its rising phase instead.
    """
    total_steps = max(total_steps, 1)
    warmup_steps = min(warmup_steps, total_steps)
    if schedule == "onecycle":
        rise = warmup_steps or max(1, round(_ONECYCLE_RISE * total_steps))
        if step < rise:
            return _cosine(step / rise, _ONECYCLE_START, 1.0)
        return _cosine((step - rise) / max(total_steps - rise, 1), 1.0, _ONECYCLE_END)
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    after = step - warmup_steps
    remaining = max(total_steps - warmup_steps, 1)
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        return _cosine(after / remaining, 1.0, 0.0)
    if schedule == "step":
        return 0.1 ** sum(step >= at * total_steps for at in _STEP_AT)
    raise ValueError(
        f"`lr_schedule` must be constant, cosine, step or onecycle, got {schedule!r}."
    )


def make_scheduler(
    optimizer: torch.optim.Optimizer,
    schedule: str,
    *,
    steps_per_epoch: int,
    epochs: int,
    warmup_epochs: int,
) -> LambdaLR:
    """A scheduler stepped once per optimizer step (per iteration), whatever the schedule."""
    total, warmup = steps_per_epoch * epochs, steps_per_epoch * warmup_epochs
    return LambdaLR(
        optimizer,
        lambda step: lr_multiplier(schedule, step, total_steps=total, warmup_steps=warmup),
    )
