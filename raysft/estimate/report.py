"""`raysft estimate`: the per-GPU memory estimate of a spec, the fit check and what would fit instead."""

from __future__ import annotations

import math
import sys
from typing import Optional

from raysft.config import JobSpec, load_spec
from raysft.estimate.memory import GB, memory_breakdown
from raysft.estimate.shape import read_model_shape

__all__ = ["estimate_for_spec", "format_estimate"]

# Memory of the GPUs Ray reports as `accelerator_type:<name>`; ambiguous names take the smaller model.
_GPU_MEMORY_GB = {"T4": 16, "V100": 16, "A10G": 24, "L4": 24, "L40S": 48, "A100": 40, "H100": 80, "H200": 141,
                  "H20": 96, "B200": 180, "RTX-PRO-6000": 96}
_FSDP_SIZES = (2, 4, 8, 16, 32, 64)
_LABELS = {"base_weights": "base weights", "adapter_weights": "adapter weights", "gradients": "gradients",
           "optimizer_states": "optimizer states", "activations": "activations", "logits": "logits",
           "runtime": "runtime", "fragmentation": "fragmentation"}


def estimate_for_spec(spec: JobSpec, gpu_memory_gb: Optional[float] = None) -> dict:
    """Predict peak memory per GPU for `spec`, check it against the GPU size and suggest what would fit.

    Reads only the base model's config.json. With `gpu_memory_gb` None and Ray initialised, the GPU
    size comes from the connected cluster's `accelerator_type` (the smallest GPU when several kinds).

    Args:
        spec: a validated job spec.
        gpu_memory_gb: memory of one GPU in GB (2^30 bytes); None to detect it or skip the fit check.

    Returns:
        A JSON-ready dict: `total_gb` (predicted peak per GPU), `breakdown_gb`, `total_params`,
        `trainable_params`, `gpu_memory_gb`, `fits` (None when the GPU size is unknown), `suggestions`
        (when it does not fit: {"change", "overrides", "total_gb"} items, each fitting when applied),
        the setup it assumed and `notes` on its assumptions.

    Raises:
        EstimateError: the model's config.json cannot be found or is not a Llama-shaped decoder.
    """
    shape = read_model_shape(spec.model.name_or_path)
    est = _estimate(spec, shape)
    if gpu_memory_gb is None:
        gpu_memory_gb, source = _cluster_gpu_memory_gb()
        if source:
            est["notes"].append(source)
    est["gpu_memory_gb"] = gpu_memory_gb
    est["fits"] = None if gpu_memory_gb is None else est["total_gb"] <= gpu_memory_gb
    est["suggestions"] = _suggestions(spec, shape, gpu_memory_gb) if est["fits"] is False else []
    return est


def _estimate(spec: JobSpec, shape) -> dict:
    mem = memory_breakdown(spec, shape)
    m, t, s = spec.model, spec.train, spec.scaling
    breakdown = {k: round(v / GB, 2) for k, v in mem["bytes"].items()}
    return {
        "model": m.name_or_path,
        "method": m.method,
        "precision": mem["precision"],
        "device": mem["device"],
        "micro_batch_size": t.micro_batch_size,
        "max_seq_len": spec.data.max_seq_len,
        "gradient_checkpointing": t.gradient_checkpointing,
        "strategy": s.strategy,
        "num_workers": s.num_workers,
        "total_params": mem["total_params"],
        "trainable_params": mem["trainable_params"],
        "breakdown_gb": breakdown,
        "total_gb": round(sum(mem["bytes"].values()) / GB, 2),
        "notes": mem["notes"],
    }


def _total_gb(spec: JobSpec, shape) -> float:
    return round(sum(memory_breakdown(spec, shape)["bytes"].values()) / GB, 2)


def _apply(spec: JobSpec, overrides: list[str]) -> JobSpec:
    return load_spec(spec.model_dump(mode="json"), overrides)


def _suggestions(spec: JobSpec, shape, gpu_gb: float) -> list[dict]:
    """Single changes that fit, each with its own estimate; else the least intrusive combination that fits."""
    t, m = spec.train, spec.model
    singles: list[tuple[str, list[str]]] = []
    if not t.gradient_checkpointing:
        singles.append(("gradient checkpointing (~30% more compute)", ["train.gradient_checkpointing=true"]))
    per_worker = t.global_batch_size // spec.scaling.num_workers
    for mb in range(t.micro_batch_size - 1, 0, -1):
        if per_worker % mb == 0 and _fits(spec, shape, [f"train.micro_batch_size={mb}"], gpu_gb):
            singles.append((f"micro batch {mb} with {per_worker // mb} accumulation steps (same global batch)",
                            [f"train.micro_batch_size={mb}"]))
            break
    if m.method != "qlora":
        singles.append(("qlora: 4-bit NF4 base weights under LoRA adapters", ["model.method=qlora"]))
    fsdp = _fsdp_overrides(spec, shape, gpu_gb, [])
    if fsdp:
        singles.append((f"fsdp over {fsdp[1].split('=')[1]} GPUs (weights, gradients, optimizer states sharded)", fsdp))
    fitting = [x for x in (_suggestion(spec, shape, c, ov) for c, ov in singles) if x["total_gb"] <= gpu_gb]
    if fitting:
        return fitting
    # Nothing alone is enough: stack the savers from least to most intrusive, then shard.
    combined: list[str] = []
    steps = [["train.gradient_checkpointing=true"] if not t.gradient_checkpointing else [],
             ["train.micro_batch_size=1"] if t.micro_batch_size > 1 else [],
             ["model.method=qlora"] if m.method != "qlora" else []]
    for step in steps:
        combined += step
        if step and _fits(spec, shape, combined, gpu_gb):
            return [_suggestion(spec, shape, "together: " + ", ".join(combined), combined)]
    combined += _fsdp_overrides(spec, shape, gpu_gb, combined)
    best = _suggestion(spec, shape, "together: " + ", ".join(combined), combined)
    return [best] if best["total_gb"] <= gpu_gb else []


def _suggestion(spec: JobSpec, shape, change: str, overrides: list[str]) -> dict:
    return {"change": change, "overrides": overrides, "total_gb": _total_gb(_apply(spec, overrides), shape)}


def _fits(spec: JobSpec, shape, overrides: list[str], gpu_gb: float) -> bool:
    return _total_gb(_apply(spec, overrides), shape) <= gpu_gb


def _fsdp_overrides(spec: JobSpec, shape, gpu_gb: float, base: list[str]) -> list[str]:
    """The smallest FSDP world size (with a global batch it divides) that fits, as overrides; [] if none."""
    current = _apply(spec, base)
    t = current.train
    for n in _FSDP_SIZES:
        if n <= (current.scaling.num_workers if current.scaling.strategy == "fsdp" else 1):
            continue
        step = t.micro_batch_size * n
        overrides = ["scaling.strategy=fsdp", f"scaling.num_workers={n}"]
        if t.global_batch_size % step:
            overrides.append(f"train.global_batch_size={math.ceil(t.global_batch_size / step) * step}")
        if _fits(current, shape, overrides, gpu_gb):
            return overrides
    return []


def _cluster_gpu_memory_gb() -> tuple[Optional[float], str]:
    # Only when the caller already connected: importing or starting Ray here would cost seconds.
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return None, ""
    kinds = [k.split(":", 1)[1] for k in ray.cluster_resources() if k.startswith("accelerator_type:")]
    known = {k: _GPU_MEMORY_GB[k] for k in kinds if k in _GPU_MEMORY_GB}
    if not known:
        return None, ""
    kind = min(known, key=known.get)
    return float(known[kind]), f"GPU size from the Ray cluster: {kind}, {known[kind]} GB (pass --gpu-memory-gb to override)"


# ----------------------------------------------------------------------------------------- output


def format_estimate(est: dict) -> str:
    """The estimate as a few lines for a person: setup, breakdown, total, fit and suggestions."""
    lines = [
        f"[raysft] memory estimate for {est['model']}: {est['method']}, {est['precision']}, micro batch "
        f"{est['micro_batch_size']} × {est['max_seq_len']} tokens, gradient checkpointing "
        f"{'on' if est['gradient_checkpointing'] else 'off'}, {est['strategy']} × {est['num_workers']}",
        f"  parameters        {_count(est['total_params'])} total, {_count(est['trainable_params'])} trainable "
        f"({est['trainable_params'] / est['total_params']:.2%})",
    ]
    for key, gb in est["breakdown_gb"].items():
        if gb:
            lines.append(f"  {_LABELS[key]:<17} {gb:7.2f} GB")
    per = "GPU" if est["device"] == "gpu" else "worker"
    lines.append(f"  {'total per ' + per:<17} {est['total_gb']:7.2f} GB")
    gpu = est.get("gpu_memory_gb")
    if est.get("fits") is True:
        lines.append(f"fits a {gpu:g} GB GPU ({gpu - est['total_gb']:.1f} GB to spare)")
    elif est.get("fits") is False:
        lines.append(f"does NOT fit a {gpu:g} GB GPU; " + ("what would:" if est["suggestions"] else
                                                            "no combination of the usual changes fits; use larger GPUs"))
        for sug in est["suggestions"]:
            lines.append(f"  - {sug['change']}: {sug['total_gb']:.2f} GB  [{' '.join(sug['overrides'])}]")
    else:
        lines.append("GPU size unknown: pass --gpu-memory-gb N for a fit check")
    lines += [f"note: {n}" for n in est["notes"]]
    return "\n".join(lines)


def _count(n: int) -> str:
    return f"{n / 1e9:.2f} B" if n >= 1e9 else f"{n / 1e6:.1f} M"
