"""Where each trial is also sent: the lab's experiment trackers (MLflow, TensorBoard, W&B)."""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from hpsearch.spec._base import SpecModel


class MlflowTracking(SpecModel):
    """One MLflow run per trial, nested under one run per study, in one experiment.

    Credentials never come from here: MLflow reads MLFLOW_TRACKING_USERNAME / _PASSWORD / _TOKEN
    from the environment.
    """

    tracking_uri: str | None = None  # None: MLFLOW_TRACKING_URI, else mlflow.db beside the file
    experiment: str | None = Field(None, min_length=1)  # None: the study's name
    log_checkpoint: bool = True  # the trial's kept checkpoint as a run artifact

    @field_validator("tracking_uri")
    @classmethod
    def _no_credentials(cls, uri: str | None) -> str | None:
        if uri is None:
            return uri
        if not uri.strip():
            raise ValueError("is empty; give a URI such as `http://mlflow.internal:5000`")
        try:
            parts = urlsplit(uri)
            password = parts.password
        except ValueError as e:
            raise ValueError(f"is not a valid URI ({e})") from None
        if password is not None:
            raise ValueError(
                "a password must never be written in the study file; remove it from the URI and "
                "set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD in the environment"
            )
        return uri


class TensorBoardTracking(SpecModel):
    """TensorBoard event files, one folder per trial: `<log_dir>/<study>/trial-00003/`."""

    log_dir: str = Field("runs", min_length=1)  # relative to the study file


class WandbTracking(SpecModel):
    """One W&B run per trial, grouped by study. `offline` writes runs to `dir` for a later
    `wandb sync`; `online` needs WANDB_API_KEY in the environment (never in this file)."""

    project: str | None = Field(None, min_length=1)  # None: the study's name
    entity: str | None = Field(None, min_length=1)
    mode: Literal["offline", "online"] = "offline"
    dir: str = Field("wandb", min_length=1)  # relative to the study file


class Tracking(SpecModel):
    """The `tracking:` section: each tracker named is sent every trial; none by default."""

    mlflow: MlflowTracking | None = None
    tensorboard: TensorBoardTracking | None = None
    wandb: WandbTracking | None = None
