"""Search quality with W asynchronous workers: regret per compute, and wall-clock to a result.

The parallel counterpart of benchmarks/search_quality.py (whose methods, problems and figures it
shares): W workers simulated in time on one shared in-memory Optuna study, each with its own
sampler and pruner built from the method's study file as `hpsearch run` builds them
(benchmarks/sp_sim.py says how). Methods side by side on paired seeds; LCBench `DEV_TASKS` only.

- `--cost constant`: every epoch takes 1 unit; `--cost surrogate`: an epoch takes what LCBench's
  surrogate predicts for the configuration (scaled so a typical configuration's epoch is 1).
  Compute (what regret is measured at) is what the fleet trained, in full trainings of 52
  units; wall-clock is simulated time, in the same units.
- `--variant conditional`: the space with `optimizer: [momentum, plain]` and `momentum` only
  `when: {optimizer: momentum}` (sq_problems.LCBench.config says how it maps to the surrogate).
- `--check`: one worker must reproduce benchmarks/search_quality.py's runs trial for trial.

Random search runs 100 trainings (its median result is the target of "to random@100"); the
other methods `--trainings` (50), so a target not reached within it shows as `>50`.

    .venv/bin/python benchmarks/search_parallel.py [--seeds 2] [--tasks 189873,167200]
        [--methods random,tpe,gp,tpe+sha,default] [--workers 1,4,8]
        [--cost constant,surrogate] [--variant flat,conditional] [--processes 2] [--check]
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from multiprocessing import Pool
from pathlib import Path

# Before numpy/torch load: one thread per process, the benchmark runs one process per core.
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402
from search_quality import init_process  # noqa: E402
from sp_sim import COST_MODELS, Problem, simulate  # noqa: E402
from sq_methods import METHODS, Run, run_lcbench  # noqa: E402
from sq_problems import EPOCHS, LCBench, default_data_folder, dev_tasks  # noqa: E402
from sq_report import Figures, trainings_to  # noqa: E402

Job = tuple[str, str, int, str, str, int, int]  # variant, cost, W, task, method, seed, budget
BUDGETS = (10, 20, 50)
_bench: LCBench | None = None
_SLOW = ("gp", "default", "auto")


def _lcbench() -> LCBench:
    global _bench
    if _bench is None:
        _bench = LCBench(default_data_folder())
    return _bench


def _work(job: Job) -> Run:
    variant, cost, workers, task, method, seed, trainings = job
    started = time.process_time()
    problem = Problem(_lcbench(), task, conditional=variant == "conditional", cost=cost)
    run = simulate(problem, method, seed, workers, trainings)
    run.seconds = time.process_time() - started
    return run


def wall_to(run: Run, target: float) -> float:
    """Simulated time, in full trainings, until the incumbent reaches `target`."""
    for moment, incumbent in zip(run.times, run.incumbents, strict=True):
        if incumbent is not None and incumbent >= target - 1e-9:
            return moment / EPOCHS
    return math.inf


def _cell(values: list[float], limit: int) -> str:
    value = statistics.median(values) if values else math.nan
    if math.isnan(value):
        return "-"
    return f">{limit}" if math.isinf(value) else f"{value:.1f}"


def table(figures: Figures, problem: str, tasks: list[str], methods: list[str], cap: int) -> str:
    """A row per method: mean regret at the budgets, then medians over tasks of the medians
    over seeds of the compute and the wall-clock to random@100."""
    head = " | ".join(f"regret@{b}" for b in BUDGETS)
    lines = [
        f"| method | {head} | compute to random@100 | wall to random@100 | trials (completed) "
        "| CPU s |",
        "| --- |" + " ---: |" * (len(BUDGETS) + 4),
    ]
    for method in methods:
        runs = [r for r in figures.runs if r.problem == problem and r.method == method]
        if not runs:
            continue
        limit = 100 if method == "random" else cap
        regrets = [
            statistics.fmean(figures.regret(r, b) for r in runs) if b <= limit else math.nan
            for b in BUDGETS
        ]
        compute, wall = [], []
        for task in tasks:
            target = figures.target.get((problem, task))
            mine = [r for r in runs if r.task == task]
            if target is None or not mine:
                continue
            compute.append(statistics.median(trainings_to(r, target, EPOCHS) for r in mine))
            wall.append(statistics.median(wall_to(r, target) for r in mine))
        started = statistics.fmean(len(r.trials) for r in runs)
        completed = statistics.fmean(sum(v is not None for _, v in r.trials) for r in runs)
        cells = ["-" if math.isnan(x) else f"{x:.3f}" for x in regrets]
        cells += [_cell(compute, limit), _cell(wall, limit)]
        cells += [
            f"{started:.0f} ({completed:.0f})",
            f"{statistics.fmean(r.seconds for r in runs):.1f}",
        ]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def check(tasks: list[str], methods: list[str], seeds: int, trainings: int) -> bool:
    """One simulated worker gives exactly the sequential benchmark's trials (same seeds)."""
    bench, same = _lcbench(), True
    for task in tasks:
        for method in methods:
            for seed in range(seeds):
                sequential = run_lcbench(bench, task, method, seed, trainings)
                fleet = simulate(Problem(bench, task), method, seed, 1, trainings)
                equal = fleet.trials == sequential.trials
                same &= equal
                print(f"  {task} {method} seed {seed}: {'same' if equal else 'DIFFERENT'}")
    return same


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--tasks", default="", help="comma-separated DEV_TASKS ids (all)")
    parser.add_argument("--methods", default="random,tpe,gp,tpe+sha,default")
    parser.add_argument("--workers", default="1,4,8")
    parser.add_argument("--cost", default="constant", help=f"among {','.join(COST_MODELS)}")
    parser.add_argument("--variant", default="flat", help="among flat,conditional")
    parser.add_argument("--trainings", type=int, default=50)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--sample", type=int, default=20000, help="random sample per task")
    parser.add_argument("--check", action="store_true", help="W=1 against search_quality.py")
    parser.add_argument(
        "--set", action="append", default=[], metavar="MODULE.NAME=VALUE",
        help="override a constant of hpsearch.search for tuning, e.g. pruner._WARMUP=0.4",
    )  # fmt: skip
    args = parser.parse_args(argv)
    allowed = dev_tasks(default_data_folder())
    args.tasks = [t for t in args.tasks.split(",") if t] or allowed
    if outside := sorted(set(args.tasks) - set(allowed)):
        parser.error(f"--tasks must be DEV_TASKS ids ({', '.join(allowed)}), got {outside}")
    args.methods = [m for m in args.methods.split(",") if m]
    if unknown := sorted(set(args.methods) - set(METHODS)):
        parser.error(f"--methods must be among {', '.join(METHODS)}, got {unknown}")
    if "random" not in args.methods:
        args.methods.insert(0, "random")  # its 100-training result is the target
    args.workers = [int(w) for w in args.workers.split(",")]
    args.cost = [c for c in args.cost.split(",") if c]
    args.variant = [v for v in args.variant.split(",") if v]
    if bad := sorted(set(args.cost) - set(COST_MODELS)) + sorted(
        set(args.variant) - {"flat", "conditional"}
    ):
        parser.error(f"unknown --cost or --variant: {bad}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    init_process(default_data_folder(), args.set)
    if args.check:
        return 0 if check(args.tasks, args.methods, args.seeds, args.trainings) else 1
    started = time.perf_counter()
    bench = _lcbench()
    jobs: list[Job] = [
        (v, c, w, t, m, s, 100 if m == "random" else args.trainings)
        for v in args.variant for c in args.cost for w in args.workers
        for t in args.tasks for m in args.methods for s in range(args.seeds)
    ]  # fmt: skip
    jobs.sort(key=lambda j: (j[4] not in _SLOW, -j[2]))
    print(f"{len(jobs)} runs, {args.processes} processes", flush=True)
    with Pool(
        args.processes, initializer=init_process, initargs=(default_data_folder(), args.set)
    ) as pool:
        runs = []
        for i, run in enumerate(pool.imap_unordered(_work, jobs), start=1):
            runs.append(run)
            print(
                f"  {i}/{len(jobs)} runs, {time.perf_counter() - started:.0f}s ({run.problem} "
                f"{run.task} {run.method} seed {run.seed}: {run.seconds:.0f} CPU s)",
                flush=True,
            )
    problems = sorted({r.problem for r in runs})
    references: dict[tuple[str, str], tuple[float, float]] = {}
    for task in args.tasks:
        finals = bench.finals(task, bench.random_configs(np.random.default_rng(0), args.sample))
        # One optimum per task whatever the fleet: the sample's best and every run's best.
        seen = [v for r in runs if r.task == task for v in r.incumbents if v is not None]
        best = max([float(finals.max()), *seen])
        references.update({(p, task): (best, float(finals.mean())) for p in problems})
    figures = Figures(runs, references, EPOCHS)
    for problem in problems:
        print(f"\n### {problem} ({len(args.tasks)} tasks, {args.seeds} seeds)\n")
        print(table(figures, problem, args.tasks, args.methods, args.trainings))
    print(f"\n{len(runs)} runs in {time.perf_counter() - started:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
