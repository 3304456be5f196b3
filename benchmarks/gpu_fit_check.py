"""GPU check of the batch-size fitter: ResNet-50 at 3x224x224, fp32 and bf16, on an 8 GiB budget.

Run from the repository root on a machine with one CUDA GPU (one run, a few minutes):

    python benchmarks/gpu_fit_check.py

For each precision it finds the largest power-of-two batch size with the real subprocess probe
(3 training steps + 1 evaluation pass, 10% margin), with the allocator capped at 8 GiB through
`set_per_process_memory_fraction(8 GiB / total)` in the child, so a large card stands in for an
8 GiB one. It then trains one step at the size found and at twice it, under the full 8 GiB
(no margin): the first must fit, the second is expected to run out of memory. It prints the
tables. The cap leaves out the CUDA context and library handles of a real 8 GiB card, so the
emulation is optimistic by roughly that much (notes/batch-size-fit.md §5.3).

Without CUDA it prints `SKIPPED: no CUDA device` and exits 0. Exit code 1 means the size the
fitter returned did not train, which is a bug.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

GiB = 2**30
CAP = 8 * GiB
SHAPE = (3, 224, 224)
CLASSES = 1000
# Back-of-envelope starting points from notes §3.5 (88 MiB/img fp32, half with bf16): a right
# hint costs two probes.
HINTS = {"fp32": 6, "bf16": 7}


def main() -> int:
    import torch  # is_available() asks the driver for a count; it creates no CUDA context

    if not torch.cuda.is_available():
        print("SKIPPED: no CUDA device")
        return 0

    from hpsearch.batch_size import (
        ProbeOutcome,
        describe_device,
        format_table,
        largest_fitting_exponent,
        probe_in_subprocess,
    )
    from hpsearch.train.options import DatasetOptions, TrainerOptions

    info = describe_device("cuda:0")
    print(f"device: {info.label}; {info.software}; allocator capped at 8 GiB\n")
    status = 0
    for precision in ("fp32", "bf16"):
        options = TrainerOptions(
            dataset=DatasetOptions(name="digits"),  # not loaded: the probe uses random tensors
            model="resnet50",
            optimizer="sgd",
            precision=precision,
            device="cuda:0",
        )

        def probe(batch_size: int, options: TrainerOptions = options) -> ProbeOutcome:
            return probe_in_subprocess(
                options,
                batch_size,
                device="cuda:0",
                input_shape=SHAPE,
                num_classes=CLASSES,
                margin=0.10,
                memory_cap_bytes=CAP,
                timeout=240,
            )

        start = time.monotonic()
        fit = largest_fitting_exponent(
            probe,
            3,
            9,
            k_hint=HINTS[precision],
            device=f"{info.name} capped at 8 GiB",
        )
        wall = time.monotonic() - start
        print(
            f"== ResNet-50 {precision}: fits {fit.batch_size} "
            f"({len(fit.tried)} probes, {wall:.0f} s wall)"
        )
        print(format_table(fit))
        checks = [
            probe_in_subprocess(
                options,
                size,
                device="cuda:0",
                input_shape=SHAPE,
                num_classes=CLASSES,
                margin=0.0,
                memory_cap_bytes=CAP,
                steps=1,
                evaluate=False,
                timeout=240,
            )
            for size in (fit.batch_size, 2 * fit.batch_size)
        ]
        print("-- one training step under the full 8 GiB, no margin:")
        print(format_table(checks))
        found, double = checks
        if not found.ok:
            print(f"FAIL: the fitted size {fit.batch_size} did not train ({found.reason})")
            status = 1
        elif double.ok:
            print(f"NOTE: {2 * fit.batch_size} also trains without the margin: the 10% held it")
        else:
            print(f"OK: {fit.batch_size} trains, {2 * fit.batch_size} runs out of memory")
        print()
    return status


if __name__ == "__main__":
    sys.exit(main())
