"""`hpsearch report`: one self-contained HTML file: the status table, best parameters and plots.

The plots are Optuna's own (`optuna.visualization`, plotly). plotly.js is inlined once at the top,
so the file opens offline and can be mailed or attached to a ticket. A plot that cannot be drawn
(too few trials, one parameter value only) becomes a one-line note instead of failing the report.

The trials are read once, without the per-metric curves attribute (the bulk of a trainer's trial,
which no part of the report shows), and that one list feeds the best parameters, the advice (its
importances computed once, drawn as the importance plot) and the plots. A big study's plots draw
a sample of its trials, and the report says so (`inspect.sampling`).
"""

from __future__ import annotations

import datetime as dt
import html
import itertools
import logging
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import optuna
import optuna.visualization as vis
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from hpsearch.inspect import advice, advice_text, best, sampling, status, table
from hpsearch.inspect.source import StudyView, curve
from hpsearch.storage.attrs import CURVES_ATTR
from hpsearch.storage.optuna_compat import trials_study
from hpsearch.study import EXPONENT, EXPONENT_PREFIX, VALUE
from hpsearch.version import __version__

_log = logging.getLogger(__name__)

# Parameter importances need enough completed trials to mean anything (PED-ANOVA splits them
# into a top quantile and the rest).
MIN_TRIALS_FOR_IMPORTANCE = 5
MAX_SLICE_PLOTS = 16
FIGURE_HEIGHT = "440px"


class _NotDrawn(Exception):
    """A plot this study cannot have (no learning curves): a note, not a warning."""


@dataclass(frozen=True)
class Section:
    id: str
    title: str
    body: str


def build(
    view: StudyView,
    *,
    plot_trials: int = sampling.PLOT_TRIALS,
    curves: int = sampling.CURVES,
) -> str:
    """The whole report as one HTML string; its plots draw at most `plot_trials` trials and
    `curves` learning curves (`inspect.sampling`)."""
    state = status.collect(view)
    trials = list(view.trials(without=frozenset({CURVES_ATTR})))
    top = 5 if not view.multi_objective else None
    ranked, n_complete = best.best_trials(view, top=top, trials=trials)
    advised, advice_html = _advice(view, trials)
    drawn = sampling.sample(
        trials, view.directions, view.metrics[0], limit=plot_trials, curves=curves
    )
    del trials  # only the sample is drawn: let the rest go before plotly's figures grow
    note = drawn.note()
    sections = [
        Section("status", "Status", _pre(table.render(state))),
        Section("best", "Best parameters", _pre(best.render(view, ranked, n_complete))),
        Section("advice", "Advice (hpsearch advise)", advice_html),
        *([Section("sample", "Plots of a sample", _note(note))] if note else []),
        *_figures(view, drawn, advised),
    ]
    return _page(view, sections)


def _advice(view: StudyView, trials: list[FrozenTrial]) -> tuple[advice.Advice | None, str]:
    if view.multi_objective:
        return None, _note("advice covers studies of one objective; see the Pareto front below.")
    try:
        advised = advice.collect(view, trials)
        text = advice_text.render(advised, study_file=str(view.loaded.path))
    except Exception as e:  # the advice must not cost the rest of the report
        _log.warning("report: advice not written: %s: %s", type(e).__name__, e)
        return None, _note(f"not written: {e}")
    return advised, _pre(text)


def _figures(
    view: StudyView, drawn: sampling.Sample, advised: advice.Advice | None
) -> list[Section]:
    study = trials_study(view.name, view.directions, drawn.trials)
    complete = [t for t in drawn.trials if t.state == TrialState.COMPLETE]
    metrics = view.metrics
    targets: list[tuple[str, Callable[[FrozenTrial], float] | None]] = (
        [(metrics[0], None)]
        if not view.multi_objective
        else [(m, _objective(i)) for i, m in enumerate(metrics)]
    )
    out: list[Section] = []

    def section(key: str, title: str, make: Callable[[], Any], *, need: int = 1) -> None:
        if len(complete) < need:
            out.append(Section(key, title, _note(
                f"needs at least {need} completed trial(s); this study has {len(complete)}."
            )))  # fmt: skip
            return
        try:
            figures = make()
        except _NotDrawn as e:
            out.append(Section(key, title, _note(str(e))))
            return
        except Exception as e:  # one odd plot (a constant parameter, NaNs) must not cost the rest
            _log.warning("report: %s not drawn: %s: %s", title, type(e).__name__, e)
            out.append(Section(key, title, _note(f"not drawn: {e}")))
            return
        out.append(Section(key, title, "\n".join(_html(f) for f in figures)))

    section(
        "history",
        "Optimization history",
        lambda: [_history(view, study, drawn, m, t) for m, t in targets],
    )
    if view.multi_objective:
        section("pareto-front", "Pareto front", lambda: [_pareto(study, metrics)])
    section(
        "intermediate",
        "Intermediate values (learning curves; pruned trials dotted)",
        lambda: [_learning_curves(view, drawn.curves, metrics[0])],
    )
    section(
        "importances",
        "Parameter importances",
        lambda: _importances(study, view, targets, advised),
        need=MIN_TRIALS_FOR_IMPORTANCE,
    )
    section(
        "parallel",
        "Parallel coordinates",
        lambda: [vis.plot_parallel_coordinate(study, target=t, target_name=m) for m, t in targets],
    )
    section("slice", "Slice plots", lambda: _slices(study, complete, targets[0]))
    return out


def _objective(i: int, sign: float = 1.0) -> Callable[[FrozenTrial], float]:
    def value(trial: FrozenTrial) -> float:
        assert trial.values is not None
        return sign * trial.values[i]

    return value


def _importances(
    study: optuna.Study,
    view: StudyView,
    targets: list[tuple[str, Callable[[FrozenTrial], float] | None]],
    advised: advice.Advice | None,
) -> list[Any]:
    if not view.multi_objective:
        if advised is None or not advised.importances:
            raise _NotDrawn((advised and advised.importance_note) or "no importances")
        return [_advice_importances(advised)]
    figures = []
    with warnings.catch_warnings():
        # PED-ANOVA ranks by how parameters reach LOW targets and warns whenever a target is
        # given; a maximised objective is negated below, so the warning says nothing new.
        warnings.simplefilter("ignore", UserWarning)
        for i, (metric, _) in enumerate(targets):
            sign = -1.0 if view.directions[i] == StudyDirection.MAXIMIZE else 1.0
            figures.append(
                vis.plot_param_importances(study, target=_objective(i, sign), target_name=metric)
            )
    return figures


def _advice_importances(advised: advice.Advice) -> Any:
    """The advice's own figures, in its order: one computation, one ranking on the page."""
    import plotly.graph_objects as go

    ranked = sorted(advised.importances, key=lambda i: i.score)  # plotly draws bottom-up
    figure = go.Figure(
        go.Bar(
            x=[i.score for i in ranked],
            y=[i.name for i in ranked],
            orientation="h",
            text=[f"{i.score:.2f}" for i in ranked],
            customdata=[[i.fanova, i.ped_anova] for i in ranked],
            hovertemplate="%{y}: %{x:.2f} (fANOVA %{customdata[0]:.2f}, "
            "PED-ANOVA %{customdata[1]:.2f})<extra></extra>",
        )
    )
    figure.update_layout(
        title=f"Importance for {advised.metric}: mean of fANOVA and PED-ANOVA (as the advice)",
        xaxis_title="importance (0-1)",
    )
    return figure


def _pareto(study: optuna.Study, metrics: list[str]) -> Any:
    if len(metrics) > 3:
        return vis.plot_pareto_front(study, target_names=metrics, targets=lambda t: t.values[:3])
    return vis.plot_pareto_front(study, target_names=metrics)


def _history(
    view: StudyView,
    study: optuna.Study,
    drawn: sampling.Sample,
    metric: str,
    target: Callable[[FrozenTrial], float] | None,
) -> Any:
    """Optuna's history plot; a sample's drawn here, as Optuna draws it (Optuna's own takes
    trial numbers for list positions, so it needs every trial)."""
    if len(drawn.trials) == drawn.total:
        return vis.plot_optimization_history(study, target=target, target_name=metric)
    import plotly.graph_objects as go

    complete = [t for t in drawn.trials if t.state == TrialState.COMPLETE and t.values]
    values = [target(t) if target else t.values[0] for t in complete]
    numbers = [t.number for t in complete]
    figure = go.Figure(go.Scatter(x=numbers, y=values, mode="markers", name=metric))
    if target is None:
        pick = max if view.directions[0] == StudyDirection.MAXIMIZE else min
        running = list(itertools.accumulate(values, pick))
        figure.add_trace(go.Scatter(x=numbers, y=running, mode="lines", name="Best Value"))
    figure.update_layout(
        title="Optimization History Plot", xaxis_title="Trial", yaxis_title=metric
    )
    return figure


def _learning_curves(view: StudyView, trials: list[FrozenTrial], metric: str) -> Any:
    if any(t.intermediate_values for t in trials):
        study = trials_study(view.name, view.directions, trials)
        figure = vis.plot_intermediate_values(study)
    else:
        figure = _curves_from_attrs(trials, metric)
    states = {t.number: t.state for t in trials}
    for trace in figure.data:
        found = re.search(r"(\d+)$", str(trace.name or ""))
        if found is None:
            continue
        state = states.get(int(found.group(1)))
        if state == TrialState.PRUNED:
            trace.update(name=f"{trace.name} (pruned)", line={"dash": "dot"}, opacity=0.7)
        elif state == TrialState.RUNNING:
            trace.update(name=f"{trace.name} (running)", line={"dash": "dash"})
    return figure


def _curves_from_attrs(trials: list[FrozenTrial], metric: str) -> Any:
    """Learning curves from `<metric>@<step>` attributes, drawn as Optuna draws its own."""
    import plotly.graph_objects as go

    figure = go.Figure()
    for trial in trials:
        steps = curve(trial, metric)
        if steps:
            figure.add_trace(go.Scatter(
                x=list(steps), y=list(steps.values()), mode="lines+markers",
                name=f"Trial{trial.number}", marker={"maxdisplayed": 10},
            ))  # fmt: skip
    if not figure.data:
        raise _NotDrawn("not drawn: no trial reported intermediate values")
    figure.update_layout(
        title=f"Intermediate values of {metric}",
        xaxis_title="Step",
        yaxis_title=metric,
    )
    return figure


def _slices(
    study: optuna.Study,
    complete: list[FrozenTrial],
    target: tuple[str, Callable[[FrozenTrial], float] | None],
) -> list[Any]:
    # One small plot per parameter reads better on a laptop than Optuna's single wide row. A
    # power of two is plotted as its value (`batch_size`), not as the exponent beside it.
    seen = {name for t in complete for name in t.params}
    shown = [n for n in sorted(seen) if not _shadowed(n, seen)][:MAX_SLICE_PLOTS]
    metric, fn = target
    return [vis.plot_slice(study, params=[name], target=fn, target_name=metric) for name in shown]


def _shadowed(name: str, names: set[str]) -> bool:
    """`log2_batch_size` when `batch_size`, its value, is there too."""
    return name.startswith(EXPONENT_PREFIX) and name.removeprefix(EXPONENT_PREFIX) in names


def _html(figure: Any) -> str:
    figure.update_layout(template="plotly_white", margin={"l": 60, "r": 20, "t": 50, "b": 50})
    body = figure.to_html(
        full_html=False,
        include_plotlyjs=False,
        default_height=FIGURE_HEIGHT,
        config={"displaylogo": False, "responsive": True},
    )
    return f'<div class="figure">{body}</div>'


def _pre(text: str) -> str:
    return f"<pre>{html.escape(text)}</pre>"


def _note(text: str) -> str:
    return f'<p class="note">{html.escape(text)}</p>'


_CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5rem auto; max-width: 1200px;
       padding: 0 1rem; color: #222; }
h1 { font-size: 1.4rem; } h2 { font-size: 1.15rem; margin-top: 2rem;
     border-bottom: 1px solid #ddd; padding-bottom: .2rem; }
pre { background: #f6f8fa; padding: .8rem; overflow-x: auto; font-size: .85rem;
      line-height: 1.35; }
.note { color: #666; font-style: italic; }
#slice .figure { display: inline-block; width: 49%; vertical-align: top; }
@media (max-width: 900px) { #slice .figure { width: 100%; } }
nav a { margin-right: 1rem; }
"""


def _old_powers(view: StudyView) -> str:
    if not view.power_of_two or view.power_encoding == VALUE:
        return ""  # stored as values: every plot shows `batch_size: 32`
    if view.power_encoding == EXPONENT:
        return (
            "\nThis study was made before hpsearch stored powers of two as values: they appear "
            "in the plots as their exponent (<code>log2_&lt;name&gt;</code>)."
        )
    return (
        "\nThis study was made when hpsearch stored powers of two twice: in the parallel "
        "coordinates they appear as their value (<code>batch_size</code>) and as their exponent "
        "(<code>log2_batch_size</code>)."
    )


def _page(view: StudyView, sections: list[Section]) -> str:
    from plotly.offline import get_plotlyjs

    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    nav = " ".join(
        f'<a href="#{s.id}">{html.escape(s.title.split(" (")[0])}</a>' for s in sections
    )
    body = "\n".join(
        f'<section id="{s.id}">\n<h2>{html.escape(s.title)}</h2>\n{s.body}\n</section>'
        for s in sections
    )
    title = html.escape(f"hpsearch report: {view.name}")
    old = _old_powers(view)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{_CSS}</style>
<script type="text/javascript">{get_plotlyjs()}</script>
</head>
<body>
<h1>{title}</h1>
<p>Storage {html.escape(view.url.redacted)}, written {when} by hpsearch {__version__}.{old}</p>
<nav>{nav}</nav>
{body}
</body>
</html>
"""
