"""Merge a finished run's adapter into its base model and write a standalone Hugging Face model directory.

QLoRA runs are merged into the *dequantised* 4-bit base: the base is quantised exactly as in training,
dequantised to the base checkpoint's dtype, and the adapter added to those weights. The adapter was trained
to correct the NF4 weights, so this reproduces the trained model (float32 tiny model: logits within 2e-6 of
4-bit base + adapter), while adding it to the original weights gives a model the adapter never saw (logits
off by the quantisation error, 0.05 on the tiny model). The price is that the export carries NF4 rounding
in 16/32-bit weights; merging into 4-bit weights instead would re-quantise the sum and lose the update's
fine detail.
"""

from __future__ import annotations

from pathlib import Path
from typing import Union

import torch
from peft import PeftModel
from transformers import AutoConfig

from raysft.model.load import ModelError, find_adapter, load_base, load_tokenizer, resolve_model_path, run_model_spec
from raysft.rundir import RunDir

__all__ = ["merge_adapter"]


def merge_adapter(run_dir: Union[str, Path], dest: Union[str, Path]) -> Path:
    """Write base model + the run's adapter, merged, to `dest` (safetensors, tokenizer, generation config).

    The merged model is saved in the base checkpoint's dtype and loads with
    `AutoModelForCausalLM.from_pretrained(dest)` alone, no PEFT needed. The tokenizer is the base's, with the
    chat template used in training.

    Args:
        run_dir: output_dir of a finished lora/qlora run (`spec.yaml` and `adapter/`).
        dest: new or empty directory to write.

    Returns:
        `dest` as a Path.

    Raises:
        ModelError: `run_dir` lacks spec.yaml or adapter/, its spec is invalid, or `dest` is not empty.
    """
    run, out = RunDir(run_dir), Path(dest).expanduser()
    spec = run_model_spec(run)
    adapter = find_adapter(run.adapter, label="run_dir")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ModelError(f"dest: {dest} exists and is not an empty directory; choose a new path or remove it")

    path = resolve_model_path(spec.name_or_path)
    dtype = _checkpoint_dtype(path, spec.trust_remote_code)
    quantization = spec.quantization if spec.method == "qlora" else None  # JobSpec fills qlora defaults
    # CPU: merging is one pass over the weights. bitsandbytes quantises on CPU with the same blockwise
    # NF4/FP4 scheme as on CUDA (bit equality with a GPU-quantised base is not checked by the tests).
    base = load_base(
        path, device="cpu", dtype=dtype, quantization=quantization, trust_remote_code=spec.trust_remote_code
    )
    if quantization is not None:
        base = base.dequantize(dtype=dtype)
    merged = PeftModel.from_pretrained(base, str(adapter)).merge_and_unload()

    tokenizer = load_tokenizer(spec.name_or_path, trust_remote_code=spec.trust_remote_code)
    generation = merged.generation_config
    if generation.eos_token_id is None:
        generation.eos_token_id = tokenizer.eos_token_id
    if generation.pad_token_id is None:
        generation.pad_token_id = tokenizer.pad_token_id
    out.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def _checkpoint_dtype(path: str, trust_remote_code: bool) -> torch.dtype:
    """The dtype the base checkpoint declares (float32 when it declares none)."""
    dtype = getattr(AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code), "dtype", None)
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype, None)
    return dtype if isinstance(dtype, torch.dtype) else torch.float32
