"""JobSpec: the sections together, and the checks that span them (batch divisibility, validation data for early
stopping and eval-loss ranking, quantization only with qlora, ...)."""

from __future__ import annotations

from typing import Optional

from pydantic import Field, model_validator

from raysft.config.errors import CrossFieldError, Violation
from raysft.config.sections import (CheckpointSpec, DataSpec, EvalSpec, ModelSpec, Name, QuantizationSpec, ScalingSpec,
                                    Section, TrainSpec)
from raysft.config.tracking import TrackingSpec
from raysft.config.tune import TuneSpec, tune_problems

__all__ = ["JobSpec"]


class JobSpec(Section):
    """A supervised fine-tuning job."""

    model: ModelSpec
    """The base model and how it is adapted."""
    data: DataSpec
    """Training, validation and mix-in data."""
    train: TrainSpec = Field(default_factory=TrainSpec)
    """Optimisation."""
    eval: EvalSpec = Field(default_factory=EvalSpec)
    """Evaluation on held-out data."""
    checkpoint: CheckpointSpec = Field(default_factory=CheckpointSpec)
    """Checkpoint cadence and retention."""
    scaling: ScalingSpec = Field(default_factory=ScalingSpec)
    """Workers and resources."""
    output_dir: Name = "runs/my-run"
    """Where the adapter, metrics, curves and summary are written."""
    tune: Optional[TuneSpec] = None
    """Hyperparameter search: `raysft tune` runs one training of this spec per trial; `raysft train` ignores it."""
    tracking: TrackingSpec = Field(default_factory=TrackingSpec)
    """Experiment trackers (MLflow, TensorBoard, W&B) the run also logs to."""

    @model_validator(mode="after")
    def _cross_field(self) -> "JobSpec":
        problems: list[Violation] = []
        m, d, t, s = self.model, self.data, self.train, self.scaling
        if m.method == "qlora" and m.quantization is None:
            m.quantization = QuantizationSpec()
        if m.method != "qlora" and m.quantization is not None:
            problems.append(Violation("model.quantization", "only used with method qlora; remove it or set model.method: qlora"))
        if m.method == "full" and m.init_adapter:
            problems.append(Violation("model.init_adapter", "adapters need method lora or qlora; remove it or change model.method"))
        per_step = t.micro_batch_size * s.num_workers
        if t.global_batch_size % per_step:
            lo = max(per_step, t.global_batch_size // per_step * per_step)
            problems.append(Violation(
                "train.global_batch_size",
                f"{t.global_batch_size} is not a multiple of micro_batch_size × num_workers = {per_step}; "
                f"use {lo} or {lo + per_step}"))
        if d.validation and "validation_split" in d.model_fields_set and d.validation_split > 0:
            problems.append(Violation("data.validation_split", "set either data.validation (a file) or data.validation_split, not both"))
        elif d.validation:
            d.validation_split = 0.0  # nothing is held out; written out as 0 so the resolved spec reloads
        if d.stratify_by and (d.validation or d.validation_split == 0):
            problems.append(Violation("data.stratify_by", "only applies to a split held out of train; set data.validation_split > 0"))
        mix_total = sum(x.ratio for x in d.mix)
        if mix_total >= 1:
            problems.append(Violation("data.mix", f"ratios add up to {mix_total:g}; they are shares of the final train set and must sum below 1"))
        g = self.eval.generate
        if g is not None and g.metric is None and g.samples == 0:
            problems.append(Violation("eval.generate", "set metric: exact_match, samples: K, or both; or remove eval.generate"))
        if self.checkpoint.keep_best_by == "exact_match" and (g is None or g.metric != "exact_match"):
            problems.append(Violation("checkpoint.keep_best_by", "exact_match needs eval.generate.metric: exact_match"))
        if self.eval.early_stopping and not (d.validation or d.validation_split > 0):
            problems.append(Violation("eval.early_stopping", "needs validation data; set data.validation or data.validation_split > 0"))
        if self.tune is not None and not problems:  # search-space values are checked against a valid base spec
            problems.extend(tune_problems(self))
        if problems:
            raise CrossFieldError(problems)
        return self
