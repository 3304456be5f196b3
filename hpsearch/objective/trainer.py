"""The `trainer: image_classification` objective: Optuna trial -> TrainerOptions -> `train.fit`.

This is the one place where the trainer and the batch-size fitter (which know nothing of Optuna)
meet the study: the fitted batch-size range bounds the search space of this worker, the fitted
limits are shared through the study's user attributes, and an out-of-memory error inside a trial
ends it FAIL with reason `oom` (not PRUNED, which would tell the sampler the settings were merely
weak) and lowers the shared limit so no worker samples that size again.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import optuna

from hpsearch import batch_size as bs
from hpsearch.errors import BatchSizeError
from hpsearch.objective.types import Report, Runner, TrialContext, WorkerStopped
from hpsearch.spec import LoadedSpec, PowerOfTwoParam, TrainerObjective
from hpsearch.train.options import TrainerOptions, metric_mode

_log = logging.getLogger(__name__)
SHARED_PREFIX = "hpsearch:batch_size:"


class StudyLimits:
    """The batch-size fitter's shared store on the study's user attributes (`SharedLimits`)."""

    def __init__(self, study: optuna.Study) -> None:
        self._study = study

    def get(self, key: str) -> dict[str, Any] | None:
        value = self._study.user_attrs.get(SHARED_PREFIX + key)
        return value if isinstance(value, dict) else None

    def put(self, key: str, value: dict[str, Any]) -> None:
        self._study.set_user_attr(SHARED_PREFIX + key, value)

    def items(self) -> Iterable[tuple[str, dict[str, Any]]]:
        for name, value in self._study.user_attrs.items():
            if name.startswith(SHARED_PREFIX) and isinstance(value, dict):
                yield name.removeprefix(SHARED_PREFIX), value


def data_summary(loaded: LoadedSpec) -> list[str]:
    """The data checks `hpsearch validate` prints (classes, counts, sizes, skipped files)."""
    from hpsearch.train.summary import summarize

    objective = loaded.spec.objective
    assert isinstance(objective, TrainerObjective)
    options = trainer_options(loaded, objective, {})
    return summarize(options.dataset).lines()


def trainer_options(
    loaded: LoadedSpec, objective: TrainerObjective, values: Mapping[str, Any]
) -> TrainerOptions:
    """Fixed options + sampled values; a searched parameter at its lowest value if absent."""
    sample: dict[str, Any] = {}
    for name, param in loaded.spec.search_space.items():
        if name not in values:
            sample[name] = param.choices[0] if hasattr(param, "choices") else param.low
    options = {**objective.options, **sample, **values}
    dataset = options.get("dataset")
    if isinstance(dataset, dict) and dataset.get("path"):  # relative to the study file
        dataset = {**dataset, "path": str(loaded.directory / dataset["path"])}
        if dataset.get("val_path"):
            dataset["val_path"] = str(loaded.directory / dataset["val_path"])
        options["dataset"] = dataset
    if options.get("weights"):
        options["weights"] = str(loaded.directory / options["weights"])
    return TrainerOptions.model_validate(options)


def trainer_runner(
    loaded: LoadedSpec, objective: TrainerObjective, context: TrialContext
) -> Runner:
    """The runner of the built-in trainer (see the module docstring)."""
    from hpsearch.train.checkpoints import keep_best_checkpoints
    from hpsearch.train.loop import fit

    spec = loaded.spec
    metric = spec.metrics[0]
    mode = metric_mode(metric)
    checkpoints = context.artifacts / "checkpoints"
    cache_dir = context.artifacts / "cache"
    fitter = _BatchSizeFitter(loaded, objective, cache_dir)

    def run(trial: optuna.Trial, values: dict[str, Any], report: Report) -> Any:
        seed = trial.user_attrs.get("seed", objective.options.get("seed", trial.number))
        options_dict = {**values, "seed": seed}
        plan = fitter.plan(values.get("batch_size"))
        if plan is not None:
            micro, steps = plan
            if steps > 1:
                options_dict["micro_batch_size"] = micro
            trial.set_user_attr("micro_batch_size", micro)
            trial.set_user_attr("accumulation_steps", steps)
        options = trainer_options(loaded, objective, options_dict)
        trial.set_user_attr("seed", seed)
        trial.set_user_attr("batch_size", options.batch_size)
        trial.set_user_attr("epochs", options.epochs)
        if fitter.device:
            trial.set_user_attr("device", fitter.device)
        path = checkpoints / f"trial-{trial.number:05d}.pt"
        try:
            metrics = fit(
                options, report, monitor=metric, mode=mode, checkpoint_path=path,
                cache_dir=cache_dir,
            )  # fmt: skip
        except Exception as e:
            if not bs.is_oom(e):
                raise
            reason = f"oom: {bs.oom_summary(e)}"
            trial.set_user_attr("fail_reason", reason[:500])
            fitter.lower(options, trial)
            raise RuntimeError(reason) from None  # FAIL, not PRUNED
        trial.set_user_attr("epochs_run", int(metrics.get("epochs_run", options.epochs)))
        trial.set_user_attr("checkpoint", str(path))
        keep_best_checkpoints(checkpoints, objective.keep_checkpoints, mode=mode)
        return metrics

    return Runner(run, fitter.limits)


class _BatchSizeFitter:
    """Bounds `batch_size` by what this worker's device holds, when the space asks for it."""

    def __init__(self, loaded: LoadedSpec, objective: TrainerObjective, cache_dir: Path) -> None:
        self._loaded = loaded
        self._objective = objective
        param = loaded.spec.search_space.get("batch_size")
        self._param = param if isinstance(param, PowerOfTwoParam) else None
        fit = loaded.spec.batch_size_fit
        self._active = self._param is not None and (
            self._param.high == "auto" or fit.policy == "accumulate"
        )
        self._range: bs.BatchRange | None = None
        self._local = bs.LocalCache()
        self.device: str | None = None

    def limits(self, trial: optuna.Trial) -> Mapping[str, int]:
        if not self._active or self._param is None:
            return {}
        self._range = self._resolve(trial.study)
        return {"batch_size": self._range.high}

    def _resolve(self, study: optuna.Study) -> bs.BatchRange:
        from hpsearch.train.summary import summarize

        assert self._param is not None
        fit = self._loaded.spec.batch_size_fit
        options = trainer_options(self._loaded, self._objective, {})
        device = options.device
        if device == "auto":  # decided without touching CUDA: the probe must see a clean GPU
            device = "cuda" if bs.visible_gpus() else "cpu"
        if self._range is None:
            summary = summarize(options.dataset)
            self._shape = (options.in_channels, summary.image_size, summary.image_size)
            self._classes = len(summary.classes)
        try:
            rng = bs.resolve_high(
                options,
                low=self._param.low,
                high=self._param.high,
                device=device,
                input_shape=self._shape,
                num_classes=self._classes,
                local_cache=self._local,
                shared=StudyLimits(study),
                policy=fit.policy,
                margin=fit.margin,
                cpu_max_batch_size=fit.cpu_max_batch_size,
            )
        except bs.NoFittingBatchSize as e:
            raise WorkerStopped(f"worker stopped: {e}", exit_code=2) from None
        if self._range is None or rng.limit != self._range.limit:
            _log.info("batch size: %s", rng.note)
        self.device = rng.device
        return rng

    def plan(self, batch_size: int | None) -> tuple[int, int] | None:
        if self._range is None or batch_size is None:
            return None
        try:
            return self._range.plan(batch_size)
        except BatchSizeError as e:
            raise RuntimeError(str(e)) from None

    def lower(self, options: TrainerOptions, trial: optuna.Trial) -> None:
        if self._range is None:
            return
        failed = options.micro_batch_size or options.batch_size
        # lower_limit logs the new limit; the next trial's `limits()` picks it up.
        bs.lower_limit(
            self._range.key, failed, local_cache=self._local, shared=StudyLimits(trial.study),
            where=f"trial {trial.number}",
        )  # fmt: skip
