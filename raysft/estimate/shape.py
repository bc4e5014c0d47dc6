"""The shape of a base model, read from its config.json alone (no weights, no downloads).

Only Llama-shaped dense decoders are described: token embeddings, `num_hidden_layers` blocks of
RMSNorm → attention (q/k/v/o projections, grouped-query when `num_key_value_heads` < heads) →
RMSNorm → SwiGLU MLP (gate/up/down), a final norm and an output head that may share the embedding
matrix. Llama, Mistral, Qwen2/2.5/3, Gemma and most chat models published since 2023 have this shape.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from raysft.config import is_hub_id

__all__ = ["EstimateError", "ModelShape", "LINEAR_NAMES", "find_config", "read_model_shape"]

LINEAR_NAMES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
"""The linear layers of one decoder block; `all-linear` LoRA targets all of them."""

_REQUIRED = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size")
_EXPERT_KEYS = ("num_local_experts", "num_experts", "n_routed_experts")
# Architectures whose q/k/v projections carry a bias without saying so in config.json.
_QKV_BIAS_TYPES = ("qwen2",)


class EstimateError(ValueError):
    """The estimate cannot be made from the inputs given; the message names the input and the fix."""


@dataclass(frozen=True)
class ModelShape:
    """Dimensions of a Llama-shaped decoder, enough to count parameters and activations."""

    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    tied_embeddings: bool = False
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False

    @property
    def q_out(self) -> int:
        """Width of the query projection (heads × head_dim)."""
        return self.heads * self.head_dim

    @property
    def kv_out(self) -> int:
        """Width of each key / value projection (kv_heads × head_dim)."""
        return self.kv_heads * self.head_dim

    def linears(self) -> dict[str, tuple[int, int]]:
        """(in_features, out_features) of every linear layer of one block, by module name."""
        h, i = self.hidden, self.intermediate
        return {
            "q_proj": (h, self.q_out), "k_proj": (h, self.kv_out), "v_proj": (h, self.kv_out),
            "o_proj": (self.q_out, h), "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h),
        }

    def block_linear_params(self) -> int:
        """Weights of the linear layers of one block (what 4-bit quantisation applies to)."""
        return sum(n_in * n_out for n_in, n_out in self.linears().values())

    def block_other_params(self) -> int:
        """Biases and the two RMSNorm weights of one block (never quantised)."""
        bias = (self.q_out + 2 * self.kv_out if self.qkv_bias else 0) + (self.hidden if self.o_bias else 0)
        bias += 2 * self.intermediate + self.hidden if self.mlp_bias else 0
        return bias + 2 * self.hidden

    def embedding_params(self) -> int:
        """Input embeddings plus the output head (counted once when tied) plus the final norm."""
        return self.vocab * self.hidden * (1 if self.tied_embeddings else 2) + self.hidden

    def total_params(self) -> int:
        """Every parameter of the model."""
        return self.layers * (self.block_linear_params() + self.block_other_params()) + self.embedding_params()


def find_config(name_or_path: str) -> Path:
    """The config.json of a base model: in a local directory, or already in the Hugging Face cache.

    Raises:
        EstimateError: the directory has no config.json, or the hub id is not cached locally (nothing
            is downloaded).
    """
    path = Path(name_or_path).expanduser()
    if path.is_file() and path.name == "config.json":
        return path
    if path.is_dir():
        if (path / "config.json").is_file():
            return path / "config.json"
        raise EstimateError(f"model.name_or_path: {name_or_path} has no config.json; point it at a Hugging Face "
                            f"model directory (only config.json is read)")
    cached = None
    if is_hub_id(name_or_path):
        from huggingface_hub import try_to_load_from_cache

        try:
            cached = try_to_load_from_cache(name_or_path, "config.json")
        except ValueError:  # not a valid hub id either (HFValidationError)
            cached = None
    if isinstance(cached, str):
        return Path(cached)
    raise EstimateError(
        f"model.name_or_path: {name_or_path} is neither a local directory nor a hub id in the local Hugging Face "
        f"cache, and estimate downloads nothing; pass a local directory containing config.json (override "
        f"model.name_or_path=DIR) or fetch just the config first: `hf download {name_or_path} config.json`"
    )


def read_model_shape(name_or_path: str) -> ModelShape:
    """Read a Llama-shaped decoder's dimensions from its config.json.

    Args:
        name_or_path: a model directory, a path to config.json, or a hub id cached locally.

    Raises:
        EstimateError: no config.json, unreadable JSON, a mixture-of-experts model, or a config that
            lacks the fields of a Llama-shaped decoder.
    """
    path = find_config(name_or_path)
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise EstimateError(f"{path}: not readable JSON ({exc}); restore the model's config.json") from None
    if "hidden_size" not in cfg and isinstance(cfg.get("text_config"), dict):
        cfg = {**cfg["text_config"], "tie_word_embeddings": cfg.get("tie_word_embeddings", False)}
    if any((cfg.get(k) or 0) > 1 for k in _EXPERT_KEYS):
        raise EstimateError(f"{path}: a mixture-of-experts model ({cfg.get('model_type')}); raysft estimate covers "
                            f"dense Llama-shaped decoders only")
    missing = [k for k in _REQUIRED if not isinstance(cfg.get(k), int)]
    if missing:
        raise EstimateError(f"{path}: lacks {', '.join(missing)}; raysft estimate covers Llama-shaped decoders "
                            f"(Llama, Mistral, Qwen2, Gemma, ...) whose config.json has {', '.join(_REQUIRED)}")
    heads = cfg["num_attention_heads"]
    attention_bias = cfg.get("attention_bias")
    return ModelShape(
        hidden=cfg["hidden_size"],
        layers=cfg["num_hidden_layers"],
        heads=heads,
        kv_heads=cfg.get("num_key_value_heads") or heads,
        head_dim=cfg.get("head_dim") or cfg["hidden_size"] // heads,
        intermediate=cfg["intermediate_size"],
        vocab=cfg["vocab_size"],
        # Absent means untied for Llama-family configs; untied is also the larger (safer) estimate.
        tied_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        qkv_bias=bool(attention_bias if attention_bias is not None else cfg.get("model_type") in _QKV_BIAS_TYPES),
        o_bias=bool(attention_bias),
        mlp_bias=bool(cfg.get("mlp_bias", False)),
    )
