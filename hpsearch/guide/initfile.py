"""The study file `hpsearch init` writes: the plan as YAML, with a comment on every choice."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

from hpsearch.guide.choose import Plan
from hpsearch.guide.presets import SOURCES, cite
from hpsearch.guide.writer import Doc

_OBJECTIVE_ORDER = (
    "model",
    "pretrained",
    "optimizer",
    "momentum",
    "lr",
    "weight_decay",
    "lr_schedule",
    "warmup_epochs",
    "label_smoothing",
    "dropout",
    "freeze_backbone_epochs",
    "batch_size",
    "epochs",
    "device",
    "cpu_threads",
)
_SPACE_ORDER = (
    "lr",
    "weight_decay",
    "batch_size",
    "epochs",
    "label_smoothing",
    "momentum",
    "dropout",
    "freeze_backbone_epochs",
)


def render(plan: Plan, *, study_path: Path, command: str) -> str:
    """The whole study file."""
    doc = Doc()
    today = dt.date.today().isoformat()
    doc.comment(f"A study for the images in {plan.data.root}, written by `{command}` on {today}.")
    doc.comment("Data:    " + "\n         ".join(plan.data.lines()))
    doc.comment(f"Machine: {plan.machine.line()}")
    for note in plan.notes:
        doc.comment(f"Note:    {note}")
    doc.comment(f"Preset:  {plan.preset.key}: {plan.preset.title}. Sources, cited in [] below:")
    for key in _cited(plan):
        doc.comment(f"  [{key}] {cite(key)}")
    name = study_path.name
    doc.comment(
        "Every value says why; change any of them. Next:\n"
        f"  hpsearch validate {name}    checks the file, the data and the time per epoch\n"
        f"  hpsearch run {name}         runs the study\n"
        f"  hpsearch advise {name}      says what mattered and what to run next"
    )
    doc.blank()
    doc.key("name", plan.name, "the study's name in the storage")
    doc.key("metric", plan.metric.value, plan.metric.why)
    doc.comment("No sampler or pruner: hpsearch's defaults (docs/study-file.md).")
    doc.section("budget", plan.budget_keys.why)
    for key, value in plan.budget_keys.value.items():
        doc.key(key, value, indent=2)
    doc.section("objective")
    doc.key("trainer", "image_classification", "the built-in trainer (docs/trainer.md)", 2)
    objective = dict(plan.objective)
    for key in ("model", "pretrained"):
        if key in objective:
            item = objective.pop(key)
            doc.key(key, item.value, item.why, 2)
    doc.section("dataset", indent=2)
    for key in ("path", "val_fraction", "image_size", "channels", "normalize", "augment"):
        if key in plan.dataset:
            doc.key(key, plan.dataset[key].value, plan.dataset[key].why, 4)
    if "image_size" not in plan.dataset:
        doc.comment("image_size: unset, so the images are used at their own size", 4)
    for key in sorted(objective, key=_OBJECTIVE_ORDER.index):
        doc.key(key, objective[key].value, objective[key].why, 2)
    doc.section("search_space", "what the search varies")
    for key in sorted(plan.space, key=_SPACE_ORDER.index):
        doc.key(key, plan.space[key].value, plan.space[key].why, 2)
    doc.section("enqueue", "the published defaults, run first; the search refines from there")
    doc.item(plan.enqueue)
    return doc.render()


def _cited(plan: Plan) -> list[str]:
    """Source keys in the order they first appear in the file (each defined once)."""
    text = " ".join(
        w.why
        for w in [
            *plan.objective.values(),
            *plan.space.values(),
            *plan.dataset.values(),
            plan.metric,
        ]
    )
    keys = [*plan.preset.sources, *re.findall(r"\b(\w+)\b", text)]
    return [k for i, k in enumerate(keys) if k in SOURCES and k not in keys[:i]]
