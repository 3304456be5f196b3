"""The `trainer: image_classification` objective: Optuna trial -> TrainerOptions -> `train.fit`.

This is the one place where the trainer and the batch-size fitter (which know nothing of Optuna)
meet the study: the fitted batch-size range bounds the search space of this worker, the fitted
limits are shared through the study's user attributes, and an out-of-memory error inside a trial
ends it FAIL with reason `oom` (not PRUNED, which would tell the sampler the settings were merely
weak) and lowers the shared limit so no worker samples that size again.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import optuna

from hpsearch import batch_size as bs
from hpsearch.errors import BatchSizeError
from hpsearch.objective.checkpoints import Checkpoints
from hpsearch.objective.record import record
from hpsearch.objective.resume import RESUME_DIR, TrainerResume, TrialFiles, sweep
from hpsearch.objective.types import Report, Runner, TrialContext, WorkerStopped
from hpsearch.spec import LoadedSpec, PowerOfTwoParam, TrainerObjective
from hpsearch.storage.artifacts import open_store
from hpsearch.storage.attrs import (
    ACCUMULATION_STEPS_ATTR,
    BATCH_SIZE_ATTR,
    BATCH_SIZE_LIMIT_PREFIX,
    CHECKPOINT_ATTR,
    DEVICE_ATTR,
    EPOCHS_ATTR,
    EPOCHS_RUN_ATTR,
    FAIL_REASON_ATTR,
    MICRO_BATCH_SIZE_ATTR,
    SEED_ATTR,
)
from hpsearch.storage.optuna_compat import study_id, study_storage
from hpsearch.study import read_attr, write_attr
from hpsearch.train.options import TrainerOptions, metric_mode

if TYPE_CHECKING:
    from hpsearch.train.summary import DataSummary

_log = logging.getLogger(__name__)


class StudyLimits:
    """The batch-size fitter's shared store on the study's attributes (`SharedLimits`)."""

    def __init__(self, study: optuna.Study) -> None:
        self._study = study

    def get(self, key: str) -> dict[str, Any] | None:
        value = read_attr(self._study, BATCH_SIZE_LIMIT_PREFIX + key)
        return value if isinstance(value, dict) else None

    def put(self, key: str, value: dict[str, Any]) -> None:
        write_attr(self._study, BATCH_SIZE_LIMIT_PREFIX + key, value)

    def items(self) -> Iterable[tuple[str, dict[str, Any]]]:
        storage, sid = study_storage(self._study), study_id(self._study)
        attrs = {**storage.get_study_user_attrs(sid), **storage.get_study_system_attrs(sid)}
        for name, value in attrs.items():
            if name.startswith(BATCH_SIZE_LIMIT_PREFIX) and isinstance(value, dict):
                yield name.removeprefix(BATCH_SIZE_LIMIT_PREFIX), value


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
    """The runner of the built-in trainer (see the module docstring).

    A trial's options are validated once, from the values it sampled: when `batch_size` is
    `high: auto`, as soon as everything it depends on is chosen (the fit is for this trial's
    own model, precision and optimizer), else when the trial runs.
    """
    from hpsearch.train.loop import fit

    spec = loaded.spec
    metric = spec.metrics[0]
    mode = metric_mode(metric)
    shared = open_store(loaded)
    checkpoints = Checkpoints(
        context.artifacts / "checkpoints", objective.keep_checkpoints, shared
    )
    cache_dir = context.artifacts / "cache"
    fitter = _BatchSizeFitter(loaded, objective)
    # The options and batch-size range `limit` built for a trial, for its `run` to use.
    pending: dict[int, tuple[TrainerOptions, bs.BatchRange | None]] = {}

    def limit(trial: optuna.Trial, name: str, chosen: Mapping[str, Any]) -> int | None:
        if name != "batch_size":
            return None
        options = trainer_options(loaded, objective, chosen)
        rng = fitter.range_for(trial.study, options)
        pending.clear()
        pending[trial.number] = (options, rng)
        return None if rng is None else rng.high

    def run(trial: optuna.Trial, values: dict[str, Any], report: Report) -> Any:
        seed = trial.user_attrs.get(SEED_ATTR, objective.options.get("seed", trial.number))
        if trial.number in pending:
            options, rng = pending.pop(trial.number)
            # Validated in `limit`; what was sampled after it (the batch size) is in range.
            later = {k: v for k, v in values.items() if getattr(options, k, None) != v}
            options = options.model_copy(update={**later, "seed": seed})
        else:
            options = trainer_options(loaded, objective, {**values, "seed": seed})
            rng = fitter.range_for(trial.study, options)
        attrs: dict[str, Any] = {SEED_ATTR: seed, EPOCHS_ATTR: options.epochs}
        options, batch_attrs = _batch_plan(fitter, rng, options, sampled="batch_size" in values)
        attrs.update(batch_attrs)
        record(trial, attrs)
        files = TrialFiles(trial, context.artifacts / RESUME_DIR, shared)
        try:
            metrics = fit(
                options, report, monitor=metric, mode=mode,
                checkpoint_path=checkpoints.path(trial.number), cache_dir=cache_dir,
                resume_from=TrainerResume(files) if objective.resume else None,
                resume_every_s=objective.resume_every_minutes * 60,
            )  # fmt: skip
        except Exception as e:
            # Pruned or failed: never among the best completed trials, so its checkpoint goes
            # now (a worker killed during the trial leaves it to the next prune), and it will
            # not be retried, so its resume checkpoints go too.
            checkpoints.discard(trial.number)
            files.discard()
            _prune(checkpoints, trial.study)
            if not bs.is_oom(e):
                raise
            reason = f"oom: {bs.oom_summary(e)}"
            trial.set_user_attr(FAIL_REASON_ATTR, reason[:500])
            if rng is not None:
                fitter.lower(rng, options, trial)
            raise RuntimeError(reason) from None  # FAIL, not PRUNED
        except BaseException:
            # Stopped by a signal: no storage calls now. The resume checkpoints stay for the
            # retry; the best-epoch checkpoint is written again from them when it resumes.
            checkpoints.discard(trial.number)
            raise
        epochs_run = int(metrics.get("epochs_run", options.epochs))
        attrs = {EPOCHS_RUN_ATTR: epochs_run}
        result = [float(metrics[m]) for m in spec.metrics if m in metrics]
        finishing = None
        if len(result) == len(spec.metrics):
            finishing = (trial.number, result)
            where = checkpoints.finish(trial, result)
            if where is not None:
                attrs[CHECKPOINT_ATTR] = where
        else:
            checkpoints.discard(trial.number)  # the trial fails for the missing metric
        record(trial, attrs)
        _prune(checkpoints, trial.study, finishing)
        files.discard()  # done training: what is kept now is the best-epoch checkpoint
        return metrics

    return Runner(run, limit)


def _batch_plan(
    fitter: _BatchSizeFitter,
    rng: bs.BatchRange | None,
    options: TrainerOptions,
    *,
    sampled: bool,
) -> tuple[TrainerOptions, dict[str, Any]]:
    """The options as trained, and the attributes that record the batch size.

    A sampled batch size within a fitted range is planned on this device: split into
    micro-batches with gradient accumulation when one step would not fit.
    """
    attrs: dict[str, Any] = {}
    if rng is not None and sampled:
        micro, steps = fitter.plan(rng, options.batch_size)
        if steps > 1:
            options = options.model_copy(update={"micro_batch_size": micro})
        attrs.update(
            {
                MICRO_BATCH_SIZE_ATTR: micro,
                ACCUMULATION_STEPS_ATTR: steps,
                DEVICE_ATTR: rng.device,
            }
        )
    attrs[BATCH_SIZE_ATTR] = options.batch_size
    return options, attrs


def _prune(
    checkpoints: Checkpoints,
    study: optuna.Study,
    finishing: tuple[int, Sequence[float]] | None = None,
) -> None:
    """Remove what fell out of the best N, and resume checkpoints of trials that ended for good
    (`resume.sweep`); a storage hiccup here must not fail the trial."""
    try:
        checkpoints.prune(study, finishing)
        sweep(checkpoints.directory.parent / RESUME_DIR, study)
    except Exception as e:  # the next trial's prune catches up
        _log.warning("checkpoints not pruned this time: %s: %s", type(e).__name__, e)


class _BatchSizeFitter:
    """Bounds `batch_size` by what this worker's device holds, when the space asks for it."""

    def __init__(self, loaded: LoadedSpec, objective: TrainerObjective) -> None:
        param = loaded.spec.search_space.get("batch_size")
        self._param = param if isinstance(param, PowerOfTwoParam) else None
        self._fit = loaded.spec.batch_size_fit
        self._active = self._param is not None and (
            self._param.high == "auto" or self._fit.policy == "accumulate"
        )
        self._local = bs.LocalCache()
        self._summary: DataSummary | None = None  # the dataset is fixed for the whole study
        self._said: dict[str, int] = {}  # the limit last logged for each cache key

    def range_for(self, study: optuna.Study, options: TrainerOptions) -> bs.BatchRange | None:
        """The range for a trial with these options (its model, precision, ...), or None."""
        if not self._active or self._param is None:
            return None
        from hpsearch.train.summary import summarize

        if self._summary is None:
            self._summary = summarize(options.dataset)
        size = self._summary.image_size
        device = options.device
        if device == "auto":  # decided without touching CUDA: the probe must see a clean GPU
            device = "cuda" if bs.visible_gpus() else "cpu"
        request = bs.FitRequest(
            options=options,
            low=self._param.low,
            high=self._param.high,
            device=device,
            input_shape=(options.in_channels, size, size),
            num_classes=len(self._summary.classes),
            policy=self._fit.policy,
            margin=self._fit.margin,
            cpu_max_batch_size=self._fit.cpu_max_batch_size,
        )
        try:
            rng = bs.resolve_high(request, local_cache=self._local, shared=StudyLimits(study))
        except bs.NoFittingBatchSize as e:
            raise WorkerStopped(f"worker stopped: {e}", exit_code=2) from None
        if self._said.get(rng.key) != rng.limit:
            _log.info("batch size: %s", rng.note)
            self._said[rng.key] = rng.limit
        return rng

    @staticmethod
    def plan(rng: bs.BatchRange, batch_size: int) -> tuple[int, int]:
        try:
            return rng.plan(batch_size)
        except BatchSizeError as e:
            raise RuntimeError(str(e)) from None

    def lower(self, rng: bs.BatchRange, options: TrainerOptions, trial: optuna.Trial) -> None:
        failed = options.micro_batch_size or options.batch_size
        # lower_limit logs the new limit; the next trial's fit picks it up.
        bs.lower_limit(
            rng.key, failed, local_cache=self._local, shared=StudyLimits(trial.study),
            where=f"trial {trial.number}",
        )  # fmt: skip
