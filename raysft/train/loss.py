"""The training and evaluation loss: next-token cross-entropy computed only where a token has a target.

`model(**batch).logits` would materialise (B, T, V) logits at every position, and the float32 log-softmax and
its gradient on top: at T = 4,096 and V = 151,936 each is 2.4 GB, though classification-like data trains on
3-6% of the positions. Here the model still runs through its wrapper's own forward (DDP's gradient sync and
FSDP's hooks see the step), but a pre-hook on the output head takes the final hidden states (B, T, h) and hands
the head an empty slice. The hidden states of positions with a target are gathered to (K, h), and the head and
the cross-entropy run over them in chunks (`raysft.train.chunks`). Each chunk is checkpointed: backward
recomputes its logits instead of keeping them, so memory holds one chunk's logits whatever T x V, at the cost of
one more head matmul over the K kept positions. The cross-entropy itself (`_CrossEntropySum`) keeps only the
logits and their log-sum-exp, and its backward turns the recomputed logits into their gradient in place, so a
chunk never holds a log-softmax beside its logits. A trainable head (full fine-tuning, `modules_to_save`, LoRA
on lm_head) gets its gradient through the same module call.
"""

from __future__ import annotations

import contextlib
from typing import Callable

import torch
from torch.utils.checkpoint import checkpoint

from raysft.train.allocator import allocator_in_use
from raysft.train.chunks import chunk_rows

__all__ = ["token_loss", "unwrap"]


def token_loss(model, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Summed next-token cross-entropy over trained tokens, their count and how many argmax hits.

    A target is the next token of the same example: where the next position starts a new packed
    example (position id 0) there is no target, so no loss crosses example boundaries.

    Args:
        model: the causal LM as the loop holds it: a transformers model, a `PeftModel`, either wrapped by
            DDP or FSDP.
        batch: `raysft.train.rowplan.collate_rows` tensors on the model's device.

    Returns:
        (float32 loss sum with its graph, number of targets, number of targets the argmax predicts).
    """
    labels, positions = batch["labels"], batch["position_ids"]
    inputs = {k: v for k, v in batch.items() if k not in ("labels", "num_trained_tokens")}
    inner = unwrap(model)
    if _flash(inner) and "attention_mask" not in inputs:
        # Flash-attention varlen finds packed boundaries from position ids only at batch size 1.
        inputs = {k: v.reshape(1, -1) for k, v in inputs.items()}
    targets = labels[:, 1:].masked_fill(positions[:, 1:] == 0, -100)  # (B, T-1)
    keep = targets != -100
    head = inner.get_output_embeddings()
    with _final_hidden_states(head) as captured:
        # use_cache=False: with a KV cache transformers skips packed-sequence detection and examples would
        # attend to each other.
        out = model(**inputs, use_cache=False)
    hidden = captured[0].reshape(*labels.shape, -1)[:, :-1][keep]  # (K, h); host sync for K
    text = inner.config.get_text_config()
    loss_sum, correct = _chunked_cross_entropy(head, _logit_transform(text), hidden, targets[keep],
                                               chunk_rows(text.vocab_size, jemalloc=hidden.device.type == "cpu"
                                                          and allocator_in_use() == "jemalloc"))
    # The empty logits (B, 0, V) add 0 but keep the wrapper's outputs in the graph: FSDP hooks its
    # pre-backward work (and the end-of-backward gradient finalisation) on them.
    return loss_sum + out.logits.sum(), keep.sum(), correct


def unwrap(model):
    """The module DDP or FSDP wraps (the model itself when unwrapped)."""
    return getattr(model, "module", model)


def _flash(model) -> bool:
    return str(getattr(getattr(model, "config", None), "_attn_implementation", "")).startswith("flash")


@contextlib.contextmanager
def _final_hidden_states(head: torch.nn.Module):
    """While active, `head`'s input (B, T, h) is appended to the yielded list and the head sees (B, 0, h)."""
    captured: list[torch.Tensor] = []

    def take(_module, args):
        captured.append(args[0])
        return (args[0][:, :0], *args[1:])

    handle = head.register_forward_pre_hook(take)
    try:
        yield captured
    finally:
        handle.remove()
    if len(captured) != 1:
        raise RuntimeError(f"the output head ran {len(captured)} times in one forward; token_loss expects once")


def _logit_transform(config) -> Callable[[torch.Tensor], torch.Tensor]:
    """What the model's own forward does to the head's output (scaling, soft-capping), from its text config."""
    scale = getattr(config, "logit_scale", None)  # Cohere multiplies
    divisor = getattr(config, "logits_scaling", None)  # Granite divides
    softcap = getattr(config, "final_logit_softcapping", None)  # Gemma 2/3

    def transform(logits: torch.Tensor) -> torch.Tensor:
        if scale is not None:
            logits = logits * scale
        if divisor is not None:
            logits = logits / divisor
        if softcap is not None:
            logits = torch.tanh(logits / softcap) * softcap
        return logits

    return transform


def _chunked_cross_entropy(head, transform, hidden: torch.Tensor, targets: torch.Tensor,
                           rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(float32 CE sum, argmax hits) of `head(hidden)` (K, V) against `targets` (K,), `rows` rows at a time."""
    grad = torch.is_grad_enabled() and hidden.requires_grad
    losses, hits = [], []
    for h, t in zip(hidden.split(rows), targets.split(rows)):
        # Checkpointed: forward keeps only h; backward recomputes this chunk's logits (non-reentrant, so
        # autocast and DDP's gradient hooks behave as in an ordinary forward).
        loss, hit = checkpoint(_chunk_loss, head, transform, h, t, use_reentrant=False) if grad else \
            _chunk_loss(head, transform, h, t)
        losses.append(loss)
        hits.append(hit)
    if not losses:  # no targets in this micro batch
        return hidden.new_zeros((), dtype=torch.float32), targets.new_zeros(())
    return torch.stack(losses).sum(), torch.stack(hits).sum()


def _chunk_loss(head, transform, hidden: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    logits = transform(head(hidden)).float()  # (k, V)
    # The loss first: backward's recomputation of this chunk stops once the loss's saved tensors are back.
    loss = _CrossEntropySum.apply(logits, targets)
    return loss, (logits.argmax(-1) == targets).sum()


class _CrossEntropySum(torch.autograd.Function):
    """Summed cross-entropy of float32 logits (k, V) against targets (k,), every target a class index.

    Its backward overwrites the saved logits with their gradient, softmax − one-hot: they are the chunk's
    own copy (the float32 cast, or a head output whose backward does not read it), recomputed for this
    backward by the chunk's checkpoint, and read by nothing after it.
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        lse = torch.logsumexp(logits, dim=-1)
        ctx.save_for_backward(logits, lse, targets)
        return (lse - logits.gather(1, targets[:, None]).squeeze(1)).sum()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        logits, lse, targets = ctx.saved_tensors
        softmax = logits.sub_(lse[:, None]).exp_()
        softmax[torch.arange(len(targets), device=targets.device), targets] -= 1
        return softmax.mul_(grad), None
