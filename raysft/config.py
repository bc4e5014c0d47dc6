"""The job spec: one typed, validated description of a fine-tuning job.

The CLI reads it from YAML plus dotted overrides, `ray job submit` runs the CLI, and the gRPC service
validates the same model. Errors name the dotted field path and the fix; all errors of a spec are
reported at once. Practice-based ranges (learning rate by method, epochs) are warnings, never errors.

Relative paths in a spec are resolved against the working directory of the process that runs it.
"""

from __future__ import annotations

import copy
import difflib
import types
from pathlib import Path
from typing import Any, Literal, Optional, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

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
    "SpecError",
    "Violation",
    "load_spec",
    "parse_spec",
    "apply_overrides",
    "set_values",
    "advisories",
    "spec_to_yaml",
]


class _Section(BaseModel):
    """Base for every spec section: unknown keys are errors, defaults are validated too."""

    model_config = ConfigDict(extra="forbid", validate_default=True, use_attribute_docstrings=True)


# ----------------------------------------------------------------------------------------- model


class LoraSpec(_Section):
    rank: int = Field(16, gt=0)
    """LoRA rank r: the width of the low-rank update."""
    alpha: Union[int, float] = Field(32, gt=0)
    """LoRA scaling numerator; the update is scaled by alpha / r (alpha / sqrt(r) with rsLoRA)."""
    dropout: float = Field(0.05, ge=0, lt=1)
    """Dropout on the LoRA input."""
    target_modules: Union[Literal["all-linear"], list[str]] = "all-linear"
    """Modules to adapt: `all-linear` (every linear layer but the output head) or a list of module names."""
    use_rslora: bool = False
    """Rank-stabilised LoRA: scale by alpha / sqrt(r). Wants a lower learning rate (1e-5 – 5e-5)."""
    use_dora: bool = False
    """Weight-decomposed LoRA (DoRA)."""


class QuantizationSpec(_Section):
    bits: Literal[4] = 4
    """Storage bits of the frozen base weights (bitsandbytes)."""
    quant_type: Literal["nf4", "fp4"] = "nf4"
    """4-bit data type; NF4 suits normally distributed weights."""
    double_quant: bool = True
    """Quantise the quantisation constants too (saves ~0.4 bits per parameter)."""
    compute_dtype: Literal["bfloat16", "float16", "float32"] = "bfloat16"
    """Dtype the 4-bit weights are dequantised to for matmuls."""


class ModelSpec(_Section):
    name_or_path: str = Field(..., min_length=1)
    """Base model: a local directory in Hugging Face layout or a hub id."""
    method: Literal["lora", "qlora", "full"] = "lora"
    """lora: adapters on a 16/32-bit base; qlora: adapters on a 4-bit NF4 base; full: every weight trained."""
    lora: LoraSpec = Field(default_factory=LoraSpec)
    """Adapter settings (lora and qlora)."""
    quantization: Optional[QuantizationSpec] = None
    """4-bit settings; qlora only. Defaults are filled in when method is qlora."""
    init_adapter: Optional[str] = None
    """Continue training an earlier adapter: a PEFT adapter directory or an earlier raysft output_dir."""
    trust_remote_code: bool = False
    """Allow model code from the model repository (off: only architectures transformers ships)."""


# ------------------------------------------------------------------------------------------ data


class DataSource(_Section):
    path: str = Field(..., min_length=1)
    """JSONL, JSON array, Parquet file, or a directory written by `datasets.save_to_disk`."""
    weight: float = Field(1.0, gt=0)
    """Multi-task weighting: rows of this source are repeated (weight > 1) or subsampled (< 1)."""


class MixSource(_Section):
    path: str = Field(..., min_length=1)
    """General instruction data mixed in to reduce forgetting."""
    ratio: float = Field(..., gt=0, lt=1)
    """Share of the final train set taken by this source (0.15 – 0.3 is typical)."""


class DataSpec(_Section):
    train: list[DataSource] = Field(..., min_length=1)
    """Training files: paths, or {path, weight} items for multi-task weighting."""
    validation: Optional[str] = None
    """A validation file. When set, nothing is held out of train."""
    validation_split: float = Field(0.05, ge=0, lt=1)
    """Share of train held out for validation (deterministic by train.seed); ignored when validation is set."""
    stratify_by: Optional[str] = None
    """Keep class shares equal across the split: a dotted record field (metadata.industry) or `assistant`."""
    mix: list[MixSource] = Field(default_factory=list)
    """General data added at a share of the final train set: [{path, ratio}]."""
    max_seq_len: int = Field(2048, gt=0)
    """Tokens per example (and per packed row)."""
    packing: bool = True
    """Pack several examples per row (attention and positions kept per example)."""
    loss_on: Literal["assistant", "last_assistant", "all"] = "assistant"
    """Which tokens are trained on: every assistant turn, only the final one, or the whole conversation."""
    on_too_long: Literal["drop", "truncate"] = "drop"
    """What to do with an example longer than max_seq_len."""

    @field_validator("train", mode="before")
    @classmethod
    def _paths_to_sources(cls, value: Any) -> Any:
        if isinstance(value, (str, dict)):
            value = [value]
        if isinstance(value, list):
            return [{"path": v} if isinstance(v, str) else v for v in value]
        return value


# ----------------------------------------------------------------------------------------- train


class TrainSpec(_Section):
    epochs: Union[int, float] = Field(3, gt=0)
    """Passes over the train set (fractions allowed)."""
    max_steps: Optional[int] = Field(None, gt=0)
    """Stop after this many optimizer steps, whatever the epochs."""
    learning_rate: float = Field(2.0e-4, gt=0)
    """Peak learning rate of AdamW."""
    micro_batch_size: int = Field(4, gt=0)
    """Rows per forward pass per worker."""
    global_batch_size: int = Field(16, gt=0)
    """Rows per optimizer step across all workers; reached by gradient accumulation."""
    lr_scheduler: Literal["cosine", "linear", "constant"] = "cosine"
    """Learning-rate decay after warmup."""
    warmup_ratio: float = Field(0.03, ge=0, lt=1)
    """Share of steps spent warming up; ignored when warmup_steps is set."""
    warmup_steps: Optional[int] = Field(None, ge=0)
    """Warmup length in optimizer steps."""
    weight_decay: float = Field(0.0, ge=0)
    """AdamW decoupled weight decay."""
    max_grad_norm: Optional[float] = Field(1.0, gt=0)
    """Gradient clipping norm; null disables clipping."""
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"
    """auto: bf16 on GPUs that support it, else fp16 on GPU, fp32 on CPU."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass: less memory, ~30% more compute."""
    seed: int = 42
    """Seeds data order, splits, initialisation and dropout."""
    log_every_steps: int = Field(1, gt=0)
    """Write a metrics line every this many optimizer steps."""


# ------------------------------------------------------------------------------------------ eval


class GenerateSpec(_Section):
    metric: Optional[Literal["exact_match"]] = None
    """exact_match: greedy answers compared with the reference final answer (classification, extraction)."""
    max_new_tokens: int = Field(32, gt=0)
    """Generation length limit."""
    limit: Optional[int] = Field(None, gt=0)
    """Evaluate at most this many held-out conversations."""
    samples: int = Field(0, ge=0)
    """Write this many prompt / reference / generation triples to samples.jsonl for a person to read."""


class EarlyStoppingSpec(_Section):
    patience: int = Field(3, gt=0)
    """Evaluations without improvement before stopping."""
    min_delta: float = Field(0.0, ge=0)
    """Smallest decrease in eval loss that counts as improvement."""


class EvalSpec(_Section):
    every_steps: Optional[int] = Field(None, gt=0)
    """Evaluate every N optimizer steps (always at each epoch end)."""
    generate: Optional[GenerateSpec] = None
    """Generation-based evaluation: exact match and/or samples to read."""
    early_stopping: Optional[EarlyStoppingSpec] = None
    """Stop when eval loss stops improving."""


# ------------------------------------------------------------------------------------ checkpoint


class CheckpointSpec(_Section):
    every_steps: Optional[int] = Field(None, gt=0)
    """Checkpoint every N optimizer steps (always after each evaluation)."""
    keep_last: int = Field(3, gt=0)
    """Checkpoints kept on disk; the rest are pruned (the best is chosen among them)."""
    keep_best_by: Literal["eval_loss", "exact_match"] = "eval_loss"
    """Metric that ranks checkpoints; the best becomes output_dir/adapter."""
    storage_path: Optional[str] = None
    """Where Ray keeps checkpoints: a local path or any URI Ray storage accepts (s3://, gs://). Default: output_dir."""


# --------------------------------------------------------------------------------------- scaling


class ScalingSpec(_Section):
    num_workers: int = Field(1, gt=0)
    """Ray Train workers (one per GPU on GPU clusters)."""
    use_gpu: Literal["auto", True, False] = "auto"
    """auto: GPUs when the cluster has them."""
    resources_per_worker: Optional[dict[str, float]] = None
    """Ray resources each worker reserves, e.g. {CPU: 4, GPU: 1}."""
    strategy: Literal["ddp", "fsdp"] = "ddp"
    """ddp: a full model copy per worker; fsdp: shard parameters across workers."""
    max_failures: int = Field(1, ge=-1)
    """Worker failures survived by restarting from the latest checkpoint (-1: unlimited)."""


# ------------------------------------------------------------------------------------------ tune

_DISTRIBUTIONS = ("loguniform", "uniform", "randint", "choice", "grid")


class SearchDistribution(_Section):
    """How one searched key is drawn; exactly one field is set."""

    loguniform: Optional[tuple[float, float]] = None
    """[low, high]: real numbers spread evenly on a log scale (learning rates); 0 < low < high."""
    uniform: Optional[tuple[float, float]] = None
    """[low, high]: real numbers spread evenly."""
    randint: Optional[tuple[int, int]] = None
    """[low, high]: integers, both ends included."""
    choice: Optional[list[Any]] = Field(None, min_length=1)
    """Values drawn at random (random, optuna), or each tried once (grid, one_at_a_time)."""
    grid: Optional[list[Any]] = Field(None, min_length=1)
    """Every value tried, crossed with the other grid keys (Ray Tune's grid_search)."""

    @property
    def kind(self) -> str:
        """The name of the distribution that is set."""
        return next(n for n in _DISTRIBUTIONS if getattr(self, n) is not None)

    @model_validator(mode="after")
    def _exactly_one(self) -> "SearchDistribution":
        named = [n for n in _DISTRIBUTIONS if getattr(self, n) is not None]
        if len(named) != 1:
            raise _CrossFieldError([Violation("", f"set exactly one of {', '.join(_DISTRIBUTIONS)}; got {', '.join(named) or 'none'}")])
        bounds = self.loguniform or self.uniform or self.randint
        if bounds and not bounds[0] < bounds[1]:
            raise _CrossFieldError([Violation(named[0], f"[low, high] needs low < high; got {list(bounds)}")])
        if self.loguniform and self.loguniform[0] <= 0:
            raise _CrossFieldError([Violation("loguniform", f"a log scale needs low > 0; got {self.loguniform[0]:g}")])
        return self


class TuneSpec(_Section):
    search_space: dict[str, SearchDistribution] = Field(default_factory=dict)
    """Dotted training keys to search, each with one distribution, e.g. train.learning_rate: {loguniform: [1.0e-5, 5.0e-4]}."""
    search: Literal["random", "grid", "optuna", "one_at_a_time"] = "random"
    """random / grid: Ray Tune's sampling and grid search; optuna: Bayesian (TPE) search; one_at_a_time: vary each
    key alone around the base spec and report each factor's effect."""
    scheduler: Literal["asha", "none"] = "asha"
    """asha: stop weak trials early at their evaluations (asynchronous successive halving); none: every trial runs to its end."""
    num_samples: int = Field(8, gt=0)
    """Trials drawn by random and optuna search (each grid key multiplies them, as in Ray Tune); grid and
    one_at_a_time run each combination once."""
    max_concurrent_trials: Optional[int] = Field(None, gt=0)
    """At most this many trials at once, and never more than the cluster fits (each trial needs scaling.num_workers
    × resources_per_worker); the others wait as pending. Default: as many as fit."""
    metric: Literal["eval_loss", "exact_match"] = "eval_loss"
    """Ranks trials (each by its best evaluation) and is what ASHA and optuna optimise; equals checkpoint.keep_best_by."""
    mode: Optional[Literal["min", "max"]] = None
    """min for eval_loss, max for exact_match; filled in when unset."""
    time_budget_s: Optional[float] = Field(None, gt=0)
    """Stop the campaign (running trials included) after this many seconds."""
    grace_period_steps: int = Field(2, gt=0)
    """ASHA: optimizer steps every trial runs before it can be stopped; later rungs at grace × reduction_factor^k steps."""
    reduction_factor: float = Field(3, gt=1)
    """ASHA: the best 1 / reduction_factor of the trials at a rung go on to the next."""

    @model_validator(mode="after")
    def _checks(self) -> "TuneSpec":
        problems: list[Violation] = []
        best = "max" if self.metric == "exact_match" else "min"
        if self.mode is None:
            self.mode = best
        elif self.mode != best:
            problems.append(Violation("mode", f"{self.metric} is better when {'higher' if best == 'max' else 'lower'}; "
                                              f"set mode: {best} or leave it out"))
        if not self.search_space:
            problems.append(Violation("search_space", "is empty; add at least one dotted training key, e.g. "
                                                      "train.learning_rate: {loguniform: [1.0e-5, 5.0e-4]}"))
        if problems:
            raise _CrossFieldError(problems)
        return self


# ---------------------------------------------------------------------------------------- the spec


class JobSpec(_Section):
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
    output_dir: str = "runs/my-run"
    """Where the adapter, metrics, curves and summary are written."""
    tune: Optional[TuneSpec] = None
    """Hyperparameter search: `raysft tune` runs one training of this spec per trial; `raysft train` ignores it."""

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
            problems.extend(_tune_problems(self))
        if problems:
            raise _CrossFieldError(problems)
        return self


# ------------------------------------------------------------------------------------- errors


class Violation(tuple):
    """One problem with a spec: the dotted field path and what to do about it."""

    __slots__ = ()

    def __new__(cls, field: str, message: str):
        return super().__new__(cls, (field, message))

    field = property(lambda self: self[0])
    message = property(lambda self: self[1])

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


class SpecError(ValueError):
    """A spec failed validation; `violations` lists every problem found, each with its field path."""

    def __init__(self, violations: list[Violation]):
        self.violations = list(violations)
        super().__init__("\n".join(str(v) for v in self.violations))


class _CrossFieldError(ValueError):
    def __init__(self, problems: list[Violation]):
        self.problems = problems
        super().__init__("; ".join(map(str, problems)))


def _section_at(loc: tuple) -> Optional[type[BaseModel]]:
    """The model class that owns location `loc` (used to suggest key names)."""
    cls: Any = JobSpec
    skip = False
    for part in loc:
        if isinstance(part, int) or skip:  # a list index, or a mapping key (tune.search_space.<key>)
            skip = False
            continue
        field = cls.model_fields.get(part) if isinstance(cls, type) and issubclass(cls, BaseModel) else None
        if field is None:
            return None
        skip = get_origin(field.annotation) is dict
        cls = _model_in(field.annotation)
    return cls if isinstance(cls, type) and issubclass(cls, BaseModel) else None


def _model_in(annotation: Any) -> Any:
    """First BaseModel subclass inside an annotation (Optional[X], list[X], X)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _translate(error: dict) -> list[Violation]:
    loc = tuple(p for p in error["loc"] if not (isinstance(p, str) and p.startswith(("function-", "literal[", "list[", "str", "bool"))))
    path = ".".join(str(p) for p in loc)
    kind, ctx = error["type"], error.get("ctx") or {}
    if kind == "value_error" and isinstance(ctx.get("error"), _CrossFieldError):
        return [Violation(".".join(filter(None, [path, v.field])), v.message) for v in ctx["error"].problems]
    if kind == "extra_forbidden":
        key = str(loc[-1])
        owner = _section_at(loc[:-1])
        names = list(owner.model_fields) if owner else []
        close = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
        hint = f"did you mean '{close[0]}'?" if close else f"known keys: {', '.join(names)}"
        return [Violation(path, f"unknown key; {hint}")]
    if kind == "missing":
        return [Violation(path, "required; add it to the spec")]
    if kind == "literal_error":
        return [Violation(path, f"got {error.get('input')!r}; must be one of {ctx.get('expected')}")]
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        op = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}[kind]
        bound = next(iter(ctx.values()))
        return [Violation(path, f"must be {op} {bound} (got {error.get('input')!r})")]
    return [Violation(path, f"{error['msg']} (got {error.get('input')!r})")]


def _dedupe(violations: list[Violation]) -> list[Violation]:
    # A union (e.g. use_gpu: bool | "auto") reports one error per branch: keep one line per field.
    seen: dict[str, Violation] = {}
    for v in violations:
        seen.setdefault(v.field, v)
    return list(seen.values())


# ----------------------------------------------------------------------------------- loading


def parse_spec(raw: Any) -> JobSpec:
    """Validate a plain mapping into a JobSpec.

    Raises:
        SpecError: listing every problem, each with its dotted field path.
    """
    if not isinstance(raw, dict):
        raise SpecError([Violation("", f"a spec is a mapping with keys model, data, ...; got {type(raw).__name__}")])
    try:
        return JobSpec.model_validate(raw)
    except ValidationError as exc:
        violations = [v for err in exc.errors() for v in _translate(err)]
        raise SpecError(_dedupe(violations)) from None


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Apply `a.b.c=value` overrides (values parsed as YAML) to a nested mapping, in place.

    Raises:
        SpecError: an override without `=` or that descends into a non-mapping.
    """
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SpecError([Violation(item, "an override looks like key.path=value, e.g. train.epochs=3")])
        parts = key.strip().split(".")
        node = raw
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise SpecError([Violation(".".join(parts[: i + 1]), f"is a value, not a section; cannot set {key}")])
            node = child
        node[parts[-1]] = yaml.safe_load(value) if value.strip() else None
    return raw


def set_values(raw: dict, values: dict[str, Any]) -> dict:
    """Set dotted keys of a nested spec mapping to already-typed values, in place.

    Unlike `apply_overrides`, values are not parsed as YAML (a tune trial's 1e-05 stays a float).
    """
    for key, value in values.items():
        *parents, last = key.split(".")
        node = raw
        for part in parents:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[last] = value
    return raw


def load_spec(source: Union[str, Path, dict], overrides: Optional[list[str]] = None) -> JobSpec:
    """Load a spec from a YAML file (or a mapping) and apply dotted overrides.

    Raises:
        SpecError: the file is missing or not YAML, or the spec is invalid (every problem listed).
    """
    if isinstance(source, dict):
        raw = yaml.safe_load(yaml.safe_dump(source))  # deep copy; overrides must not touch the caller's dict
    else:
        path = Path(source)
        if not path.is_file():
            raise SpecError([Violation("", f"spec file {str(path)!r} not found; pass the path of a YAML spec")])
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8-sig"))
        except yaml.YAMLError as exc:
            raise SpecError([Violation("", f"{path} is not valid YAML: {exc}")]) from None
        raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise SpecError([Violation("", f"a spec is a mapping with keys model, data, ...; got {type(raw).__name__}")])
    return parse_spec(apply_overrides(raw, list(overrides or [])))


def spec_to_yaml(spec: JobSpec) -> str:
    """The fully resolved spec as YAML (every default written out)."""
    return yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


# ---------------------------------------------------------------------------------- search space

def _section_model(annotation: Any) -> Optional[type[BaseModel]]:
    """The section model a key can descend into: X or Optional[X] (not a list of X)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    args = [a for a in get_args(annotation) if a is not type(None)]
    if get_origin(annotation) in (Union, types.UnionType) and len(args) == 1:
        return _section_model(args[0])
    return None


def _dotted_keys(cls: type[BaseModel], prefix: str = "") -> list[str]:
    keys = []
    for name, field in cls.model_fields.items():
        keys.append(prefix + name)
        sub = _section_model(field.annotation)
        if sub is not None and sub is not TuneSpec:
            keys.extend(_dotted_keys(sub, f"{prefix}{name}."))
    return keys


def _leaf_types(annotation: Any) -> set:
    """Python types a field accepts: Union[int, float] -> {int, float}; Literal["a", True] -> {str, bool}."""
    if get_origin(annotation) is Literal:
        return {type(a) for a in get_args(annotation)}
    if get_origin(annotation) in (Union, types.UnionType):
        return set().union(*(_leaf_types(a) for a in get_args(annotation)))
    return {get_origin(annotation) or annotation}


def _search_key_problem(key: str, dist: SearchDistribution, search: str, base: dict, spec: "JobSpec") -> Optional[str]:
    """Why `key: dist` cannot be searched from the base spec (`base`: its unset-free dump), or None."""
    if key == "output_dir" or key.split(".")[0] == "tune":
        return "cannot be searched: trials write under the campaign's output_dir and share its tune section"
    cls, parts, node = JobSpec, key.split("."), spec  # node: the base spec's section along the key
    for i, part in enumerate(parts):
        field = cls.model_fields.get(part)
        if field is None:
            close = difflib.get_close_matches(key, [k for k in _dotted_keys(JobSpec) if k != "output_dir"], n=1, cutoff=0.6)
            return f"unknown key; did you mean '{close[0]}'?" if close else "unknown key; give a dotted training key such as train.learning_rate"
        if i < len(parts) - 1:
            cls = _section_model(field.annotation)
            if cls is None:
                return f"{'.'.join(parts[:i + 1])} is a value, not a section"
            node = getattr(node, part, None)
            if node is None and search == "one_at_a_time":
                return f"one_at_a_time varies a key around its base value, but {'.'.join(parts[:i + 1])} is not set; add it to the spec"
    kind = dist.kind
    listed = kind in ("choice", "grid")
    if search in ("grid", "one_at_a_time") and not listed:
        return f"search: {search} tries listed values; use {{choice: [...]}} or {{grid: [...]}} instead of {kind}"
    if search == "optuna" and kind == "grid":
        return "optuna draws values; use {choice: [...]}, or search: grid"
    if not listed:
        accepted = _leaf_types(field.annotation)
        wanted = int if kind == "randint" else float
        if wanted not in accepted:
            names = " or ".join(sorted(t.__name__ for t in accepted if t is not type(None)))
            alt = " or {randint: [low, high]}" if int in accepted else ""
            return f"{kind} draws {'integers' if kind == 'randint' else 'real numbers'} but {key} takes {names}; use {{choice: [...]}}{alt}"
    for value in getattr(dist, kind):
        raw = set_values(copy.deepcopy(base), {key: value})
        try:
            JobSpec.model_validate(raw)
        except ValidationError as exc:
            found = _dedupe([v for err in exc.errors() for v in _translate(err)])
            return f"{value!r} does not fit: " + "; ".join(map(str, found))
    return None


def _tune_problems(spec: "JobSpec") -> list[Violation]:
    """The tune section checked against the rest of the spec: metric, and every key and value of the search space."""
    tune, out = spec.tune, []
    if tune.metric == "exact_match" and (spec.eval.generate is None or spec.eval.generate.metric != "exact_match"):
        out.append(Violation("tune.metric", "exact_match needs eval.generate.metric: exact_match"))
    if tune.metric == "eval_loss" and not (spec.data.validation or spec.data.validation_split > 0):
        out.append(Violation("tune.metric", "eval_loss needs validation data; set data.validation or data.validation_split > 0"))
    if spec.checkpoint.keep_best_by != tune.metric:
        out.append(Violation("checkpoint.keep_best_by", f"is {spec.checkpoint.keep_best_by} but tune.metric is {tune.metric}; "
                                                        "set both to the same metric (it ranks checkpoints and trials alike)"))
    base = spec.model_dump(mode="json", exclude_unset=True, exclude={"tune"})
    for key, dist in tune.search_space.items():
        problem = _search_key_problem(key, dist, tune.search, base, spec)
        if problem:
            out.append(Violation(f"tune.search_space.{key}", problem))
    return out


# --------------------------------------------------------------------------------- advisories

# (low, high) learning-rate bands from SFT practice; outside them is a warning, never an error.
_LR_BANDS = {
    "lora": ((5e-5, 5e-4), "LoRA usually trains well at 1e-4 – 2e-4"),
    "rslora": ((1e-5, 5e-5), "rsLoRA scales updates by alpha/sqrt(r) and wants 1e-5 – 5e-5"),
    "full": ((1e-5, 2e-5), "a full fine-tune usually wants 1e-5 – 2e-5"),
}


def advisories(spec: JobSpec) -> list[Violation]:
    """Warnings for settings outside what usually works (never errors)."""
    out: list[Violation] = []
    m, t = spec.model, spec.train
    band = "full" if m.method == "full" else ("rslora" if m.lora.use_rslora else "lora")
    (lo, hi), why = _LR_BANDS[band]
    if not lo <= t.learning_rate <= hi:
        out.append(Violation("train.learning_rate", f"{t.learning_rate:g} is outside {lo:g} – {hi:g}; {why}"))
    if not 1 <= t.epochs <= 10:
        out.append(Violation("train.epochs", f"{t.epochs:g} is outside 1 – 10; 2 – 5 suit most tasks (5 – 10 for generative ones)"))
    if spec.scaling.strategy == "fsdp" and spec.scaling.num_workers == 1:
        out.append(Violation("scaling.strategy", "fsdp with one worker shards nothing; use ddp or more workers"))
    if spec.data.mix and not 0.15 <= sum(x.ratio for x in spec.data.mix) <= 0.3:
        out.append(Violation("data.mix", "15% – 30% general data is what usually limits forgetting"))
    if spec.tune and spec.tune.scheduler == "asha" and not spec.eval.every_steps:
        out.append(Violation("eval.every_steps", "ASHA judges trials at evaluations; unset, it sees only epoch ends and weak trials run whole epochs"))
    return out
