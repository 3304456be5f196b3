"""A real CNN study through `hpsearch run`: the default search against TPE without pruning.

Learning-curve surrogates are smooth; real validation curves are not. This benchmark trains a
real small CNN, epoch by epoch, on an image folder it makes from scikit-learn's digits (no
download): 16x16 grey images, each a digit shifted, scaled in contrast, blurred into Gaussian
noise and, one time in three, overlaid faintly with another digit, so that a small CNN reaches
about 0.85 and not 0.99. The validation folder holds 1,000 images made from digits the training
images never use, so a validation accuracy is as noisy as the real thing (about ±0.011).

The search space is the one users write: an optimizer choice with `momentum` only
`when: {optimizer: sgd}`, plus lr, batch size (a power of two) and weight decay; 8 epochs a
training, and a budget of 20 full trainings' worth of epochs (160), pruned trials charged what
they trained. Each method runs one study per seed through `hpsearch run` on its own SQLite file;
the table shows the best val_accuracy each reached (mean over seeds, and each seed).

    .venv/bin/python benchmarks/cnn_study.py [--seeds 0,1,2,3] [--methods default,tpe]
        [--trainings 20] [--epochs 8] [--out DIR]

Methods: `default` (no sampler or pruner named), `tpe` (TPE, no pruning), `default-nopruning`
(the default's sampler, no pruning), `tpe+auto` (TPE with the default's pruner).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import optuna
from PIL import Image
from sklearn.datasets import load_digits

METHODS: dict[str, str] = {
    "default": "",
    "tpe": "sampler: {type: tpe, seed: SEED}\npruner: {type: none}\n",
    "default-nopruning": "sampler: {type: auto, seed: SEED}\npruner: {type: none}\n",
    "tpe+auto": "sampler: {type: tpe, seed: SEED}\npruner: {type: auto}\n",
}
_SIZE = 16
_TRAIN_PER_CLASS = 240
_VAL_PER_CLASS = 100


def _render(digit: np.ndarray, other: np.ndarray | None, rng: np.random.Generator) -> np.ndarray:
    """One 16x16 image of `digit` (8x8, values 0..16), degraded as the docstring says."""
    big = np.kron(digit / 16.0, np.ones((2, 2)))
    canvas = np.zeros((_SIZE + 4, _SIZE + 4))
    dy, dx = rng.integers(0, 5, size=2)
    canvas[dy : dy + _SIZE, dx : dx + _SIZE] = big * rng.uniform(0.35, 1.0)
    image = canvas[2 : 2 + _SIZE, 2 : 2 + _SIZE]
    if other is not None:
        image = image + 0.45 * np.kron(other / 16.0, np.ones((2, 2)))
    image = image + rng.normal(0.0, 0.45, size=image.shape)
    return np.clip(image * 255 / 1.6 + 40, 0, 255).astype(np.uint8)


def make_dataset(root: Path) -> tuple[Path, Path]:
    """The train and validation folders (made once, deterministic)."""
    train, val = root / "train", root / "val"
    if (root / ".done").exists():
        return train, val
    digits = load_digits()
    rng = np.random.default_rng(0)
    order = rng.permutation(len(digits.target))
    # Validation images come from digits the training images never use.
    sources = {"train": order[: len(order) * 2 // 3], "val": order[len(order) * 2 // 3 :]}
    for split, folder, per_class in (
        ("train", train, _TRAIN_PER_CLASS),
        ("val", val, _VAL_PER_CLASS),
    ):
        pool = sources[split]
        for label in range(10):
            own = pool[digits.target[pool] == label]
            (folder / str(label)).mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                other = digits.images[rng.choice(pool)] if rng.random() < 1 / 3 else None
                pixels = _render(digits.images[rng.choice(own)], other, rng)
                Image.fromarray(pixels, mode="L").save(folder / str(label) / f"{i}.png")
    (root / ".done").touch()
    return train, val


def study_file(method: str, seed: int, train: Path, val: Path, epochs: int, trainings: int) -> str:
    search = METHODS[method].replace("SEED", str(seed))
    if method == "default":
        search = f"sampler: {{type: auto, seed: {seed}}}\n"
    return f"""name: cnn-{method}-{seed}
direction: maximize
metric: val_accuracy
budget: {{epochs: {epochs * trainings}}}
{search}objective:
  trainer: image_classification
  model: small_cnn
  dataset:
    path: {json.dumps(str(train))}
    val_path: {json.dumps(str(val))}
    channels: 1
    normalize: dataset
  epochs: {epochs}
  lr_schedule: cosine
  device: cpu
  cpu_threads: 1
  seed: {seed}
search_space:
  lr:           {{type: float, low: 1.0e-4, high: 0.3, log: true}}
  batch_size:   {{type: power_of_two, low: 16, high: 128}}
  optimizer:    {{type: categorical, choices: [sgd, adam, adamw]}}
  momentum:     {{type: float, low: 0.5, high: 0.99, when: {{optimizer: sgd}}}}
  weight_decay: {{type: float, low: 1.0e-6, high: 1.0e-2, log: true}}
"""


def run_one(
    method: str, seed: int, out: Path, data: tuple[Path, Path], epochs: int, trainings: int
) -> tuple[float, int, int, float]:
    """(best val_accuracy, trials, completed, CPU seconds) of one study."""
    folder = out / f"{method}-{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "study.yaml"
    path.write_text(study_file(method, seed, *data, epochs, trainings))
    storage = f"sqlite:///{folder / 'study.db'}"
    before = os.times()
    subprocess.run(
        [sys.executable, "-m", "hpsearch", "run", str(path), "--storage", storage],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    after = os.times()
    study = optuna.load_study(study_name=f"cnn-{method}-{seed}", storage=storage)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    cpu = after.children_user + after.children_system
    cpu -= before.children_user + before.children_system
    return study.best_value, len(study.trials), len(done), cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2,3")
    parser.add_argument("--methods", default="default,tpe")
    parser.add_argument("--trainings", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--out", type=Path, default=Path("/tmp/hpsearch-cnn-study"))
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    methods = args.methods.split(",")
    data = make_dataset(args.out / "data")
    results: dict[str, list[tuple[float, int, int, float]]] = {m: [] for m in methods}
    started = time.time()
    for seed in seeds:  # methods interleaved per seed: a busy spell hits them alike
        for method in methods:
            results[method].append(
                run_one(method, seed, args.out, data, args.epochs, args.trainings)
            )
            best, trials, done, cpu = results[method][-1]
            print(
                f"# {method} seed {seed}: best {best:.4f}, {trials} trials ({done} completed), "
                f"{cpu:.0f} CPU s",
                flush=True,
            )
    print(f"\n{args.trainings} full trainings of {args.epochs} epochs each; seeds {args.seeds}\n")
    print("| method | best val_accuracy (mean) | per seed | trials (completed) per study |")
    print("| --- | ---: | --- | ---: |")
    for method, rows in results.items():
        mean = statistics.mean(r[0] for r in rows)
        per_seed = ", ".join(f"{r[0]:.3f}" for r in rows)
        started_trials = statistics.mean(r[1] for r in rows)
        completed = statistics.mean(r[2] for r in rows)
        print(f"| {method} | {mean:.4f} | {per_seed} | {started_trials:.1f} ({completed:.1f}) |")
    print(f"\n{len(seeds) * len(methods)} studies in {time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
