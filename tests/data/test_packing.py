"""Packing: best-fit rows, and a packed batch gives the same loss and logits as the same examples unpacked."""


import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import LlamaConfig, LlamaForCausalLM

from raysft.data.packing import collate, pack
from raysft.data.template import encode_dataset


def test_pack_best_fit_decreasing():
    # 5 opens row 0 (3 free), 4 opens row 1 (4 free), 3 fills row 0 exactly (best fit), 3 and 1 go to row 1.
    assert pack([5, 4, 3, 3, 1], 8) == [[0, 2], [1, 3, 4]]


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 64).flatmap(lambda cap: st.tuples(st.just(cap), st.lists(st.integers(1, cap), max_size=60))))
def test_pack_places_each_example_once_within_capacity(case):
    max_seq_len, lengths = case
    rows = pack(lengths, max_seq_len)
    assert sorted(i for row in rows for i in row) == list(range(len(lengths)))
    loads = [sum(lengths[i] for i in row) for row in rows]
    assert all(load <= max_seq_len for load in loads)
    # A row is only opened for an example that fits in no earlier row, so no two rows could be merged.
    assert all(a + b > max_seq_len for k, a in enumerate(loads) for b in loads[k + 1 :])
    assert pack(lengths, max_seq_len) == rows


@pytest.mark.parametrize("length", [0, 9])
def test_pack_rejects_examples_that_do_not_fit(length):
    with pytest.raises(ValueError, match=f"example 1 has {length} tokens"):
        pack([3, length], 8)


def test_pack_fills_rows_at_scale():
    # Speed lives in benchmarks/, not here: this checks placement and fill on 100k examples.
    lengths = [(i * 7919) % 2000 + 1 for i in range(100_000)]
    rows = pack(lengths, 2048)
    assert sorted(i for row in rows for i in row) == list(range(100_000))
    assert all(sum(lengths[i] for i in row) <= 2048 for row in rows)
    assert sum(lengths) / (len(rows) * 2048) > 0.95  # rows are nearly full


def _ex(ids, labels):
    return {"input_ids": ids, "labels": labels}


def test_collate_packed_rows():
    rows = [[_ex([1, 2, 3], [1, 2, 3]), _ex([4, 5], [-100, 5])], [_ex([6, 7], [6, 7])]]
    batch = collate(rows, pad_id=0, packed=True, pad_to_multiple_of=4)
    assert set(batch) == {"input_ids", "labels", "position_ids", "num_trained_tokens"}  # no attention_mask
    assert batch["input_ids"].tolist() == [[1, 2, 3, 4, 5, 0, 0, 0], [6, 7, 0, 0, 0, 0, 0, 0]]
    # Each example's first label is -100: the shifted loss never predicts across an example boundary.
    assert batch["labels"].tolist() == [[-100, 2, 3, -100, 5, -100, -100, -100], [-100, 7] + [-100] * 6]
    # Positions restart per example; the padding tail is a segment of its own.
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1, 0, 1, 2], [0, 1, 0, 1, 2, 3, 4, 5]]
    assert batch["num_trained_tokens"].item() == 4
    assert all(t.dtype == torch.long for t in batch.values())


def test_collate_unpacked_right_pads_with_attention_mask():
    batch = collate([_ex([1, 2, 3], [-100, 2, 3]), _ex([4], [4])], pad_id=9, packed=False)
    assert batch["input_ids"].tolist() == [[1, 2, 3], [4, 9, 9]]
    assert batch["labels"].tolist() == [[-100, 2, 3], [-100, -100, -100]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["position_ids"].tolist() == [[0, 1, 2], [0, 1, 2]]
    assert batch["num_trained_tokens"].item() == 2


def test_collate_rejects_mismatched_input():
    with pytest.raises(TypeError, match="packed=True takes rows"):
        collate([_ex([1], [1])], pad_id=0, packed=True)
    with pytest.raises(TypeError, match="packed=False takes a list of examples"):
        collate([[_ex([1], [1])]], pad_id=0, packed=False)
    with pytest.raises(ValueError, match="2 input_ids and 1 labels"):
        collate([_ex([1, 2], [1])], pad_id=0, packed=False)


def _tiny_llama(vocab_size, attn_implementation):
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        attn_implementation=attn_implementation,
    )
    model = LlamaForCausalLM(config).float().eval()
    assert model.config._attn_implementation == attn_implementation
    return model


def _forward(model, batch):
    """Logits (B, T, V) and the token-weighted loss (sum of per-token CE / labelled tokens)."""
    inputs = {k: v for k, v in batch.items() if k != "num_trained_tokens"}
    labels = inputs.pop("labels")
    with torch.no_grad():
        # use_cache=False: with a cache, transformers skips the packed-sequence detection from position_ids.
        logits = model(**inputs, use_cache=False).logits
    per_token = torch.nn.functional.cross_entropy(
        logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100, reduction="sum"
    )
    return logits, per_token / batch["num_trained_tokens"]


@pytest.mark.parametrize("loss_on", ["assistant", "all"])
@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
def test_packed_equals_unpacked(chat_tokenizer, conversations, attn_implementation, loss_on):
    examples, _ = encode_dataset(chat_tokenizer, conversations, max_seq_len=128, loss_on=loss_on)
    if loss_on == "all":
        for e in examples:  # as pre-tokenized data may come: even the first token labelled
            e["labels"][0] = e["input_ids"][0]
    model = _tiny_llama(len(chat_tokenizer), attn_implementation)
    rows = pack([len(e["input_ids"]) for e in examples], 128)
    assert max(len(row) for row in rows) > 1 and len(rows) > 1  # several examples per row, several rows

    packed = collate([[examples[i] for i in row] for row in rows], pad_id=chat_tokenizer.pad_token_id, packed=True)
    unpacked = collate(examples, pad_id=chat_tokenizer.pad_token_id, packed=False)
    assert packed["num_trained_tokens"] == unpacked["num_trained_tokens"]
    packed_logits, packed_loss = _forward(model, packed)
    unpacked_logits, unpacked_loss = _forward(model, unpacked)
    assert packed_loss.item() == pytest.approx(unpacked_loss.item(), abs=1e-5)

    for r, row in enumerate(rows):
        start = 0
        for i in row:
            n = len(examples[i]["input_ids"])
            torch.testing.assert_close(packed_logits[r, start : start + n], unpacked_logits[i, :n], atol=1e-5, rtol=0)
            start += n

    # Flattening packed rows into one (what flash-attention varlen needs) is the same batch.
    flat = {k: v.reshape(1, -1) if v.dim() else v for k, v in packed.items()}
    _, flat_loss = _forward(model, flat)
    assert flat_loss.item() == pytest.approx(unpacked_loss.item(), abs=1e-5)
