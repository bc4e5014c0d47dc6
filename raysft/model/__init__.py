"""Base models, tokenizers and adapters: loading for lora / qlora / full, merging, and the tiny test model."""

from raysft.model.export import merge_adapter
from raysft.model.load import (
    ModelError,
    find_adapter,
    load_base,
    load_for_inference,
    load_model,
    load_tokenizer,
    resolve_model_path,
    trainable_parameters,
)
from raysft.model.tiny import init_tiny
from raysft.model.tokenizer import train_tokenizer

__all__ = [
    "ModelError",
    "find_adapter",
    "init_tiny",
    "load_base",
    "load_for_inference",
    "load_model",
    "load_tokenizer",
    "merge_adapter",
    "resolve_model_path",
    "train_tokenizer",
    "trainable_parameters",
]
