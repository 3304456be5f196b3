"""Create or join the Optuna study a spec describes: sampler and pruner registries, stored spec.

The study is a plain Optuna study. hpsearch keeps its own bookkeeping in study user attributes
under the `hpsearch:` prefix (the spec, the search space) so the optuna CLI and optuna-dashboard
read it unchanged.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import logging
import time
import uuid
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import optuna
import yaml
from optuna.pruners import BasePruner
from optuna.samplers import BaseSampler
from optuna.storages import BaseStorage

from hpsearch import spec as s
from hpsearch.errors import SpecError
from hpsearch.search_space import grid, to_optuna_params
from hpsearch.spec import LoadedSpec, StudySpec

_log = logging.getLogger(__name__)

SPEC_ATTR = "hpsearch:spec"
SPACE_ATTR = "hpsearch:search_space"
READY_ATTR = "hpsearch:ready"


# --- samplers (a closed registry: the spec's `type` literal picks one) -----------------------


def _tpe(p: s.TpeSampler, spec: StudySpec) -> BaseSampler:
    group = spec.has_conditions if p.group is None else p.group
    return optuna.samplers.TPESampler(
        seed=p.seed,
        n_startup_trials=p.n_startup_trials,
        n_ei_candidates=p.n_ei_candidates,
        multivariate=p.multivariate or group,
        group=group,
        constant_liar=p.constant_liar,
    )


def _gp(p: s.GpSampler, spec: StudySpec) -> BaseSampler:
    return optuna.samplers.GPSampler(
        seed=p.seed,
        n_startup_trials=p.n_startup_trials,
        deterministic_objective=p.deterministic_objective,
        warn_independent_sampling=False,
    )


def _random(p: s.RandomSampler, spec: StudySpec) -> BaseSampler:
    return optuna.samplers.RandomSampler(seed=p.seed)


def _cmaes(p: s.CmaesSampler, spec: StudySpec) -> BaseSampler:
    return optuna.samplers.CmaEsSampler(
        seed=p.seed,
        n_startup_trials=p.n_startup_trials,
        sigma0=p.sigma0,
        restart_strategy=p.restart_strategy,
        popsize=p.popsize,
        use_separable_cma=p.use_separable_cma,
        with_margin=p.with_margin,
        lr_adapt=p.lr_adapt,
        warn_independent_sampling=False,
    )


def _qmc(p: s.QmcSampler, spec: StudySpec) -> BaseSampler:
    return optuna.samplers.QMCSampler(
        seed=p.seed,
        qmc_type=p.qmc_type,
        scramble=p.scramble,
        warn_independent_sampling=False,
        warn_asynchronous_seeding=False,
    )


def _grid(p: s.GridSampler, spec: StudySpec) -> BaseSampler:
    return optuna.samplers.GridSampler(grid(spec), seed=p.seed)


def _nsga2(p: s.Nsga2Sampler, spec: StudySpec) -> BaseSampler:
    return optuna.samplers.NSGAIISampler(
        seed=p.seed,
        population_size=p.population_size,
        mutation_prob=p.mutation_prob,
        crossover_prob=p.crossover_prob,
        swapping_prob=p.swapping_prob,
    )


_SAMPLERS: dict[type, Callable[[Any, StudySpec], BaseSampler]] = {
    s.TpeSampler: _tpe,
    s.GpSampler: _gp,
    s.RandomSampler: _random,
    s.CmaesSampler: _cmaes,
    s.QmcSampler: _qmc,
    s.GridSampler: _grid,
    s.Nsga2Sampler: _nsga2,
}


def make_sampler(spec: StudySpec, *, salt: str | None = None) -> BaseSampler:
    """The spec's sampler; `salt` derives a distinct seed for a worker joining the study.

    Workers with the same seed would draw the same "random" startup points and duplicate each
    other's trials; the study's creator keeps the seed as written, so one worker reproduces.
    """
    sampler_spec = spec.sampler
    if salt is not None and sampler_spec.seed is not None:
        digest = hashlib.sha256(f"{sampler_spec.seed}:{salt}".encode()).digest()
        sampler_spec = sampler_spec.model_copy(update={"seed": int.from_bytes(digest[:4], "big")})
    with warnings.catch_warnings():
        # TPE's `group` is "experimental" since Optuna 2.8; it is what keeps conditional spaces
        # modelled jointly, so the warning tells our users nothing they can act on.
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return _SAMPLERS[type(sampler_spec)](sampler_spec, spec)


# --- pruners ---------------------------------------------------------------------------------


def make_pruner(p: Any) -> BasePruner:
    """The Optuna pruner for a pruner spec."""
    if p is None or isinstance(p, s.NoPruner):
        return optuna.pruners.NopPruner()
    if isinstance(p, s.PatientPruner):
        wrapped = None if p.wrapped is None else make_pruner(p.wrapped)
        return optuna.pruners.PatientPruner(wrapped, patience=p.patience, min_delta=p.min_delta)
    options = p.model_dump(exclude={"type"})
    pruners: dict[type, Callable[..., BasePruner]] = {
        s.MedianPruner: optuna.pruners.MedianPruner,
        s.PercentilePruner: optuna.pruners.PercentilePruner,
        s.SuccessiveHalvingPruner: optuna.pruners.SuccessiveHalvingPruner,
        s.HyperbandPruner: optuna.pruners.HyperbandPruner,
        s.ThresholdPruner: optuna.pruners.ThresholdPruner,
        s.WilcoxonPruner: optuna.pruners.WilcoxonPruner,
    }
    return pruners[type(p)](**options)


# --- the study -------------------------------------------------------------------------------


def space_document(spec: StudySpec) -> dict[str, Any]:
    """The parts of a spec every worker of one study must agree on."""
    return {
        "directions": spec.study_directions,
        "metrics": spec.metrics,
        "search_space": {
            name: param.model_dump(exclude_none=True) for name, param in spec.search_space.items()
        },
    }


def create_or_load(
    loaded: LoadedSpec,
    storage: BaseStorage | str,
    *,
    name: str | None = None,
    worker: str | None = None,
) -> tuple[optuna.Study, bool]:
    """Create the study, or join it when it exists; returns (study, created).

    Only the process whose INSERT created the study enqueues the spec's `enqueue` trials, so they
    run exactly once however many workers start together.

    Raises:
        SpecError: the study exists with another search space, metric or direction.
    """
    spec = loaded.spec
    study_name = name or spec.name
    kwargs: dict[str, Any] = {
        "study_name": study_name,
        "storage": storage,
        "sampler": make_sampler(spec),
        "pruner": make_pruner(spec.pruner),
        "directions": spec.study_directions,
    }
    document = space_document(spec)
    try:
        study = optuna.create_study(**kwargs)
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(
            study_name=study_name,
            storage=storage,
            sampler=make_sampler(spec, salt=worker or str(uuid.uuid4())),
            pruner=kwargs["pruner"],
        )
        _wait_until_ready(study)
        _check_same_space(loaded, study, document)
        return study, False
    study.set_user_attr(SPACE_ATTR, document)
    study.set_user_attr(SPEC_ATTR, spec.model_dump(mode="json", exclude_none=True))
    for values in spec.enqueue:
        study.enqueue_trial(to_optuna_params(spec, values), user_attrs={"enqueued": True})
    # Joining workers wait for this, so no trial of theirs overtakes the enqueued ones.
    study.set_user_attr(READY_ATTR, True)
    _log.info("created study %r (%d enqueued trial(s))", study_name, len(spec.enqueue))
    return study, True


def _wait_until_ready(study: optuna.Study, timeout: float = 120.0) -> None:
    """Wait while the study's creator is still storing the spec and the enqueued trials."""
    started = time.monotonic()
    while True:
        attrs = study.user_attrs
        waited = time.monotonic() - started
        if attrs.get(READY_ATTR) or waited > timeout:
            return  # ready, or its creator died half-way: go on rather than wait forever
        if SPACE_ATTR not in attrs and waited > 2.0:
            return  # a study made by Optuna itself, not by hpsearch: nothing to wait for
        time.sleep(0.1)


def _check_same_space(
    loaded: LoadedSpec, study: optuna.Study, document: Mapping[str, Any]
) -> None:
    stored = study.user_attrs.get(SPACE_ATTR)
    if stored is None:
        stored = {"directions": [d.name.lower() for d in study.directions]}
        if stored["directions"] != document["directions"]:
            raise SpecError(
                f"{loaded.path}: study {study.study_name!r} exists with directions "
                f"{stored['directions']}, but the file asks for {document['directions']}; "
                "use another `name:`"
            )
        return  # a study not made by hpsearch: nothing more to compare
    if json.loads(json.dumps(stored)) == json.loads(json.dumps(document)):
        return
    before = yaml.safe_dump(stored, sort_keys=True).splitlines()
    after = yaml.safe_dump(json.loads(json.dumps(document)), sort_keys=True).splitlines()
    diff = " | ".join(
        line
        for line in difflib.unified_diff(before, after, "stored", "file", n=0, lineterm="")
        if not line.startswith(("---", "+++", "@@"))
    )
    raise SpecError(
        f"{loaded.path}: study {study.study_name!r} already exists with a different search "
        f"space, metric or direction ({diff}); keep the stored space or use another `name:`"
    )
