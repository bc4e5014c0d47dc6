"""The job spec: one typed, validated description of a fine-tuning job.

The CLI reads it from YAML plus dotted overrides, `ray job submit` runs the CLI, and the gRPC service
validates the same model. Errors name the dotted field path and the fix; all errors of a spec are
reported at once. Practice-based ranges (learning rate by method, epochs) are warnings, never errors.

Relative paths in a spec are resolved against the working directory of the process that runs it.
"""

from raysft.config.advice import advisories
from raysft.config.errors import SpecError, Violation
from raysft.config.loading import load_spec, parse_spec, spec_to_yaml
from raysft.config.overrides import apply_overrides, set_values
from raysft.config.paths import absolute_paths, with_absolute_paths
from raysft.config.sections import (CheckpointSpec, DataSource, DataSpec, EarlyStoppingSpec, EvalSpec, GenerateSpec,
                                    LoraSpec, Metric, MixSource, ModelSpec, QuantizationSpec, ScalingSpec, TrainSpec,
                                    higher_is_better, is_hub_id, score_order)
from raysft.config.spec import JobSpec
from raysft.config.tracking import MlflowSpec, TensorBoardSpec, TrackingSpec, WandbSpec
from raysft.config.tune import SearchDistribution, TuneSpec

__all__ = [
    "JobSpec",
    "ModelSpec",
    "LoraSpec",
    "QuantizationSpec",
    "DataSpec",
    "DataSource",
    "MixSource",
    "TrainSpec",
    "EvalSpec",
    "GenerateSpec",
    "EarlyStoppingSpec",
    "CheckpointSpec",
    "ScalingSpec",
    "TuneSpec",
    "SearchDistribution",
    "TrackingSpec",
    "MlflowSpec",
    "TensorBoardSpec",
    "WandbSpec",
    "Metric",
    "higher_is_better",
    "is_hub_id",
    "score_order",
    "SpecError",
    "Violation",
    "load_spec",
    "parse_spec",
    "apply_overrides",
    "absolute_paths",
    "with_absolute_paths",
    "set_values",
    "advisories",
    "spec_to_yaml",
]
