"""Loss masks on the real chat templates of popular model families (tests/data/templates, sources.json).

Each template gets a byte-level BPE tokenizer trained here with that model's special tokens. For every trained
span the tokens before it must be exactly the serving-time prompt (``apply_chat_template(messages[:i],
add_generation_prompt=True)`` tokenized) and the span must be the answer through the model's end-of-turn token.
"""

import json
from pathlib import Path

import pytest
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from raysft.data.preview import label_spans
from raysft.data.render import Renderer
from raysft.data.template import encode_conversation, encode_dataset, encode_final_turn

TEMPLATES = Path(__file__).parent / "templates"
SOURCES = {k: v for k, v in json.loads((TEMPLATES / "sources.json").read_text(encoding="utf-8")).items() if k[0] != "_"}
FAMILIES = sorted(SOURCES)
TOOL_FAMILIES = [f for f in FAMILIES if SOURCES[f]["tools"]]

SYSTEM = {"role": "system", "content": "Route each support ticket to one team: billing, shipping or technical."}
Q1 = {"role": "user", "content": "I was charged twice for my last order."}
A1 = {"role": "assistant", "content": "billing"}
Q2 = {"role": "user", "content": "And the parcel has not moved for a week."}
A2 = {"role": "assistant", "content": "shipping"}
CHINESE = [{"role": "user", "content": "应用一打开就闪退，怎么办？"}, {"role": "assistant", "content": "技术支持：请先更新应用。"}]
TOOLS = [{"type": "function", "function": {
    "name": "get_order", "description": "Look up an order by its number",
    "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]}}}]
CALL = {"role": "assistant", "content": "", "tool_calls": [
    {"id": "call12345", "type": "function", "function": {"name": "get_order", "arguments": '{"order_id": "4412"}'}}]}
RESULT = {"role": "tool", "tool_call_id": "call12345", "content": '{"status": "in transit"}'}
AFTER = {"role": "assistant", "content": "Order 4412 is in transit."}
ORDER_Q = {"role": "user", "content": "Where is order 4412?"}


def _train(family: str, sentencepiece: bool = False) -> PreTrainedTokenizerFast:
    src = SOURCES[family]
    specials = src["specials"]
    if sentencepiece:  # Mistral's and Llama 2's kind: a "▁" in front of every encoded string, bytes as <0x..> tokens
        tok = Tokenizer(models.BPE(byte_fallback=True, unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="first")
        tok.decoder = decoders.Sequence([decoders.Metaspace(prepend_scheme="first"), decoders.ByteFallback(), decoders.Fuse()])
        specials = specials + [f"<0x{i:02X}>" for i in range(256)]
        alphabet = []
    else:
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        alphabet = pre_tokenizers.ByteLevel.alphabet()
    texts = [m["content"] for m in (SYSTEM, Q1, A1, Q2, A2, *CHINESE, ORDER_Q, AFTER)] * 20
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=specials, initial_alphabet=alphabet, show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=src["bos"], eos_token=src["eos"],
                                   pad_token=src["pad"], unk_token="<unk>" if sentencepiece else None)
    fast.add_special_tokens({"additional_special_tokens": [t for t in src["specials"]
                                                            if t not in (src["bos"], src["eos"], src["pad"])]})
    fast.add_tokens([AddedToken(t, special=False, normalized=False) for t in src["added"]])
    fast.chat_template = (TEMPLATES / f"{family}.jinja").read_text(encoding="utf-8")
    fast.name_or_path = family
    return fast


_CACHE: dict = {}
_SENTENCEPIECE_MISTRAL = _train("mistral-v0.3", sentencepiece=True)


def tokenizer_for(family: str) -> PreTrainedTokenizerFast:
    if family not in _CACHE:
        _CACHE[family] = _train(family)
    return _CACHE[family]


def _served(tokenizer, messages, tools=None) -> list[int]:
    renderer = Renderer(tokenizer)
    prepared = [renderer.template_message(m) for m in messages]
    try:
        text = tokenizer.apply_chat_template(prepared, tools=tools, add_generation_prompt=True, tokenize=False)
    except Exception:
        # transformers drops a None content, which DeepSeek's templates need for a tool-call turn (vLLM keeps it)
        text = renderer.render(messages, tools, True)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def _check(family, messages, *, loss_on="assistant", tools=None, tokenizer=None):
    """Encode, then check every span against the serving prompt and the end of turn; returns the decoded spans."""
    tokenizer = tokenizer or tokenizer_for(family)
    result = encode_conversation(tokenizer, messages, max_seq_len=4096, loss_on=loss_on, tools=tools)
    assert result.status == "ok", result
    trained = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    trained = trained[-1:] if loss_on == "last_assistant" else trained
    spans = [(e, s) for e in result.examples for s in label_spans(e["labels"])]
    assert len(spans) == len(trained)
    end_of_turn = SOURCES[family]["end_of_turn"] or SOURCES[family]["eos"]
    decoded = []
    for i, (example, (start, end)) in zip(trained, spans):
        assert example["input_ids"][:start] == _served(tokenizer, messages[:i], tools), f"prompt of message {i}"
        assert example["labels"][start:end] == example["input_ids"][start:end]
        assert example["input_ids"][end - 1] == tokenizer.convert_tokens_to_ids(end_of_turn), "end of turn trained"
        text = tokenizer.decode(example["input_ids"][start:end])
        content = messages[i].get("content") or ""
        assert content.strip() in text
        decoded.append(text)
    return result, decoded


@pytest.mark.parametrize("family", FAMILIES)
def test_single_turn(family):
    result, decoded = _check(family, [Q1, A1])
    assert len(result.examples) == 1 and decoded[0].endswith(SOURCES[family]["end_of_turn"] or SOURCES[family]["eos"])


@pytest.mark.parametrize("messages", [[Q1, A1], [SYSTEM, Q1, A1], [Q1, A1, Q2, A2], [SYSTEM, Q1, A1, Q2, A2], CHINESE])
def test_sentencepiece_tokenizer_on_mistral(messages):
    """Mistral v0.3 ships a SentencePiece tokenizer: a piece encoded alone gets no space the rendered chat lacks."""
    _check("mistral-v0.3", messages, tokenizer=_SENTENCEPIECE_MISTRAL)


@pytest.mark.parametrize("family", FAMILIES)
def test_system_prompt(family):
    tokenizer = tokenizer_for(family)
    result = encode_conversation(tokenizer, [SYSTEM, Q1, A1], max_seq_len=4096)
    if family == "gemma-2":  # its template refuses a system role: a finding, not a crash
        assert (result.status, result.error) == ("template_rejected", "System role not supported")
        return
    _check(family, [SYSTEM, Q1, A1])


@pytest.mark.parametrize("loss_on", ["assistant", "last_assistant"])
@pytest.mark.parametrize("family", FAMILIES)
def test_multi_turn(family, loss_on):
    messages = [SYSTEM, Q1, A1, Q2, A2] if family != "gemma-2" else [Q1, A1, Q2, A2]
    _check(family, messages, loss_on=loss_on)


@pytest.mark.parametrize("family", FAMILIES)
def test_chinese(family):
    _, decoded = _check(family, CHINESE)
    assert "技术支持：请先更新应用。" in decoded[0]


@pytest.mark.parametrize("inline", [False, True], ids=["reasoning_content", "think_in_content"])
@pytest.mark.parametrize("family", FAMILIES)
def test_reasoning(family, inline):
    reasoning = "The customer mentions a double charge."
    answer = ({"role": "assistant", "content": f"<think>\n{reasoning}\n</think>\n\nbilling"} if inline
              else {"role": "assistant", "content": "billing", "reasoning_content": reasoning})
    tokenizer = tokenizer_for(family)
    result = encode_conversation(tokenizer, [Q1, answer], max_seq_len=4096)
    assert result.reasoning and result.status == "ok"
    text = tokenizer.decode([t for t, label in zip(result.examples[0]["input_ids"], result.examples[0]["labels"])
                             if label != -100])
    # Every template trains the reasoning except R1-Distill's original, which drops it (and the report says so).
    assert (reasoning in text) == (family != "deepseek-r1-distill-original")
    assert result.reasoning_dropped == (family == "deepseek-r1-distill-original")
    assert text.rstrip().endswith(SOURCES[family]["end_of_turn"] or SOURCES[family]["eos"])


@pytest.mark.parametrize("family", TOOL_FAMILIES)
def test_tool_calls(family):
    messages = [ORDER_Q, CALL, RESULT, AFTER]
    tokenizer = tokenizer_for(family)
    result = encode_conversation(tokenizer, messages, max_seq_len=4096, tools=TOOLS)
    assert result.status == "ok", result
    spans = [tokenizer.decode(e["input_ids"][s:t]) for e in result.examples for s, t in label_spans(e["labels"])]
    assert len(spans) == 2 and "get_order" in spans[0] and "4412" in spans[0]
    assert "in transit" not in spans[0] + spans[1].replace("Order 4412 is in transit.", "")  # results never trained
    for e in result.examples:
        for s, _ in label_spans(e["labels"]):
            turn = 1 if "get_order" in tokenizer.decode(e["input_ids"][s:]) else 3
            assert e["input_ids"][:s] == _served(tokenizer, messages[:turn], TOOLS)


@pytest.mark.parametrize("family", sorted(set(FAMILIES) - set(TOOL_FAMILIES)))
def test_tool_data_on_a_template_without_tools_is_a_clear_error(family):
    from raysft.data.template import ChatTemplateError

    with pytest.raises(ChatTemplateError, match=f"{family}.*no tool support"):
        encode_conversation(tokenizer_for(family), [ORDER_Q, CALL, RESULT, AFTER], max_seq_len=4096, tools=TOOLS)


def test_what_each_family_trains():
    """The facts the issue names: which families split, which need EOS appended, what the target looks like."""
    multi = [SYSTEM, Q1, A1, Q2, A2]
    _, counts = encode_dataset(tokenizer_for("qwen3"), [multi], max_seq_len=4096)
    assert counts["split"] == 1 and counts["rows"] == 2
    _, decoded = _check("qwen3", [Q1, A1])
    assert decoded == ["<think>\n\n</think>\n\nbilling<|im_end|>"]
    _, decoded = _check("glm-4", multi)  # nothing after the answer: EOS appended, so each turn is its own example
    assert decoded == ["\nbilling<|endoftext|>", "\nshipping<|endoftext|>"]
    _, decoded = _check("deepseek-r1", [Q1, A1])  # prompt ends in <think>\n, target is the rendered answer
    assert decoded == ["billing<｜end▁of▁sentence｜>"]
    result, decoded = _check("phi-3.5-mini", multi)  # the EOS its full render ends with is prompt text
    assert decoded == ["billing<|end|>", "shipping<|end|>"] and result.split is None
    for family in ("qwen2.5", "llama-3.1", "llama-3.2", "gemma-3", "phi-4", "yi-1.5", "internlm2.5"):
        result, _ = _check(family, multi)
        assert result.split is None and len(result.examples) == 1, family
    for family in ("mistral-v0.3", "mistral-nemo"):  # the system prompt moves into the last user message
        result, _ = _check(family, multi)
        assert result.split == "renders_turns_differently"
        assert _check(family, [Q1, A1, Q2, A2])[0].split is None


def test_special_token_text_inside_an_answer_does_not_cut_the_span():
    tokenizer = tokenizer_for("qwen3")
    answer = {"role": "assistant", "content": "Write <|im_end|> to end a turn."}
    _, decoded = _check("qwen3", [Q1, answer])
    assert decoded == ["<think>\n\n</think>\n\nWrite <|im_end|> to end a turn.<|im_end|>"]
    prompt, target = encode_final_turn(tokenizer, [Q1, answer])
    assert tokenizer.decode(target) == decoded[0]


def test_weight_zero_turn_is_context():
    messages = [Q1, {**A1, "weight": 0}, Q2, A2]
    _, decoded = _check("llama-3.2", messages, loss_on="last_assistant")
    assert decoded == ["shipping<|eot_id|>"]
    result = encode_conversation(tokenizer_for("llama-3.2"), messages, max_seq_len=4096)
    assert len(label_spans(result.examples[0]["labels"])) == 1


def test_the_date_is_fixed_per_run():
    import datetime

    tokenizer = tokenizer_for("llama-3.2")
    day = datetime.date(2026, 3, 1)
    a = encode_conversation(tokenizer, [Q1, A1], max_seq_len=4096, date=day).examples
    b = encode_conversation(tokenizer, [Q1, A1], max_seq_len=4096, date=datetime.date(2026, 3, 2)).examples
    assert a != b and "01 Mar 2026" in tokenizer.decode(a[0]["input_ids"])
    assert a == encode_conversation(tokenizer, [Q1, A1], max_seq_len=4096, date=day).examples


@pytest.mark.parametrize("family, ends", [
    ("gemma-2", ["<eos>", "<end_of_turn>"]), ("phi-3.5-mini", ["<|endoftext|>", "<|end|>"]),
    ("llama-3.2", ["<|eot_id|>"]), ("internlm2.5", ["</s>", "<|im_end|>"]), ("glm-4", ["<|endoftext|>"])])
def test_generation_stops_at_every_end_of_turn_token(family, ends):
    from raysft.data.template import end_of_turn_ids

    tokenizer = tokenizer_for(family)
    assert end_of_turn_ids(tokenizer) == tokenizer.convert_tokens_to_ids(ends)
    generation_eos = tokenizer.convert_tokens_to_ids(SOURCES[family]["generation_eos"])
    assert set(generation_eos) <= set(end_of_turn_ids(tokenizer, generation_eos))


def test_rows_the_template_rejects_are_skipped_and_counted():
    rows = [[Q1, A1], [SYSTEM, Q1, A1], [Q1, A1, Q2, A2], [Q1, Q2, A2]]
    examples, counts = encode_dataset(tokenizer_for("gemma-2"), rows, max_seq_len=4096)
    assert (counts["kept"], counts["template_rejected"], len(examples)) == (2, 2, 2)
