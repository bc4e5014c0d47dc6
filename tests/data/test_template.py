"""Chat templating and loss masks on ChatML: the labelled tokens are exactly each assistant answer and its <|im_end|>.

The real templates of other model families are tested in test_chat_families.py."""

import copy
import os
import random

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from raysft.data.template import (
    DEFAULT_CHAT_TEMPLATE,
    chat_template_of,
    encode_conversation,
    encode_dataset,
    encode_final_turn,
    _common_prefix,
)


def _labelled_spans(tokenizer, example):
    """Decoded text of each run of consecutive labelled tokens."""
    spans, run = [], []
    for token, label in zip(example["input_ids"], example["labels"]):
        if label != -100:
            assert label == token
            run.append(token)
        elif run:
            spans.append(tokenizer.decode(run))
            run = []
    if run:
        spans.append(tokenizer.decode(run))
    return spans


def _only(result):
    """The one example of a conversation that was not split (None when it was dropped)."""
    assert len(result.examples) <= 1
    return result.examples[0] if result.examples else None


def encode_prompt(tokenizer, conversation):
    return encode_final_turn(tokenizer, conversation)[0]


def _with_template(tokenizer, template):
    tokenizer = copy.deepcopy(tokenizer)
    tokenizer.chat_template = template
    return tokenizer


@pytest.mark.parametrize("index", range(4), ids=["system", "multi-turn", "chinese", "react"])
def test_labels_are_exactly_each_assistant_answer_and_end_of_turn(chat_tokenizer, conversations, index):
    conversation = conversations[index]
    result = encode_conversation(chat_tokenizer, conversation, max_seq_len=512)
    assert result.status == "ok"
    expected = [m["content"] + "<|im_end|>" for m in conversation if m["role"] == "assistant"]
    assert _labelled_spans(chat_tokenizer, _only(result)) == expected
    assert result.n_trained == sum(label != -100 for label in _only(result)["labels"])
    assert result.n_tokens == len(_only(result)["input_ids"])


def test_tokens_are_the_rendered_conversation(chat_tokenizer, conversations):
    # Segment-wise tokenization gives what serving the chat template gives (no extra or missing tokens).
    for conversation in conversations:
        rendered = chat_tokenizer.apply_chat_template(conversation, tokenize=False)
        example = _only(encode_conversation(chat_tokenizer, conversation, max_seq_len=512))
        assert example["input_ids"] == chat_tokenizer(rendered, add_special_tokens=False)["input_ids"]


def test_last_assistant_labels_only_the_final_answer(chat_tokenizer, conversations):
    result = encode_conversation(chat_tokenizer, conversations[1], max_seq_len=512, loss_on="last_assistant")
    assert _labelled_spans(chat_tokenizer, _only(result)) == ["shipping<|im_end|>"]


def test_all_labels_every_token_but_the_first(chat_tokenizer, conversations):
    result = encode_conversation(chat_tokenizer, conversations[0], max_seq_len=512, loss_on="all")
    ids, labels = _only(result)["input_ids"], _only(result)["labels"]
    assert labels[0] == -100 and labels[1:] == ids[1:]
    assert result.n_trained == len(ids) - 1


def test_prompt_is_the_prefix_before_the_final_answer(chat_tokenizer, conversations):
    for conversation in conversations:
        prompt = encode_prompt(chat_tokenizer, conversation)
        ids = _only(encode_conversation(chat_tokenizer, conversation, max_seq_len=512))["input_ids"]
        assert ids[: len(prompt)] == prompt
        assert chat_tokenizer.decode(prompt).endswith("<|im_start|>assistant\n")
        assert chat_tokenizer.decode(ids[len(prompt) :]) == conversation[-1]["content"] + "<|im_end|>\n"
        served = chat_tokenizer.apply_chat_template(conversation[:-1], add_generation_prompt=True, tokenize=True)
        assert prompt == served["input_ids"]


def test_prompt_of_a_conversation_without_answer_ends_with_the_header(chat_tokenizer, conversations):
    question = conversations[0][:2]
    prompt = encode_prompt(chat_tokenizer, question)
    rendered = chat_tokenizer.apply_chat_template(question, add_generation_prompt=True, tokenize=False)
    assert chat_tokenizer.decode(prompt) == rendered


def test_too_long_is_dropped(chat_tokenizer, conversations):
    full = encode_conversation(chat_tokenizer, conversations[1], max_seq_len=512)
    result = encode_conversation(chat_tokenizer, conversations[1], max_seq_len=full.n_tokens - 1)
    assert (_only(result), result.status, result.n_tokens, result.n_trained) == (
        None, "dropped_too_long", full.n_tokens, 0
    )


def test_truncate_keeps_the_first_tokens(chat_tokenizer, conversations):
    full = _only(encode_conversation(chat_tokenizer, conversations[1], max_seq_len=512))
    # Cut inside the final answer: the first answer stays labelled, the second is cut short.
    cut = len(encode_prompt(chat_tokenizer, conversations[1])) + 1
    result = encode_conversation(chat_tokenizer, conversations[1], max_seq_len=cut, on_too_long="truncate")
    assert result.status == "truncated"
    assert _only(result) == {"input_ids": full["input_ids"][:cut], "labels": full["labels"][:cut]}
    assert result.n_tokens == cut
    assert result.n_trained == sum(label != -100 for label in full["labels"][:cut])


def test_truncating_away_every_answer_token_drops_the_example(chat_tokenizer, conversations):
    prompt_len = len(encode_prompt(chat_tokenizer, conversations[0]))
    result = encode_conversation(chat_tokenizer, conversations[0], max_seq_len=prompt_len, on_too_long="truncate")
    assert (_only(result), result.status, result.n_trained) == (None, "dropped_no_target", 0)


def test_conversation_without_answer_is_dropped(chat_tokenizer, conversations):
    result = encode_conversation(chat_tokenizer, conversations[0][:2], max_seq_len=512)
    assert (_only(result), result.status) == (None, "dropped_no_target")


def test_dataset_counts(chat_tokenizer, conversations):
    lengths = [encode_conversation(chat_tokenizer, c, max_seq_len=512).n_tokens for c in conversations]
    data = conversations + [conversations[0][:2]]  # the last has no answer
    longest = max(lengths)
    examples, counts = encode_dataset(chat_tokenizer, data, max_seq_len=longest - 1, on_too_long="drop")
    singles = [encode_conversation(chat_tokenizer, c, max_seq_len=longest - 1) for c in data]
    assert examples == [_only(r) for r in singles if r.examples]
    tokens = sum(n for n in lengths if n < longest)
    trained = sum(r.n_trained for r in singles)
    assert counts == {
        "examples": 5,
        "kept": 3,
        "truncated": 0,
        "dropped_too_long": 1,
        "dropped_no_target": 1,
        "template_rejected": 0,
        "split": 0,
        "split_reasons": {},
        "rows": 3,
        "eos_appended": 0,
        "reasoning": 0,
        "reasoning_dropped": 0,
        "tokens": tokens,
        "trained_tokens": trained,
        "trained_fraction": trained / tokens,
        "warnings": [],
    }


def test_dataset_encoding_at_scale_matches_one_by_one(chat_tokenizer, conversations):
    # The batched encoder must give exactly what encoding each conversation alone gives.
    data = [conversations[i % len(conversations)] for i in range(2000)]
    examples, counts = encode_dataset(chat_tokenizer, data, max_seq_len=512)
    assert counts["kept"] == len(examples) == 2000
    for i in range(len(conversations)):
        alone = _only(encode_conversation(chat_tokenizer, data[i], max_seq_len=512))
        assert examples[i] == alone


def test_default_template_when_tokenizer_has_none(chat_tokenizer, conversations):
    bare = _with_template(chat_tokenizer, None)
    assert chat_template_of(bare) == DEFAULT_CHAT_TEMPLATE
    result = encode_conversation(bare, conversations[0], max_seq_len=512)
    assert _labelled_spans(bare, _only(result)) == ["billing<|im_end|>"]


def test_template_that_trims_content_and_ends_turns_differently(chat_tokenizer):
    # Llama-3 style: content trimmed, header ends in a blank line, no newline after the end-of-turn token.
    template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n\n{{ m['content'] | trim }}<|im_end|>{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n\n{% endif %}"
    )
    tokenizer = _with_template(chat_tokenizer, template)
    conversation = [{"role": "user", "content": "Order 4412."}, {"role": "assistant", "content": "  shipping \n"}]
    result = encode_conversation(tokenizer, conversation, max_seq_len=512)
    assert _labelled_spans(tokenizer, _only(result)) == ["shipping<|im_end|>"]


def test_template_that_is_not_prefix_stable_gives_one_example_per_turn(chat_tokenizer, conversations):
    # Like Qwen3: only the final assistant turn gets a reasoning block, so earlier turns render differently
    # once the conversation goes on. Each trained turn becomes its own example with its serving-time prompt.
    template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
        "{% if loop.last and m['role'] == 'assistant' %}<think></think>{% endif %}{{ m['content'] }}<|im_end|>\n"
        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    tokenizer = _with_template(chat_tokenizer, template)
    conversation = conversations[1]
    result = encode_conversation(tokenizer, conversation, max_seq_len=512)
    assert result.split == "renders_turns_differently"
    assert [_labelled_spans(tokenizer, e) for e in result.examples] == [
        ["<think></think>Which order number?<|im_end|>"], ["<think></think>shipping<|im_end|>"]
    ]
    for i, example in zip((1, 3), result.examples):
        served = tokenizer.apply_chat_template(conversation[:i], add_generation_prompt=True, tokenize=True)["input_ids"]
        first_label = next(k for k, label in enumerate(example["labels"]) if label != -100)
        assert example["input_ids"][:first_label] == served


@pytest.fixture(scope="module")
def metaspace_tokenizer(conversations):
    """A SentencePiece-style tokenizer: every encoded string gets a prefix space ("▁") at its start."""
    tok = Tokenizer(models.BPE(byte_fallback=True, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="first")
    tok.decoder = decoders.Sequence(
        [decoders.Metaspace(prepend_scheme="first"), decoders.ByteFallback(), decoders.Fuse()]
    )
    specials = ["<unk>", "<|pad|>", "<|im_start|>", "<|im_end|>"] + [f"<0x{i:02X}>" for i in range(256)]
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=specials, show_progress=False)
    tok.train_from_iterator([m["content"] for c in conversations for m in c] * 20, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<|pad|>", eos_token="<|im_end|>", unk_token="<unk>")
    fast.chat_template = DEFAULT_CHAT_TEMPLATE
    return fast


def test_prefix_space_tokenizer_gets_no_space_inside_the_chat(metaspace_tokenizer, conversations):
    for conversation in conversations:
        rendered = metaspace_tokenizer.apply_chat_template(conversation, tokenize=False)
        example = _only(encode_conversation(metaspace_tokenizer, conversation, max_seq_len=512))
        assert example["input_ids"] == metaspace_tokenizer(rendered, add_special_tokens=False)["input_ids"]
        expected = [m["content"] + "<|im_end|>" for m in conversation if m["role"] == "assistant"]
        assert _labelled_spans(metaspace_tokenizer, example) == expected


def test_the_answer_starts_where_the_prompt_and_the_render_stop_agreeing():
    # The encoder finds where an answer starts by the common prefix of the serving prompt and the rendered turn;
    # every split point of a render, and renders that diverge early, late or never, must give the exact length.
    rng = random.Random(0)
    pairs = [("", ""), ("abc", ""), ("", "abc"), ("abc", "abc"), ("abc", "abcdef"), ("abcdef", "abc"),
             ("<|im_start|>assistant\n<think>\n", "<|im_start|>assistant\nHello<|im_end|>")]
    for _ in range(300):
        base = "".join(rng.choice("ab<|>\n") for _ in range(rng.randint(0, 60)))
        pairs.append((base + "".join(rng.choice("ab") for _ in range(rng.randint(0, 5))),
                      base + "".join(rng.choice("ab") for _ in range(rng.randint(0, 5)))))
    for a, b in pairs:
        assert _common_prefix(a, b) == len(os.path.commonprefix([a, b])), (a, b)
