"""The batch-size probe: a throw-away process that trains a few steps at one size and reports.

The parent (`probe_in_subprocess` and friends, below) writes a JSON request to the child's
stdin and reads one `HPSEARCH_PROBE_RESULT {json}` line from its stdout. Exit codes: 0 it ran,
3 out of memory, 4 any other error. A fresh process per probe means a CUDA OOM cannot leave the
worker's allocator fragmented or its cuBLAS/cuDNN state broken (notes §3.6), and a CPU OOM kill
takes only the child.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import traceback
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpsearch.batch_size.oom import is_oom, oom_summary

if TYPE_CHECKING:
    from collections.abc import Sequence

    import torch

    from hpsearch.train.loop import TrainingSetup
    from hpsearch.train.options import TrainerOptions

OOM_EXIT = 3
ERROR_EXIT = 4
RESULT_PREFIX = "HPSEARCH_PROBE_RESULT "
# TEST ONLY. A byte budget the child enforces on tensors it allocates, raising a real
# torch.OutOfMemoryError past it, so the subprocess probe is tested on machines without a GPU.
# It counts tensor storage bytes only (no allocator slack, no library workspaces): never use it
# to size anything real.
FAKE_LIMIT_ENV = "HPSEARCH_FAKE_MEMORY_LIMIT_BYTES"


@dataclass(frozen=True)
class ProbeOutcome:
    """One row of the probe table."""

    batch_size: int
    ok: bool
    reason: str  # "ok" | "oom" | "killed" | "error" | "timeout" | "cached"
    peak_bytes: int | None  # CUDA: peak reserved by the allocator; CPU: peak live tensor bytes
    peak_allocated_bytes: int | None
    seconds: float
    detail: str = ""


@dataclass(frozen=True)
class MemoryEstimate:
    """Tensor bytes of one training step as fixed + per_sample * batch (measured on CPU)."""

    fixed_bytes: int
    per_sample_bytes: int


# --- parent side -----------------------------------------------------------------------------


def run_child(request: dict[str, Any], timeout: float) -> tuple[int, dict[str, Any], str]:
    """Run the child; returns (exit code, result dict or {}, last stderr line).

    `request["mode"]` is `probe`, `estimate`, `describe` or `time` (`hpsearch.guide.timing`).
    """
    env = dict(os.environ)
    # The child imports hpsearch from the same tree as this process, installed or not.
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    proc = subprocess.run(
        [sys.executable, "-m", "hpsearch.batch_size.probe"],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )
    result: dict[str, Any] = {}
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            result = json.loads(line[len(RESULT_PREFIX) :])
    tail = proc.stderr.strip().splitlines()
    return proc.returncode, result, tail[-1] if tail else ""


def probe_in_subprocess(
    options: TrainerOptions,
    batch_size: int,
    *,
    device: str,
    input_shape: Sequence[int],
    num_classes: int,
    margin: float = 0.10,
    steps: int = 3,
    evaluate: bool = True,
    memory_cap_bytes: int | None = None,
    resident_bytes: int = 0,
    timeout: float = 600.0,
) -> ProbeOutcome:
    """Train `steps` steps at `batch_size` plus one evaluation pass in a fresh process.

    On CUDA the child may use `(1 - margin)` of the device (of `memory_cap_bytes` if given, to
    emulate a smaller card), so what fits leaves the margin free for fragmentation and for the
    batches that differ from the synthetic ones. `resident_bytes` is allocated first: what the
    trial keeps on the device besides the model (the trainer preloads small datasets there).
    """
    request = {
        "mode": "probe",
        "options": options.model_dump(mode="json"),
        "batch_size": batch_size,
        "device": device,
        "input_shape": list(input_shape),
        "num_classes": num_classes,
        "margin": margin,
        "steps": steps,
        "evaluate": evaluate,
        "memory_cap_bytes": memory_cap_bytes,
        "resident_bytes": resident_bytes,
    }
    start = time.monotonic()
    try:
        code, result, tail = run_child(request, timeout)
    except subprocess.TimeoutExpired:
        return ProbeOutcome(
            batch_size,
            False,
            "timeout",
            None,
            None,
            time.monotonic() - start,
            f"no answer within {timeout:.0f} s",
        )
    if result and code in (0, OOM_EXIT):
        return ProbeOutcome(**result)
    seconds = time.monotonic() - start
    if code < 0:  # killed by a signal: on Linux usually the OOM killer
        return ProbeOutcome(batch_size, False, "killed", None, None, seconds, f"signal {-code}")
    return ProbeOutcome(
        batch_size,
        False,
        "error",
        None,
        None,
        seconds,
        result.get("detail") or tail or f"exit code {code}",
    )


def describe_device_in_subprocess(device: str, *, timeout: float = 300.0) -> dict[str, Any]:
    """Name, total memory and software of a GPU, asked from a child so we never init CUDA."""
    code, result, tail = run_child({"mode": "describe", "device": device}, timeout)
    if code != 0 or not result:
        from hpsearch.errors import BatchSizeError

        raise BatchSizeError(
            f"the device {device!r} must be usable by torch, but asking it failed: {tail}; "
            "check the driver and CUDA_VISIBLE_DEVICES, or set device: cpu."
        )
    return result


def estimate_in_subprocess(
    options: TrainerOptions,
    *,
    device: str,
    input_shape: Sequence[int],
    num_classes: int,
    timeout: float = 300.0,
) -> MemoryEstimate:
    """Measure tensor bytes of CPU training steps at batch 2 and 4 and fit a line through them."""
    request = {
        "mode": "estimate",
        "options": options.model_dump(mode="json"),
        "device": device,
        "input_shape": list(input_shape),
        "num_classes": num_classes,
    }
    code, result, tail = run_child(request, timeout)
    if code != 0 or not result:
        from hpsearch.errors import BatchSizeError

        raise BatchSizeError(
            f"the CPU memory estimate must run one small training step, but it failed: "
            f"{result.get('detail') or tail}; check the trainer options."
        )
    return MemoryEstimate(**result)


# --- child side ------------------------------------------------------------------------------


def _live_bytes_mode(limit: int | None) -> Any:
    """A TorchDispatchMode counting live tensor storage bytes (and their peak).

    Each op's output storages are counted once and uncounted when freed (a weakref finalizer
    on the storage, which PyTorch keeps alive exactly as long as the C++ storage). With `limit`
    it raises torch.OutOfMemoryError past it: the TEST-ONLY fake device budget.
    """
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_leaves

    class LiveBytes(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.live = 0
            self.peak = 0
            self._sizes: dict[int, int] = {}

        def _free(self, key: int) -> None:
            self.live -= self._sizes.pop(key, 0)

        def __torch_dispatch__(
            self, func: Any, types: Any, args: Any = (), kwargs: Any = None
        ) -> Any:
            out = func(*args, **(kwargs or {}))
            for t in tree_leaves(out):
                if isinstance(t, torch.Tensor) and t.device.type != "meta":
                    self._track(t)
            return out

        def _track(self, t: torch.Tensor) -> None:
            storage = t.untyped_storage()
            key = storage._cdata
            if key in self._sizes:
                return
            self._sizes[key] = size = storage.nbytes()
            self.live += size
            weakref.finalize(storage, self._free, key)
            self.peak = max(self.peak, self.live)
            if limit is not None and self.live > limit:
                raise torch.OutOfMemoryError(
                    f"fake device out of memory ({FAKE_LIMIT_ENV}={limit}, a test-only budget): "
                    f"{self.live} bytes live after allocating {size}"
                )

    return LiveBytes()


def _setup(request: dict[str, Any], batch_size: int) -> TrainingSetup:
    """The trainer's own training setup, with the options the probe must measure."""
    import torch

    from hpsearch.train.loop import setup_training
    from hpsearch.train.options import TrainerOptions

    options = TrainerOptions.model_validate(request["options"]).model_copy(
        # Probe the most memory training reaches: unfrozen backbone. Skip loading weights
        # (their values do not change memory, and the probe must not download anything).
        update={
            "batch_size": batch_size,
            "freeze_backbone_epochs": 0,
            "pretrained": False,
            "weights": None,
            "device": request["device"],
        }
    )
    channels = int(request["input_shape"][0])
    device = torch.device(request["device"])
    return setup_training(
        options, num_classes=request["num_classes"], in_channels=channels, device=device
    )


def _batch(request: dict[str, Any], batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    import torch

    # Synthetic data on the host, as the DataLoader delivers it: the step moves it.
    x = torch.randn(batch_size, *request["input_shape"])
    y = torch.randint(0, request["num_classes"], (batch_size,))
    return x, y


def _probe(request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    import torch

    batch_size = int(request["batch_size"])
    device = torch.device(request["device"])
    cuda = device.type == "cuda"
    busy = ""
    if cuda:
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        torch.cuda.set_device(device)
        free, total = torch.cuda.mem_get_info(device)
        if free < 0.9 * total:  # someone else holds this GPU: the fit would be too small
            busy = f"device busy: {free / total:.0%} free at start"
        cap = request.get("memory_cap_bytes") or total
        fraction = min(1.0, cap / total) * (1 - float(request["margin"]))
        torch.cuda.set_per_process_memory_fraction(fraction, device)
        torch.cuda.reset_peak_memory_stats(device)
    fake = os.environ.get(FAKE_LIMIT_ENV)
    meter = _live_bytes_mode(int(fake) if fake else None) if (fake or not cuda) else None
    start = time.monotonic()
    row: dict[str, Any] = {"batch_size": batch_size, "ok": True, "reason": "ok", "detail": busy}
    code = 0
    oom: BaseException | None = None
    try:
        with meter if meter is not None else contextlib.nullcontext():
            # What the trial keeps on the device besides the model, e.g. a preloaded dataset.
            _resident = torch.empty(  # held until the probe ends
                int(request.get("resident_bytes", 0)), dtype=torch.uint8, device=device
            )
            setup = _setup(request, batch_size)
            for _ in range(int(request["steps"])):  # step 1 autotunes, 2+ hold optimizer state
                setup.train_step(*_batch(request, batch_size))
            if request.get("evaluate", True):
                setup.evaluate([_batch(request, batch_size)])
            if cuda:
                torch.cuda.synchronize(device)
    except Exception as e:
        if not is_oom(e):
            raise
        oom = e
    if oom is not None:  # outside `except`: the traceback pins the frames that hold tensors
        row.update(ok=False, reason="oom", detail=oom_summary(oom))
        code = OOM_EXIT
    row["seconds"] = time.monotonic() - start
    if cuda:
        row["peak_bytes"] = torch.cuda.max_memory_reserved(device)
        row["peak_allocated_bytes"] = torch.cuda.max_memory_allocated(device)
        # Retries mean the allocator had to free its cache to go on: close to the edge.
        retries = torch.cuda.memory_stats(device).get("num_alloc_retries", 0)
        if retries and row["ok"]:
            row["detail"] = "; ".join(filter(None, [row["detail"], f"{retries} alloc retries"]))
    else:
        row["peak_bytes"] = row["peak_allocated_bytes"] = meter.peak if meter else None
    return code, row


def _estimate(request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """Peak live bytes of a steady-state step at batch 2 and at 4; the difference is per sample.

    Batch 2, not 1: BatchNorm refuses one value per channel in training mode.
    """
    meter = _live_bytes_mode(None)
    peaks = {}
    with meter:
        setup = _setup(request, 4)
        setup.train_step(*_batch(request, 2))  # creates the optimizer state
        for size in (2, 4):
            meter.peak = meter.live
            setup.train_step(*_batch(request, size))
            peaks[size] = meter.peak
    per_sample = max(0, (peaks[4] - peaks[2]) // 2)
    return 0, {"fixed_bytes": peaks[2] - 2 * per_sample, "per_sample_bytes": per_sample}


def _time(request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """Median seconds of a training step, and of one evaluation batch; no memory meter here."""
    from hpsearch.train.runtime import set_cpu_threads

    set_cpu_threads(request["options"].get("cpu_threads"))
    batch_size = int(request["batch_size"])
    start = time.monotonic()
    setup = _setup(request, batch_size)
    x, y = _batch(request, batch_size)
    setup.train_step(x, y)  # warm-up: cuDNN autotuning, the allocator, the optimizer state
    setup_s = time.monotonic() - start
    times = []
    for _ in range(int(request["steps"])):
        began = time.monotonic()
        setup.train_step(x, y)  # returns a float, so the device has finished the step
        times.append(time.monotonic() - began)
    began = time.monotonic()
    setup.evaluate([(x, y)])
    return 0, {
        "batch_size": batch_size,
        "train_step_s": sorted(times)[len(times) // 2],
        "eval_batch_s": time.monotonic() - began,
        "setup_s": setup_s,
    }


def _describe(request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    import torch

    device = torch.device(request["device"])
    if device.type != "cuda":
        raise ValueError(f"only CUDA devices are described by a child, not {device}")
    props = torch.cuda.get_device_properties(device)
    software = (
        f"torch {torch.__version__}, CUDA {torch.version.cuda}, "
        f"cuDNN {torch.backends.cudnn.version()}, sm {props.major}.{props.minor}"
    )
    return 0, {
        "kind": "cuda",
        "name": props.name,
        "total_bytes": int(props.total_memory),
        "software": software,
    }


def main() -> int:
    """Entry point of `python -m hpsearch.batch_size.probe` (request JSON on stdin)."""
    request = json.loads(sys.stdin.read())
    modes = {"probe": _probe, "estimate": _estimate, "describe": _describe, "time": _time}
    try:
        code, result = modes[request["mode"]](request)
    except Exception as e:
        traceback.print_exc()
        detail = f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0]}"[:300]
        print(RESULT_PREFIX + json.dumps({"detail": detail}), flush=True)
        return ERROR_EXIT
    print(RESULT_PREFIX + json.dumps(result), flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
