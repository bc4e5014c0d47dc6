"""LoRA and QLoRA on a ~1B-parameter Llama shape on one CUDA GPU: tokens/s, model FLOPs utilisation, and the
peak memory the worker held against `raysft estimate`'s prediction for the same spec.

Run: python benchmarks/bench_gpu.py [--quick]   (prints one JSON object; needs CUDA)

The model is `init_tiny`'s random-weight Llama at hidden 2048, 20 layers, 16 heads, SwiGLU 5472 (1.0B
parameters without the embeddings; the tokenizer is trained on the chat mix, so the vocabulary is small),
trained by `raysft train` on 1 Ray Train worker, bf16, packed rows of 1024 tokens, micro batch 4, global 8.
tokens/s is the median of the per-step `tokens_per_s` raysft logs (real tokens, padding excluded) after
step 2. MFU counts 4 × parameters FLOPs per token (forward, and backward through the frozen base to the
adapters; no weight gradients for it; recomputation not counted) against the GPU's dense bf16 peak.
On CUDA it also records the loss path's `loss_memory` (peak allocated by one step, old path and new) and
`trained_positions_speedup` (benchmarks/bench_loss.py).
"""

from __future__ import annotations

import contextlib
import io
import json
import statistics
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` and `raysft` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import chat_mix, write_jsonl

__all__ = ["run", "SHAPE_1B"]

SHAPE_1B = {"hidden_size": 2048, "layers": 20, "heads": 16}
_PEAK_BF16 = (("H100 PCIe", 756e12), ("H100", 989e12), ("H200", 989e12), ("A100", 312e12), ("L40S", 362e12))


def peak_bf16_flops(device_name: str) -> float | None:
    """Dense bf16 peak of a GPU by its name, or None when unknown."""
    return next((flops for key, flops in _PEAK_BF16 if key in device_name), None)


def _train(model: Path, data: Path, out: Path, method: str, steps: int, use_gpu: bool) -> dict:
    from raysft.config import load_spec
    from raysft.estimate import estimate_for_spec
    from raysft.train.launcher import run_training
    from raysft.train.runlog import read_jsonl

    spec = load_spec({
        "model": {"name_or_path": str(model), "method": method, "lora": {"rank": 16, "alpha": 32}},
        "data": {"train": [str(data)], "validation_split": 0.0, "max_seq_len": 1024},
        "train": {"max_steps": steps, "micro_batch_size": 4, "global_batch_size": 8, "learning_rate": 2e-4,
                  "precision": "bf16" if use_gpu else "fp32"},
        "checkpoint": {"keep_last": 1},
        "scaling": {"num_workers": 1, "use_gpu": use_gpu},
        "output_dir": str(out),
    })
    with contextlib.redirect_stdout(io.StringIO()):
        run_training(spec)
    steps_logged = [m for m in read_jsonl(out / "metrics.jsonl") if "train_loss" in m]
    steady = [m["tokens_per_s"] for m in steps_logged[2:]] or [m["tokens_per_s"] for m in steps_logged]
    est = estimate_for_spec(spec, gpu_memory_gb=None)
    peak = max((m.get("peak_memory_gb", 0.0) for m in steps_logged), default=0.0) or None
    return {"tokens_per_s": round(statistics.median(steady), 1), "steps": len(steps_logged),
            "peak_memory_gb": round(peak, 2) if peak else None, "estimate_gb": est["total_gb"],
            "estimate_error_pct": round(100 * (est["total_gb"] - peak) / peak, 1) if peak else None,
            "params": est["total_params"]}


def run(quick: bool = True, *, shape: dict | None = None, use_gpu: bool | None = None, workdir: str | Path | None = None) -> dict:
    """Train LoRA and QLoRA on `shape` (default ~1B) and report each; skipped without CUDA.

    Args:
        quick: 12 steps per method instead of 40.
        shape: init_tiny's hidden_size / layers / heads (tests use a tiny one on the CPU).
        use_gpu: None means "when CUDA is available".
    """
    import torch

    use_gpu = torch.cuda.is_available() if use_gpu is None else use_gpu
    if use_gpu is False and shape is None:
        return {"skipped": "no CUDA device on this machine"}
    from raysft.model.tiny import init_tiny

    shape = shape or SHAPE_1B
    steps = 12 if quick else 40
    device = torch.cuda.get_device_name(0) if use_gpu else "cpu"
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(workdir or tmp)
        data = write_jsonl(root / "chat_mix.jsonl", chat_mix(400))
        model = init_tiny(root / "model", data, vocab_size=2048, **shape)
        result = {"device": device, "shape": shape, "steps": steps}
        for method in ("lora", "qlora"):
            figures = _train(model, data, root / method, method, steps, use_gpu)
            peak = peak_bf16_flops(device)
            figures["mfu"] = round(4 * figures["params"] * figures["tokens_per_s"] / peak, 4) if peak else None
            result[method] = figures
    if use_gpu:  # the loss path's figures, as benchmarks/bench_loss.py takes them on the CPU
        from benchmarks import bench_loss

        result["loss_memory"] = bench_loss.cuda_loss_memory()
        result["trained_positions_speedup"] = bench_loss.trained_positions_speedup(repeats=5 if quick else 20, device="cuda")
    return result


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
