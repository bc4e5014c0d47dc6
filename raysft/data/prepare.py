"""Encoding a spec's data into the cache (`raysft.data.cache`) as a Ray Data pipeline, or reusing the entry.

The driver reads, validates, splits, weights and mixes the conversations (`select_conversations`: text, not tokens)
and numbers them in their final order. Ray Data then templates and tokenises them in `map_batches` on every CPU
the cluster has: each actor deserialises the tokenizer once and turns a block of conversations into one Parquet
shard per split (int32 lists, `raysft.data.template.encode_dataset` unchanged) plus a one-row summary (lengths,
target counts, encoding counts). The driver collects only the summaries and writes the manifest; the token rows
never pass through it.
"""

from __future__ import annotations

import datetime
import json
import shutil
from itertools import groupby
from pathlib import Path
from typing import Callable, Optional

import pyarrow as pa
import pyarrow.parquet as pq

from raysft.data.cache import (CACHE_FORMAT, CachedData, cache_key, new_partial_dir, open_entry, publish_entry)
from raysft.data.errors import DataError
from raysft.data.packing import count_targets, pack
from raysft.data.pipeline import merge_counts, select_conversations
from raysft.data.template import chat_template_of, encode_dataset, encoding_warnings

__all__ = ["prepare_cached", "padding_efficiency"]

_CHUNK = 512  # conversations per Ray Data block: one shard per split each
_ROW_GROUP = 128  # examples per Parquet row group: what a worker decodes to read one example
_SPLITS = ("train", "validation")


def padding_efficiency(lengths: list[int], max_seq_len: int, packing: bool) -> float:
    """Real tokens over the capacity of the rows they fill (rows × max_seq_len when packed, else each row's own
    length, so 1.0: unpacked batches pad only to their longest row, which the plan decides later)."""
    if not lengths:
        return 0.0
    if not packing:
        return 1.0
    return sum(lengths) / (len(pack(lengths, max_seq_len)) * max_seq_len)


def _encode_chunk(batch: pa.Table, *, tokenizer, settings: dict, date: datetime.date, out_dir: str) -> pa.Table:
    """Encode one block of numbered conversations into a shard per split; returns a summary row per split."""
    seqs, splits = batch.column("seq").to_pylist(), batch.column("split").to_pylist()
    sources, convs = batch.column("source").to_pylist(), batch.column("conv").to_pylist()
    order = sorted(range(len(seqs)), key=seqs.__getitem__)
    summaries = []
    for split in _SPLITS:
        idx = [k for k in order if splits[k] == split]
        if not idx:
            continue
        input_ids, labels, stats = [], [], {}
        for source, run in groupby(idx, key=sources.__getitem__):
            kept, counts = encode_dataset(tokenizer, [json.loads(convs[k]) for k in run], date=date, **settings)
            input_ids += [e["input_ids"] for e in kept]
            labels += [e["labels"] for e in kept]
            merge_counts(stats.setdefault(source, {}), counts)
        file = ""
        if input_ids:
            file = f"{split}/shard-{seqs[idx[0]]:010d}.parquet"
            (Path(out_dir) / split).mkdir(parents=True, exist_ok=True)
            table = pa.table({"input_ids": pa.array(input_ids, type=pa.list_(pa.int32())),
                              "labels": pa.array(labels, type=pa.list_(pa.int32()))})
            pq.write_table(table, Path(out_dir) / file, row_group_size=_ROW_GROUP, compression="zstd")
        summaries.append({"split": split, "first_seq": seqs[idx[0]], "last_seq": seqs[idx[-1]], "file": file,
                          "rows": len(input_ids), "lengths": [len(x) for x in input_ids],
                          "targets": [count_targets(x) for x in labels], "stats": json.dumps(stats)})
    return pa.Table.from_pylist(summaries, schema=_SUMMARY)


_SUMMARY = pa.schema([("split", pa.string()), ("first_seq", pa.int64()), ("last_seq", pa.int64()),
                      ("file", pa.string()), ("rows", pa.int64()), ("lengths", pa.list_(pa.int32())),
                      ("targets", pa.list_(pa.int32())), ("stats", pa.string())])


class _ChunkEncoder:
    """The Ray Data actor: one tokenizer per process, many blocks."""

    def __init__(self, **kwargs):
        self.kwargs = kwargs

    def __call__(self, batch: pa.Table) -> pa.Table:
        return _encode_chunk(batch, **self.kwargs)


def _numbered(data, seed: int) -> tuple[list[pa.Table], list[dict], int]:
    """Blocks of (seq, split, source, conv JSON) in the final row order, validation conversations, invalid count.

    Within a split the order is the source order then the selection order, as `prepare_data` encodes it.
    """
    selected = select_conversations(data, seed)
    rows = []
    for split, pairs in (("train", selected.train), ("validation", selected.validation)):
        for source in dict.fromkeys(p[0] for p in pairs):
            rows += [(split, source, {"messages": it["messages"], "tools": it.get("tools")}) for s, it in pairs if s == source]
    columns = {"seq": list(range(len(rows))), "split": [r[0] for r in rows], "source": [r[1] for r in rows],
               "conv": [json.dumps(r[2], ensure_ascii=False) for r in rows]}
    table = pa.table(columns)
    blocks = [table.slice(i, _CHUNK) for i in range(0, len(rows), _CHUNK)]
    val = [{"messages": it["messages"], "tools": it.get("tools")} for _, it in selected.validation]
    return blocks, val, selected.skipped_invalid


def _run(blocks: list[pa.Table], kwargs: dict, use_ray: bool) -> list[dict]:
    if not use_ray:
        return [row for b in blocks for row in _encode_chunk(b, **kwargs).to_pylist()]
    import ray
    import ray.data

    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    ds = ray.data.from_arrow(blocks).map_batches(
        _ChunkEncoder, fn_constructor_kwargs=kwargs, batch_size=None, batch_format="pyarrow",
        concurrency=(1, max(1, min(cpus, len(blocks)))), num_cpus=1)
    return ds.take_all()


def prepare_cached(data, seed: int, tokenizer, tokenizer_dir: str, cache_dir: str | Path, *,
                   use_ray: bool = True, before_encode: Optional[Callable[[], None]] = None) -> tuple[CachedData, bool]:
    """The cache entry of a spec's data: reused when its key exists, else built (Ray Data) and published.

    Args:
        data: the spec's data section, `template_date` fixed.
        seed: `train.seed`.
        tokenizer: the base model's tokenizer (as `raysft.model.load.load_tokenizer` returns it).
        tokenizer_dir: the directory it was loaded from (its files are part of the key).
        cache_dir: `data.cache_dir` or its default.
        use_ray: encode on Ray Data; False encodes in this process.
        before_encode: called on a miss once the inputs and the cache dir are checked, e.g. to connect to Ray
            (so a bad path fails before a cluster starts, and a hit never waits for one).

    Returns:
        (the entry, whether it was a cache hit).

    Raises:
        DataError: unreadable inputs, an unwritable cache dir, or nothing left to train on.
    """
    key, inputs = cache_key(data, seed, tokenizer_dir, chat_template_of(tokenizer))
    found = open_entry(cache_dir, key)
    if found is not None:
        return found, True
    partial = new_partial_dir(cache_dir, key)
    try:
        if before_encode:
            before_encode()
        blocks, val_convs, skipped = _numbered(data, seed)
        settings = {"max_seq_len": data.max_seq_len, "loss_on": data.loss_on, "on_too_long": data.on_too_long}
        date = data.template_date or datetime.date.today()
        kwargs = {"tokenizer": tokenizer, "settings": settings, "date": date, "out_dir": str(partial)}
        summaries = _run(blocks, kwargs, use_ray)
        with open(partial / "validation_conversations.jsonl", "w", encoding="utf-8") as f:
            for conv in val_convs:
                f.write(json.dumps(conv, ensure_ascii=False) + "\n")
        manifest = _manifest(key, inputs, summaries, data, skipped, date, tokenizer.eos_token, len(val_convs))
        return CachedData(publish_entry(partial, manifest), manifest), False
    finally:
        shutil.rmtree(partial, ignore_errors=True)  # gone already when published


def _manifest(key, inputs, summaries, data, skipped, date, eos_token, n_val_convs) -> dict:
    splits, composition, encoding = {}, {}, {}
    for split in _SPLITS:
        mine = sorted((s for s in summaries if s["split"] == split), key=lambda s: s["first_seq"])
        for a, b in zip(mine, mine[1:]):
            if a["last_seq"] >= b["first_seq"]:  # a block boundary inside another block: rows would be reordered
                raise RuntimeError(f"Ray Data interleaved encoded blocks ({a['first_seq']}..{a['last_seq']} and "
                                   f"{b['first_seq']}..); rerun the preparation")
        per_source: dict[str, dict] = {}
        for s in mine:
            for source, counts in json.loads(s["stats"]).items():
                merge_counts(per_source.setdefault(source, {}), counts)
        stats: dict = {}
        for counts in per_source.values():
            merge_counts(stats, counts)
        lengths = [n for s in mine for n in s["lengths"]]
        targets = [n for s in mine for n in s["targets"]]
        if stats:
            stats["warnings"] = encoding_warnings(stats, eos_token)
        stats["trained_fraction"] = stats.get("trained_tokens", 0) / max(stats.get("tokens", 0), 1)
        composition[split] = {src: {"rows": c.get("rows", 0), "tokens": c.get("tokens", 0),
                                    "trained_tokens": c.get("trained_tokens", 0)} for src, c in per_source.items()}
        encoding[split] = stats
        splits[split] = {"rows": len(lengths), "tokens": sum(lengths), "trained_tokens": sum(targets),
                         "lengths": lengths, "targets": targets,
                         "shards": [{"file": s["file"], "rows": s["rows"]} for s in mine if s["rows"]]}
    if not splits["train"]["rows"]:
        raise DataError(
            f"no train example is left after encoding ({encoding['train']}); raise data.max_seq_len, "
            "set data.on_too_long: truncate, or check loss_on")
    total = splits["train"]["rows"]
    for v in composition["train"].values():
        v["share"] = v["rows"] / total
    return {"format": CACHE_FORMAT, "key": key, "inputs": inputs, "splits": splits, "composition": composition,
            "encoding": encoding, "skipped_invalid": skipped, "template_date": date.isoformat(),
            "validation_conversations": n_val_convs,
            "padding_efficiency": padding_efficiency(splits["train"]["lengths"], data.max_seq_len, data.packing)}
