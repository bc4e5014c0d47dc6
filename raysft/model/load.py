"""Loading base models and tokenizers, and applying PEFT adapters for lora, qlora and full fine-tuning.

- lora: the base in `dtype`, frozen; LoRA adapters from `model.lora` (or continued from `model.init_adapter`).
- qlora: the base quantised to 4-bit NF4/FP4 with bitsandbytes while loading, then LoRA as above. The 4-bit
  storage dtype is the compute dtype, so with `dtype` equal to `quantization.compute_dtype` every frozen
  weight has one dtype and FSDP can shard quantised and plain weights alike. PEFT's
  `prepare_model_for_kbit_training` is not used: beyond freezing and gradient checkpointing (non-reentrant
  here, so no input-gradient hook is needed) it would upcast every non-4-bit weight to float32, breaking that.
  LoRA weights themselves are float32 whatever `dtype` (PEFT's default: small, and precise to update).
- full: every weight trainable.

bitsandbytes on CPU: all compute dtypes (float32, bfloat16, float16) load and train. On CPUs with AVX512-BF16,
bitsandbytes swaps a 4-bit layer to a bfloat16-only inference kernel the first time it runs in eval mode
without gradients; that kernel has no backward, so LoRA gradients taken after any evaluation pass come out
silently wrong (measured: 30% off in layer 0), and it ignores the compute dtype. Models loaded here on a CPU
keep bitsandbytes' generic path instead, which is exact and differentiable in every mode.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Optional, Union

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig, PreTrainedTokenizerBase

from raysft.config import LoraSpec, ModelSpec, QuantizationSpec, SpecError, is_hub_id
from raysft.data.template import chat_template_of
from raysft.model.attention import PACKED_SDPA, register_packed_sdpa
from raysft.rundir import SPEC_FILE, RunDir

__all__ = [
    "ModelError",
    "find_adapter",
    "load_base",
    "load_for_inference",
    "load_model",
    "load_tokenizer",
    "resolve_attn_implementation",
    "run_model_spec",
    "resolve_model_path",
    "trainable_parameters",
]

_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


class ModelError(ValueError):
    """A model, adapter or run directory cannot be used as given; the message names the path and the fix."""


# ------------------------------------------------------------------------------------------ paths


def resolve_model_path(name_or_path: str) -> str:
    """Check a base model reference: a local Hugging Face model directory, or a hub id passed through.

    A string that looks like a path (starts with `.`, `/` or `~`, or whose parent directory exists here)
    must be a directory holding `config.json`. Anything else ("org/name") is a hub id, which transformers
    resolves from the Hugging Face cache or the hub.

    Raises:
        ModelError: a local path that is missing, is a file, is an adapter, or has no config.json.
    """
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if (path / "config.json").is_file():
            return str(path)
        if (path / "adapter_config.json").is_file():
            raise ModelError(
                f"model.name_or_path: {name_or_path} is a PEFT adapter, not a base model; set model.name_or_path "
                f"to its base model and model.init_adapter: {name_or_path}"
            )
        raise ModelError(
            f"model.name_or_path: {name_or_path} has no config.json; point it at a Hugging Face model directory "
            f"(e.g. one written by `raysft model init-tiny`)"
        )
    if path.exists():
        raise ModelError(f"model.name_or_path: {name_or_path} is a file; point it at the model's directory")
    if _looks_like_path(name_or_path):
        raise ModelError(
            f"model.name_or_path: {name_or_path} not found; give an existing model directory or a hub id like org/name"
        )
    return name_or_path


def _looks_like_path(name: str) -> bool:
    # Not shaped like a hub id, or shaped like one whose parent exists locally: the user meant a local path.
    if not is_hub_id(name):
        return True
    parent = Path(name).parent
    return parent != Path(".") and parent.exists()


def find_adapter(path: Union[str, Path], *, label: str = "model.init_adapter") -> Path:
    """The PEFT adapter directory at `path`: `path` itself, or `path/adapter` for a raysft output_dir.

    Args:
        path: a directory with adapter_config.json, or a raysft output_dir holding `adapter/`.
        label: what `path` was given as, for the error message (a spec field or an argument name).

    Raises:
        ModelError: neither `path` nor `path/adapter` holds adapter_config.json.
    """
    root = Path(path).expanduser()
    for candidate in (root, RunDir(root).adapter):
        if (candidate / "adapter_config.json").is_file():
            return candidate
    where = "not found" if not root.exists() else "has no adapter_config.json and no adapter/ subdirectory"
    raise ModelError(
        f"{label}: {path} {where}; give a PEFT adapter directory or the output_dir of a finished raysft lora/qlora run"
    )


# -------------------------------------------------------------------------------------- tokenizer


def load_tokenizer(name_or_path: str, *, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    """Load the fast tokenizer of a base model, ready for chat SFT.

    A missing pad token is set to EOS (padding positions are masked out of the loss and attention); a
    tokenizer without a chat template gets ChatML (`raysft.data.template.DEFAULT_CHAT_TEMPLATE`).

    Raises:
        ModelError: the path is not a model directory, or the hub id is neither cached nor downloadable.
    """
    path = resolve_model_path(name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except OSError as exc:
        raise ModelError(
            f"model.name_or_path: cannot load a tokenizer from {name_or_path}; give a local model directory or put the "
            f"hub id in the Hugging Face cache first (`hf download {name_or_path}`). transformers said: {exc}"
        ) from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.chat_template = chat_template_of(tokenizer)
    return tokenizer


# ------------------------------------------------------------------------------------------ model


def load_model(
    model_spec: ModelSpec,
    *,
    device: Union[torch.device, str] = "cpu",
    dtype: torch.dtype = torch.float32,
    gradient_checkpointing: bool = False,
    trainable: bool = True,
) -> torch.nn.Module:
    """Load the base model a spec names and make it ready to train (or evaluate) by its method.

    Args:
        model_spec: the spec's `model` section.
        device: where the weights go (4-bit quantisation happens on the way there).
        dtype: dtype of every weight that is not 4-bit.
        gradient_checkpointing: recompute activations in backward (non-reentrant, so frozen embeddings
            need no input-gradient hook); also turns the KV cache off. Ignored when not trainable.
        trainable: False returns the model in eval mode with nothing requiring gradients.

    Returns:
        A `PeftModel` for lora/qlora (adapter "default"), the transformers model for full; in train mode
        when trainable. With `init_adapter`, the adapter's saved settings (rank, alpha, targets) apply, not
        `model_spec.lora`; a difference is warned about.

    Raises:
        ModelError: a missing model or adapter path, or a hub id that cannot be loaded.
    """
    device = torch.device(device)
    path = resolve_model_path(model_spec.name_or_path)
    # A bare ModelSpec (not inside a JobSpec) leaves quantization unset for qlora: use its defaults.
    quantization = (model_spec.quantization or QuantizationSpec()) if model_spec.method == "qlora" else None
    model = load_base(
        path, device=device, dtype=dtype, quantization=quantization, trust_remote_code=model_spec.trust_remote_code,
        attn_implementation=resolve_attn_implementation(model_spec.attn_implementation, device, dtype, trainable),
    )
    if model_spec.method == "full":
        model.requires_grad_(trainable)
    else:
        model.requires_grad_(False)
    if gradient_checkpointing and trainable:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    if model_spec.method != "full":
        if model_spec.init_adapter:
            adapter = find_adapter(model_spec.init_adapter)
            _warn_if_settings_differ(adapter, model_spec.lora)
            model = PeftModel.from_pretrained(model, str(adapter), is_trainable=trainable)
        else:
            model = get_peft_model(model, _lora_config(model_spec.lora))
            if not trainable:
                model.requires_grad_(False)
    return model.train() if trainable else model.eval()


def run_model_spec(run: RunDir) -> ModelSpec:
    """The model section of the spec a finished run saved.

    Raises:
        ModelError: the run saved no spec, or its spec is not valid.
    """
    try:
        spec = run.saved_spec()
    except SpecError as exc:
        raise ModelError(f"{run.spec_file}: not a valid spec ({exc}); was it written by raysft?") from None
    if spec is None:
        raise ModelError(f"run_dir: {run.root} has no {SPEC_FILE}; pass the output_dir of a finished raysft run")
    return spec.model


def load_for_inference(
    path: Union[str, Path],
    *,
    device: Union[torch.device, str] = "cpu",
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.nn.Module, PreTrainedTokenizerBase]:
    """Load a finished run or a plain model directory for evaluation or generation.

    Args:
        path: a raysft output_dir (`spec.yaml` + `adapter/`: its base model is loaded the way it was
            trained, 4-bit for qlora, with the adapter on top) or a Hugging Face model directory.
        device: where the weights go.
        dtype: dtype of every weight that is not 4-bit.

    Returns:
        (model in eval mode, the base model's tokenizer).

    Raises:
        ModelError: `path` is neither layout, or its spec.yaml is invalid.
    """
    run = RunDir(path)
    root = run.root
    if run.is_run() and (run.adapter / "adapter_config.json").is_file():
        spec = run_model_spec(run).model_copy(update={"init_adapter": str(run.adapter)})
        model = load_model(spec, device=device, dtype=dtype, trainable=False)
        return model, load_tokenizer(spec.name_or_path, trust_remote_code=spec.trust_remote_code)
    if (root / "config.json").is_file():
        model = load_base(str(root), device=device, dtype=dtype)
        return model.requires_grad_(False).eval(), load_tokenizer(str(root))
    raise ModelError(
        f"{path}: neither a raysft output_dir (spec.yaml and adapter/) nor a model directory (config.json); "
        f"pass the output_dir of a finished lora/qlora run or a Hugging Face model directory"
    )


def resolve_attn_implementation(choice: str, device: torch.device, dtype: torch.dtype, trainable: bool = True) -> str:
    """The transformers attention implementation `model.attn_implementation` means on `device`.

    auto takes flash_attention_2 where it runs (CUDA, `flash-attn` installed, 16-bit weights: the packed
    rows then need no mask at all); on the CPU packed_sdpa (`raysft.model.attention`, SDPA per packed segment, the
    same result as sdpa: 2.7x faster per step on packed rows there, benchmarks/README.md); else sdpa (packed_sdpa
    has not been measured against it on a GPU). flex_attention is never auto's pick: on the CPU it has no
    backward (torch 2.13), and on a GPU it has not been measured against sdpa.

    Raises:
        ModelError: flash_attention_2 without CUDA or without `flash-attn`; flex_attention to train on a CPU.
    """
    from transformers.utils import is_flash_attn_2_available

    flash = device.type == "cuda" and is_flash_attn_2_available()
    if choice == "auto":
        if flash and dtype in (torch.bfloat16, torch.float16):
            return "flash_attention_2"
        return register_packed_sdpa() if device.type == "cpu" else "sdpa"
    if choice == PACKED_SDPA:
        return register_packed_sdpa()
    if choice == "flash_attention_2" and not flash:
        raise ModelError(f"model.attn_implementation: flash_attention_2 needs a CUDA device and the flash-attn package "
                         f"(device here: {device.type}); install flash-attn on the GPU workers or use auto")
    if choice == "flex_attention" and device.type == "cpu" and trainable:
        raise ModelError("model.attn_implementation: flex_attention has no backward on the CPU in this torch; "
                         "use auto (sdpa) to train on CPU workers")
    return choice


def trainable_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts; 4-bit weights count as their unquantised element count."""
    trainable = total = 0
    for param in model.parameters():
        quant_state = getattr(param, "quant_state", None)
        # Params4bit packs two 4-bit values per byte into a flat tensor of the storage dtype.
        n = math.prod(quant_state.shape) if quant_state is not None else param.numel()
        total += n
        trainable += n if param.requires_grad else 0
    return trainable, total


def load_base(
    path: str,
    *,
    device: Union[torch.device, str] = "cpu",
    dtype: torch.dtype = torch.float32,
    quantization: Optional[QuantizationSpec] = None,
    trust_remote_code: bool = False,
    attn_implementation: Optional[str] = None,
) -> torch.nn.Module:
    """Load a causal LM from a resolved path, 4-bit quantised when `quantization` is given.

    Args:
        path: the result of `resolve_model_path`.
        device: where the weights go; 4-bit weights are quantised on the way.
        dtype: dtype of every weight that is not 4-bit.
        quantization: bitsandbytes settings, or None for a plain load.
        trust_remote_code: allow model code from the model repository.
        attn_implementation: a transformers attention implementation (`resolve_attn_implementation`);
            None for transformers' default.

    Returns:
        The transformers model, parameters as loaded (trainable, eval mode).

    Raises:
        ModelError: transformers cannot load `path` (e.g. a hub id that is neither cached nor reachable).
    """
    device = torch.device(device)
    kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
    if quantization is not None:
        compute_dtype = _DTYPES[quantization.compute_dtype]
        if compute_dtype == torch.float16 and device.type == "cpu":
            warnings.warn(
                "model.quantization.compute_dtype: float16 4-bit matmuls are ~15x slower than bfloat16 on CPU; "
                "use bfloat16 or float32 there",
                stacklevel=3,
            )
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=quantization.quant_type,
            bnb_4bit_use_double_quant=quantization.double_quant,
            bnb_4bit_compute_dtype=compute_dtype,
            bnb_4bit_quant_storage=compute_dtype,
        )
    try:
        model = AutoModelForCausalLM.from_pretrained(
            path, dtype=dtype, device_map={"": device}, trust_remote_code=trust_remote_code, **kwargs
        )
    except OSError as exc:
        raise ModelError(
            f"model.name_or_path: cannot load {path}; give a local model directory or put the hub id in the Hugging "
            f"Face cache first (`hf download {path}`). transformers said: {exc}"
        ) from None
    if quantization is not None and device.type == "cpu":
        _keep_generic_4bit_kernel(model)
    return model


def _keep_generic_4bit_kernel(model: torch.nn.Module) -> None:
    # See the module docstring: bitsandbytes' AVX512-BF16 inference repack has no backward and is
    # bfloat16-only. Costs CPU inference speed, which only tests and the quickstart use.
    misread = []
    for name, module in model.named_modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False
            state = module.weight.quant_state
            if state.shape[-1] % state.blocksize:
                misread.append(f"{name} ({state.shape[-1]} inputs)")
    if misread:
        # bitsandbytes 0.50 quantises in blocks over the flattened weight but its CPU kernels dequantise block by
        # row: a row that is not a whole number of blocks reads neighbouring blocks' scales (measured: 2.5x the
        # error, ||Wq - W|| / ||W|| 0.24 instead of NF4's 0.09). Training and evaluation see the same weights.
        warnings.warn(
            f"model.quantization: on CPU, bitsandbytes dequantises 4-bit layers whose input size is not a multiple "
            f"of {state.blocksize} with the wrong scales ({', '.join(misread[:3])}{', ...' if len(misread) > 3 else ''}); "
            f"their weights come out ~2.5x as far from the originals. Train those on a GPU, or use method lora",
            stacklevel=4,
        )


def _lora_config(lora: LoraSpec) -> LoraConfig:
    return LoraConfig(
        r=lora.rank,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        # PEFT's "all-linear" adapts every linear layer except the output head.
        target_modules=lora.target_modules,
        use_rslora=lora.use_rslora,
        use_dora=lora.use_dora,
        task_type="CAUSAL_LM",
    )


def _warn_if_settings_differ(adapter: Path, lora: LoraSpec) -> None:
    saved = json.loads((adapter / "adapter_config.json").read_text())
    spec_values = {"r": ("rank", lora.rank), "lora_alpha": ("alpha", lora.alpha),
                   "use_rslora": ("use_rslora", lora.use_rslora), "use_dora": ("use_dora", lora.use_dora)}
    differ = [f"{name} {saved[key]} (spec: {value})"
              for key, (name, value) in spec_values.items() if key in saved and saved[key] != value]
    if differ:
        warnings.warn(
            f"model.init_adapter: {adapter} was saved with {', '.join(differ)}; training continues with the "
            f"adapter's own settings and model.lora is ignored",
            stacklevel=3,
        )
