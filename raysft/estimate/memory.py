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
                chunks of c = `raysft.train.chunks.chunk_rows(V)` positions (c × V float32 logits >= 32 MiB):
                min(tokens, c) × V × (2a + 8)   one chunk's 16-bit logits and a copy, its float32 log-softmax
                                                and gradient (recomputed in backward, one chunk at a time)
              + tokens × h × 3a                 the gathered hidden states, their gradient and that gradient
                                                scattered back to every position; every position counted as
                                                trained (loss_on: all), the worst case.
Overhead        CUDA context 0.75 GB on a GPU, plus 10% allocator fragmentation on everything above.

GB here means 2^30 bytes, as torch and nvidia-smi report. Not modelled: DoRA's per-step weight-norm
temporaries, attention kernels that materialise the T × T score matrix (SDPA's math fallback).
"""

from __future__ import annotations

from raysft.config import JobSpec
from raysft.estimate.shape import LINEAR_NAMES, EstimateError, ModelShape
from raysft.train.chunks import chunk_rows

__all__ = ["GB", "CUDA_CONTEXT_GB", "FRAGMENTATION", "memory_breakdown"]

GB = 2**30
CUDA_CONTEXT_GB = 0.75
FRAGMENTATION = 0.10

# train.precision → (weight bytes, activation bytes), as raysft.train.loop.resolve_precision on a bf16 GPU.
_WIDTHS = {"auto": (2, 2), "bf16": (2, 2), "fp16": (4, 2), "fp32": (4, 4)}
_ADAPTER_BYTES = 4  # PEFT keeps LoRA weights in float32 whatever the base dtype
# Linear layers that read the same tensor: without autocast or dropout their adapters share one saved input.
_SHARED_INPUT = (("q_proj", "k_proj", "v_proj"), ("o_proj",), ("gate_proj", "up_proj"), ("down_proj",))


def memory_breakdown(spec: JobSpec, shape: ModelShape) -> dict:
    """Predicted peak bytes per GPU (or per CPU worker) for one training worker of `spec`.

    Returns:
        {"bytes": {component: bytes}, "total_params", "trainable_params", "precision", "device", "notes"},
        components in the order base_weights, adapter_weights, gradients, optimizer_states, activations,
        logits, cuda_context, fragmentation.

    Raises:
        EstimateError: LoRA targets that are not linear layers of the model.
    """
    m, t, s, d = spec.model, spec.train, spec.scaling, spec.data
    on_gpu = s.use_gpu is not False
    precision = t.precision if on_gpu else "fp32"
    w, a = _WIDTHS[precision]
    resolved = "bf16" if precision == "auto" else precision
    shards = s.num_workers if s.strategy == "fsdp" and s.num_workers > 1 else 1
    full = m.method == "full"
    notes = []
    if on_gpu and precision == "auto":
        notes.append("train.precision auto taken as bf16 (Ampere or newer GPU; older GPUs train fp16 with fp32 weights)")
    if not on_gpu:
        notes.append("scaling.use_gpu is false: CPU workers train in fp32; the figure is memory per worker")

    total = shape.total_params()
    linears = shape.linears()
    targets = _targets(m.lora.target_modules) if not full else ()
    trainable = total if full else shape.layers * sum(
        m.lora.rank * (linears[n][0] + linears[n][1]) + (linears[n][1] if m.lora.use_dora else 0) for n in targets)
    grad_width = w if full else _ADAPTER_BYTES
    block_params = shape.block_linear_params() + shape.block_other_params()

    # ---- weights
    if m.method == "qlora":
        q = m.quantization
        const_bits = 0.127 if q.double_quant else 0.5
        lin = shape.layers * shape.block_linear_params()
        base = lin * (4 + const_bits) / 8 + (total - lin) * w
        block_bytes = shape.block_linear_params() * (4 + const_bits) / 8 + shape.block_other_params() * w
        base_transient = max(n_in * n_out for n_in, n_out in linears.values()) * a
    else:
        base, block_bytes, base_transient = total * w, block_params * w, 0
    if on_gpu and precision == "fp16":
        # Autocast's fp16 copies of fp32 weights live through backward (saved by the matmuls, or cached).
        copied = shape.vocab * shape.hidden + (0 if m.method == "qlora" else shape.layers * shape.block_linear_params())
        base_transient += copied * 2
    gathered = shape.embedding_params() * w + 2 * block_bytes if shards > 1 else 0
    autocast = on_gpu and precision != "fp32"
    # Adapters are fp32; under autocast their 16-bit copies are cached for the whole step.
    adapter = 0 if full else trainable * (_ADAPTER_BYTES + (a if autocast else 0))

    # ---- gradients and optimizer states
    grads = trainable * grad_width / shards
    if full and shards > 1:
        grads += block_params * w  # one block's unsharded gradient before its reduce-scatter
    if s.strategy == "ddp" and s.num_workers > 1:
        grads += trainable * grad_width  # DDP's gradient buckets
    optimizer = trainable * 2 * grad_width / shards

    # ---- activations and logits
    tokens = t.micro_batch_size * d.max_seq_len
    h = shape.hidden
    if full:
        block = 2 * (4 * h + 2 * a * h) + 5 * a * shape.q_out + 4 * a * shape.intermediate
        final = 4 * h + 2 * a * h
    else:
        block = 2 * 4 * h + 4 * a * shape.q_out + 3 * a * shape.intermediate
        if precision != "fp32" or m.lora.dropout > 0:
            copies = sum(linears[n][0] for n in targets)  # each adapter saves its own copy of its input
        else:
            copies = sum(linears[g[0]][0] for g in _SHARED_INPUT if any(n in targets for n in g))
        mask = (1 if on_gpu else 4) if m.lora.dropout > 0 else 0  # CUDA's fused dropout keeps a bool mask
        block += a * copies + mask * sum(linears[n][0] for n in targets) + a * m.lora.rank * len(targets)
        final = 4 * h
    if t.gradient_checkpointing:
        activations = tokens * (shape.layers * a * h + block + final)
    else:
        activations = tokens * (shape.layers * block + final)
    logits = min(tokens, chunk_rows(shape.vocab)) * shape.vocab * (2 * a + 8) + tokens * h * 3 * a

    parts = {
        "base_weights": base / shards + gathered + base_transient,
        "adapter_weights": adapter / shards,
        "gradients": grads,
        "optimizer_states": optimizer,
        "activations": activations,
        "logits": logits,
    }
    allocated = sum(parts.values())
    parts["cuda_context"] = CUDA_CONTEXT_GB * GB if on_gpu else 0
    parts["fragmentation"] = FRAGMENTATION * allocated
    if m.lora.use_dora and not full:
        notes.append("DoRA's weight-norm temporaries are not modelled; expect somewhat more")
    return {"bytes": parts, "total_params": total, "trainable_params": trainable, "precision": resolved,
            "device": "gpu" if on_gpu else "cpu", "notes": notes}


def _targets(target_modules) -> tuple[str, ...]:
    if target_modules == "all-linear":
        return LINEAR_NAMES
    unknown = [n for n in target_modules if n.rsplit(".", 1)[-1] not in LINEAR_NAMES]
    if unknown:
        raise EstimateError(f"model.lora.target_modules: {', '.join(unknown)} not among the decoder's linear layers "
                            f"({', '.join(LINEAR_NAMES)}); use those names or all-linear")
    return tuple(n.rsplit(".", 1)[-1] for n in target_modules)
