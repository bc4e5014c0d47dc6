"""Evaluation on held-out data: token-weighted loss and accuracy, greedy exact match, samples to read.

Work is sharded across workers (rank r takes items r, r + W, ...) and the sums are all-reduced, so every
worker returns the same numbers.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F

from raysft.data.template import encode_final_turn, end_of_turn_ids
from raysft.train.schedule import collate_rows

__all__ = ["token_loss", "evaluate_loss", "generate_answers"]


def token_loss(model, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Summed next-token cross-entropy over trained tokens, their count and how many argmax hits.

    A target is the next token of the same example: where the next position starts a new packed
    example (position id 0) there is no target, so no loss crosses example boundaries.
    """
    labels, positions = batch["labels"], batch["position_ids"]
    inputs = {k: v for k, v in batch.items() if k not in ("labels", "num_trained_tokens")}
    if _flash(model) and "attention_mask" not in inputs:
        # Flash-attention varlen finds packed boundaries from position ids only at batch size 1.
        inputs = {k: v.reshape(1, -1) for k, v in inputs.items()}
    # use_cache=False: with a KV cache transformers skips packed-sequence detection and examples would
    # attend to each other.
    logits = model(**inputs, use_cache=False).logits.reshape(*labels.shape, -1)[:, :-1]  # (B, T-1, V)
    targets = labels[:, 1:].masked_fill(positions[:, 1:] == 0, -100)  # (B, T-1)
    mask = targets != -100
    loss_sum = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=-100, reduction="sum")
    correct = ((logits.argmax(-1) == targets) & mask).sum()
    return loss_sum, mask.sum(), correct


def _flash(model) -> bool:
    config = getattr(getattr(model, "module", model), "config", None)
    return str(getattr(config, "_attn_implementation", "")).startswith("flash")


def _all_reduce(values: list[float], device) -> list[float]:
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


@torch.no_grad()
def evaluate_loss(model, examples: list[dict], rows: list[list[int]], *, micro_batch_size: int, rank: int,
                  world_size: int, device, pad_id: int, packed: bool, autocast) -> dict:
    """Token-weighted eval loss and token accuracy over `rows` of `examples` (same on every rank)."""
    model.eval()
    loss_sum = count = correct = 0.0
    mine = rows[rank::world_size]
    for i in range(0, len(mine), micro_batch_size):
        batch = collate_rows(examples, mine[i:i + micro_batch_size], pad_id=pad_id, packed=packed)
        batch = {k: v.to(device) for k, v in batch.items() if isinstance(v, torch.Tensor)}
        with autocast():
            s, n, c = token_loss(model, batch)
        loss_sum += s.item()  # host sync, once per eval micro batch
        count += n.item()
        correct += c.item()
    loss_sum, count, correct = _all_reduce([loss_sum, count, correct], device)
    model.train()
    return {"eval_loss": loss_sum / max(count, 1), "eval_token_accuracy": correct / max(count, 1), "eval_tokens": int(count)}


@torch.no_grad()
def generate_answers(model, tokenizer, conversations: list, *, max_new_tokens: int, limit: int | None,
                     rank: int, world_size: int, device, autocast, samples: int = 0) -> dict:
    """Greedy answers to held-out conversations, compared with the target training teaches for the final turn.

    Args:
        conversations: message lists or {"messages", "tools"} dicts. Each prompt is the serving prompt of the final
            assistant message; generation stops at any end-of-turn id of the model (`end_of_turn_ids`), and the
            answer and the reference (the rendered final answer, a tool call included) are compared as decoded text
            without special tokens.

    Returns:
        {"exact_match": float, "n": int, "samples": [{prompt, reference, generation}, ...]} — samples
        come from rank 0's share, at most `samples` of them.
    """
    model.eval()
    items = conversations[:limit] if limit else conversations
    stop = end_of_turn_ids(tokenizer, getattr(getattr(model, "generation_config", None), "eos_token_id", None))
    hits = total = 0
    kept: list[dict] = []
    for conv in items[rank::world_size]:
        messages, tools = (conv["messages"], conv.get("tools")) if isinstance(conv, dict) else (conv, None)
        prompt, target = encode_final_turn(tokenizer, messages, tools)
        ids = torch.tensor([prompt], device=device)
        with autocast():
            out = model.generate(
                input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens, do_sample=False,
                eos_token_id=stop, pad_token_id=tokenizer.pad_token_id)
        answer = tokenizer.decode(out[0, len(prompt):], skip_special_tokens=True).strip()
        reference = tokenizer.decode(target, skip_special_tokens=True).strip()
        hits += answer == reference
        total += 1
        if len(kept) < samples:
            kept.append({"prompt": messages[:-1], "reference": reference, "generation": answer})
    hits, total = _all_reduce([float(hits), float(total)], device)
    model.train()
    return {"exact_match": hits / max(total, 1), "n": int(total), "samples": kept}
