"""Create or join the Optuna study a spec describes, and store the spec with it.

The study is a plain Optuna study. hpsearch keeps its own bookkeeping in study user attributes
under the `hpsearch:` prefix (the spec, the search space) so the optuna CLI and optuna-dashboard
read it unchanged.
"""

from __future__ import annotations

import difflib
import json
import logging
import time
import uuid
from collections.abc import Mapping
from typing import Any

import optuna
import yaml
from optuna.storages import BaseStorage

from hpsearch.errors import SpecError
from hpsearch.spec import LoadedSpec, StudySpec
from hpsearch.study.algorithms import make_pruner, make_sampler
from hpsearch.study.space import to_optuna_params

_log = logging.getLogger(__name__)

SPEC_ATTR = "hpsearch:spec"
SPACE_ATTR = "hpsearch:search_space"
READY_ATTR = "hpsearch:ready"


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
