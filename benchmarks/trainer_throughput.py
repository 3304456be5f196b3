"""Images/second of `hpsearch.train.loop.fit` next to a plain hand-written PyTorch loop."""

# Both train the same model on the same data with the same batch size and epochs, evaluating on
# the validation split after every epoch, and both are timed end to end (data loading, model
# building, training, evaluation). Runs alternate between the two, after one discarded warm-up
# each, so that noise from a busy machine hits both alike. The table shows the median and the
# best run of each (the best is the least disturbed by other processes on a shared machine).
#
#     python benchmarks/trainer_throughput.py                      # digits, small_cnn, bs 32/128
#     python benchmarks/trainer_throughput.py --model resnet18 --image-size 32 --batch-size 64

from __future__ import annotations

import argparse
import functools
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

from hpsearch.train.loop import fit
from hpsearch.train.models import build_model
from hpsearch.train.options import TrainerOptions
from hpsearch.train.runtime import use_channels_last


def run_fit(options: TrainerOptions) -> tuple[float, int, float]:
    """(seconds, training images seen, final val accuracy) for the built-in loop."""
    seen: list[float] = []
    start = time.perf_counter()
    result = fit(options, lambda metrics, epoch: seen.append(metrics["val_accuracy"]))
    seconds = time.perf_counter() - start
    return seconds, 1438 * options.epochs, seen[-1] if seen else result["val_accuracy"]


def run_plain(options: TrainerOptions, *, channels_last: bool) -> tuple[float, int, float]:
    """The same training written the ordinary way: tensors, a shuffled index, SGD.

    `channels_last` puts model and batches in the memory format `fit` picks, so that the
    comparison can separate the loop's overhead from the layout's speed.
    """
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    start = time.perf_counter()
    torch.manual_seed(options.seed)
    digits = load_digits()
    size = options.dataset.image_size or 8
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16
    if size != 8:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    channels = options.in_channels
    x = x.expand(-1, channels, -1, -1).contiguous()
    y = torch.tensor(digits.target, dtype=torch.long)
    rng = np.random.default_rng(0)
    order = torch.from_numpy(rng.permutation(len(y)))
    val_idx, train_idx = order[:359], order[359:]
    x_train, y_train, x_val, y_val = x[train_idx], y[train_idx], x[val_idx], y[val_idx]
    mean = x_train.mean(dim=(0, 2, 3), keepdim=True)
    std = x_train.std(dim=(0, 2, 3), keepdim=True)
    x_train = ((x_train - mean) / std).contiguous(memory_format=fmt)
    x_val = ((x_val - mean) / std).contiguous(memory_format=fmt)
    model = build_model(options.model, 10, channels).to(memory_format=fmt)
    optimizer = torch.optim.SGD(model.parameters(), lr=options.lr, momentum=options.momentum)
    accuracy = 0.0
    for _ in range(options.epochs):
        model.train()
        perm = torch.randperm(len(y_train))
        for i in range(0, len(perm), options.batch_size):
            idx = perm[i : i + options.batch_size]
            batch = x_train[idx].contiguous(memory_format=fmt)
            loss = F.cross_entropy(model(batch), y_train[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        model.eval()
        correct = 0
        with torch.no_grad():
            for i in range(0, len(y_val), options.batch_size):
                logits = model(x_val[i : i + options.batch_size])
                correct += int((logits.argmax(1) == y_val[i : i + options.batch_size]).sum())
        accuracy = correct / len(y_val)
    seconds = time.perf_counter() - start
    return seconds, len(y_train) * options.epochs, accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="small_cnn")
    parser.add_argument("--image-size", type=int, default=None)
    parser.add_argument("--batch-size", type=int, nargs="+", default=[32, 128])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    layout = (
        "channels_last" if use_channels_last(None, args.model, torch.device("cpu")) else "NCHW"
    )
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU, digits; fit's "
        f"layout for {args.model}: {layout}; images/s, median (best) of {args.repeats}"
    )
    header = (
        f"{'config':<30} {'fit':>13} {'plain NCHW':>13} {'plain ' + layout:>19}"
        f" {'fit/plain':>11} {'fit/same-layout':>16}"
    )
    print(header)
    print("-" * len(header))
    for batch_size in args.batch_size:
        options = TrainerOptions(
            dataset={"name": "digits", "image_size": args.image_size},
            model=args.model,
            batch_size=batch_size,
            epochs=args.epochs,
            lr=0.05,
            device="cpu",
        )
        same = layout == "channels_last"
        runners: dict[str, Callable[[TrainerOptions], tuple[float, int, float]]] = {
            "fit": run_fit,
            "plain": functools.partial(run_plain, channels_last=False),
            "same": functools.partial(run_plain, channels_last=same),
        }
        for runner in runners.values():
            runner(options)  # warm-up: imports, allocator, oneDNN kernels
        rates: dict[str, list[float]] = {name: [] for name in runners}
        for repeat in range(args.repeats):
            # Rotate who goes first, so drift in machine load does not favour one side.
            names = list(runners)[repeat % 3 :] + list(runners)[: repeat % 3]
            for name in names:
                seconds, images, _ = runners[name](options)
                rates[name].append(images / seconds)
        med = {name: statistics.median(r) for name, r in rates.items()}
        best = {name: max(r) for name, r in rates.items()}
        config = f"{args.model} {args.image_size or 8}px bs{batch_size} x{args.epochs}ep"
        cells = [f"{med[n]:>6.0f} ({best[n]:>5.0f})" for n in runners]
        print(
            f"{config:<30} {cells[0]:>13} {cells[1]:>13} {cells[2]:>19}"
            f" {med['fit'] / med['plain']:>4.2f} ({best['fit'] / best['plain']:.2f})"
            f" {med['fit'] / med['same']:>9.2f} ({best['fit'] / best['same']:.2f})"
        )


if __name__ == "__main__":
    main()
