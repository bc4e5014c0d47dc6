"""A tiny Llama-architecture chat model with random weights, built from local data.

Tests and the quickstart use it instead of a downloaded model: the tokenizer is trained on the chat
data itself and the weights are random, so nothing touches the network and it builds in about a second.
The directory it writes is an ordinary Hugging Face model directory (safetensors, tokenizer with chat
template, generation config), loadable with the Auto classes like any base model.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Union

import torch
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM
from transformers.utils import logging as hf_logging

from raysft.data.errors import DataError
from raysft.data.records import load_conversations
from raysft.model.tokenizer import train_tokenizer

__all__ = ["init_tiny"]


def init_tiny(
    out_dir: Union[str, Path],
    data_file: Union[str, Path],
    *,
    vocab_size: int = 2048,
    hidden_size: int = 128,
    layers: int = 2,
    heads: int = 4,
    seed: int = 0,
) -> Path:
    """Write a random-weight Llama chat model whose tokenizer is trained on `data_file`.

    Args:
        out_dir: directory to write (created; existing files of the same names are replaced).
        data_file: chat data in any format `raysft.data.records.load_conversations` reads (JSONL of
            `{"messages": [...]}` or `{"prompt": ..., "completion": ...}` records, JSON, Parquet, ...).
        vocab_size: target tokenizer vocabulary; the model's vocabulary is the tokenizer's actual size,
            which is smaller when the data has fewer distinct merges.
        hidden_size: model width; must be a multiple of `heads`.
        layers: decoder layers.
        heads: attention heads (and key/value heads).
        seed: seeds the weight initialisation; the same arguments give identical weights.

    Returns:
        `out_dir` as a Path.

    Raises:
        DataError: `data_file` is missing, unreadable, or holds no valid conversation.
        ValueError: `hidden_size` is not a multiple of `heads`.
    """
    if hidden_size % heads:
        raise ValueError(f"hidden_size {hidden_size} must be a multiple of heads {heads}; e.g. hidden_size={heads * 32}")
    out = Path(out_dir)
    tokenizer = train_tokenizer(_texts(Path(data_file)), vocab_size=vocab_size)
    config = _llama_config(tokenizer, hidden_size=hidden_size, layers=layers, heads=heads)
    # fork_rng: seeding must not reset the caller's global RNG stream.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id,  # <|im_end|> closes the assistant turn
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )
    out.mkdir(parents=True, exist_ok=True)
    with _no_progress_bars():
        model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def _llama_config(tokenizer, *, hidden_size: int, layers: int, heads: int) -> LlamaConfig:
    """The tiny model's architecture: Llama's proportions, sized to `tokenizer` and the arguments."""
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        # ~2.7x like Llama's SwiGLU MLP, a multiple of 64 (the 4-bit block): bitsandbytes' CPU kernels need
        # out_features divisible by 32, and its CPU dequantisation reads a row whose length (down_proj's
        # in_features) is not a whole number of blocks with the wrong scales (2.5x the quantisation error).
        intermediate_size=_round_up(int(hidden_size * 8 / 3), 64),
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=2048,
        tie_word_embeddings=False,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,  # None: the ChatML tokenizer adds no BOS
        # Wider than Llama's 0.02: with frozen random weights that small, the output head caps every logit
        # near ±2.6, so no low-rank adapter can make a confident prediction (LoRA plateaus at loss ~4.8).
        initializer_range=0.1,
    )


@contextmanager
def _no_progress_bars():
    # transformers draws a "Writing model shards" bar even for one small file; keep init_tiny silent.
    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def _texts(path: Path) -> list[str]:
    """Every message content of the valid conversations in `path` (invalid records are skipped)."""
    items, invalid = load_conversations(path)
    if not items:
        raise DataError(
            f"{path}: no valid conversations ({invalid} invalid records); run `raysft data check {path}` to see why"
        )
    return [m["content"] for item in items for m in item["messages"]]


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple
