"""Peak memory per GPU of one raysft training worker, from the spec and the model shape.

The formulas follow what raysft's training loop actually allocates (`raysft.train.loop`: weights in
the precision's dtype, PEFT adapters in fp32, `torch.optim.AdamW`, HF gradient checkpointing, SDPA
attention, a chunked float32 cross-entropy at trained positions), so that an estimate can be checked
against a measured peak.

Notation: P every parameter, P_lin the block linear weights (what 4-bit quantises), T trainable
parameters, L blocks, h hidden, i intermediate, q = heads × head_dim, V vocabulary, r LoRA rank,
tokens = micro_batch_size × max_seq_len (packed rows are exactly max_seq_len; unpacked ones at most),
S = num_workers under FSDP (else 1). Byte widths by `train.precision`, as the loop resolves them on a GPU:

    precision   weights w   activations a
    bf16/auto   2           2              (auto is taken as bf16: an Ampere or newer GPU)
    fp16        4           2              (fp32 weights are the master copy; fp16 autocast)
    fp32        4           4              (also every CPU worker, scaling.use_gpu: false)

Base weights
    lora, full   P × w
    qlora        P_lin × (4 + c) / 8 + (P − P_lin) × w + largest linear × a
                 c = 0.127 bits/param with double quant (8-bit absmax per 64 weights + fp32 per 256
                 blocks), 0.5 without (fp32 absmax per 64); embeddings, lm_head, norms and biases stay
                 in w; bitsandbytes dequantises one weight at a time in backward (the last term).
    fp16         + 2 bytes per block linear and lm_head weight (lm_head only for qlora): autocast's
                 fp16 copies of the fp32 weights, saved for backward or cached until the step ends.
    FSDP         the above / S, plus the gathered units: the root (embeddings, lm_head, final norm),
                 which stays gathered through forward and backward, and two blocks (current + prefetch).
Adapter weights (lora, qlora)
    T = L × Σ_targets r × (in + out)  (+ out per target with DoRA's magnitude vector); T × 4 bytes,
    plus T × a for the 16-bit copies autocast caches for the step (bf16 and fp16 precision).
    all-linear targets q, k, v, o, gate, up, down.  Full fine-tuning: T = P, no adapter.
Gradients       T × g, g = 4 for adapters, w for full; / S under FSDP (+ one unsharded block for full).
                DDP with several workers adds its bucket copy of the gradients (T × g).
Optimizer       AdamW keeps exp_avg and exp_avg_sq in the parameter dtype: T × 2g; / S under FSDP.
                (No separate fp32 master: the loop steps bf16 weights directly, fp16 keeps fp32 weights.)
Activations     bytes per token per block that autograd saves for backward:
    frozen base (lora, qlora)
                2 × 4h                 the float32 copy each RMSNorm makes (frozen norm weights and
                                       frozen linears save no inputs)
              + 4 × a × q              SDPA's q, k, v, output (k, v repeated to every head: packing
                                       passes a mask, which rules out SDPA's native GQA)
              + 3 × a × i              gate output (SiLU), SiLU and up outputs (their product)
              + Σ_targets (a + d) × in + a × r
                                       PEFT casts each adapted layer's input to fp32 and autocast casts
                                       it back: one saved copy per adapter (in fp32 without dropout the
                                       adapters of q/k/v, and of gate/up, share one), the dropout mask
                                       (d = 1 byte on CUDA, 4 on CPU; 0 without dropout), the rank-r output
    full        2 × (4h + 2ah) + 5 × a × q + 4 × a × i   (trained weights save their inputs)
    final norm  4h (+ 2ah for full)
    without gradient checkpointing   tokens × (L × block + final)
    with it                          tokens × (L × a × h + block + final): each block's input, plus one
                                     block recomputed during backward
Logits          the loss (`raysft.train.loss`) applies lm_head only at positions with a target, in checkpointed
                chunks of c = `raysft.train.chunks.chunk_rows(V)` positions (c × V float32 logits >= 32 MiB,
                16 MiB on a CPU worker running on jemalloc, `raysft.train.allocator`):
                min(tokens, c) × V × (8 + a')   one chunk's float32 logits and log-sum-exp temporary (in
                                                backward its recomputed logits, overwritten by their gradient,
                                                and the gradient of the head's output), plus the 16-bit head
                                                output they are cast from (a' = a, 0 when a = 4)
              + tokens × h × 3a                 the gathered hidden states, their gradient and that gradient
                                                scattered back to every position; every position counted as
                                                trained (loss_on: all), the worst case.
Runtime         what a worker holds beyond its tensors once it has built the model and run a step: the CUDA
                context on a GPU (0.75 GB); on a CPU 40 MB (the kernels' caches, autograd's engine thread,
                jemalloc's per-thread arenas on huge pages, and what building the model leaves resident:
                32-41 MB measured at V = 1,000 to 151,936, `benchmarks/README.md`, "loss_memory").
Overhead        10% allocator fragmentation on everything above but the runtime.

GB here means 2^30 bytes, as torch and nvidia-smi report. Not modelled: DoRA's per-step weight-norm
temporaries, attention kernels that materialise the T × T score matrix (SDPA's math fallback).
"""

from __future__ import annotations

from dataclasses import dataclass

from raysft.config import JobSpec
from raysft.estimate.shape import LINEAR_NAMES, EstimateError, ModelShape
from raysft.train.allocator import cpu_allocator
from raysft.train.chunks import chunk_rows

__all__ = ["GB", "CUDA_CONTEXT_GB", "CPU_RUNTIME_GB", "FRAGMENTATION", "memory_breakdown"]

GB = 2**30
CUDA_CONTEXT_GB = 0.75
CPU_RUNTIME_GB = 40 / 1024
FRAGMENTATION = 0.10

# train.precision → (weight bytes, activation bytes), as raysft.train.loop.resolve_precision on a bf16 GPU.
_WIDTHS = {"auto": (2, 2), "bf16": (2, 2), "fp16": (4, 2), "fp32": (4, 4)}
_ADAPTER_BYTES = 4  # PEFT keeps LoRA weights in float32 whatever the base dtype
# Linear layers that read the same tensor: without autocast or dropout their adapters share one saved input.
_SHARED_INPUT = (("q_proj", "k_proj", "v_proj"), ("o_proj",), ("gate_proj", "up_proj"), ("down_proj",))


@dataclass(frozen=True)
class _Worker:
    """What every formula reads from the spec, resolved once for one training worker (notation above)."""

    on_gpu: bool
    precision: str  # train.precision as the loop runs it: fp32 on a CPU worker, "auto" still named so
    w: int  # weight bytes
    a: int  # activation bytes
    shards: int  # S
    full: bool
    targets: tuple[str, ...]  # the adapted linear layers; () for full fine-tuning
    trainable: int  # T

    @property
    def autocast(self) -> bool:
        return self.on_gpu and self.precision != "fp32"

    @property
    def grad_width(self) -> int:
        return self.w if self.full else _ADAPTER_BYTES


def memory_breakdown(spec: JobSpec, shape: ModelShape) -> dict:
    """Predicted peak bytes per GPU (or per CPU worker) for one training worker of `spec`.

    Returns:
        {"bytes": {component: bytes}, "total_params", "trainable_params", "precision", "device", "notes"},
        components in the order base_weights, adapter_weights, gradients, optimizer_states, activations,
        logits, runtime, fragmentation.

    Raises:
        EstimateError: LoRA targets that are not linear layers of the model.
    """
    k = _worker(spec, shape)
    base, adapter = _weight_bytes(spec, shape, k)
    grads, optimizer = _gradient_bytes(spec, shape, k)
    tokens = spec.train.micro_batch_size * spec.data.max_seq_len
    rows = chunk_rows(shape.vocab, jemalloc=not k.on_gpu and cpu_allocator() == "jemalloc")
    logits = min(tokens, rows) * shape.vocab * (8 + (k.a if k.a < 4 else 0)) + tokens * shape.hidden * 3 * k.a
    parts = {
        "base_weights": base,
        "adapter_weights": adapter,
        "gradients": grads,
        "optimizer_states": optimizer,
        "activations": _activation_bytes(spec, shape, k, tokens),
        "logits": logits,
    }
    allocated = sum(parts.values())
    parts["runtime"] = (CUDA_CONTEXT_GB if k.on_gpu else CPU_RUNTIME_GB) * GB
    parts["fragmentation"] = FRAGMENTATION * allocated
    return {"bytes": parts, "total_params": shape.total_params(), "trainable_params": k.trainable,
            "precision": "bf16" if k.precision == "auto" else k.precision, "device": "gpu" if k.on_gpu else "cpu",
            "notes": _notes(spec, k)}


def _worker(spec: JobSpec, shape: ModelShape) -> _Worker:
    m, s = spec.model, spec.scaling
    on_gpu = s.use_gpu is not False
    precision = spec.train.precision if on_gpu else "fp32"
    full = m.method == "full"
    targets = _targets(m.lora.target_modules) if not full else ()
    linears = shape.linears()
    trainable = shape.total_params() if full else shape.layers * sum(
        m.lora.rank * (linears[n][0] + linears[n][1]) + (linears[n][1] if m.lora.use_dora else 0) for n in targets)
    return _Worker(on_gpu=on_gpu, precision=precision, w=_WIDTHS[precision][0], a=_WIDTHS[precision][1],
                   shards=s.num_workers if s.strategy == "fsdp" and s.num_workers > 1 else 1,
                   full=full, targets=targets, trainable=trainable)


def _weight_bytes(spec: JobSpec, shape: ModelShape, k: _Worker) -> tuple[float, float]:
    """(base weights, adapter weights) per worker: the shard, the gathered FSDP units, the transient copies."""
    w, a = k.w, k.a
    qlora = spec.model.method == "qlora"
    if qlora:
        const_bits = 0.127 if spec.model.quantization.double_quant else 0.5
        lin = shape.layers * shape.block_linear_params()
        base = lin * (4 + const_bits) / 8 + (shape.total_params() - lin) * w
        block_bytes = shape.block_linear_params() * (4 + const_bits) / 8 + shape.block_other_params() * w
        base_transient = max(n_in * n_out for n_in, n_out in shape.linears().values()) * a
    else:
        block_params = shape.block_linear_params() + shape.block_other_params()
        base, block_bytes, base_transient = shape.total_params() * w, block_params * w, 0
    if k.on_gpu and k.precision == "fp16":
        # Autocast's fp16 copies of fp32 weights live through backward (saved by the matmuls, or cached).
        copied = shape.vocab * shape.hidden + (0 if qlora else shape.layers * shape.block_linear_params())
        base_transient += copied * 2
    gathered = shape.embedding_params() * w + 2 * block_bytes if k.shards > 1 else 0
    # Adapters are fp32; under autocast their 16-bit copies are cached for the whole step.
    adapter = 0 if k.full else k.trainable * (_ADAPTER_BYTES + (a if k.autocast else 0))
    return base / k.shards + gathered + base_transient, adapter / k.shards


def _gradient_bytes(spec: JobSpec, shape: ModelShape, k: _Worker) -> tuple[float, float]:
    """(gradients, optimizer states) per worker."""
    s = spec.scaling
    grads = k.trainable * k.grad_width / k.shards
    if k.full and k.shards > 1:
        # one block's unsharded gradient before its reduce-scatter
        grads += (shape.block_linear_params() + shape.block_other_params()) * k.w
    if s.strategy == "ddp" and s.num_workers > 1:
        grads += k.trainable * k.grad_width  # DDP's gradient buckets
    return grads, k.trainable * 2 * k.grad_width / k.shards


def _activation_bytes(spec: JobSpec, shape: ModelShape, k: _Worker, tokens: int) -> int:
    """What autograd saves for backward over `tokens` positions: per block, then as checkpointing keeps it."""
    lora, a, h = spec.model.lora, k.a, shape.hidden
    linears = shape.linears()
    if k.full:
        block = 2 * (4 * h + 2 * a * h) + 5 * a * shape.q_out + 4 * a * shape.intermediate
        final = 4 * h + 2 * a * h
    else:
        block = 2 * 4 * h + 4 * a * shape.q_out + 3 * a * shape.intermediate
        if k.precision != "fp32" or lora.dropout > 0:
            copies = sum(linears[n][0] for n in k.targets)  # each adapter saves its own copy of its input
        else:
            copies = sum(linears[g[0]][0] for g in _SHARED_INPUT if any(n in k.targets for n in g))
        mask = (1 if k.on_gpu else 4) if lora.dropout > 0 else 0  # CUDA's fused dropout keeps a bool mask
        block += a * copies + mask * sum(linears[n][0] for n in k.targets) + a * lora.rank * len(k.targets)
        final = 4 * h
    if spec.train.gradient_checkpointing:
        return tokens * (shape.layers * a * h + block + final)
    return tokens * (shape.layers * block + final)


def _notes(spec: JobSpec, k: _Worker) -> list[str]:
    """What the figure assumes that the spec does not say, and what it leaves out."""
    notes = []
    if k.on_gpu and k.precision == "auto":
        notes.append("train.precision auto taken as bf16 (Ampere or newer GPU; older GPUs train fp16 with fp32 weights)")
    if not k.on_gpu:
        notes.append("scaling.use_gpu is false: CPU workers train in fp32; the figure is memory per worker")
    if spec.model.lora.use_dora and not k.full:
        notes.append("DoRA's weight-norm temporaries are not modelled; expect somewhat more")
    return notes


def _targets(target_modules) -> tuple[str, ...]:
    if target_modules == "all-linear":
        return LINEAR_NAMES
    unknown = [n for n in target_modules if n.rsplit(".", 1)[-1] not in LINEAR_NAMES]
    if unknown:
        raise EstimateError(f"model.lora.target_modules: {', '.join(unknown)} not among the decoder's linear layers "
                            f"({', '.join(LINEAR_NAMES)}); use those names or all-linear")
    return tuple(n.rsplit(".", 1)[-1] for n in target_modules)
