"""`raysft eval`: exact-match accuracy of a finished run or a model directory on held-out conversations."""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch

from raysft.data.errors import DataError
from raysft.data.records import load_conversations
from raysft.model.load import load_for_inference
from raysft.rundir import RunDir
from raysft.train.evaluate import generate_answers

__all__ = ["score_model"]


def score_model(model_dir: str, data_path: str, *, max_new_tokens: int = 32, limit: int | None = None) -> dict:
    """Greedy exact match of `model_dir` on the final assistant answers of `data_path`.

    Generation stops at any of the model's end-of-turn ids (see `raysft.data.template.end_of_turn_ids`).

    Args:
        model_dir: a run's output_dir (base + adapter, or model/ for a full fine-tune) or a model directory.
        data_path: chat data; each conversation's final assistant message is the reference.
        max_new_tokens: generation length limit.
        limit: score at most this many conversations.

    Returns:
        {"exact_match": float, "n": int, "samples": [...first 5 prompt / reference / generation]}.
    """
    root, run = Path(model_dir), RunDir(model_dir)
    saved = run.saved_spec()  # a run: prompts see the day its training data saw
    date = saved.data.template_date if saved else None
    if (run.model / "config.json").is_file():  # full fine-tune run
        root = run.model
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model, tokenizer = load_for_inference(root, device=device)
    items, _ = load_conversations(data_path)
    if not items:
        raise DataError(f"{data_path}: no valid conversations to score; run `raysft data check {data_path}`")
    conversations = [{"messages": it["messages"], "tools": it["tools"]} for it in items]
    return generate_answers(model, tokenizer, conversations, max_new_tokens=max_new_tokens,
                            limit=limit, rank=0, world_size=1, device=device, autocast=contextlib.nullcontext, samples=5,
                            date=date)
