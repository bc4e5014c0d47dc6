"""Encoding a spec's data into the cache (`raysft.data.cache`) as a Ray Data pipeline, or reusing the entry.

Two passes over the input pieces (`raysft.data.sources`), each a Ray Data `map_batches` over every CPU the
cluster has; the driver never holds a conversation or a token row:
1. index (`raysft.data.index`): each task reads and validates one piece and returns a row per record: its file,
   key, validity and (when the split is stratified) stratum. That index, a few bytes a row, is all the driver keeps.
2. The driver selects on the index (`raysft.data.pipeline.select_rows`: split, weights and mix, exactly as the
   in-memory pipeline by `train.seed`) and numbers the chosen rows in their final order (`seq`).
3. encode: the chosen records, in piece order, are cut into tasks of equal size, a multiple of the CPUs in number,
   so the actors finish together (a task per piece leaves the last round to a few of them: 100 pieces on 64 CPUs
   take two rounds, the second on 36 CPUs while 28 wait). Each actor deserialises the tokenizer once, re-reads the
   pieces of its tasks keeping only their records, templates and tokenises each once (a weighted copy reuses it),
   and writes a Parquet shard per part (the records one task takes from one piece) and split (int32 lists) plus a
   summary: per-example seq, length and target count, and encoding counts.
The manifest's `order` maps final example positions to stored rows, so the entry reads back in the selection's
order whichever task finished first and however many there were.
"""

from __future__ import annotations

import datetime
import json
import os
from collections import defaultdict
from dataclasses import dataclass
from itertools import tee
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from raysft.data.cache import CachedData, cache_key, discard_attempt, new_attempt, open_entry, publish_entry
from raysft.data.index import RowIndex, index_pieces
from raysft.data.pipeline import Selection, select_rows
from raysft.data.records import to_conversation, tools_of
from raysft.data.sources import pieces, read_piece
from raysft.data.template import chat_template_of, count_result, encode_each, new_counts
from raysft.data.manifest import build_manifest
from raysft.data.udf import gather, reports_data_errors

__all__ = ["prepare_cached"]

_ROW_GROUP = 128  # examples per Parquet row group: what a worker decodes to read one example
_IGNORE_INDEX = -100
_SUMMARY = pa.schema([("part", pa.int64()), ("split", pa.string()), ("file", pa.string()),
                      ("seq", pa.list_(pa.int64())), ("sub", pa.list_(pa.int32())), ("lengths", pa.list_(pa.int32())),
                      ("targets", pa.list_(pa.int32())), ("stats", pa.string())])


# ------------------------------------------------------------------------------------------ the driver's plan


@dataclass
class _Plan:
    tasks: list[pa.Table]
    """One table per encode task, a row per part: part number, piece, source path, keys, seqs and validation
    positions."""
    n_train: int
    """seq < n_train is a train entry; the rest are validation, numbered after."""
    sources: dict[str, list[str]]
    """Each split's sources in the order their rows are numbered."""
    n_validation_conversations: int


def _plan(selection: Selection, index: RowIndex, file_pieces: list[list[dict]], cpus: int) -> _Plan:
    """Number the selection's rows (per split, grouped by source in order of appearance, as `prepare_data`
    encodes them), route each entry to the piece holding its record and cut them into tasks for `cpus` actors."""
    rows, seqs, vpos, sources = [], [], [], {}
    for split, pairs in (("train", selection.train), ("validation", selection.validation)):
        by_source: dict[str, list[int]] = defaultdict(list)  # source -> positions in `pairs`
        for k, (source, _) in enumerate(pairs):
            by_source[source].append(k)
        sources[split] = list(by_source)
        for chosen in by_source.values():
            seqs += range(len(rows), len(rows) + len(chosen))
            rows += [pairs[k][1] for k in chosen]
            vpos += chosen if split == "validation" else [-1] * len(chosen)  # validation conversations' order
    rows_a, seq_a, vpos_a = np.array(rows, np.int64), np.array(seqs, np.int64), np.array(vpos, np.int64)
    file_a, key_a = index.file[rows_a], index.key[rows_a]
    firsts = [np.array([p["first"] for p in ps], np.int64) for ps in file_pieces]
    offsets = np.cumsum([0] + [len(ps) for ps in file_pieces])
    piece_a = np.empty(len(rows_a), np.int64)
    for f in range(len(file_pieces)):
        mine = file_a == f
        piece_a[mine] = offsets[f] + np.searchsorted(firsts[f], key_a[mine], side="right") - 1
    order = np.lexsort((seq_a, piece_a))
    piece_a, key_a, seq_a, vpos_a = piece_a[order], key_a[order], seq_a[order], vpos_a[order]
    flat = [p for ps in file_pieces for p in ps]
    n_tasks = min(len(piece_a), -(-len(np.unique(piece_a)) // cpus) * cpus)  # about a piece each, a multiple of cpus
    task_cuts = np.linspace(0, len(piece_a), n_tasks + 1).astype(np.int64)
    part_cuts = np.union1d(task_cuts, np.flatnonzero(np.diff(piece_a)) + 1)  # a part: one task's run in one piece
    rows: list[list[dict]] = [[] for _ in range(n_tasks)]
    for part, (a, b) in enumerate(zip(part_cuts[:-1], part_cuts[1:])):
        pid = int(piece_a[a])
        rows[np.searchsorted(task_cuts, a, side="right") - 1].append(
            {"part": part, "piece": json.dumps(flat[pid]), "source": flat[pid]["path"], "keys": key_a[a:b],
             "seqs": seq_a[a:b], "vpos": vpos_a[a:b]})
    tasks = [pa.Table.from_pylist(task) for task in rows]
    return _Plan(tasks, len(selection.train), sources, len(selection.validation))


# ---------------------------------------------------------------------------------------------- pass 2: encode


def _encode_parts(batch: pa.Table, *, tokenizer, settings: dict, date: datetime.date, fs: pafs.FileSystem,
                  out_dir: str, n_train: int) -> pa.Table:
    """Encode the chosen records of each part in `batch` into a shard per split under `out_dir` (a path in `fs`);
    a summary row per shard."""
    return pa.concat_tables([_encode_part(row, tokenizer, settings, date, fs, out_dir, n_train)
                             for row in batch.to_pylist()] or [_SUMMARY.empty_table()])


def _encode_part(task: dict, tokenizer, settings: dict, date, fs: pafs.FileSystem, out_dir: str,
                 n_train: int) -> pa.Table:
    entries = defaultdict(list)  # key -> [(seq, vpos)]
    for key, seq, vpos in zip(task["keys"], task["seqs"], task["vpos"]):
        entries[key].append((seq, vpos))
    records = ((k, {"messages": to_conversation(v), "tools": tools_of(v)})
               for k, v in read_piece(json.loads(task["piece"]), set(entries)))
    a, b = tee(records)
    splits = {name: _Shard() for name in ("train", "validation")}
    conversations = _Shard()
    for (key, item), result in zip(a, encode_each(tokenizer, (it for _, it in b), date=date, **settings)):
        for seq, vpos in entries[key]:
            split = splits["train" if seq < n_train else "validation"]
            count_result(split.stats, result)
            for sub, example in enumerate(result.examples):
                split.add(seq, sub, example)
            if vpos >= 0:
                conversations.add_conversation(vpos, item)
    part, summaries = task["part"], []
    for name, shard in splits.items():
        if shard.stats["examples"]:
            summaries.append(shard.write(fs, out_dir, f"{name}/part-{part:07d}.parquet", part, name, task["source"]))
    if conversations.seq:
        summaries.append(conversations.write(fs, out_dir, f"conversations/part-{part:07d}.parquet", part,
                                             "conversations", task["source"]))
    return pa.Table.from_pylist(summaries, schema=_SUMMARY)


class _Shard:
    """The examples (int32, columnar) or validation conversations one part contributes to one split."""

    def __init__(self):
        self.seq, self.sub, self.ids, self.labels, self.texts = [], [], [], [], []
        self.stats = new_counts()

    def add(self, seq: int, sub: int, example: dict) -> None:
        self.seq.append(seq)
        self.sub.append(sub)
        self.ids.append(np.asarray(example["input_ids"], np.int32))
        self.labels.append(np.asarray(example["labels"], np.int32))

    def add_conversation(self, vpos: int, item: dict) -> None:
        self.seq.append(vpos)
        self.texts.append(json.dumps(item, ensure_ascii=False))

    def write(self, fs: pafs.FileSystem, out_dir: str, file: str, part: int, split: str, source: str) -> dict:
        lengths = np.array([len(x) for x in self.ids], np.int32)
        if self.texts:
            table = pa.table({"vpos": pa.array(self.seq, pa.int64()), "conversation": self.texts})
        else:
            offsets = pa.array(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32))
            values = lambda xs: pa.array(np.concatenate(xs) if xs else np.zeros(0, np.int32))  # noqa: E731
            table = pa.table({"input_ids": pa.ListArray.from_arrays(offsets, values(self.ids)),
                              "labels": pa.ListArray.from_arrays(offsets, values(self.labels))})
        if table.num_rows:
            path = f"{out_dir}/{file}"
            fs.create_dir(path.rsplit("/", 1)[0])
            pq.write_table(table, path, filesystem=fs, row_group_size=_ROW_GROUP, compression="zstd")
        targets = [int(np.count_nonzero(x[1:] != _IGNORE_INDEX)) for x in self.labels]
        return {"part": part, "split": split, "file": file if table.num_rows else "", "seq": self.seq,
                "sub": self.sub, "lengths": lengths.tolist(), "targets": targets,
                "stats": json.dumps({source: self.stats})}


class _Encoder:
    """The Ray Data actor: one tokenizer per process, many pieces."""

    def __init__(self, **kwargs):
        # Off in this process: each call tokenises the few pieces of one conversation, where the tokenizers
        # library's thread pool costs more than it gives (one 8 MiB piece: 4.15 s with it, 3.66 s without), and
        # the pool already runs an actor per CPU.
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
        self.kwargs = kwargs

    @reports_data_errors
    def __call__(self, batch: pa.Table) -> pa.Table:
        return _encode_parts(batch, **self.kwargs)


# ------------------------------------------------------------------------------------------------ running


def _cpus(use_ray: bool) -> int:
    """The CPUs the passes run on: the cluster's, or this process."""
    if not use_ray:
        return 1
    import ray

    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def _run(fn, tables: list[pa.Table], use_ray: bool, *, actor_kwargs: Optional[dict] = None) -> pa.Table:
    """`fn` over `tables` (one Ray Data block each): in this process, or as Ray Data tasks (or actors, given
    constructor kwargs) on every CPU; the concatenated outputs."""
    if not tables:
        return pa.table({})
    if not use_ray:
        return gather([fn(**actor_kwargs)(t) if actor_kwargs is not None else fn(t) for t in tables])
    import ray
    import ray.data

    ds = ray.data.from_arrow(tables)
    # One operator, so nothing to reserve CPUs for: with reservation on (Ray Data's default), the index pass ran
    # one task at a time on 2 CPUs, held back by its budget, which takes twice as long.
    ds.context.op_resource_reservation_enabled = False
    common = {"batch_size": None, "batch_format": "pyarrow", "num_cpus": 1}
    if actor_kwargs is not None:
        # Every actor from the start: an autoscaling pool began with one, and the rest started pieces later.
        ds = ds.map_batches(fn, fn_constructor_kwargs=actor_kwargs, concurrency=min(_cpus(True), len(tables)),
                            **common)
    else:
        ds = ds.map_batches(fn, **common)
    return gather(ray.get(ds.to_arrow_refs()))


def _input_paths(data) -> list[str]:
    return list(dict.fromkeys([s.path for s in data.train] + ([data.validation] if data.validation else [])
                              + [m.path for m in data.mix]))


def prepare_cached(data, seed: int, tokenizer, tokenizer_dir: str, cache_dir: str | Path, *,
                   use_ray: bool = True, before_encode: Optional[Callable[[], None]] = None) -> tuple[CachedData, bool]:
    """The cache entry of a spec's data: reused when its key exists, else built (Ray Data) and published.

    Args:
        data: the spec's data section, `template_date` fixed.
        seed: `train.seed`.
        tokenizer: the base model's tokenizer (as `raysft.model.load.load_tokenizer` returns it).
        tokenizer_dir: the directory it was loaded from (its files are part of the key).
        cache_dir: `data.cache_dir` or its default.
        use_ray: encode on Ray Data; False runs both passes in this process.
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
    paths = _input_paths(data)
    file_pieces = [pieces(p) for p in paths]
    attempt = new_attempt(cache_dir, key)
    try:
        if before_encode:
            before_encode()
        stratified = {s.path for s in data.train} if data.stratify_by and not data.validation else set()
        index_tasks = [pa.table({"file": [f], "piece": [json.dumps(pc)],
                                 "stratify_by": [data.stratify_by if p in stratified else None]})
                       for f, (p, ps) in enumerate(zip(paths, file_pieces)) for pc in ps]
        index = RowIndex(_run(index_pieces, index_tasks, use_ray), paths)
        selection = select_rows(data, seed, index.read, index.stratum)
        plan = _plan(selection, index, file_pieces, _cpus(use_ray))
        date = data.template_date or datetime.date.today()
        settings = {"max_seq_len": data.max_seq_len, "loss_on": data.loss_on, "on_too_long": data.on_too_long}
        kwargs = {"tokenizer": tokenizer, "settings": settings, "date": date, "fs": attempt.fs,
                  "out_dir": attempt.dir, "n_train": plan.n_train}
        summaries = _run(_Encoder, plan.tasks, use_ray, actor_kwargs=kwargs)
        manifest = build_manifest(key, inputs, summaries.to_pylist(), plan.sources, data, selection.skipped_invalid,
                                  date, tokenizer.eos_token, plan.n_validation_conversations)
        return publish_entry(attempt, manifest), False
    except BaseException:
        discard_attempt(attempt)  # a failed or interrupted build leaves nothing to sweep
        raise
