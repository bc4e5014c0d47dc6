"""The encoded cache: the same examples as the in-memory pipeline, a key that moves with every input, and entries
that are complete or ignored. Encoded in this process (`use_ray=False`); the Ray Data path runs in the training
integration tests."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from raysft.config import load_spec
from raysft.data.cache import cache_key, open_entry
from raysft.data.errors import DataError
from raysft.data.pipeline import prepare_data
from raysft.data.prepare import prepare_cached
from data_helpers import write_conversations


@pytest.fixture
def setup(tmp_path, chat_tokenizer):
    tok_dir = tmp_path / "tok"
    chat_tokenizer.save_pretrained(tok_dir)
    domain = write_conversations(tmp_path / "domain.jsonl", ["yes", "no"] * 400, "domain")
    general = write_conversations(tmp_path / "general.jsonl", ["hello there"] * 300, "general")
    spec = load_spec({"model": {"name_or_path": "x"}, "data": {
        "train": [domain], "mix": [{"path": general, "ratio": 0.2}], "validation_split": 0.1, "max_seq_len": 64,
        "template_date": "2026-03-01"}})
    return spec, str(tok_dir), tmp_path


def test_cached_examples_equal_the_in_memory_pipeline_and_a_second_prepare_hits(setup, chat_tokenizer):
    spec, tok_dir, tmp = setup
    expected = prepare_data(spec.data, chat_tokenizer, 0)
    entry, hit = prepare_cached(spec.data, 0, chat_tokenizer, tok_dir, tmp / "cache", use_ray=False)
    assert not hit and len(entry.split("train")["shards"]) > 1  # several blocks, read back in order
    train, val = entry.examples("train"), entry.examples("validation")
    assert [train[i] for i in range(len(train))] == expected.train
    assert [val[i] for i in range(len(val))] == expected.validation
    assert entry.composition == expected.composition
    assert entry.split("train")["lengths"] == [len(e["input_ids"]) for e in expected.train]
    assert entry.validation_conversations(limit=3) == expected.validation_conversations[:3]
    again, hit = prepare_cached(spec.data, 0, chat_tokenizer, tok_dir, tmp / "cache", use_ray=False)
    assert hit and again.location == entry.location


@pytest.mark.parametrize("change", [
    "data.max_seq_len=65", "data.packing=false", "data.loss_on=all", "data.on_too_long=truncate",
    "data.validation_split=0.2", "data.stratify_by=assistant", "data.template_date=2026-03-02",
    "data.mix=[{path: GENERAL, ratio: 0.25}]", "seed", "file", "tokenizer", "template"])
def test_every_input_that_shapes_the_rows_changes_the_key(setup, chat_tokenizer, change):
    spec, tok_dir, tmp = setup
    key, _ = cache_key(spec.data, 0, tok_dir, chat_tokenizer.chat_template)
    assert cache_key(spec.data, 0, tok_dir, chat_tokenizer.chat_template)[0] == key  # stable
    data, seed, template = spec.data, 0, chat_tokenizer.chat_template
    if change == "seed":
        seed = 1
    elif change == "file":
        path = spec.data.train[0].path
        with open(path, "a", encoding="utf-8") as f:
            f.write("\n")
    elif change == "tokenizer":
        cfg = os.path.join(tok_dir, "tokenizer_config.json")
        raw = json.loads(open(cfg).read())
        raw["model_max_length"] = 7
        open(cfg, "w").write(json.dumps(raw))
    elif change == "template":
        template = template + "{{ '' }}"
    else:
        data = load_spec({"model": {"name_or_path": "x"}, "data": spec.data.model_dump(mode="json", exclude_unset=True)},
                         [change.replace("GENERAL", spec.data.mix[0].path)]).data
    assert cache_key(data, seed, tok_dir, template)[0] != key


def test_a_half_written_entry_is_never_used(setup, chat_tokenizer):
    spec, tok_dir, tmp = setup
    entry, _ = prepare_cached(spec.data, 0, chat_tokenizer, tok_dir, tmp / "cache", use_ray=False)
    expected = [entry.examples("train")[i] for i in range(3)]
    # A job killed before publishing leaves an attempt folder without a manifest: nothing to open under the key.
    os.remove(Path(entry.location) / "manifest.json")
    assert open_entry(tmp / "cache", entry.key) is None
    rebuilt, hit = prepare_cached(spec.data, 0, chat_tokenizer, tok_dir, tmp / "cache", use_ray=False)
    assert not hit and [rebuilt.examples("train")[i] for i in range(3)] == expected
    assert rebuilt.shards_dir != entry.shards_dir  # the half-written attempt is never read
    # A manifest whose attempt lost a shard is not an entry either.
    os.remove(Path(rebuilt.shards_dir) / rebuilt.split("train")["shards"][-1]["file"])
    assert open_entry(tmp / "cache", entry.key) is None


def test_bad_inputs_fail_with_one_line_naming_them(setup, chat_tokenizer):
    spec, tok_dir, tmp = setup
    missing = spec.data.model_copy(update={"train": [spec.data.train[0].model_copy(update={"path": str(tmp / "none.jsonl")})]})
    with pytest.raises(DataError, match="none.jsonl: no such file"):
        prepare_cached(missing, 0, chat_tokenizer, tok_dir, tmp / "cache", use_ray=False)
    blocked = tmp / "file-not-dir"
    blocked.write_text("x")
    with pytest.raises(DataError, match="data.cache_dir: cannot write to .*file-not-dir"):
        prepare_cached(spec.data, 0, chat_tokenizer, tok_dir, blocked, use_ray=False)


def _entry_examples(entry, split):
    store = entry.examples(split)
    return [store[i] for i in range(len(store))]


@pytest.mark.parametrize("fmt,cpus", [("jsonl", 1), ("json", 1), ("parquet", 1), ("saved", 1), ("jsonl", 3)])
def test_every_format_split_into_many_pieces_gives_the_in_memory_pipelines_rows(tmp_path, chat_tokenizer, monkeypatch,
                                                                                 fmt, cpus):
    # Pieces of 300 bytes: each file is read by many tasks, lines cross piece boundaries, and invalid records,
    # blank lines, weights, a stratified split and a mix are all selected from the index alone. The encode tasks
    # are cut for `cpus` actors: tasks straddle pieces and pieces are split between tasks.
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    import raysft.data.prepare as prepare
    import raysft.data.sources as sources

    monkeypatch.setattr(sources, "_PIECE_BYTES", 300)
    monkeypatch.setattr(prepare, "_cpus", lambda use_ray: cpus)
    real_plan, plans = prepare._plan, []
    monkeypatch.setattr(prepare, "_plan", lambda *args: plans.append(real_plan(*args)) or plans[-1])
    tok_dir = tmp_path / "tok"
    chat_tokenizer.save_pretrained(tok_dir)
    rows = [{"messages": [{"role": "user", "content": f"question {i} " + "x" * (i % 7)},
                          {"role": "assistant", "content": ["yes", "no", "maybe"][i % 3]}],
             "metadata": {"kind": ["a", "b"][i % 2]}} for i in range(120)]
    bad = {"messages": [{"role": "user", "content": "no answer"}]}  # last_not_assistant

    def write(name, records, fmt):
        path = tmp_path / name
        if fmt == "jsonl":
            path = path.with_suffix(".jsonl")
            path.write_text("\n".join(json.dumps(r) for r in records) + "\n\n{not json\n", encoding="utf-8")
        elif fmt == "json":
            path = path.with_suffix(".json")
            path.write_text(json.dumps(records), encoding="utf-8")
        elif fmt == "parquet":
            path = path.with_suffix(".parquet")
            pq.write_table(pa.Table.from_pylist(records), path, row_group_size=16)
        else:
            datasets.Dataset.from_list(records).save_to_disk(str(path), max_shard_size="4KB")
        return str(path)

    domain = write("domain", rows[:80] + [bad] + rows[80:100], fmt)
    task = write("task", rows[100:], fmt)
    general = write("general", [{"messages": [{"role": "user", "content": f"hi {i}"},
                                              {"role": "assistant", "content": "hello"}]} for i in range(40)], fmt)
    spec = load_spec({"model": {"name_or_path": "x"}, "data": {
        "train": [domain, {"path": task, "weight": 2.5}], "mix": [{"path": general, "ratio": 0.3}],
        "validation_split": 0.2, "stratify_by": "metadata.kind", "max_seq_len": 24, "template_date": "2026-03-01"}})
    expected = prepare_data(spec.data, chat_tokenizer, 7)
    entry, _ = prepare_cached(spec.data, 7, chat_tokenizer, str(tok_dir), tmp_path / "cache", use_ray=False)
    assert _entry_examples(entry, "train") == expected.train
    assert _entry_examples(entry, "validation") == expected.validation
    assert entry.composition == expected.composition and entry.skipped_invalid == expected.skipped_invalid > 0
    assert entry.encoding["train"]["dropped_too_long"] == expected.encoding["train"]["dropped_too_long"] > 0
    assert entry.validation_conversations() == expected.validation_conversations
    assert entry.validation_conversations(limit=5) == expected.validation_conversations[:5]
    # every actor gets the same share of the records to encode
    shares = [sum(map(len, task.column("keys").to_pylist())) for task in plans[0].tasks]
    assert len(shares) % cpus == 0 and max(shares) - min(shares) <= 1


def test_stale_attempts_are_swept_and_fresh_or_published_ones_kept(setup, chat_tokenizer):
    spec, tok_dir, tmp = setup
    cache = tmp / "cache"
    first, _ = prepare_cached(spec.data, 0, chat_tokenizer, tok_dir, cache, use_ray=False)
    # Attempts no manifest names: under a key never published, and one that lost the race for a published key.
    stale, live, lost = cache / "abc" / "attempt-dead", cache / "abc" / "attempt-live", Path(first.location) / "attempt-lost"
    for p in (stale, live, lost):
        (p / "train").mkdir(parents=True)
        (p / "train" / "piece-0000000.parquet").write_bytes(b"half")
    old = os.path.getmtime(stale) - 2 * 24 * 3600
    for p in (stale, lost):
        for f in (p / "train" / "piece-0000000.parquet", p / "train", p):
            os.utime(f, (old, old))
    for f in Path(first.shards_dir).rglob("*"):  # the published attempt is kept however old
        os.utime(f, (old, old))
    entry, hit = prepare_cached(spec.data.model_copy(update={"max_seq_len": 65}), 0, chat_tokenizer, tok_dir, cache,
                                use_ray=False)
    assert not hit and Path(entry.shards_dir).is_dir()
    assert not stale.exists() and not lost.exists() and live.exists()  # a job still writing is not disturbed
    assert open_entry(cache, first.key) is not None
    assert sorted(p.name for p in cache.iterdir()) == sorted([first.key, entry.key, "abc"])


def test_uri_inputs_read_through_pyarrow_filesystems_and_bad_uris_name_themselves(setup, chat_tokenizer):
    spec, tok_dir, tmp = setup
    local, _ = prepare_cached(spec.data, 0, chat_tokenizer, tok_dir, tmp / "cache", use_ray=False)
    as_uri = spec.data.model_copy(update={
        "train": [spec.data.train[0].model_copy(update={"path": "file://" + spec.data.train[0].path})],
        "mix": [spec.data.mix[0].model_copy(update={"path": "file://" + spec.data.mix[0].path})]})
    entry, hit = prepare_cached(as_uri, 0, chat_tokenizer, tok_dir, tmp / "cache", use_ray=False)
    assert not hit and entry.key != local.key  # another location, another key
    assert entry.manifest["inputs"]["train"][0]["path"] == "file://" + spec.data.train[0].path
    assert _entry_examples(entry, "train") == _entry_examples(local, "train")
    # The object's size and modification time are in the key: a re-upload is a new key.
    key = cache_key(as_uri, 0, tok_dir, chat_tokenizer.chat_template)[0]
    with open(spec.data.train[0].path, "a", encoding="utf-8") as f:
        f.write("\n")
    assert cache_key(as_uri, 0, tok_dir, chat_tokenizer.chat_template)[0] != key
    for uri, why in ((f"file://{tmp}/gone.jsonl", "no such file"), ("nosuch://bucket/train.jsonl", "cannot be opened")):
        bad = as_uri.model_copy(update={"train": [as_uri.train[0].model_copy(update={"path": uri})]})
        with pytest.raises(DataError, match=f"^{uri}: {why}") as err:
            prepare_cached(bad, 0, chat_tokenizer, tok_dir, tmp / "cache", use_ray=False)
        assert "\n" not in str(err.value)


def test_the_processes_ray_data_starts_import_only_what_their_pass_needs():
    # Each index task and encode actor imports its function's module: torch (~1 s) in either, or transformers in an
    # index task, made every preparation wait that long per process before its first piece.
    code = ("import sys\nimport raysft.data.index\nindex = sorted(m for m in ('torch', 'transformers') if m in sys.modules)\n"
            "import raysft.data.prepare\nprint(index, 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["[]", "False"]
