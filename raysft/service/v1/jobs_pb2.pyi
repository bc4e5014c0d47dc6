import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import empty_pb2 as _empty_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.rpc import status_pb2 as _status_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class JobKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_KIND_UNSPECIFIED: _ClassVar[JobKind]
    TRAIN: _ClassVar[JobKind]
    TUNE: _ClassVar[JobKind]

class JobState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_STATE_UNSPECIFIED: _ClassVar[JobState]
    QUEUED: _ClassVar[JobState]
    STARTING: _ClassVar[JobState]
    RUNNING: _ClassVar[JobState]
    CANCELLING: _ClassVar[JobState]
    SUCCEEDED: _ClassVar[JobState]
    FAILED: _ClassVar[JobState]
    CANCELLED: _ClassVar[JobState]

class ErrorKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ERROR_KIND_UNSPECIFIED: _ClassVar[ErrorKind]
    USER: _ClassVar[ErrorKind]
    SYSTEM: _ClassVar[ErrorKind]

class JobView(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_VIEW_UNSPECIFIED: _ClassVar[JobView]
    JOB_VIEW_BASIC: _ClassVar[JobView]
    JOB_VIEW_FULL: _ClassVar[JobView]

class Level(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LEVEL_UNSPECIFIED: _ClassVar[Level]
    INFO: _ClassVar[Level]
    WARNING: _ClassVar[Level]
    ERROR: _ClassVar[Level]
JOB_KIND_UNSPECIFIED: JobKind
TRAIN: JobKind
TUNE: JobKind
JOB_STATE_UNSPECIFIED: JobState
QUEUED: JobState
STARTING: JobState
RUNNING: JobState
CANCELLING: JobState
SUCCEEDED: JobState
FAILED: JobState
CANCELLED: JobState
ERROR_KIND_UNSPECIFIED: ErrorKind
USER: ErrorKind
SYSTEM: ErrorKind
JOB_VIEW_UNSPECIFIED: JobView
JOB_VIEW_BASIC: JobView
JOB_VIEW_FULL: JobView
LEVEL_UNSPECIFIED: Level
INFO: Level
WARNING: Level
ERROR: Level

class LoraSpec(_message.Message):
    __slots__ = ("rank", "alpha", "dropout", "target_modules", "use_rslora", "use_dora")
    RANK_FIELD_NUMBER: _ClassVar[int]
    ALPHA_FIELD_NUMBER: _ClassVar[int]
    DROPOUT_FIELD_NUMBER: _ClassVar[int]
    TARGET_MODULES_FIELD_NUMBER: _ClassVar[int]
    USE_RSLORA_FIELD_NUMBER: _ClassVar[int]
    USE_DORA_FIELD_NUMBER: _ClassVar[int]
    rank: int
    alpha: float
    dropout: float
    target_modules: _containers.RepeatedScalarFieldContainer[str]
    use_rslora: bool
    use_dora: bool
    def __init__(self, rank: _Optional[int] = ..., alpha: _Optional[float] = ..., dropout: _Optional[float] = ..., target_modules: _Optional[_Iterable[str]] = ..., use_rslora: _Optional[bool] = ..., use_dora: _Optional[bool] = ...) -> None: ...

class QuantizationSpec(_message.Message):
    __slots__ = ("bits", "quant_type", "double_quant", "compute_dtype")
    class QuantType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        QUANT_TYPE_UNSPECIFIED: _ClassVar[QuantizationSpec.QuantType]
        QUANT_TYPE_NF4: _ClassVar[QuantizationSpec.QuantType]
        QUANT_TYPE_FP4: _ClassVar[QuantizationSpec.QuantType]
    QUANT_TYPE_UNSPECIFIED: QuantizationSpec.QuantType
    QUANT_TYPE_NF4: QuantizationSpec.QuantType
    QUANT_TYPE_FP4: QuantizationSpec.QuantType
    class ComputeDtype(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        COMPUTE_DTYPE_UNSPECIFIED: _ClassVar[QuantizationSpec.ComputeDtype]
        COMPUTE_DTYPE_BFLOAT16: _ClassVar[QuantizationSpec.ComputeDtype]
        COMPUTE_DTYPE_FLOAT16: _ClassVar[QuantizationSpec.ComputeDtype]
        COMPUTE_DTYPE_FLOAT32: _ClassVar[QuantizationSpec.ComputeDtype]
    COMPUTE_DTYPE_UNSPECIFIED: QuantizationSpec.ComputeDtype
    COMPUTE_DTYPE_BFLOAT16: QuantizationSpec.ComputeDtype
    COMPUTE_DTYPE_FLOAT16: QuantizationSpec.ComputeDtype
    COMPUTE_DTYPE_FLOAT32: QuantizationSpec.ComputeDtype
    BITS_FIELD_NUMBER: _ClassVar[int]
    QUANT_TYPE_FIELD_NUMBER: _ClassVar[int]
    DOUBLE_QUANT_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_DTYPE_FIELD_NUMBER: _ClassVar[int]
    bits: int
    quant_type: QuantizationSpec.QuantType
    double_quant: bool
    compute_dtype: QuantizationSpec.ComputeDtype
    def __init__(self, bits: _Optional[int] = ..., quant_type: _Optional[_Union[QuantizationSpec.QuantType, str]] = ..., double_quant: _Optional[bool] = ..., compute_dtype: _Optional[_Union[QuantizationSpec.ComputeDtype, str]] = ...) -> None: ...

class ModelSpec(_message.Message):
    __slots__ = ("name_or_path", "method", "lora", "quantization", "init_adapter", "trust_remote_code", "attn_implementation")
    class Method(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        METHOD_UNSPECIFIED: _ClassVar[ModelSpec.Method]
        METHOD_LORA: _ClassVar[ModelSpec.Method]
        METHOD_QLORA: _ClassVar[ModelSpec.Method]
        METHOD_FULL: _ClassVar[ModelSpec.Method]
    METHOD_UNSPECIFIED: ModelSpec.Method
    METHOD_LORA: ModelSpec.Method
    METHOD_QLORA: ModelSpec.Method
    METHOD_FULL: ModelSpec.Method
    class AttnImplementation(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        ATTN_IMPLEMENTATION_UNSPECIFIED: _ClassVar[ModelSpec.AttnImplementation]
        ATTN_IMPLEMENTATION_AUTO: _ClassVar[ModelSpec.AttnImplementation]
        ATTN_IMPLEMENTATION_SDPA: _ClassVar[ModelSpec.AttnImplementation]
        ATTN_IMPLEMENTATION_FLEX_ATTENTION: _ClassVar[ModelSpec.AttnImplementation]
        ATTN_IMPLEMENTATION_FLASH_ATTENTION_2: _ClassVar[ModelSpec.AttnImplementation]
        ATTN_IMPLEMENTATION_EAGER: _ClassVar[ModelSpec.AttnImplementation]
    ATTN_IMPLEMENTATION_UNSPECIFIED: ModelSpec.AttnImplementation
    ATTN_IMPLEMENTATION_AUTO: ModelSpec.AttnImplementation
    ATTN_IMPLEMENTATION_SDPA: ModelSpec.AttnImplementation
    ATTN_IMPLEMENTATION_FLEX_ATTENTION: ModelSpec.AttnImplementation
    ATTN_IMPLEMENTATION_FLASH_ATTENTION_2: ModelSpec.AttnImplementation
    ATTN_IMPLEMENTATION_EAGER: ModelSpec.AttnImplementation
    NAME_OR_PATH_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    LORA_FIELD_NUMBER: _ClassVar[int]
    QUANTIZATION_FIELD_NUMBER: _ClassVar[int]
    INIT_ADAPTER_FIELD_NUMBER: _ClassVar[int]
    TRUST_REMOTE_CODE_FIELD_NUMBER: _ClassVar[int]
    ATTN_IMPLEMENTATION_FIELD_NUMBER: _ClassVar[int]
    name_or_path: str
    method: ModelSpec.Method
    lora: LoraSpec
    quantization: QuantizationSpec
    init_adapter: str
    trust_remote_code: bool
    attn_implementation: ModelSpec.AttnImplementation
    def __init__(self, name_or_path: _Optional[str] = ..., method: _Optional[_Union[ModelSpec.Method, str]] = ..., lora: _Optional[_Union[LoraSpec, _Mapping]] = ..., quantization: _Optional[_Union[QuantizationSpec, _Mapping]] = ..., init_adapter: _Optional[str] = ..., trust_remote_code: _Optional[bool] = ..., attn_implementation: _Optional[_Union[ModelSpec.AttnImplementation, str]] = ...) -> None: ...

class DataSource(_message.Message):
    __slots__ = ("path", "weight")
    PATH_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    path: str
    weight: float
    def __init__(self, path: _Optional[str] = ..., weight: _Optional[float] = ...) -> None: ...

class MixSource(_message.Message):
    __slots__ = ("path", "ratio")
    PATH_FIELD_NUMBER: _ClassVar[int]
    RATIO_FIELD_NUMBER: _ClassVar[int]
    path: str
    ratio: float
    def __init__(self, path: _Optional[str] = ..., ratio: _Optional[float] = ...) -> None: ...

class DataSpec(_message.Message):
    __slots__ = ("train", "validation", "validation_split", "stratify_by", "mix", "max_seq_len", "packing", "loss_on", "on_too_long", "template_date", "cache_dir")
    class LossOn(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        LOSS_ON_UNSPECIFIED: _ClassVar[DataSpec.LossOn]
        LOSS_ON_ASSISTANT: _ClassVar[DataSpec.LossOn]
        LOSS_ON_LAST_ASSISTANT: _ClassVar[DataSpec.LossOn]
        LOSS_ON_ALL: _ClassVar[DataSpec.LossOn]
    LOSS_ON_UNSPECIFIED: DataSpec.LossOn
    LOSS_ON_ASSISTANT: DataSpec.LossOn
    LOSS_ON_LAST_ASSISTANT: DataSpec.LossOn
    LOSS_ON_ALL: DataSpec.LossOn
    class OnTooLong(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        ON_TOO_LONG_UNSPECIFIED: _ClassVar[DataSpec.OnTooLong]
        ON_TOO_LONG_DROP: _ClassVar[DataSpec.OnTooLong]
        ON_TOO_LONG_TRUNCATE: _ClassVar[DataSpec.OnTooLong]
    ON_TOO_LONG_UNSPECIFIED: DataSpec.OnTooLong
    ON_TOO_LONG_DROP: DataSpec.OnTooLong
    ON_TOO_LONG_TRUNCATE: DataSpec.OnTooLong
    TRAIN_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_SPLIT_FIELD_NUMBER: _ClassVar[int]
    STRATIFY_BY_FIELD_NUMBER: _ClassVar[int]
    MIX_FIELD_NUMBER: _ClassVar[int]
    MAX_SEQ_LEN_FIELD_NUMBER: _ClassVar[int]
    PACKING_FIELD_NUMBER: _ClassVar[int]
    LOSS_ON_FIELD_NUMBER: _ClassVar[int]
    ON_TOO_LONG_FIELD_NUMBER: _ClassVar[int]
    TEMPLATE_DATE_FIELD_NUMBER: _ClassVar[int]
    CACHE_DIR_FIELD_NUMBER: _ClassVar[int]
    train: _containers.RepeatedCompositeFieldContainer[DataSource]
    validation: str
    validation_split: float
    stratify_by: str
    mix: _containers.RepeatedCompositeFieldContainer[MixSource]
    max_seq_len: int
    packing: bool
    loss_on: DataSpec.LossOn
    on_too_long: DataSpec.OnTooLong
    template_date: str
    cache_dir: str
    def __init__(self, train: _Optional[_Iterable[_Union[DataSource, _Mapping]]] = ..., validation: _Optional[str] = ..., validation_split: _Optional[float] = ..., stratify_by: _Optional[str] = ..., mix: _Optional[_Iterable[_Union[MixSource, _Mapping]]] = ..., max_seq_len: _Optional[int] = ..., packing: _Optional[bool] = ..., loss_on: _Optional[_Union[DataSpec.LossOn, str]] = ..., on_too_long: _Optional[_Union[DataSpec.OnTooLong, str]] = ..., template_date: _Optional[str] = ..., cache_dir: _Optional[str] = ...) -> None: ...

class TrainSpec(_message.Message):
    __slots__ = ("epochs", "max_steps", "learning_rate", "micro_batch_size", "global_batch_size", "lr_scheduler", "warmup_ratio", "warmup_steps", "weight_decay", "max_grad_norm", "no_max_grad_norm", "precision", "gradient_checkpointing", "seed", "log_every_steps")
    class LrScheduler(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        LR_SCHEDULER_UNSPECIFIED: _ClassVar[TrainSpec.LrScheduler]
        LR_SCHEDULER_COSINE: _ClassVar[TrainSpec.LrScheduler]
        LR_SCHEDULER_LINEAR: _ClassVar[TrainSpec.LrScheduler]
        LR_SCHEDULER_CONSTANT: _ClassVar[TrainSpec.LrScheduler]
    LR_SCHEDULER_UNSPECIFIED: TrainSpec.LrScheduler
    LR_SCHEDULER_COSINE: TrainSpec.LrScheduler
    LR_SCHEDULER_LINEAR: TrainSpec.LrScheduler
    LR_SCHEDULER_CONSTANT: TrainSpec.LrScheduler
    class Precision(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        PRECISION_UNSPECIFIED: _ClassVar[TrainSpec.Precision]
        PRECISION_AUTO: _ClassVar[TrainSpec.Precision]
        PRECISION_BF16: _ClassVar[TrainSpec.Precision]
        PRECISION_FP16: _ClassVar[TrainSpec.Precision]
        PRECISION_FP32: _ClassVar[TrainSpec.Precision]
    PRECISION_UNSPECIFIED: TrainSpec.Precision
    PRECISION_AUTO: TrainSpec.Precision
    PRECISION_BF16: TrainSpec.Precision
    PRECISION_FP16: TrainSpec.Precision
    PRECISION_FP32: TrainSpec.Precision
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    MAX_STEPS_FIELD_NUMBER: _ClassVar[int]
    LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    MICRO_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    GLOBAL_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    LR_SCHEDULER_FIELD_NUMBER: _ClassVar[int]
    WARMUP_RATIO_FIELD_NUMBER: _ClassVar[int]
    WARMUP_STEPS_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_DECAY_FIELD_NUMBER: _ClassVar[int]
    MAX_GRAD_NORM_FIELD_NUMBER: _ClassVar[int]
    NO_MAX_GRAD_NORM_FIELD_NUMBER: _ClassVar[int]
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    GRADIENT_CHECKPOINTING_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    LOG_EVERY_STEPS_FIELD_NUMBER: _ClassVar[int]
    epochs: float
    max_steps: int
    learning_rate: float
    micro_batch_size: int
    global_batch_size: int
    lr_scheduler: TrainSpec.LrScheduler
    warmup_ratio: float
    warmup_steps: int
    weight_decay: float
    max_grad_norm: float
    no_max_grad_norm: bool
    precision: TrainSpec.Precision
    gradient_checkpointing: bool
    seed: int
    log_every_steps: int
    def __init__(self, epochs: _Optional[float] = ..., max_steps: _Optional[int] = ..., learning_rate: _Optional[float] = ..., micro_batch_size: _Optional[int] = ..., global_batch_size: _Optional[int] = ..., lr_scheduler: _Optional[_Union[TrainSpec.LrScheduler, str]] = ..., warmup_ratio: _Optional[float] = ..., warmup_steps: _Optional[int] = ..., weight_decay: _Optional[float] = ..., max_grad_norm: _Optional[float] = ..., no_max_grad_norm: _Optional[bool] = ..., precision: _Optional[_Union[TrainSpec.Precision, str]] = ..., gradient_checkpointing: _Optional[bool] = ..., seed: _Optional[int] = ..., log_every_steps: _Optional[int] = ...) -> None: ...

class GenerateSpec(_message.Message):
    __slots__ = ("metric", "max_new_tokens", "limit", "samples")
    class Metric(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        METRIC_UNSPECIFIED: _ClassVar[GenerateSpec.Metric]
        METRIC_EXACT_MATCH: _ClassVar[GenerateSpec.Metric]
    METRIC_UNSPECIFIED: GenerateSpec.Metric
    METRIC_EXACT_MATCH: GenerateSpec.Metric
    METRIC_FIELD_NUMBER: _ClassVar[int]
    MAX_NEW_TOKENS_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    metric: GenerateSpec.Metric
    max_new_tokens: int
    limit: int
    samples: int
    def __init__(self, metric: _Optional[_Union[GenerateSpec.Metric, str]] = ..., max_new_tokens: _Optional[int] = ..., limit: _Optional[int] = ..., samples: _Optional[int] = ...) -> None: ...

class EarlyStoppingSpec(_message.Message):
    __slots__ = ("patience", "min_delta")
    PATIENCE_FIELD_NUMBER: _ClassVar[int]
    MIN_DELTA_FIELD_NUMBER: _ClassVar[int]
    patience: int
    min_delta: float
    def __init__(self, patience: _Optional[int] = ..., min_delta: _Optional[float] = ...) -> None: ...

class EvalSpec(_message.Message):
    __slots__ = ("every_steps", "generate", "early_stopping")
    EVERY_STEPS_FIELD_NUMBER: _ClassVar[int]
    GENERATE_FIELD_NUMBER: _ClassVar[int]
    EARLY_STOPPING_FIELD_NUMBER: _ClassVar[int]
    every_steps: int
    generate: GenerateSpec
    early_stopping: EarlyStoppingSpec
    def __init__(self, every_steps: _Optional[int] = ..., generate: _Optional[_Union[GenerateSpec, _Mapping]] = ..., early_stopping: _Optional[_Union[EarlyStoppingSpec, _Mapping]] = ...) -> None: ...

class CheckpointSpec(_message.Message):
    __slots__ = ("every_steps", "keep_last", "keep_best_by", "storage_path")
    class KeepBestBy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        KEEP_BEST_BY_UNSPECIFIED: _ClassVar[CheckpointSpec.KeepBestBy]
        KEEP_BEST_BY_EVAL_LOSS: _ClassVar[CheckpointSpec.KeepBestBy]
        KEEP_BEST_BY_EXACT_MATCH: _ClassVar[CheckpointSpec.KeepBestBy]
    KEEP_BEST_BY_UNSPECIFIED: CheckpointSpec.KeepBestBy
    KEEP_BEST_BY_EVAL_LOSS: CheckpointSpec.KeepBestBy
    KEEP_BEST_BY_EXACT_MATCH: CheckpointSpec.KeepBestBy
    EVERY_STEPS_FIELD_NUMBER: _ClassVar[int]
    KEEP_LAST_FIELD_NUMBER: _ClassVar[int]
    KEEP_BEST_BY_FIELD_NUMBER: _ClassVar[int]
    STORAGE_PATH_FIELD_NUMBER: _ClassVar[int]
    every_steps: int
    keep_last: int
    keep_best_by: CheckpointSpec.KeepBestBy
    storage_path: str
    def __init__(self, every_steps: _Optional[int] = ..., keep_last: _Optional[int] = ..., keep_best_by: _Optional[_Union[CheckpointSpec.KeepBestBy, str]] = ..., storage_path: _Optional[str] = ...) -> None: ...

class ScalingSpec(_message.Message):
    __slots__ = ("num_workers", "use_gpu", "resources_per_worker", "strategy", "max_failures")
    class UseGpu(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        USE_GPU_UNSPECIFIED: _ClassVar[ScalingSpec.UseGpu]
        USE_GPU_AUTO: _ClassVar[ScalingSpec.UseGpu]
        USE_GPU_TRUE: _ClassVar[ScalingSpec.UseGpu]
        USE_GPU_FALSE: _ClassVar[ScalingSpec.UseGpu]
    USE_GPU_UNSPECIFIED: ScalingSpec.UseGpu
    USE_GPU_AUTO: ScalingSpec.UseGpu
    USE_GPU_TRUE: ScalingSpec.UseGpu
    USE_GPU_FALSE: ScalingSpec.UseGpu
    class Strategy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        STRATEGY_UNSPECIFIED: _ClassVar[ScalingSpec.Strategy]
        STRATEGY_DDP: _ClassVar[ScalingSpec.Strategy]
        STRATEGY_FSDP: _ClassVar[ScalingSpec.Strategy]
    STRATEGY_UNSPECIFIED: ScalingSpec.Strategy
    STRATEGY_DDP: ScalingSpec.Strategy
    STRATEGY_FSDP: ScalingSpec.Strategy
    class ResourcesPerWorkerEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    NUM_WORKERS_FIELD_NUMBER: _ClassVar[int]
    USE_GPU_FIELD_NUMBER: _ClassVar[int]
    RESOURCES_PER_WORKER_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    MAX_FAILURES_FIELD_NUMBER: _ClassVar[int]
    num_workers: int
    use_gpu: ScalingSpec.UseGpu
    resources_per_worker: _containers.ScalarMap[str, float]
    strategy: ScalingSpec.Strategy
    max_failures: int
    def __init__(self, num_workers: _Optional[int] = ..., use_gpu: _Optional[_Union[ScalingSpec.UseGpu, str]] = ..., resources_per_worker: _Optional[_Mapping[str, float]] = ..., strategy: _Optional[_Union[ScalingSpec.Strategy, str]] = ..., max_failures: _Optional[int] = ...) -> None: ...

class SearchDistribution(_message.Message):
    __slots__ = ("loguniform", "uniform", "randint", "choice", "grid")
    LOGUNIFORM_FIELD_NUMBER: _ClassVar[int]
    UNIFORM_FIELD_NUMBER: _ClassVar[int]
    RANDINT_FIELD_NUMBER: _ClassVar[int]
    CHOICE_FIELD_NUMBER: _ClassVar[int]
    GRID_FIELD_NUMBER: _ClassVar[int]
    loguniform: _containers.RepeatedScalarFieldContainer[float]
    uniform: _containers.RepeatedScalarFieldContainer[float]
    randint: _containers.RepeatedScalarFieldContainer[int]
    choice: _containers.RepeatedCompositeFieldContainer[_struct_pb2.Value]
    grid: _containers.RepeatedCompositeFieldContainer[_struct_pb2.Value]
    def __init__(self, loguniform: _Optional[_Iterable[float]] = ..., uniform: _Optional[_Iterable[float]] = ..., randint: _Optional[_Iterable[int]] = ..., choice: _Optional[_Iterable[_Union[_struct_pb2.Value, _Mapping]]] = ..., grid: _Optional[_Iterable[_Union[_struct_pb2.Value, _Mapping]]] = ...) -> None: ...

class TuneSpec(_message.Message):
    __slots__ = ("search_space", "search", "scheduler", "num_samples", "max_concurrent_trials", "metric", "mode", "time_budget_s", "grace_period_steps", "reduction_factor")
    class Search(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        SEARCH_UNSPECIFIED: _ClassVar[TuneSpec.Search]
        SEARCH_RANDOM: _ClassVar[TuneSpec.Search]
        SEARCH_GRID: _ClassVar[TuneSpec.Search]
        SEARCH_OPTUNA: _ClassVar[TuneSpec.Search]
        SEARCH_ONE_AT_A_TIME: _ClassVar[TuneSpec.Search]
    SEARCH_UNSPECIFIED: TuneSpec.Search
    SEARCH_RANDOM: TuneSpec.Search
    SEARCH_GRID: TuneSpec.Search
    SEARCH_OPTUNA: TuneSpec.Search
    SEARCH_ONE_AT_A_TIME: TuneSpec.Search
    class Scheduler(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        SCHEDULER_UNSPECIFIED: _ClassVar[TuneSpec.Scheduler]
        SCHEDULER_ASHA: _ClassVar[TuneSpec.Scheduler]
        SCHEDULER_NONE: _ClassVar[TuneSpec.Scheduler]
    SCHEDULER_UNSPECIFIED: TuneSpec.Scheduler
    SCHEDULER_ASHA: TuneSpec.Scheduler
    SCHEDULER_NONE: TuneSpec.Scheduler
    class Metric(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        METRIC_UNSPECIFIED: _ClassVar[TuneSpec.Metric]
        METRIC_EVAL_LOSS: _ClassVar[TuneSpec.Metric]
        METRIC_EXACT_MATCH: _ClassVar[TuneSpec.Metric]
    METRIC_UNSPECIFIED: TuneSpec.Metric
    METRIC_EVAL_LOSS: TuneSpec.Metric
    METRIC_EXACT_MATCH: TuneSpec.Metric
    class Mode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        MODE_UNSPECIFIED: _ClassVar[TuneSpec.Mode]
        MODE_MIN: _ClassVar[TuneSpec.Mode]
        MODE_MAX: _ClassVar[TuneSpec.Mode]
    MODE_UNSPECIFIED: TuneSpec.Mode
    MODE_MIN: TuneSpec.Mode
    MODE_MAX: TuneSpec.Mode
    class SearchSpaceEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: SearchDistribution
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[SearchDistribution, _Mapping]] = ...) -> None: ...
    SEARCH_SPACE_FIELD_NUMBER: _ClassVar[int]
    SEARCH_FIELD_NUMBER: _ClassVar[int]
    SCHEDULER_FIELD_NUMBER: _ClassVar[int]
    NUM_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENT_TRIALS_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    TIME_BUDGET_S_FIELD_NUMBER: _ClassVar[int]
    GRACE_PERIOD_STEPS_FIELD_NUMBER: _ClassVar[int]
    REDUCTION_FACTOR_FIELD_NUMBER: _ClassVar[int]
    search_space: _containers.MessageMap[str, SearchDistribution]
    search: TuneSpec.Search
    scheduler: TuneSpec.Scheduler
    num_samples: int
    max_concurrent_trials: int
    metric: TuneSpec.Metric
    mode: TuneSpec.Mode
    time_budget_s: float
    grace_period_steps: int
    reduction_factor: float
    def __init__(self, search_space: _Optional[_Mapping[str, SearchDistribution]] = ..., search: _Optional[_Union[TuneSpec.Search, str]] = ..., scheduler: _Optional[_Union[TuneSpec.Scheduler, str]] = ..., num_samples: _Optional[int] = ..., max_concurrent_trials: _Optional[int] = ..., metric: _Optional[_Union[TuneSpec.Metric, str]] = ..., mode: _Optional[_Union[TuneSpec.Mode, str]] = ..., time_budget_s: _Optional[float] = ..., grace_period_steps: _Optional[int] = ..., reduction_factor: _Optional[float] = ...) -> None: ...

class TrackingSpec(_message.Message):
    __slots__ = ("mlflow", "tensorboard", "wandb")
    class Mlflow(_message.Message):
        __slots__ = ("tracking_uri", "experiment", "run_name", "tags")
        class TagsEntry(_message.Message):
            __slots__ = ("key", "value")
            KEY_FIELD_NUMBER: _ClassVar[int]
            VALUE_FIELD_NUMBER: _ClassVar[int]
            key: str
            value: str
            def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
        TRACKING_URI_FIELD_NUMBER: _ClassVar[int]
        EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
        RUN_NAME_FIELD_NUMBER: _ClassVar[int]
        TAGS_FIELD_NUMBER: _ClassVar[int]
        tracking_uri: str
        experiment: str
        run_name: str
        tags: _containers.ScalarMap[str, str]
        def __init__(self, tracking_uri: _Optional[str] = ..., experiment: _Optional[str] = ..., run_name: _Optional[str] = ..., tags: _Optional[_Mapping[str, str]] = ...) -> None: ...
    class TensorBoard(_message.Message):
        __slots__ = ("log_dir",)
        LOG_DIR_FIELD_NUMBER: _ClassVar[int]
        log_dir: str
        def __init__(self, log_dir: _Optional[str] = ...) -> None: ...
    class Wandb(_message.Message):
        __slots__ = ("project", "entity", "name", "tags", "mode")
        class Mode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
            __slots__ = ()
            MODE_UNSPECIFIED: _ClassVar[TrackingSpec.Wandb.Mode]
            MODE_ONLINE: _ClassVar[TrackingSpec.Wandb.Mode]
            MODE_OFFLINE: _ClassVar[TrackingSpec.Wandb.Mode]
        MODE_UNSPECIFIED: TrackingSpec.Wandb.Mode
        MODE_ONLINE: TrackingSpec.Wandb.Mode
        MODE_OFFLINE: TrackingSpec.Wandb.Mode
        PROJECT_FIELD_NUMBER: _ClassVar[int]
        ENTITY_FIELD_NUMBER: _ClassVar[int]
        NAME_FIELD_NUMBER: _ClassVar[int]
        TAGS_FIELD_NUMBER: _ClassVar[int]
        MODE_FIELD_NUMBER: _ClassVar[int]
        project: str
        entity: str
        name: str
        tags: _containers.RepeatedScalarFieldContainer[str]
        mode: TrackingSpec.Wandb.Mode
        def __init__(self, project: _Optional[str] = ..., entity: _Optional[str] = ..., name: _Optional[str] = ..., tags: _Optional[_Iterable[str]] = ..., mode: _Optional[_Union[TrackingSpec.Wandb.Mode, str]] = ...) -> None: ...
    MLFLOW_FIELD_NUMBER: _ClassVar[int]
    TENSORBOARD_FIELD_NUMBER: _ClassVar[int]
    WANDB_FIELD_NUMBER: _ClassVar[int]
    mlflow: TrackingSpec.Mlflow
    tensorboard: TrackingSpec.TensorBoard
    wandb: TrackingSpec.Wandb
    def __init__(self, mlflow: _Optional[_Union[TrackingSpec.Mlflow, _Mapping]] = ..., tensorboard: _Optional[_Union[TrackingSpec.TensorBoard, _Mapping]] = ..., wandb: _Optional[_Union[TrackingSpec.Wandb, _Mapping]] = ...) -> None: ...

class JobSpec(_message.Message):
    __slots__ = ("model", "data", "train", "eval", "checkpoint", "scaling", "output_dir", "tune", "tracking")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    TRAIN_FIELD_NUMBER: _ClassVar[int]
    EVAL_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    SCALING_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_DIR_FIELD_NUMBER: _ClassVar[int]
    TUNE_FIELD_NUMBER: _ClassVar[int]
    TRACKING_FIELD_NUMBER: _ClassVar[int]
    model: ModelSpec
    data: DataSpec
    train: TrainSpec
    eval: EvalSpec
    checkpoint: CheckpointSpec
    scaling: ScalingSpec
    output_dir: str
    tune: TuneSpec
    tracking: TrackingSpec
    def __init__(self, model: _Optional[_Union[ModelSpec, _Mapping]] = ..., data: _Optional[_Union[DataSpec, _Mapping]] = ..., train: _Optional[_Union[TrainSpec, _Mapping]] = ..., eval: _Optional[_Union[EvalSpec, _Mapping]] = ..., checkpoint: _Optional[_Union[CheckpointSpec, _Mapping]] = ..., scaling: _Optional[_Union[ScalingSpec, _Mapping]] = ..., output_dir: _Optional[str] = ..., tune: _Optional[_Union[TuneSpec, _Mapping]] = ..., tracking: _Optional[_Union[TrackingSpec, _Mapping]] = ...) -> None: ...

class Progress(_message.Message):
    __slots__ = ("step", "total_steps", "epoch", "eval_loss", "tokens_per_second", "train_loss", "eta")
    STEP_FIELD_NUMBER: _ClassVar[int]
    TOTAL_STEPS_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    EVAL_LOSS_FIELD_NUMBER: _ClassVar[int]
    TOKENS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    TRAIN_LOSS_FIELD_NUMBER: _ClassVar[int]
    ETA_FIELD_NUMBER: _ClassVar[int]
    step: int
    total_steps: int
    epoch: float
    eval_loss: float
    tokens_per_second: float
    train_loss: float
    eta: _duration_pb2.Duration
    def __init__(self, step: _Optional[int] = ..., total_steps: _Optional[int] = ..., epoch: _Optional[float] = ..., eval_loss: _Optional[float] = ..., tokens_per_second: _Optional[float] = ..., train_loss: _Optional[float] = ..., eta: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class Output(_message.Message):
    __slots__ = ("output_dir", "adapter_uri", "summary")
    OUTPUT_DIR_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_URI_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    output_dir: str
    adapter_uri: str
    summary: _struct_pb2.Struct
    def __init__(self, output_dir: _Optional[str] = ..., adapter_uri: _Optional[str] = ..., summary: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class SpecWarning(_message.Message):
    __slots__ = ("field", "message")
    FIELD_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    field: str
    message: str
    def __init__(self, field: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class Job(_message.Message):
    __slots__ = ("id", "kind", "spec", "state", "state_reason", "error", "create_time", "start_time", "end_time", "update_time", "progress", "output", "ray_submission_id", "labels", "warnings", "request_id", "attempt", "max_attempts", "error_kind", "tenant", "notify_urls", "queue_position", "priority")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    STATE_REASON_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    RAY_SUBMISSION_ID_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    MAX_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    ERROR_KIND_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    NOTIFY_URLS_FIELD_NUMBER: _ClassVar[int]
    QUEUE_POSITION_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    id: str
    kind: JobKind
    spec: JobSpec
    state: JobState
    state_reason: str
    error: _status_pb2.Status
    create_time: _timestamp_pb2.Timestamp
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    progress: Progress
    output: Output
    ray_submission_id: str
    labels: _containers.ScalarMap[str, str]
    warnings: _containers.RepeatedCompositeFieldContainer[SpecWarning]
    request_id: str
    attempt: int
    max_attempts: int
    error_kind: ErrorKind
    tenant: str
    notify_urls: _containers.RepeatedScalarFieldContainer[str]
    queue_position: int
    priority: int
    def __init__(self, id: _Optional[str] = ..., kind: _Optional[_Union[JobKind, str]] = ..., spec: _Optional[_Union[JobSpec, _Mapping]] = ..., state: _Optional[_Union[JobState, str]] = ..., state_reason: _Optional[str] = ..., error: _Optional[_Union[_status_pb2.Status, _Mapping]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., progress: _Optional[_Union[Progress, _Mapping]] = ..., output: _Optional[_Union[Output, _Mapping]] = ..., ray_submission_id: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., warnings: _Optional[_Iterable[_Union[SpecWarning, _Mapping]]] = ..., request_id: _Optional[str] = ..., attempt: _Optional[int] = ..., max_attempts: _Optional[int] = ..., error_kind: _Optional[_Union[ErrorKind, str]] = ..., tenant: _Optional[str] = ..., notify_urls: _Optional[_Iterable[str]] = ..., queue_position: _Optional[int] = ..., priority: _Optional[int] = ...) -> None: ...

class CreateJobRequest(_message.Message):
    __slots__ = ("spec", "kind", "request_id", "validate_only", "labels", "max_attempts", "notify_urls", "priority")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SPEC_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    VALIDATE_ONLY_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    MAX_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    NOTIFY_URLS_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    spec: JobSpec
    kind: JobKind
    request_id: str
    validate_only: bool
    labels: _containers.ScalarMap[str, str]
    max_attempts: int
    notify_urls: _containers.RepeatedScalarFieldContainer[str]
    priority: int
    def __init__(self, spec: _Optional[_Union[JobSpec, _Mapping]] = ..., kind: _Optional[_Union[JobKind, str]] = ..., request_id: _Optional[str] = ..., validate_only: _Optional[bool] = ..., labels: _Optional[_Mapping[str, str]] = ..., max_attempts: _Optional[int] = ..., notify_urls: _Optional[_Iterable[str]] = ..., priority: _Optional[int] = ...) -> None: ...

class ResumeJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class GetJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class ListJobsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "states", "labels", "view")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    STATES_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    VIEW_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    states: _containers.RepeatedScalarFieldContainer[JobState]
    labels: _containers.ScalarMap[str, str]
    view: JobView
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., states: _Optional[_Iterable[_Union[JobState, str]]] = ..., labels: _Optional[_Mapping[str, str]] = ..., view: _Optional[_Union[JobView, str]] = ...) -> None: ...

class ListJobsResponse(_message.Message):
    __slots__ = ("jobs", "next_page_token")
    JOBS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[Job]
    next_page_token: str
    def __init__(self, jobs: _Optional[_Iterable[_Union[Job, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class CancelJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class DeleteJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class JobEvent(_message.Message):
    __slots__ = ("job_id", "sequence", "time", "level", "type", "message", "data")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    sequence: int
    time: _timestamp_pb2.Timestamp
    level: Level
    type: str
    message: str
    data: _struct_pb2.Struct
    def __init__(self, job_id: _Optional[str] = ..., sequence: _Optional[int] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., level: _Optional[_Union[Level, str]] = ..., type: _Optional[str] = ..., message: _Optional[str] = ..., data: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class WatchJobRequest(_message.Message):
    __slots__ = ("job_id", "after_sequence")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    after_sequence: int
    def __init__(self, job_id: _Optional[str] = ..., after_sequence: _Optional[int] = ...) -> None: ...

class ListJobEventsRequest(_message.Message):
    __slots__ = ("job_id", "after_sequence", "page_size", "page_token")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    after_sequence: int
    page_size: int
    page_token: str
    def __init__(self, job_id: _Optional[str] = ..., after_sequence: _Optional[int] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListJobEventsResponse(_message.Message):
    __slots__ = ("events", "next_page_token")
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[JobEvent]
    next_page_token: str
    def __init__(self, events: _Optional[_Iterable[_Union[JobEvent, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class Checkpoint(_message.Message):
    __slots__ = ("step", "uri", "metrics", "is_best", "create_time")
    STEP_FIELD_NUMBER: _ClassVar[int]
    URI_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    IS_BEST_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    step: int
    uri: str
    metrics: _struct_pb2.Struct
    is_best: bool
    create_time: _timestamp_pb2.Timestamp
    def __init__(self, step: _Optional[int] = ..., uri: _Optional[str] = ..., metrics: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., is_best: _Optional[bool] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListCheckpointsRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class ListCheckpointsResponse(_message.Message):
    __slots__ = ("checkpoints",)
    CHECKPOINTS_FIELD_NUMBER: _ClassVar[int]
    checkpoints: _containers.RepeatedCompositeFieldContainer[Checkpoint]
    def __init__(self, checkpoints: _Optional[_Iterable[_Union[Checkpoint, _Mapping]]] = ...) -> None: ...

class GetJobLogsRequest(_message.Message):
    __slots__ = ("job_id", "tail_lines", "follow")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    TAIL_LINES_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    tail_lines: int
    follow: bool
    def __init__(self, job_id: _Optional[str] = ..., tail_lines: _Optional[int] = ..., follow: _Optional[bool] = ...) -> None: ...

class LogChunk(_message.Message):
    __slots__ = ("text",)
    TEXT_FIELD_NUMBER: _ClassVar[int]
    text: str
    def __init__(self, text: _Optional[str] = ...) -> None: ...
