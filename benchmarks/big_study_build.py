"""Build a big study as hpsearch's workers write one, fast: `big_study.py` times commands on it.

One real trial first: `hpsearch run --n-trials 1` on the study file (the quickstart's trainer on
the digits, epochs 10-20) creates the study as a worker does (its stored spec and search space,
the budget ledger) and leaves a trial with every attribute the trainer, the worker and
`MetricLog` write. Every other trial is that one's copy with its own parameters, state, learning
curve, curves attribute, worker and times, inserted in bulk into Optuna's own tables (reflected
from the database, so no private API): about 60% pruned, 35% complete, 5% failed (out of
memory), 1% of them retries, eight workers.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import random
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy as sa

REPO = Path(__file__).resolve().parent.parent
STUDY_NAME = "big-study"
BATCH = 500  # trials per INSERT batch
WORKERS = 8

STUDY_FILE = """\
name: {name}
direction: maximize
metric: val_accuracy
budget: {{n_trials: {trials}}}
objective:
  trainer: image_classification
  model: small_cnn
  dataset: {{name: digits, val_fraction: 0.2, normalize: dataset}}
  lr_schedule: cosine
  device: cpu
  cpu_threads: 1
search_space:
  lr:           {{type: float, low: 1.0e-4, high: 0.3, log: true}}
  batch_size:   {{type: power_of_two, low: 16, high: 128}}
  epochs:       {{type: int, low: 10, high: 20}}
  optimizer:    {{type: categorical, choices: [sgd, adam, adamw]}}
  weight_decay: {{type: float, low: 1.0e-6, high: 1.0e-2, log: true}}
enqueue:
  - {{lr: 0.003, batch_size: 32, epochs: 10, optimizer: adam, weight_decay: 1.0e-4}}
"""


@dataclass(frozen=True)
class Template:
    """The real trial's rows, by table."""

    study_id: int
    params: list[dict[str, Any]]
    user_attrs: dict[str, Any]
    host: str


def write_study_file(folder: Path, trials: int) -> Path:
    path = folder / "study.yaml"
    path.write_text(STUDY_FILE.format(name=STUDY_NAME, trials=trials))
    return path


def build(url: str, study_file: Path, trials: int, *, seed: int = 0) -> None:
    """The study of `trials` trials at `url` (an empty database)."""
    run = [str(Path(sys.executable).with_name("hpsearch")), "run", str(study_file)]
    artifacts = study_file.parent / "artifacts"
    subprocess.run(
        # Its checkpoint goes beside the study file (a temporary folder), not under ~/.local.
        [*run, "--storage", url, "--n-trials", "1", "-q", "--artifacts", str(artifacts)],
        check=True,
        cwd=study_file.parent,
    )
    engine = sa.create_engine(url)
    try:
        meta = sa.MetaData()
        meta.reflect(engine)
        template = _template(engine, meta)
        rng = random.Random(seed)
        with engine.begin() as c:
            first = _insert(c, meta, template, rng, trials - 1)
            ledger = meta.tables["hpsearch_ledger"]
            c.execute(
                sa.update(ledger)
                .where(ledger.c.study_id == template.study_id)
                .values(
                    claimed=trials,
                    trial_limit=trials,
                    started_at=first.replace(tzinfo=dt.UTC).timestamp(),
                )
            )
    finally:
        engine.dispose()


def _template(engine: sa.Engine, meta: sa.MetaData) -> Template:
    t = meta.tables
    with engine.connect() as c:
        study_id, trial_id = c.execute(
            sa.select(t["trials"].c.study_id, t["trials"].c.trial_id)
        ).one()
        params = [
            dict(r)
            for r in c.execute(
                sa.select(t["trial_params"]).where(t["trial_params"].c.trial_id == trial_id)
            ).mappings()
        ]
        users = t["trial_user_attributes"]
        attrs = {
            r.key: json.loads(r.value_json)
            for r in c.execute(sa.select(users).where(users.c.trial_id == trial_id))
        }
    return Template(study_id, params, attrs, str(attrs.get("host", "node")))


def _insert(
    c: sa.Connection, meta: sa.MetaData, template: Template, rng: random.Random, n: int
) -> dt.datetime:
    """Insert `n` trials after the template's, a batch at a time; the first start time."""
    t = meta.tables
    trials = t["trials"]
    # Eight workers, each trial about 20 s an epoch: the study ends about now (a trial takes
    # some 200 s, so 25 s per trial with eight workers).
    begin = dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(seconds=25 * n)
    clocks = [begin + dt.timedelta(seconds=37 * w) for w in range(WORKERS)]
    first = min(clocks)
    numbers = iter(range(1, n + 1))
    while True:
        batch = [_trial(next(numbers), template, rng, clocks) for _ in range(min(BATCH, n))]
        n -= len(batch)
        if not batch:
            return first
        rows = [
            {"number": b.number, "study_id": template.study_id, "state": b.state,
             "datetime_start": b.start, "datetime_complete": b.end}
            for b in batch
        ]  # fmt: skip
        ids = (
            c.execute(
                sa.insert(trials).returning(trials.c.trial_id, sort_by_parameter_order=True), rows
            )
            .scalars()
            .all()
        )
        children: dict[str, list[dict[str, Any]]] = {}
        for trial_id, b in zip(ids, batch, strict=True):
            for table, table_rows in b.rows(trial_id).items():
                children.setdefault(table, []).extend(table_rows)
        for table, table_rows in children.items():
            if table_rows:
                c.execute(sa.insert(t[table]), table_rows)


@dataclass
class _Trial:
    number: int
    state: str
    start: dt.datetime
    end: dt.datetime
    params: list[dict[str, Any]]
    value: float | None
    curve: list[float]
    user_attrs: dict[str, Any]
    system_attrs: dict[str, Any]

    def rows(self, trial_id: int) -> dict[str, list[dict[str, Any]]]:
        return {
            "trial_params": [{**p, "trial_id": trial_id} for p in self.params],
            "trial_values": []
            if self.value is None
            else [
                {"trial_id": trial_id, "objective": 0, "value": self.value, "value_type": "FINITE"}
            ],  # fmt: skip
            "trial_intermediate_values": [
                {
                    "trial_id": trial_id,
                    "step": step,
                    "intermediate_value": v,
                    "intermediate_value_type": "FINITE",
                }
                for step, v in enumerate(self.curve, start=1)
            ],  # fmt: skip
            "trial_user_attributes": _attr_rows(trial_id, self.user_attrs),
            "trial_system_attributes": _attr_rows(trial_id, self.system_attrs),
        }


def _attr_rows(trial_id: int, attrs: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {"trial_id": trial_id, "key": k, "value_json": json.dumps(v)} for k, v in attrs.items()
    ]


def _trial(
    number: int, template: Template, rng: random.Random, clocks: list[dt.datetime]
) -> _Trial:
    params, chosen = _params(template, rng)
    planned = int(chosen.get("epochs", 10))
    roll = rng.random()
    state = "FAIL" if roll < 0.05 else "PRUNED" if roll < 0.65 else "COMPLETE"
    ran = planned if state == "COMPLETE" else rng.randint(0 if state == "FAIL" else 1, planned - 1)
    # A learning curve that rises to a final accuracy set by how far lr is from 3e-3.
    final = 0.995 - 0.04 * abs(math.log10(float(chosen.get("lr", 3e-3)) / 3e-3)) ** 1.5
    final = max(0.1, final - rng.random() * 0.02)
    curve = [round(final * (1 - 0.3 * math.exp(-s / 2)), 6) for s in range(1, ran + 1)]
    worker = rng.randrange(WORKERS)
    start = clocks[worker]
    end = start + dt.timedelta(seconds=20 * max(ran, 0.2) * rng.uniform(0.8, 1.2))
    clocks[worker] = end + dt.timedelta(seconds=rng.uniform(0.5, 3))
    return _Trial(
        number, state, start, end, params,
        curve[-1] if state == "COMPLETE" else None, curve,
        _user_attrs(template, number, state, chosen, curve, worker),
        _system_attrs(number, rng),
    )  # fmt: skip


def _params(template: Template, rng: random.Random) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """New parameter rows drawn from the template's distributions; (rows, name -> value)."""
    rows, chosen = [], {}
    internal: dict[str, float] = {}
    for row in template.params:
        dist = optuna.distributions.json_to_distribution(row["distribution_json"])
        value = _draw(dist, rng)
        internal[row["param_name"]] = value
        rows.append({"param_name": row["param_name"], "param_value": value,
                     "distribution_json": row["distribution_json"]})  # fmt: skip
        chosen[row["param_name"]] = dist.to_external_repr(value)
    # A power of two's value beside its exponent, with a one-value distribution (as stored).
    for row in rows:
        exponent = internal.get(f"log2_{row['param_name']}")
        if exponent is not None:
            value = 2 ** int(exponent)
            row["param_value"] = float(value)
            row["distribution_json"] = optuna.distributions.distribution_to_json(
                optuna.distributions.IntDistribution(value, value)
            )
            chosen[row["param_name"]] = value
    return rows, chosen


def _draw(dist: optuna.distributions.BaseDistribution, rng: random.Random) -> float:
    if isinstance(dist, optuna.distributions.CategoricalDistribution):
        return float(rng.randrange(len(dist.choices)))
    assert isinstance(
        dist, optuna.distributions.FloatDistribution | optuna.distributions.IntDistribution
    )
    low, high = float(dist.low), float(dist.high)
    if isinstance(dist, optuna.distributions.IntDistribution):
        return float(rng.randint(int(low), int(high)))
    if dist.log:
        return math.exp(rng.uniform(math.log(low), math.log(high)))
    return rng.uniform(low, high)


def _user_attrs(
    template: Template, number: int, state: str, chosen: dict[str, Any], curve: list[float],
    worker: int,
) -> dict[str, Any]:  # fmt: skip
    attrs = dict(template.user_attrs)
    attrs.pop("enqueued", None)
    attrs.pop("checkpoint", None)  # only the best few trials keep one
    attrs.update(
        seed=number, worker=f"{template.host}:{1000 + worker}#{worker}",
        epochs=chosen.get("epochs"), batch_size=chosen.get("batch_size"),
    )  # fmt: skip
    curves = attrs.get("hpsearch:curves")
    if isinstance(curves, dict) and curve:
        steps = list(range(1, len(curve) + 1))
        scaled = {
            k: [round(float(v[-1]) * (1 + 1 / s), 6) for s in steps]
            for k, v in curves.items() if k != "step" and v and v[-1] is not None
        }  # fmt: skip
        attrs["hpsearch:curves"] = {"step": steps, **scaled}
        attrs.update({k: v[-1] for k, v in scaled.items()})
        attrs["epochs_run"] = len(curve)
        attrs["best_epoch"] = float(len(curve))
    if state == "PRUNED":
        attrs["prune_reason"] = f"val_accuracy={curve[-1]:.6g} at step {len(curve)}"
    if state == "FAIL":
        attrs["fail_reason"] = "oom: CUDA out of memory. Tried to allocate 2.00 GiB"
    return attrs


def _system_attrs(number: int, rng: random.Random) -> dict[str, Any]:
    if rng.random() >= 0.01 or number < 10:
        return {}
    failed = rng.randrange(number)
    return {"failed_trial": failed, "retry_history": [failed]}
