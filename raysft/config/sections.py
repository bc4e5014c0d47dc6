"""The sections of a job spec but tune: model, data, train, eval, checkpoint, scaling. Every key has a docstring;
`raysft config schema` publishes them."""

from __future__ import annotations

import datetime
import re
import unicodedata
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from raysft.config.errors import CrossFieldError, Violation

__all__ = [
    "Section", "LoraSpec", "QuantizationSpec", "ModelSpec", "DataSource", "MixSource", "DataSpec", "TrainSpec",
    "GenerateSpec", "EarlyStoppingSpec", "EvalSpec", "CheckpointSpec", "ScalingSpec", "Name", "Metric",
    "higher_is_better", "score_order", "is_hub_id",
]


def _printable(value: str) -> str:
    # A line break in a path or hub id ends up raw in logs and error messages (forged log lines, terminal
    # escapes); no file system or hub needs control, format or line-separator characters in a name.
    bad = next((c for c in value if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp")), None)
    if bad is not None:
        raise CrossFieldError([Violation("", f"holds the control character {bad!r} at offset {value.index(bad)}; "
                                             "paths, URIs and hub ids take printable characters only")])
    return value


Name = Annotated[str, AfterValidator(_printable)]

_HUB_ID = re.compile(r"[A-Za-z0-9][\w.\-]*(/[A-Za-z0-9][\w.\-]*)?")


def is_hub_id(name: str) -> bool:
    """Whether `name` has the shape of a Hugging Face repo id ("name" or "org/name"), not of a path."""
    return bool(_HUB_ID.fullmatch(name))


Metric = Literal["eval_loss", "exact_match"]
"""What ranks checkpoints, early stopping and trials: the validation loss, or exact match of generated answers."""


def higher_is_better(metric: str) -> bool:
    """Whether a larger value of `metric` is the better one (exact_match), not a smaller one (eval_loss)."""
    return metric == "exact_match"


def score_order(metric: str) -> Literal["max", "min"]:
    """`metric`'s direction as Ray Train and Tune spell it."""
    return "max" if higher_is_better(metric) else "min"
"""A path, URI, hub id or other name: printable characters only."""


class Section(BaseModel):
    """Base for every spec section: unknown keys are errors, defaults are validated too."""

    model_config = ConfigDict(extra="forbid", validate_default=True, use_attribute_docstrings=True)


# ----------------------------------------------------------------------------------------- model


class LoraSpec(Section):
    rank: int = Field(16, gt=0)
    """LoRA rank r: the width of the low-rank update."""
    alpha: Union[int, float] = Field(32, gt=0)
    """LoRA scaling numerator; the update is scaled by alpha / r (alpha / sqrt(r) with rsLoRA)."""
    dropout: float = Field(0.05, ge=0, lt=1)
    """Dropout on the LoRA input."""
    target_modules: Union[Literal["all-linear"], list[Name]] = "all-linear"
    """Modules to adapt: `all-linear` (every linear layer but the output head) or a list of module names."""
    use_rslora: bool = False
    """Rank-stabilised LoRA: scale by alpha / sqrt(r). Wants a lower learning rate (1e-5 – 5e-5)."""
    use_dora: bool = False
    """Weight-decomposed LoRA (DoRA)."""


class QuantizationSpec(Section):
    bits: Literal[4] = 4
    """Storage bits of the frozen base weights (bitsandbytes)."""
    quant_type: Literal["nf4", "fp4"] = "nf4"
    """4-bit data type; NF4 suits normally distributed weights."""
    double_quant: bool = True
    """Quantise the quantisation constants too (saves ~0.4 bits per parameter)."""
    compute_dtype: Literal["bfloat16", "float16", "float32"] = "bfloat16"
    """Dtype the 4-bit weights are dequantised to for matmuls."""


class ModelSpec(Section):
    name_or_path: Name = Field(..., min_length=1)
    """Base model: a local directory in Hugging Face layout or a hub id."""
    method: Literal["lora", "qlora", "full"] = "lora"
    """lora: adapters on a 16/32-bit base; qlora: adapters on a 4-bit NF4 base; full: every weight trained."""
    lora: LoraSpec = Field(default_factory=LoraSpec)
    """Adapter settings (lora and qlora)."""
    quantization: Optional[QuantizationSpec] = None
    """4-bit settings; qlora only. Defaults are filled in when method is qlora."""
    init_adapter: Optional[Name] = None
    """Continue training an earlier adapter: a PEFT adapter directory or an earlier raysft output_dir."""
    trust_remote_code: bool = False
    """Allow model code from the model repository (off: only architectures transformers ships)."""
    attn_implementation: Literal["auto", "sdpa", "packed_sdpa", "flex_attention", "flash_attention_2", "eager"] = "auto"
    """Attention kernel. auto: flash_attention_2 on a GPU with `flash-attn` installed and 16-bit weights
    (varlen over packed rows, no mask); packed_sdpa on the CPU; else sdpa. packed_sdpa: sdpa per packed example, so
    the blocks packing masks are never computed (same loss and gradients as sdpa). flex_attention (a block mask from
    the packed examples) has no backward on the CPU; eager materialises every T x T score matrix."""


# ------------------------------------------------------------------------------------------ data


class DataSource(Section):
    path: Name = Field(..., min_length=1)
    """JSONL, JSON array, Parquet file, or a directory written by `datasets.save_to_disk`."""
    weight: float = Field(1.0, gt=0)
    """Multi-task weighting: rows of this source are repeated (weight > 1) or subsampled (< 1)."""


class MixSource(Section):
    path: Name = Field(..., min_length=1)
    """General instruction data mixed in to reduce forgetting."""
    ratio: float = Field(..., gt=0, lt=1)
    """Share of the final train set taken by this source (0.15 – 0.3 is typical)."""


class DataSpec(Section):
    train: list[DataSource] = Field(..., min_length=1)
    """Training files: paths, or {path, weight} items for multi-task weighting."""
    validation: Optional[Name] = None
    """A validation file. When set, nothing is held out of train."""
    validation_split: float = Field(0.05, ge=0, lt=1)
    """Share of train held out for validation (deterministic by train.seed); ignored when validation is set."""
    stratify_by: Optional[Name] = None
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
    template_date: Optional[datetime.date] = None
    """The day chat templates that print today's date see (Llama 3.2's strftime_now). Unset: the day the run
    starts, then written into the run's spec.yaml and checkpoints, so a resume or a later eval encodes the same tokens."""
    cache_dir: Optional[Name] = None
    """Where the encoded data is cached (Parquet shards + manifest, one folder per cache key). Unset: `.raysft-cache`
    beside output_dir, so runs in one folder share it; on a multi-node cluster a path every node sees, or a URI that
    pyarrow's filesystems open (`s3://bucket/prefix`, `gs://...`): an entry is committed by writing its manifest last."""

    @field_validator("train", mode="before")
    @classmethod
    def _paths_to_sources(cls, value: Any) -> Any:
        if isinstance(value, (str, dict)):
            value = [value]
        if isinstance(value, list):
            return [{"path": v} if isinstance(v, str) else v for v in value]
        return value


# ----------------------------------------------------------------------------------------- train


class TrainSpec(Section):
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


class GenerateSpec(Section):
    metric: Optional[Literal["exact_match"]] = None
    """exact_match: greedy answers compared with the reference final answer (classification, extraction)."""
    max_new_tokens: int = Field(32, gt=0)
    """Generation length limit."""
    limit: Optional[int] = Field(None, gt=0)
    """Evaluate at most this many held-out conversations."""
    samples: int = Field(0, ge=0)
    """Write this many prompt / reference / generation triples to samples.jsonl for a person to read."""


class EarlyStoppingSpec(Section):
    patience: int = Field(3, gt=0)
    """Evaluations without improvement before stopping."""
    min_delta: float = Field(0.0, ge=0)
    """Smallest decrease in eval loss that counts as improvement."""


class EvalSpec(Section):
    every_steps: Optional[int] = Field(None, gt=0)
    """Evaluate every N optimizer steps (always at each epoch end)."""
    generate: Optional[GenerateSpec] = None
    """Generation-based evaluation: exact match and/or samples to read."""
    early_stopping: Optional[EarlyStoppingSpec] = None
    """Stop when eval loss stops improving."""


# ------------------------------------------------------------------------------------ checkpoint


class CheckpointSpec(Section):
    every_steps: Optional[int] = Field(None, gt=0)
    """Checkpoint every N optimizer steps (always after each evaluation)."""
    keep_last: int = Field(3, gt=0)
    """Checkpoints kept on disk; the rest are pruned (the best is chosen among them)."""
    keep_best_by: Metric = "eval_loss"
    """Metric that ranks checkpoints; the best becomes output_dir/adapter."""
    storage_path: Optional[Name] = None
    """Where Ray keeps checkpoints: a local path or any URI Ray storage accepts (s3://, gs://). Default: output_dir."""


# --------------------------------------------------------------------------------------- scaling


class ScalingSpec(Section):
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
