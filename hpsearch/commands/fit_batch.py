"""`hpsearch fit-batch STUDY.yaml`: find and store the largest batch size local devices hold."""

from __future__ import annotations

import argparse

from hpsearch import batch_size as bs
from hpsearch.commands.common import add_study_arguments, load
from hpsearch.errors import HpsearchError
from hpsearch.objective import StudyLimits, trainer_options
from hpsearch.spec import PowerOfTwoParam, TrainerObjective
from hpsearch.storage import open_storage
from hpsearch.study import create_or_load

NAME = "fit-batch"
HELP = "probe the largest power-of-two batch size this machine's devices hold, and store it"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_study_arguments(parser)
    parser.add_argument("--refresh", action="store_true", help="probe again, ignoring caches")


def run(args: argparse.Namespace) -> int:
    loaded, url = load(args)
    spec = loaded.spec
    param = spec.search_space.get("batch_size")
    if not isinstance(spec.objective, TrainerObjective) or not isinstance(param, PowerOfTwoParam):
        raise HpsearchError(
            f"{loaded.path}: fit-batch needs `trainer: image_classification` and "
            "`batch_size: {type: power_of_two, ...}` in search_space"
        )
    study = create_or_load(loaded, open_storage(url), name=args.name).study
    options = trainer_options(loaded, spec.objective, {})
    from hpsearch.train.summary import summarize

    summary = summarize(options.dataset)
    shape = (options.in_channels, summary.image_size, summary.image_size)
    gpus = bs.visible_gpus()
    devices = [f"cuda:{i}" for i in range(len(gpus))] if gpus else ["cpu"]
    for device in devices:
        request = bs.FitRequest(
            options=options,
            low=param.low,
            high=param.high,
            device=device,
            input_shape=shape,
            num_classes=len(summary.classes),
            policy=spec.batch_size_fit.policy,
            refresh=args.refresh,
            margin=spec.batch_size_fit.margin,
            cpu_max_batch_size=spec.batch_size_fit.cpu_max_batch_size,
        )
        rng = bs.resolve_high(request, local_cache=bs.LocalCache(), shared=StudyLimits(study))
        print(f"{rng.device}: largest batch size {rng.limit} ({rng.source})")
        if rng.tried:
            print(bs.format_table(list(rng.tried)))
        print(f"  {rng.note}")
    return 0
