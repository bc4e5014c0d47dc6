"""init_tiny writes a standard Hugging Face chat model directory built only from local data."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

from raysft.data.errors import DataError
from raysft.model.tiny import init_tiny


def test_layout_and_config(tiny_model):
    names = {p.name for p in tiny_model.iterdir()}
    assert {"config.json", "model.safetensors", "generation_config.json", "tokenizer.json", "tokenizer_config.json"} <= names
    config = json.loads((tiny_model / "config.json").read_text())
    assert config["hidden_size"] == 64 and config["num_hidden_layers"] == 2 and config["num_attention_heads"] == 4
    assert config["tie_word_embeddings"] is False
    # ~2.7x hidden, a multiple of the 64-element 4-bit block (bitsandbytes on CPU misreads partial blocks)
    assert config["intermediate_size"] == 192


def test_loads_with_auto_classes_and_chat_template(tiny_model):
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    assert isinstance(model, LlamaForCausalLM)
    assert model.config.vocab_size == len(tokenizer)
    assert model.config.eos_token_id == tokenizer.convert_tokens_to_ids("<|im_end|>") == tokenizer.eos_token_id
    assert model.config.pad_token_id == tokenizer.convert_tokens_to_ids("<|pad|>") == tokenizer.pad_token_id
    assert model.generation_config.eos_token_id == tokenizer.eos_token_id
    assert model.generation_config.pad_token_id == tokenizer.pad_token_id

    text = tokenizer.apply_chat_template([{"role": "user", "content": "Order 4412."}], tokenize=False, add_generation_prompt=True)
    assert text == "<|im_start|>user\nOrder 4412.<|im_end|>\n<|im_start|>assistant\n"
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "应用闪退"}], add_generation_prompt=True)["input_ids"]
    assert tokenizer.decode(ids) == "<|im_start|>user\n应用闪退<|im_end|>\n<|im_start|>assistant\n"


def test_same_seed_same_weights_silently_and_caller_rng_untouched(tmp_path, chat_file, capfd):
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    capfd.readouterr()
    a = init_tiny(tmp_path / "a", chat_file, vocab_size=400, hidden_size=32, layers=1, heads=2, seed=7)
    assert capfd.readouterr() == ("", "")
    assert torch.equal(torch.rand(1), expected_next)
    b = init_tiny(tmp_path / "b", chat_file, vocab_size=400, hidden_size=32, layers=1, heads=2, seed=7)
    c = init_tiny(tmp_path / "c", chat_file, vocab_size=400, hidden_size=32, layers=1, heads=2, seed=8)
    wa, wb, wc = (AutoModelForCausalLM.from_pretrained(p).state_dict() for p in (a, b, c))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not torch.equal(wa["model.embed_tokens.weight"], wc["model.embed_tokens.weight"])


def test_prompt_completion_records(tmp_path):
    data = tmp_path / "pc.jsonl"
    lines = [
        {"prompt": "Classify: refund please", "completion": "billing"},
        {"prompt": "parcel late", "completion": "shipping", "system": "Route tickets."},
    ]
    data.write_text("\n".join(json.dumps(x) for x in lines * 10) + "\n")
    out = init_tiny(tmp_path / "m", data, vocab_size=500, hidden_size=32, layers=1, heads=2)
    tokenizer = AutoTokenizer.from_pretrained(out)
    # BPE merges learnt from every field (prompt, completion, system): frequent words are single tokens
    assert [len(tokenizer.tokenize(w)) for w in ("Classify", "billing", "shipping", "Route")] == [1, 1, 1, 1]


def test_bad_data_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match="missing.jsonl"):
        init_tiny(tmp_path / "m", tmp_path / "missing.jsonl")
    invalid = tmp_path / "invalid.jsonl"
    invalid.write_text('{"text": "no chat fields"}\n{not json\n')
    with pytest.raises(DataError, match=r"invalid.jsonl: no valid conversations \(2 invalid records\); run `raysft data check"):
        init_tiny(tmp_path / "m", invalid)
    assert not (tmp_path / "m").exists()


def test_hidden_size_must_split_into_heads(tmp_path, chat_file):
    with pytest.raises(ValueError, match="hidden_size 30 must be a multiple of heads 4"):
        init_tiny(tmp_path / "m", chat_file, hidden_size=30, heads=4)
