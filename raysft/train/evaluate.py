"""Evaluation on held-out data: token-weighted loss and accuracy, greedy exact match, samples to read.

Work is sharded across workers (rank r takes items r, r + W, ...) and the sums are all-reduced, so every
worker returns the same numbers.
"""

from __future__ import annotations

import datetime

import torch
import torch.distributed as dist

from raysft.data.template import encode_final_turn, end_of_turn_ids
from raysft.train.loss import token_loss
from raysft.train.rowplan import collate_rows

__all__ = ["evaluate_loss", "generate_answers"]


def _all_reduce(values: list[float], device) -> list[float]:
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)  # sync point: every rank evaluates at the same steps, even one with no items of its own
    return t.tolist()  # host sync


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
                     rank: int, world_size: int, device, autocast, samples: int = 0,
                     date: datetime.date | None = None) -> dict:
    """Greedy answers to held-out conversations, compared with the target training teaches for the final turn.

    Args:
        conversations: message lists or {"messages", "tools"} dicts. Each prompt is the serving prompt of the final
            assistant message; generation stops at any end-of-turn id of the model (`end_of_turn_ids`), and the
            answer and the reference (the rendered final answer, a tool call included) are compared as decoded text
            without special tokens.
        date: the day templates that print today's date see; the run's `data.template_date`, as in training.

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
        prompt, target = encode_final_turn(tokenizer, messages, tools, date=date)
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
