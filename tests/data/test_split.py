"""Validation split, stratification, multi-task weights and mixing, and the realised composition."""

import random
from collections import Counter

import pytest

from raysft.config import load_spec
from raysft.data.errors import DataError
from raysft.data.pipeline import prepare_data
from raysft.data.split import apply_weight, mix_counts, split_validation, stratum_of
from data_helpers import write_conversations


def _items(labels):
    return [{"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": lab}],
             "record": {"metadata": {"industry": lab.upper()}}} for i, lab in enumerate(labels)]


def test_split_is_deterministic_by_seed_and_disjoint():
    items = _items(["a"] * 50 + ["b"] * 50)
    train, val = split_validation(items, 0.1, seed=3)
    assert len(val) == 10 and len(train) == 90
    assert split_validation(items, 0.1, seed=3) == (train, val)
    assert split_validation(items, 0.1, seed=4)[1] != val
    assert {id(x) for x in train}.isdisjoint({id(x) for x in val})


@pytest.mark.parametrize("key", ["assistant", "metadata.industry"])
def test_stratified_split_keeps_class_shares(key):
    items = _items(["a"] * 80 + ["b"] * 16 + ["c"] * 4)
    random.Random(0).shuffle(items)
    train, val = split_validation(items, 0.25, seed=1, stratify_by=key)
    counts = Counter(stratum_of(x, key) for x in val)
    assert sorted(counts.values()) == [1, 4, 20]
    assert len(train) + len(val) == 100


def test_stratify_by_missing_field_names_it():
    with pytest.raises(DataError, match="metadata.nope"):
        split_validation(_items(["a", "b", "a"]), 0.3, seed=0, stratify_by="metadata.nope")


def test_weights_and_mix_counts():
    rows = list(range(10))
    assert len(apply_weight(rows, 2.5, seed=0)) == 25
    assert Counter(apply_weight(rows, 2.0, seed=0)) == Counter(rows * 2)
    assert len(apply_weight(rows, 0.3, seed=0)) == 3
    # 80 domain rows + 20% general → 100 rows in all, 20 of them general.
    assert mix_counts(80, [0.2]) == [20]
    assert mix_counts(70, [0.2, 0.1]) == [20, 10]


def test_prepare_data_reports_the_realised_composition(tmp_path, chat_tokenizer):
    domain = write_conversations(tmp_path / "domain.jsonl", ["yes", "no"] * 40, "domain")
    task2 = write_conversations(tmp_path / "task2.jsonl", ["maybe"] * 20, "task")
    general = write_conversations(tmp_path / "general.jsonl", ["hello there"] * 30, "general")
    spec = load_spec({"model": {"name_or_path": "x"}, "data": {
        "train": [domain, {"path": task2, "weight": 2}], "validation_split": 0.1, "stratify_by": "assistant",
        "mix": [{"path": general, "ratio": 0.2}], "max_seq_len": 64}})
    prepared = prepare_data(spec.data, chat_tokenizer, seed=0)
    comp = prepared.composition
    # 100 rows held 10% out per class: 72 domain + 18 task2 (x2 weight = 36) train; 8 + 2 validation.
    assert comp["train"][domain]["rows"] == 72
    assert comp["train"][task2]["rows"] == 36
    assert comp["validation"][domain]["rows"] == 8 and comp["validation"][task2]["rows"] == 2
    # general is 20% of the final train set: 108 / 0.8 * 0.2 = 27 rows.
    assert comp["train"][general]["rows"] == 27
    assert comp["train"][general]["share"] == pytest.approx(0.2, abs=0.01)
    assert all(v["tokens"] > v["trained_tokens"] > 0 for v in comp["train"].values())
    assert len(prepared.train) == 135 and len(prepared.validation) == 10
    assert len(prepared.validation_conversations) == 10


def test_prepare_data_fails_when_nothing_is_trainable(tmp_path, chat_tokenizer):
    path = write_conversations(tmp_path / "d.jsonl", ["a long answer " * 20] * 5, "q")
    spec = load_spec({"model": {"name_or_path": "x"}, "data": {"train": [path], "max_seq_len": 8, "validation_split": 0}})
    with pytest.raises(DataError, match="no train example is left"):
        prepare_data(spec.data, chat_tokenizer, seed=0)
    with pytest.raises(DataError, match="no such file"):
        prepare_data(load_spec({"model": {"name_or_path": "x"}, "data": {"train": [str(tmp_path / "none.jsonl")]}}).data,
                     chat_tokenizer, seed=0)


def test_prepare_data_fixes_the_template_date_and_records_it(tmp_path, chat_tokenizer):
    import copy
    import datetime

    spec = load_spec({"model": {"name_or_path": "x"}, "data": {
        "train": [write_conversations(tmp_path / "d.jsonl", ["yes", "no"] * 10, "d")], "validation_split": 0.1}})
    tokenizer = copy.deepcopy(chat_tokenizer)  # a system line with today's date, as Llama 3.2 writes one
    tokenizer.chat_template = "<|im_start|>system\n{{ strftime_now('%d %b %Y') }}<|im_end|>\n" + chat_tokenizer.chat_template
    dated = [spec.data.model_copy(update={"template_date": datetime.date(2026, 3, day)}) for day in (1, 1, 2)]
    first, again, other = (prepare_data(data, tokenizer, seed=0) for data in dated)
    assert first.template_date == "2026-03-01" and first.train == again.train != other.train
    assert "01 Mar 2026" in tokenizer.decode(first.train[0]["input_ids"])
    assert prepare_data(spec.data, tokenizer, seed=0).template_date == datetime.date.today().isoformat()
