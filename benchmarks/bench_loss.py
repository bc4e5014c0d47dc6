"""The loss path's memory and speed: logits only at positions with a target, in chunks, against the full-logits
path raysft used before (kept here, and only here, as `full_logits_loss`; the loss tests compare against it).

    python benchmarks/bench_loss.py [--quick]   (prints one JSON object)

loss_memory: one training step (forward + backward of `token_loss`, LoRA r=8 on a hidden-128 two-layer Llama,
fp32) on one packed row of 4,096 tokens, every position trained, at vocabularies of 151,936 (Qwen) and 32,000;
the figure is the peak RSS the step adds over the loaded model (the first step at that shape, and the one after it),
each path with its attention (old: sdpa; new: `auto`), each configuration in a fresh subprocess on the allocator
raysft's CPU workers get (jemalloc; `RAYSFT_CPU_ALLOCATOR=system` measures glibc's); the new path's children also
give `raysft estimate` for the step against the peak over the bare runtime.
trained_positions_speedup: median step time on packed rows of a classification-like mix (~4% of the tokens
trained) at a 32,000-token vocabulary, old path and new interleaved in one process, and `packed_attention`.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` and `raysft` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import median

__all__ = ["run", "full_logits_loss", "loss_memory", "trained_positions_speedup", "cuda_loss_memory", "packed_batch"]

_ROOT = Path(__file__).resolve().parents[1]
_SHAPE = {"hidden_size": 128, "intermediate_size": 344, "num_hidden_layers": 2, "num_attention_heads": 4,
          "num_key_value_heads": 4}


def full_logits_loss(model, batch: dict):
    """raysft's loss before logits-where-there-is-a-loss: (B, T, V) logits and a float32 cross-entropy at every
    position. Same contract as `raysft.train.loss.token_loss`; the reference its tests and benchmarks compare."""
    import torch.nn.functional as F

    from raysft.train.loss import unwrap

    labels, positions = batch["labels"], batch["position_ids"]
    inputs = {k: v for k, v in batch.items() if k not in ("labels", "num_trained_tokens")}
    if str(getattr(unwrap(model).config, "_attn_implementation", "")).startswith("flash") and "attention_mask" not in inputs:
        inputs = {k: v.reshape(1, -1) for k, v in inputs.items()}
    logits = model(**inputs, use_cache=False).logits.reshape(*labels.shape, -1)[:, :-1]  # (B, T-1, V)
    targets = labels[:, 1:].masked_fill(positions[:, 1:] == 0, -100)
    mask = targets != -100
    loss_sum = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=-100, reduction="sum")
    return loss_sum, mask.sum(), ((logits.argmax(-1) == targets) & mask).sum()


def _model(vocab: int, seed: int = 0, attn: str = "sdpa", max_len: int = 4096):
    """The issue's model: a hidden-128 two-layer Llama with LoRA r=8 on every linear layer, fp32."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab, max_position_embeddings=max_len, attn_implementation=attn, **_SHAPE)
    base = LlamaForCausalLM(config).requires_grad_(False)
    return get_peft_model(base, LoraConfig(r=8, lora_alpha=16, target_modules="all-linear")).train()


def packed_batch(lengths_and_answers: list[list[tuple[int, int]]], vocab: int, seed: int = 0) -> dict:
    """Packed rows of random tokens: each example (length, trained answer tokens), all rows one width."""
    import torch

    from raysft.data.packing import collate

    rng = random.Random(seed)
    rows = [[{"input_ids": [rng.randrange(vocab) for _ in range(n)], "labels": [-100] * (n - a) + [1] * a}
             for n, a in row] for row in lengths_and_answers]
    for row in rows:
        for e in row:  # the answer predicts its own tokens
            e["labels"] = [i if lab != -100 else -100 for i, lab in zip(e["input_ids"], e["labels"])]
    batch = collate(rows, pad_id=0, packed=True)
    return {k: v for k, v in batch.items() if isinstance(v, torch.Tensor)}


def _loss_fn(path: str):
    from raysft.train.loss import token_loss

    return {"old": full_logits_loss, "new": token_loss}[path]


def _step(model, batch: dict, path: str) -> float:
    """Forward and backward of one micro batch; returns the loss sum."""
    loss_sum, _, _ = _loss_fn(path)(model, batch)
    loss_sum.backward()
    model.zero_grad(set_to_none=True)
    return loss_sum.item()


def _rss_child(vocab: int, path: str, tokens: int) -> dict:
    """In this (fresh) process: the peak RSS one training step adds over the loaded model (every position trained),
    and `raysft estimate`'s figure for the same step against the peak over the bare runtime (torch imported)."""
    import peft  # noqa: F401  (the runtime the estimate leaves out: libraries imported, no model yet)
    import torch
    import transformers  # noqa: F401

    from raysft.model.load import resolve_attn_implementation
    from raysft.train.allocator import allocator_in_use

    torch.set_num_threads(2)
    runtime = _status_kb("VmRSS")
    # Each path with its attention: raysft before issue 18 ran sdpa; now `auto` (packed_sdpa on the CPU).
    attn = "sdpa" if path == "old" else resolve_attn_implementation("auto", torch.device("cpu"), torch.float32)
    model = _model(vocab, attn=attn, max_len=tokens)
    row = [[(512, 511)] * (tokens // 512)]
    _step(model, packed_batch([[(64, 63)]], vocab), path)  # first-call allocations (kernels, autograd) outside the figure
    batch = packed_batch(row, vocab)
    increases, peak = [], 0
    for _ in range(2):  # the first step at this shape, then one more (a run's steady state)
        before = _status_kb("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")  # reset the RSS high-water mark (Linux >= 4.0)
        _step(model, batch, path)
        step_peak = _status_kb("VmHWM")
        peak = max(peak, step_peak)
        increases.append(round((step_peak - before) / 1024, 1))
    out = {"attn": attn, "allocator": allocator_in_use(), "step_peak_increase_mb": increases[0],
           "second_step_peak_increase_mb": increases[1], "model_rss_mb": round(before / 1024, 1)}
    if path == "new":
        estimate = _estimate_mb(model, tokens)
        out.update(estimate_mb=estimate, measured_over_runtime_mb=round((peak - runtime) / 1024, 1),
                   estimate_error_pct=round(100 * (estimate * 1024 / (peak - runtime) - 1), 1))
    return out


def _estimate_mb(model, tokens: int) -> float:
    """`raysft estimate` for this step: the same model shape, LoRA r=8 on all linear layers, one packed row, CPU."""
    import tempfile

    from raysft.config import load_spec
    from raysft.estimate import estimate_for_spec

    with tempfile.TemporaryDirectory() as tmp:
        model.config.save_pretrained(tmp)
        spec = load_spec({"model": {"name_or_path": tmp, "lora": {"rank": 8, "alpha": 16, "dropout": 0.0}},
                          "data": {"train": ["unused.jsonl"], "max_seq_len": tokens},
                          "train": {"micro_batch_size": 1, "global_batch_size": 1}, "scaling": {"use_gpu": False}})
        return round(estimate_for_spec(spec, gpu_memory_gb=None)["total_gb"] * 1024, 1)


def _status_kb(field: str) -> int:
    line = next(l for l in Path("/proc/self/status").read_text().splitlines() if l.startswith(field + ":"))
    return int(line.split()[1])


def _child(vocab: int, path: str, tokens: int) -> dict:
    """One configuration in a fresh process on the allocator raysft's CPU workers get (`raysft.train.allocator`)."""
    from raysft.train.allocator import worker_runtime_env

    workers = worker_runtime_env(use_gpu=False).get("env_vars", {})  # `${VAR}` expanded from this environment, as Ray does
    env = {**os.environ, "PYTHONPATH": str(_ROOT),
           **{k: re.sub(r"\$\{(\w+)\}", lambda m: os.environ.get(m[1], ""), v) for k, v in workers.items()}}
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", json.dumps([vocab, path, tokens])],
                          capture_output=True, text=True, cwd=_ROOT, env=env)
    if proc.returncode:
        raise RuntimeError(f"loss_memory child (V={vocab}, {path}) failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def loss_memory(vocabs=(151_936, 32_000), tokens: int = 4096, baseline_vocab: int = 1000) -> dict:
    """Peak RSS one step adds over the model, old path and new, each in a fresh subprocess.

    `new_over_old_<V>` divides the whole step's increases (decoder activations included, the same in both);
    `vocab_share_new_over_old_<V>` first subtracts the step at a `baseline_vocab` vocabulary (new path), leaving
    what the vocabulary adds, which is what the issue's +1.6 GB / +7.2 GB measured.
    """
    base = _child(baseline_vocab, "new", tokens)
    out = {"tokens": tokens, "model": "llama hidden 128, 2 layers, LoRA r=8 all-linear, fp32, every position trained",
           f"baseline_vocab_{baseline_vocab}": base}
    for vocab in vocabs:
        figures = {path: _child(vocab, path, tokens) for path in ("old", "new")}
        old, new = (figures[p]["step_peak_increase_mb"] for p in ("old", "new"))
        b = base["step_peak_increase_mb"]
        out[f"vocab_{vocab}"] = figures
        out[f"new_over_old_{vocab}"] = round(new / old, 3)
        out[f"second_step_new_over_old_{vocab}"] = round(figures["new"]["second_step_peak_increase_mb"] /
                                                         figures["old"]["second_step_peak_increase_mb"], 3)
        out[f"vocab_share_new_over_old_{vocab}"] = round(max(new - b, 0.0) / max(old - b, 1e-9), 3)
    return out


def _classification_rows(rows: int, width: int, seed: int = 0) -> list[list[tuple[int, int]]]:
    """Rows of ticket-like examples: a 40-200 token prompt and a 3-6 token answer (~3-5% trained)."""
    rng = random.Random(seed)
    out = []
    for _ in range(rows):
        row, free = [], width
        while free > 45:
            n = min(free, rng.randint(40, 200))
            row.append((n, min(n - 1, rng.randint(3, 6))))
            free -= n
        out.append(row)
    return out


def trained_positions_speedup(vocab: int = 32_000, repeats: int = 5, micro_batch: int = 4, width: int = 1024,
                              device: str = "cpu") -> dict:
    """Median step time, old loss path and new interleaved, on packed classification-like rows."""
    import torch

    torch.set_num_threads(2)
    model = _model(vocab, max_len=width).to(device)
    batch = {k: v.to(device) for k, v in packed_batch(_classification_rows(micro_batch, width), vocab).items()}
    trained = int(batch["num_trained_tokens"])
    losses = {path: _step(model, batch, path) for path in ("old", "new")}  # warm-up, and the same loss
    times: dict[str, list[float]] = {"old": [], "new": []}
    for _ in range(repeats):
        for path in ("old", "new"):
            started = time.perf_counter()
            _step(model, batch, path)  # .item() in _step synchronises a GPU
            times[path].append(time.perf_counter() - started)
    old, new = median(times["old"]), median(times["new"])
    return {"vocab": vocab, "tokens": micro_batch * width, "trained_share": round(trained / (micro_batch * width), 4),
            "old_step_s": round(old, 4), "new_step_s": round(new, 4), "speedup": round(old / new, 2),
            "loss_relative_difference": abs(losses["old"] - losses["new"]) / abs(losses["old"]), "repeats": repeats,
            "goal": "speedup >= 1.5"}


def cuda_loss_memory(vocabs=(151_936, 32_000), tokens: int = 4096) -> dict:
    """On CUDA: the peak memory one step allocates over the model, old path and new (bf16 weights and autocast,
    as the loop trains on a bf16 GPU). The caching allocator's peak counter replaces the fresh subprocess."""
    import torch

    out = {"tokens": tokens, "device": torch.cuda.get_device_name(0)}
    row = [[(512, 511)] * (tokens // 512)]
    for vocab in vocabs:
        model = _model(vocab, max_len=tokens).to("cuda", torch.bfloat16)
        batch = {k: v.cuda() for k, v in packed_batch(row, vocab).items()}
        figures = {}
        for path in ("old", "new"):
            with torch.autocast("cuda", dtype=torch.bfloat16):
                _step(model, batch, path)  # warm-up
                torch.cuda.reset_peak_memory_stats()
                before = torch.cuda.memory_allocated()
                _step(model, batch, path)
            figures[path] = {"step_peak_increase_mb": round((torch.cuda.max_memory_allocated() - before) / 2**20, 1)}
        out[f"vocab_{vocab}"] = figures
        out[f"new_over_old_{vocab}"] = round(figures["new"]["step_peak_increase_mb"] / figures["old"]["step_peak_increase_mb"], 3)
        del model, batch
        torch.cuda.empty_cache()
    return out


def packed_attention(repeats: int = 3, width: int = 2048, examples: int = 16) -> dict:
    """Step time of one packed row (16 examples of 128 tokens) under each attention implementation on this CPU,
    interleaved (one step of each in turn, so a change in the machine's load hits them all): median wall and CPU
    seconds."""
    import torch

    from raysft.model.attention import register_packed_sdpa

    torch.set_num_threads(2)
    register_packed_sdpa()
    batch = packed_batch([[(width // examples, 8)] * examples], 1000)
    out, models = {"tokens": width, "examples_per_row": examples, "repeats": repeats}, {}
    for attn in ("sdpa", "packed_sdpa", "eager", "flex_attention"):
        model = _model(1000, attn=attn, max_len=width)
        try:
            _step(model, batch, "new")  # warm-up
            models[attn] = model
        except Exception as exc:  # flex attention: no backward on the CPU in torch 2.13
            out[attn] = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0]}"}
    wall: dict[str, list[float]] = {a: [] for a in models}
    cpu: dict[str, list[float]] = {a: [] for a in models}
    for _ in range(repeats):
        for attn, model in models.items():
            started, cpu_started = time.perf_counter(), time.process_time()
            _step(model, batch, "new")
            wall[attn].append(time.perf_counter() - started)
            cpu[attn].append(time.process_time() - cpu_started)
    for attn in models:
        out[attn] = {"step_s": round(median(wall[attn]), 4), "step_cpu_s": round(median(cpu[attn]), 4)}
    out["packed_sdpa_speedup_vs_sdpa"] = round(out["sdpa"]["step_s"] / out["packed_sdpa"]["step_s"], 3)
    out["packed_sdpa_cpu_speedup_vs_sdpa"] = round(out["sdpa"]["step_cpu_s"] / out["packed_sdpa"]["step_cpu_s"], 3)
    return out


def run(quick: bool = True) -> dict:
    """The `loss_memory` and `trained_positions_speedup` sections (and the attention comparison inside the latter)."""
    speed = trained_positions_speedup(repeats=3 if quick else 7)
    speed["packed_attention"] = packed_attention(repeats=2 if quick else 5)
    return {"loss_memory": loss_memory(), "trained_positions_speedup": speed}


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        vocab, path, tokens = json.loads(sys.argv[2])
        print(json.dumps(_rss_child(vocab, path, tokens)))
    else:
        print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
