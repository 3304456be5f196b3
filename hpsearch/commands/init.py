"""`hpsearch init DATA_DIR`: look at the images and this machine, write a commented study file."""

from __future__ import annotations

import argparse
import logging
import os
import shlex
from pathlib import Path

from hpsearch.commands.common import bounded_int, check_output, write_study_file
from hpsearch.errors import HpsearchError
from hpsearch.guide import (
    DEFAULT_BUDGET,
    inspect_folder,
    inspect_machine,
    parse_budget,
    plan_study,
    render,
    slug,
)
from hpsearch.train.options import MODEL_NAMES

NAME = "init"
HELP = "look at a folder of images and this machine; write a study file that runs as written"
_log = logging.getLogger("hpsearch")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "data_dir", metavar="DATA_DIR", help="an image folder with one sub-folder per class"
    )
    parser.add_argument(
        "--model", choices=MODEL_NAMES, help="use this model (default: chosen from the data)"
    )
    parser.add_argument(
        "--budget", default=DEFAULT_BUDGET, metavar="N|TIME",
        help=f"N full trainings, or device time such as 8h or 8gpu-hours (default "
        f"{DEFAULT_BUDGET} trainings)",
    )  # fmt: skip
    parser.add_argument(
        "--device", choices=("auto", "cpu", "cuda"), default="auto",
        help="the device to size the study for (default: the GPU when there is one)",
    )  # fmt: skip
    parser.add_argument(
        "--max-epochs",
        type=bounded_int("--max-epochs", 1),
        metavar="N",
        help="no training longer than N epochs",
    )
    parser.add_argument(
        "-o", "--output", default="study.yaml", metavar="FILE",
        help="the study file to write (default study.yaml)",
    )  # fmt: skip
    parser.add_argument("--force", action="store_true", help="overwrite FILE if it exists")


def run(args: argparse.Namespace) -> int:
    out = Path(args.output)
    check_output(out, force=args.force)
    root = Path(args.data_dir)
    if not root.is_dir():
        raise HpsearchError(
            f"DATA_DIR {root} is not a folder; give the folder that holds one sub-folder of "
            "images per class"
        )
    if args.max_epochs is not None and args.max_epochs < 1:
        raise HpsearchError(f"--max-epochs must be >= 1, but got {args.max_epochs}")
    budget = parse_budget(args.budget)
    _log.info("reading %s ...", root)
    data = inspect_folder(root)
    machine = inspect_machine(args.device)
    plan = plan_study(
        data, machine, budget,
        name=slug(root.resolve().name),
        data_path=os.path.relpath(root.resolve(), out.resolve().parent),
        model=args.model, max_epochs=args.max_epochs, say=_log.info,
    )  # fmt: skip
    text = render(plan, study_path=out, command=_command(args))
    write_study_file(out, text, command="init")  # what init writes must validate as written
    searched = ", ".join(plan.space)
    pretrained = plan.objective.get("pretrained")
    how = "fine-tuned" if pretrained is not None and pretrained.value else "from scratch"
    print(f"wrote {out}: {plan.objective['model'].value} {how}, searching {searched}")
    print(f"  data:    {data.lines()[0]}")
    print(f"  machine: {machine.line()}")
    print(f"  budget:  {budget.describe()} ({', '.join(plan.budget_keys.value)})")
    for note in plan.notes:
        print(f"  note:    {note}")
    shown = shlex.quote(str(out))
    print(f"next: hpsearch validate {shown}, then hpsearch run {shown}")
    return 0


def _command(args: argparse.Namespace) -> str:
    parts = ["hpsearch init", shlex.quote(args.data_dir)]
    for flag, value, default in (("--model", args.model, None),
                                 ("--budget", args.budget, DEFAULT_BUDGET),
                                 ("--device", args.device, "auto"),
                                 ("--max-epochs", args.max_epochs, None)):  # fmt: skip
        if value is not None and value != default:
            parts += [flag, shlex.quote(str(value))]
    return " ".join(parts)
