"""Train a small byte-level BPE tokenizer on local text, with ChatML special tokens and chat template.

Used by `raysft model init-tiny`, the quickstart and the tests: nothing is downloaded.
"""

from __future__ import annotations

from typing import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from raysft.data.template import DEFAULT_CHAT_TEMPLATE

__all__ = ["SPECIAL_TOKENS", "train_tokenizer"]

# <|im_end|> closes every turn and doubles as EOS; <|pad|> is never trained on.
SPECIAL_TOKENS = ["<|pad|>", "<|im_start|>", "<|im_end|>", "<|endoftext|>"]


def train_tokenizer(texts: Iterable[str], vocab_size: int = 1024) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on `texts`.

    Byte-level means any UTF-8 input (Chinese included) encodes without unknown tokens, whatever the
    training text covered.

    Args:
        texts: training text (e.g. every message content of a dataset).
        vocab_size: target vocabulary size, special tokens and the 256 byte symbols included.

    Returns:
        A transformers fast tokenizer with ChatML special tokens and `DEFAULT_CHAT_TEMPLATE`.
    """
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=max(vocab_size, 256 + len(SPECIAL_TOKENS)),
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<|pad|>",
        eos_token="<|im_end|>",
        bos_token=None,
        unk_token=None,
    )
    fast.chat_template = DEFAULT_CHAT_TEMPLATE
    return fast
