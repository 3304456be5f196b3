"""MLflow: one run per trial, nested under one run per study, through `MlflowClient`.

Not optuna-integration's `MLflowCallback`: it sees a trial only once it has finished (no
per-epoch metrics), and it nests trials through the fluent API's active run, which lives in one
process, while a study's trials come from many workers on many machines. Here every worker finds
the study's run by its tags (or makes it), and each trial's run names it as parent.

Credentials never pass through here: MLflow reads MLFLOW_TRACKING_USERNAME / _PASSWORD / _TOKEN
from the environment, and the study file refuses a URI with a password in it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from hpsearch.spec import MlflowTracking
from hpsearch.tracking.types import TrialInfo, TrialState

STUDY_TAG = "hpsearch.study"
ROLE_TAG = "hpsearch.role"  # `study` (the parent run) or `trial`
STATE_TAG = "hpsearch.state"  # COMPLETE, PRUNED or FAIL
# A pruned trial ended as designed (FINISHED); the tag says how.
_STATUS = {"COMPLETE": "FINISHED", "PRUNED": "FINISHED", "FAIL": "FAILED"}
_MAX_PARAM = 6000  # MLflow's limit on a parameter's value


def tracking_uri(spec: MlflowTracking, base: Path, environ: Mapping[str, str]) -> str:
    """The file's URI; else MLFLOW_TRACKING_URI; else `mlflow.db` beside the study file (not
    MLflow's own default, a file in each worker's working folder). A plain path is relative to
    the study file: a `.db` file is a SQLite store, a folder MLflow's file store (which recent
    MLflow refuses unless MLFLOW_ALLOW_FILE_STORE=true)."""
    uri = spec.tracking_uri or environ.get("MLFLOW_TRACKING_URI") or "mlflow.db"
    if "://" in uri or uri.startswith("file:"):
        return uri
    path = (base / uri).resolve()
    return f"sqlite:///{path}" if path.suffix == ".db" else path.as_uri()


def artifact_root(uri: str) -> str | None:
    """Where a new experiment's artifacts go: `mlartifacts/` beside a local SQLite store (MLflow
    would pick `./mlruns` in the working folder, different for each worker); else the
    server's or store's own choice."""
    prefix = "sqlite:///"
    if not uri.startswith(prefix) or uri == "sqlite:///:memory:":
        return None
    return (Path(uri.removeprefix(prefix)).parent / "mlartifacts").as_uri()


class MlflowTracker:
    """See the module docstring."""

    def __init__(self, spec: MlflowTracking, base: Path) -> None:
        self._spec = spec
        uri = tracking_uri(spec, base, os.environ)
        self._client = MlflowClient(tracking_uri=uri)
        self._artifacts = artifact_root(uri)
        self._studies: dict[str, tuple[str, str]] = {}  # study -> (experiment id, its run id)
        self._runs: dict[int, str] = {}  # trial number -> its run id

    def start(self, trial: TrialInfo) -> None:
        experiment, parent = self._study(trial.study)
        tags = {
            MLFLOW_PARENT_RUN_ID: parent, STUDY_TAG: trial.study, ROLE_TAG: "trial",
            "hpsearch.trial": str(trial.number),
            **{f"hpsearch.{k}": v for k, v in trial.tags.items()},
        }  # fmt: skip
        run = self._client.create_run(experiment, run_name=f"trial-{trial.number:05d}", tags=tags)
        self._runs[trial.number] = run.info.run_id
        params = [Param(k, _text(v)[:_MAX_PARAM]) for k, v in sorted(trial.params.items())]
        for i in range(0, len(params), 100):  # MLflow takes at most 100 parameters a call
            self._client.log_batch(run.info.run_id, params=params[i : i + 100])

    def step(self, trial: TrialInfo, metrics: Mapping[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        self._client.log_batch(self._runs[trial.number], metrics=batch)

    def finish(
        self,
        trial: TrialInfo,
        state: TrialState,
        values: Sequence[float] | None,
        checkpoint: str | None,
    ) -> None:
        run = self._runs.pop(trial.number, None)
        if run is None:
            return  # its start failed: nothing to close
        tags = [RunTag(STATE_TAG, state)]
        if checkpoint is not None:
            tags.append(RunTag("hpsearch.checkpoint", checkpoint))
        self._client.log_batch(run, tags=tags)
        if self._spec.log_checkpoint and checkpoint is not None and Path(checkpoint).is_file():
            self._client.log_artifact(run, checkpoint, artifact_path="checkpoint")
        self._client.set_terminated(run, status=_STATUS[state])

    def _study(self, study: str) -> tuple[str, str]:
        if study not in self._studies:
            experiment = self._experiment(self._spec.experiment or study)
            self._studies[study] = (experiment, self._parent_run(experiment, study))
        return self._studies[study]

    def _experiment(self, name: str) -> str:
        found = self._client.get_experiment_by_name(name)
        if found is not None:
            return str(found.experiment_id)
        try:
            return str(self._client.create_experiment(name, artifact_location=self._artifacts))
        except MlflowException:  # another worker made it meanwhile
            found = self._client.get_experiment_by_name(name)
            if found is None:
                raise
            return str(found.experiment_id)

    def _parent_run(self, experiment: str, study: str) -> str:
        """The study's run: the oldest with its tags. Two workers starting together may each
        make one; the younger then deletes its own, so all trials nest under one."""
        existing = self._study_runs(experiment, study)
        if existing:
            return existing[0]
        made = self._client.create_run(
            experiment, run_name=study, tags={STUDY_TAG: study, ROLE_TAG: "study"}
        ).info.run_id
        oldest = self._study_runs(experiment, study)[0]
        if oldest != made:
            self._client.delete_run(made)
        return oldest

    def _study_runs(self, experiment: str, study: str) -> list[str]:
        escaped = study.replace("'", "\\'")
        runs = self._client.search_runs(
            [experiment],
            filter_string=f"tags.`{ROLE_TAG}` = 'study' AND tags.`{STUDY_TAG}` = '{escaped}'",
            max_results=100,
        )
        # Ties in start time (milliseconds) go to the smaller id, the same on every worker.
        return [
            r.info.run_id for r in sorted(runs, key=lambda r: (r.info.start_time, r.info.run_id))
        ]


def _text(value: Any) -> str:
    return "None" if value is None else str(value)
