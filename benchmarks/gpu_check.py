"""The GPU path of hpsearch, checked on one GPU in under 8 minutes, as one markdown table.

    python benchmarks/gpu_check.py --out docs/gpu-results.md     # on a machine with one GPU
    python benchmarks/gpu_check.py                               # table on stdout

Sections (docs/batch-size.md, "Checking on a GPU", says what each row proves):

- `versions`: Python, torch, torchvision, Optuna, hpsearch, CUDA, cuDNN, driver, `nvidia-smi -L`;
- `fit`: ResNet-50 and small_cnn at 3x224x224, fp32 and bf16, under an 8 GiB cap
  (`set_per_process_memory_fraction`): the fitter's answer, its probes and their time, then one
  real training step at the answer (must fit) and at twice it (must run out of memory);
- `oom_trial`: a real out-of-memory error inside a trial ends it FAIL `oom`, lowers the study's
  shared limit, and the worker's next trial runs;
- `throughput`: the trainer's images/s against a plain PyTorch loop (same model, data, batch;
  target >= 0.95) and the GPU's utilisation meanwhile;
- `study`: `hpsearch run` of 3 ResNet-50 trials on a generated 224-px ImageFolder with
  `high: auto`, bf16 autocast and channels_last (last: issue 15's checks do not need it).

Each section runs in a child process of its own with a time limit, so a crash, a hang or an
allocator left capped by one section cannot take the others with it; whatever fails becomes a
row. A watchdog keeps the whole run under `--budget` seconds. Without a GPU (or with `--cpu`)
the GPU sections are rows saying why they were skipped, and the rest runs in seconds. Exit code
1 when a row says FAIL or error.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]  # this checkout's hpsearch, then the sections

import gpu_check_sections as sections  # noqa: E402
import gpu_check_speed as speed  # noqa: E402
from gpu_check_sections import Context, Row  # noqa: E402

BUDGET = 450.0  # seconds for the whole run: under the 8 minutes with room to write


@dataclass(frozen=True)
class Section:
    name: str
    seconds: float  # the most it may take; the watchdog also keeps it within what is left
    gpu: bool  # needs CUDA; otherwise skipped with `why`
    why: str = ""


NO_GPU = "no CUDA device"
SECTIONS = (
    Section("versions", 30, gpu=False),
    Section(
        "fit", 240, gpu=True,
        why="the 8 GiB cap (set_per_process_memory_fraction) and a real CUDA out-of-memory need "
        "a GPU; on a CPU hpsearch never probes, it estimates from free RAM (docs/batch-size.md)",
    ),
    Section(
        "oom_trial", 120, gpu=True,
        why="a CPU does not run out of memory politely (Linux's OOM killer sends SIGKILL, not an "
        "exception); tests/test_trainer_objective.py covers the same path with a faked OOM",
    ),
    Section("throughput", 100, gpu=False),
    Section(
        "study", 150, gpu=True,
        why="3 ResNet-50 trials at 224 px take many minutes on a CPU, and bf16 autocast with "
        "channels_last is the CUDA path this section is for",
    ),
)  # fmt: skip
RESERVE = 20.0  # seconds kept for each later section, so that a slow one cannot starve them


def run_section(name: str, ctx: Context) -> int:
    """The child's side: print each row as it comes; a section's exception is a row too."""
    run = {"fit": sections.fit, "oom_trial": sections.oom_trial, "study": sections.study,
           "throughput": speed.throughput}[name]  # fmt: skip
    try:
        for row in run(ctx):
            print(row.line(), flush=True)
    except Exception as e:
        detail = textwrap.shorten(f"{type(e).__name__}: {e}", 400)
        print(Row(name, "section", "error", detail).line(), flush=True)
        return 1
    return 0


# --- the versions section (no child: it touches no GPU) --------------------------------------


def _command(argv: Sequence[str]) -> tuple[int, str]:
    try:
        proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as e:
        return -1, f"{type(e).__name__}: {e}"
    return proc.returncode, (proc.stdout or proc.stderr).strip()


def versions(cuda: bool) -> Iterator[Row]:
    def have(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    packages = ("torch", "torchvision", "optuna", "pydantic", "SQLAlchemy")
    software = ", ".join(f"{name} {have(name)}" for name in packages)
    yield Row("versions", "software", "info", f"Python {platform.python_version()}, {software}")
    import torch

    import hpsearch

    yield Row("versions", "hpsearch", "info", f"{hpsearch.__version__} from {HERE.parent}")
    yield Row(
        "versions", "CUDA (torch's build)", "info",
        f"CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}, "
        f"torch.cuda.is_available() {torch.cuda.is_available()}, used: {cuda}",
    )  # fmt: skip
    if shutil.which("nvidia-smi") is None:
        yield Row(
            "versions", "nvidia-smi -L", "skipped", "nvidia-smi not on PATH: no NVIDIA driver"
        )
        return
    query = "--query-gpu=driver_version,name,memory.total,compute_cap"
    code, out = _command(["nvidia-smi", query, "--format=csv,noheader"])
    yield Row("versions", "driver, GPU, memory, sm", "info" if code == 0 else "error", out)
    code, out = _command(["nvidia-smi", "-L"])
    for line in out.splitlines() or [""]:
        yield Row("versions", "nvidia-smi -L", "info" if code == 0 else "error", line)


# --- running sections ------------------------------------------------------------------------


class Children:
    """The section child running now, so that the watchdog can stop it with its own children."""

    def __init__(self) -> None:
        self.current: subprocess.Popen[str] | None = None

    def kill(self) -> None:
        proc = self.current
        if proc is not None and proc.poll() is None:
            # Its own session: the probe children and `hpsearch run` go with it.
            os.killpg(proc.pid, signal.SIGKILL)


def collect(
    section: str, argv: Sequence[str], timeout: float, children: Children | None = None,
    env: dict[str, str] | None = None,
) -> list[Row]:  # fmt: skip
    """Run one section's child; its rows, plus a row saying how it failed when it did."""
    children = children or Children()
    start = time.monotonic()
    proc = subprocess.Popen(
        list(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=env, start_new_session=True,
    )  # fmt: skip
    children.current = proc
    try:
        out, err = proc.communicate(timeout=timeout)
        failure = None if proc.returncode == 0 else f"exit code {proc.returncode}"
    except subprocess.TimeoutExpired:
        children.kill()
        out, err = proc.communicate()
        failure = f"watchdog: stopped after {time.monotonic() - start:.0f} s (its limit)"
    finally:
        children.current = None
    rows = [row for line in out.splitlines() if (row := Row.parse(line)) is not None]
    if failure is not None and not any(r.result == "error" for r in rows):
        tail = [line for line in err.strip().splitlines() if line.strip()][-1:]
        rows.append(Row(section, "section", "error", "; ".join([failure, *tail])[:400]))
    return rows


def markdown(rows: Sequence[Row], header: str) -> str:
    """The results as a markdown table under a header paragraph."""

    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    counts = {r: sum(row.result == r for row in rows) for r in ("ok", "FAIL", "error", "skipped")}
    summary = ", ".join(f"{n} {r}" for r, n in counts.items())
    lines = [
        "# GPU check (`benchmarks/gpu_check.py`)", "", f"{header}; rows: {summary}.", "",
        "| section | check | result | detail |", "| --- | --- | --- | --- |",
    ]  # fmt: skip
    lines += [f"| {r.section} | {cell(r.check)} | {r.result} | {cell(r.detail)} |" for r in rows]
    return "\n".join(lines) + "\n"


def run_all(
    *, cuda: bool, budget: float, tmp: Path, only: Sequence[str] = (),
    emit: Callable[[list[Row]], None] = lambda rows: None, children: Children | None = None,
    times: dict[str, float] | None = None,
) -> list[Row]:  # fmt: skip
    """Every section in order, each within what the budget leaves; `emit` after each.

    `times` gets each section's seconds, for the table's header."""
    times = {} if times is None else times
    children = children or Children()
    deadline = time.monotonic() + budget
    rows: list[Row] = []
    env = dict(os.environ)
    if not cuda:
        env["CUDA_VISIBLE_DEVICES"] = ""  # `--cpu` on a GPU machine: children see none either
    planned = [s for s in SECTIONS if not only or s.name in only]
    runs = [s for s in planned if cuda or not s.gpu]
    for section in planned:
        start = time.monotonic()
        later = runs[runs.index(section) + 1 :] if section in runs else []
        left = deadline - start - RESERVE * len(later)
        if section.gpu and not cuda:
            got = [Row(section.name, "-", "skipped", f"{NO_GPU}: {section.why}")]
        elif section.name == "versions":  # in this process, and instant
            got = guarded(section.name, lambda: list(versions(cuda)))
        elif left < 10:
            why = f"watchdog: {left:.0f} s left after {RESERVE:.0f} s for each later section"
            got = [Row(section.name, "-", "skipped", why)]
        else:
            limit = min(section.seconds, left)
            argv = [sys.executable, str(Path(__file__).resolve()), "--section", section.name,
                    "--tmp", str(tmp / section.name), "--seconds", f"{limit:.0f}"]  # fmt: skip
            # The child bounds its own children by `limit`; 10 s more lets it say why it stopped.
            got = collect(section.name, argv, limit + 10, children, env)
        times[section.name] = time.monotonic() - start
        print(
            f"[{section.name}] {times[section.name]:.0f} s: "
            + "; ".join(f"{r.check} {r.result}" for r in got),
            file=sys.stderr, flush=True,
        )  # fmt: skip
        for row in got:
            if row.result == "skipped":
                print(f"[{section.name}] skipped: {row.detail}", file=sys.stderr)
        rows += got
        emit(rows)
    return rows


def guarded(section: str, make: Callable[[], list[Row]]) -> list[Row]:
    """`make()`, or one error row saying what it raised."""
    try:
        return make()
    except Exception as e:
        return [Row(section, "section", "error", f"{type(e).__name__}: {e}"[:400])]


def cuda_present() -> bool:
    import torch  # is_available() asks the driver for a count; it creates no CUDA context

    return bool(torch.cuda.is_available())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, help="write the table here (default: stdout)")
    parser.add_argument("--budget", type=float, default=BUDGET, help="seconds for everything")
    parser.add_argument("--cpu", action="store_true", help="behave as on a machine without GPU")
    parser.add_argument("--only", nargs="+", choices=[s.name for s in SECTIONS], default=[])
    parser.add_argument("--section", help=argparse.SUPPRESS)  # the child's side
    parser.add_argument("--tmp", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, default=60.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.section:
        args.tmp.mkdir(parents=True, exist_ok=True)
        return run_section(args.section, Context(args.tmp, time.monotonic() + args.seconds))

    cuda = not args.cpu and cuda_present()
    started = time.monotonic()
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    where = f"{platform.node()}, {stamp}, {'CUDA' if cuda else 'CPU only'}"
    children = Children()
    rows: list[Row] = []
    times: dict[str, float] = {}

    def write(rows: Sequence[Row], extra: str = "", *, final: bool = False) -> None:
        spent = ", ".join(f"{name} {t:.0f} s" for name, t in times.items())
        header = (
            f"{where}; {time.monotonic() - started:.0f} s of the {args.budget:.0f} s budget "
            f"({spent}){extra}"
        )
        if args.out is not None:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(markdown(rows, header))
        elif final:
            print(markdown(rows, header), end="", flush=True)

    def watchdog() -> None:  # the last resort, should a child ignore its own time limit
        children.kill()
        late = Row("watchdog", "-", "error", f"the run passed its {args.budget:.0f} s budget")
        write([*rows, late], "; stopped by the watchdog", final=True)
        os._exit(2)

    timer = threading.Timer(args.budget + 20, watchdog)
    timer.daemon = True
    timer.start()

    def emit(done: list[Row]) -> None:  # after each section: a later kill keeps these
        rows[:] = done
        write(done)

    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        rows = run_all(
            cuda=cuda, budget=args.budget, tmp=Path(tmp), only=args.only, emit=emit,
            children=children, times=times,
        )  # fmt: skip
    timer.cancel()
    write(rows, final=True)
    if args.out is not None:
        print(f"wrote {args.out}", file=sys.stderr)
    return 1 if any(r.result in ("FAIL", "error") for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
