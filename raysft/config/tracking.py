"""The `tracking` section: where a run's parameters, metrics and outputs are also sent (MLflow, TensorBoard, W&B).

Each backend is optional and is its own extra (`pip install 'raysft[mlflow]'`); naming one that is not installed
is a spec error with that command, found on the driver before any worker starts.
"""

from __future__ import annotations

import importlib.util
from typing import Literal, Optional

from pydantic import Field, field_validator, model_validator

from raysft.config.errors import CrossFieldError, Violation
from raysft.config.sections import Name, Section

__all__ = ["MlflowSpec", "TensorBoardSpec", "WandbSpec", "TrackingSpec"]

_MAX_TAGS = 64  # tags travel to a server per run: bounded like the service's labels


def _bounded_tag(value: str) -> str:
    if not 0 < len(value) <= 250:  # MLflow's and W&B's own tag limits are 250 and 64 characters and up
        raise CrossFieldError([Violation("", f"tags are 1 to 250 characters (got {len(value)})")])
    return value


class MlflowSpec(Section):
    tracking_uri: Optional[Name] = None
    """MLflow tracking server or store URI; null: MLFLOW_TRACKING_URI from the driver's environment."""
    experiment: Name = Field("raysft", min_length=1, max_length=250)
    """Experiment the run is logged under (created when missing)."""
    run_name: Optional[Name] = Field(None, max_length=250)
    """Run name; null: the output_dir's folder name (a tune trial: its trial id)."""
    tags: dict[Name, Name] = Field(default_factory=dict, max_length=_MAX_TAGS)
    """Extra run tags; a service job also carries its labels and `raysft.job_id`."""

    @field_validator("tags")
    @classmethod
    def _tags(cls, tags: dict[str, str]) -> dict[str, str]:
        for key, value in tags.items():
            _bounded_tag(key), _bounded_tag(value)
        return tags


class TensorBoardSpec(Section):
    log_dir: Optional[Name] = None
    """Where event files are written; null: <output_dir>/tensorboard."""


class WandbSpec(Section):
    project: Name = Field("raysft", min_length=1, max_length=128)
    """W&B project."""
    entity: Optional[Name] = Field(None, max_length=128)
    """W&B team or user; null: the API key's default entity."""
    name: Optional[Name] = Field(None, max_length=128)
    """Run display name; null: the output_dir's folder name (a tune trial: its trial id)."""
    tags: list[Name] = Field(default_factory=list, max_length=_MAX_TAGS)
    """Run tags; a service job also carries its labels as `key=value`."""
    mode: Literal["online", "offline"] = "online"
    """online: sync as it runs (needs WANDB_API_KEY on the driver); offline: files under <output_dir>/wandb for
    `wandb sync` later."""

    @field_validator("tags")
    @classmethod
    def _tags(cls, tags: list[str]) -> list[str]:
        for tag in tags:
            _bounded_tag(tag)
        return tags


# backend field -> (module to import, extra that installs it)
_PACKAGES = {"mlflow": ("mlflow", "mlflow"), "tensorboard": ("tensorboard", "tensorboard"), "wandb": ("wandb", "wandb")}


class TrackingSpec(Section):
    """Experiment trackers the run also logs to; each is optional and can be combined."""

    mlflow: Optional[MlflowSpec] = None
    """Log to MLflow: params, metric histories, and the adapter, loss_curve.png and summary.json as artifacts."""
    tensorboard: Optional[TensorBoardSpec] = None
    """Write TensorBoard event files (scalars) for every logged step and evaluation."""
    wandb: Optional[WandbSpec] = None
    """Log to Weights & Biases: config, metric histories, and the outputs as a model artifact."""

    @model_validator(mode="after")
    def _installed(self) -> "TrackingSpec":
        missing = [Violation(name, f"the {module} package is not installed; run `pip install 'raysft[{extra}]'` "
                                   f"or remove tracking.{name}")
                   for name, (module, extra) in _PACKAGES.items()
                   if getattr(self, name) is not None and importlib.util.find_spec(module) is None]
        if missing:
            raise CrossFieldError(missing)
        return self
