"""`hpsearch advise`'s words: the advice of `hpsearch.inspect.advice`, one topic per paragraph."""

from __future__ import annotations

from hpsearch.inspect.advice import NEGLIGIBLE, SETTLED_AFTER, Advice, fmt


def render(advice: Advice, *, study_file: str = "STUDY.yaml") -> str:
    """The advice in plain words, one topic per paragraph."""
    c = advice.counts
    total = sum(c.values())
    out = [
        f"study {advice.study}: {advice.direction} {advice.metric}; {total} trials: "
        f"{c['COMPLETE']} complete, {c['PRUNED']} pruned, {c['FAIL']} failed, "
        f"{c['RUNNING']} running"
    ]
    if advice.best is not None and advice.best.values:
        params = ", ".join(f"{k} {fmt(v)}" for k, v in advice.best_params.items())
        out.append(
            f"best {advice.metric} {fmt(advice.best.values[0])} (trial {advice.best.number}): "
            f"{params}"
        )
    out += ["", "what mattered", *_mattered_lines(advice)]
    if advice.bounds:
        out += ["", "ranges"]
        for hint in advice.bounds:
            where = f"the best trials sit at the {hint.side} end of its range"
            seen = f"(best {fmt(hint.best)}, {hint.side} {fmt(hint.bound)})"
            if hint.suggested is None:
                out.append(
                    f"  {hint.name}: {where} {seen}: that is the largest this device holds; "
                    "more needs a larger GPU or `batch_size_fit: {policy: accumulate}`"
                )
            else:
                out.append(
                    f"  {hint.name}: {where} {seen}: widen it, try {hint.side}: "
                    f"{fmt(hint.suggested)}"
                )
    out += ["", "progress", f"  {advice.progress}"]
    if advice.pruning:
        out += ["", "pruning", f"  {advice.pruning}"]
    if advice.failures:
        out += ["", "failed trials"]
        for g in advice.failures:
            shown = ", ".join(map(str, g.trials[:8])) + (", ..." if len(g.trials) > 8 else "")
            out.append(f"  {len(g.trials)} {g.cause} (trial {shown}): {g.example}")
            out.append(f"    fix: {g.fix}")
    out += ["", "next"]
    if advice.changes:
        out.append(
            f"  `hpsearch advise {study_file} -o NEXT.yaml` writes a narrowed study "
            f"({'; '.join(advice.changes)}), with the best trial enqueued first; then "
            "`hpsearch run NEXT.yaml`"
        )
    elif advice.progress.startswith(("settled", "solved")):
        out.append(
            "  the ranges held and the search has settled: change what is searched rather than "
            "search longer (another model, more or harder validation images, augmentation)"
        )
    elif advice.best is not None:
        out.append("  the ranges look right: keep running this study, or raise its budget")
    elif advice.failures and not advice.counts.get("RUNNING"):
        worst = advice.failures[0]
        out.append(
            f"  no trial has completed, and running longer will not help: "
            f"{len(worst.trials)} failed with {worst.example} ({worst.cause}). Fix: {worst.fix}; "
            "then run again"
        )
    else:
        out.append("  no trial has completed yet: let the study run, then ask again")
    return "\n".join(out) + "\n"


def _mattered_lines(advice: Advice) -> list[str]:
    if not advice.importances:
        return [f"  {advice.importance_note or 'nothing to judge yet'}"]
    mattered = advice.mattered()
    lines = [f"  {advice.importance_note}"] if advice.importance_note else []
    complete = advice.counts["COMPLETE"]
    if complete < SETTLED_AFTER:
        lines.append(
            f"  (from {complete} completed trials only: a first impression; ranges are narrowed "
            f"and options fixed from {SETTLED_AFTER})"
        )
    if mattered:
        top = mattered[0]
        lines.append(
            f"  {top.name} mattered most: it explains {top.fanova:.0%} of the variation in "
            f"{advice.metric} (fANOVA) and {top.ped_anova:.0%} of what sets the best trials "
            "apart (PED-ANOVA)"
        )
        also = ", ".join(f"{i.name} ({i.fanova:.0%} / {i.ped_anova:.0%})" for i in mattered[1:])
        if also:
            lines.append(f"  also mattered: {also}")
    shown = {i.name for i in mattered}
    some = [i for i in advice.importances if i.name not in shown and i.score >= NEGLIGIBLE]
    if some:
        listed = ", ".join(f"{i.name} ({i.fanova:.0%} / {i.ped_anova:.0%})" for i in some)
        lines.append(f"  some effect: {listed}")
    little = [i.name for i in advice.importances if i.score < NEGLIGIBLE]
    if little:
        fixed = (
            ": the narrowed study fixes them at the best trial's value"
            if advice.next_fixed
            else ""
        )
        lines.append(f"  barely mattered: {', '.join(little)} (under {NEGLIGIBLE:.0%}){fixed}")
    return lines
