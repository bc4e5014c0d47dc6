"""The encoded cache: a spec's data, templated and tokenised once, as Parquet shards plus a manifest.

Layout of one entry, `<data.cache_dir>/<key>/`:
    manifest.json                   written last: key and what went into it, rows, tokens, per-example lengths and
                                    target counts (what the step plan needs), `order` (example -> stored row),
                                    composition and encoding counts
    train/piece-<n>.parquet         int32 `input_ids` and `labels` lists, one encoded example per Parquet row, for
                                    the records of input piece n (`raysft.data.sources`)
    validation/piece-<n>.parquet    the same for the validation split
    conversations/piece-<n>.parquet held-out conversations (`vpos`, JSON) for generation eval (workers read the
                                    first `eval.generate.limit`)

An entry is built in `<cache_dir>/.partial-<key>-<random>/` and renamed into place only after its manifest is
written, so a job killed half-way leaves a partial folder that is never read (and is removed a day later, by
the next job that writes to the cache), and two jobs building the same key
at once both end up using one complete entry. The key hashes everything that shapes the rows (see `cache_key`): a
changed file, tokenizer, chat template or data setting is a new key, never a silent reuse.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import os
import shutil
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import pyarrow.parquet as pq

from raysft.data.errors import DataError
from raysft.data.sources import identity

__all__ = ["CACHE_FORMAT", "CachedData", "ExampleStore", "cache_key", "default_cache_dir", "entry_dir", "open_entry",
           "publish_entry", "new_partial_dir", "remove_stale_partials"]

CACHE_FORMAT = 2
"""Bumped whenever encoding or the entry layout changes: older entries then simply miss."""

# Files of a tokenizer directory that change its tokens or its chat template (weights are not hashed: they never
# change the data).
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                    "tokenizer.model", "vocab.json", "vocab.txt", "merges.txt", "chat_template.jinja",
                    "chat_template.json", "generation_config.json")
_HASH_CHUNK = 1 << 20
STALE_PARTIAL_S = 24 * 3600
"""A `.partial-*` folder untouched this long was left by a killed job."""


def default_cache_dir(output_dir: str) -> Path:
    """`.raysft-cache` beside `output_dir`, so runs in one folder share their encoded data."""
    return Path(output_dir).expanduser().resolve().parent / ".raysft-cache"


def _tokenizer_hash(tokenizer_dir: str) -> str:
    """sha256 over the contents of the tokenizer files in `tokenizer_dir` (name and bytes of each)."""
    h = hashlib.sha256()
    for name in _TOKENIZER_FILES:
        f = Path(tokenizer_dir) / name
        if f.is_file():
            h.update(name.encode() + b"\0")
            with open(f, "rb") as fh:
                while chunk := fh.read(_HASH_CHUNK):
                    h.update(chunk)
    return h.hexdigest()


def cache_key(data, seed: int, tokenizer_dir: str, chat_template: str) -> tuple[str, dict]:
    """The cache key of a spec's data section, and the inputs it hashes.

    Args:
        data: the spec's `DataSpec` (with `template_date` fixed: a template's date changes its tokens).
        seed: `train.seed` (it seeds the split, the weights and the mix).
        tokenizer_dir: the base model's directory (its tokenizer files are hashed by content).
        chat_template: the chat template the encoding uses (the tokenizer's own or ChatML).

    Raises:
        DataError: a data file is missing or unreadable.
    """
    inputs = {
        "format": CACHE_FORMAT,
        "train": [{**identity(s.path), "weight": s.weight} for s in data.train],
        "validation": identity(data.validation) if data.validation else None,
        "mix": [{**identity(m.path), "ratio": m.ratio} for m in data.mix],
        "tokenizer_sha256": _tokenizer_hash(tokenizer_dir),
        "chat_template_sha256": hashlib.sha256(chat_template.encode()).hexdigest(),
        "max_seq_len": data.max_seq_len, "packing": data.packing, "loss_on": data.loss_on,
        "on_too_long": data.on_too_long, "seed": seed, "validation_split": data.validation_split,
        "stratify_by": data.stratify_by,
        "template_date": data.template_date.isoformat() if data.template_date else None,
    }
    blob = json.dumps(inputs, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:32], inputs


def entry_dir(cache_dir: str | Path, key: str) -> Path:
    return Path(cache_dir) / key


def new_partial_dir(cache_dir: str | Path, key: str) -> Path:
    """A fresh folder to build an entry in; checks that the cache dir is writable.

    Raises:
        DataError: the cache dir cannot be created or written.
    """
    root = Path(cache_dir)
    if "://" in str(cache_dir):
        raise DataError(f"data.cache_dir: {cache_dir} is a URI; this version caches on a file system path only "
                        "(on a multi-node cluster use a path every node mounts)")
    partial = root / f".partial-{key}-{uuid.uuid4().hex[:8]}"
    try:
        partial.mkdir(parents=True)
    except OSError as exc:
        raise DataError(f"data.cache_dir: cannot write to {root} ({exc.strerror}); choose a writable folder") from None
    remove_stale_partials(root)
    return partial


def remove_stale_partials(root: Path, older_than_s: float = STALE_PARTIAL_S) -> list[Path]:
    """Delete the `.partial-*` folders of `root` untouched for `older_than_s` (left by killed jobs; a live job
    writes into its folder far more often than that). Returns what was removed."""
    removed, now = [], time.time()
    for p in root.glob(".partial-*"):
        try:
            newest = max([p.stat().st_mtime] + [f.stat().st_mtime for f in p.rglob("*")])
        except OSError:  # removed meanwhile (published or swept by another job)
            continue
        if now - newest > older_than_s:
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


def publish_entry(partial: Path, manifest: dict) -> Path:
    """Write the manifest into `partial`, then move it into place as the entry of `manifest["key"]`.

    The manifest is written last (to a temporary name, then renamed) and the folder is renamed after it: an entry
    folder is complete or absent. When another job published the same key first, its entry is kept and this one
    discarded (both were built from the same inputs).
    """
    tmp = partial / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest), encoding="utf-8")
    os.replace(tmp, partial / "manifest.json")
    final = entry_dir(partial.parent, manifest["key"])
    try:
        os.rename(partial, final)
    except OSError:  # published meanwhile (rename onto a non-empty folder fails)
        shutil.rmtree(partial, ignore_errors=True)
        if open_entry(final.parent, manifest["key"]) is None:
            raise
    return final


@dataclass
class CachedData:
    """One complete cache entry, as its manifest describes it (no rows are loaded)."""

    path: Path
    manifest: dict = field(repr=False)

    @property
    def key(self) -> str:
        return self.manifest["key"]

    @property
    def composition(self) -> dict:
        return self.manifest["composition"]

    @property
    def encoding(self) -> dict:
        return self.manifest["encoding"]

    @property
    def skipped_invalid(self) -> int:
        return self.manifest["skipped_invalid"]

    @property
    def template_date(self) -> str:
        return self.manifest["template_date"]

    def split(self, name: str) -> dict:
        """{"rows", "tokens", "trained_tokens", "lengths", "targets", "shards": [{"file", "rows"}]} of a split."""
        return self.manifest["splits"][name]

    def examples(self, name: str) -> "ExampleStore":
        """The encoded examples of split `name`, read from their shards on demand."""
        s = self.split(name)
        return ExampleStore([self.path / sh["file"] for sh in s["shards"]], [sh["rows"] for sh in s["shards"]],
                            s["order"])

    def validation_conversations(self, limit: Optional[int] = None) -> list[dict]:
        """The first `limit` held-out conversations ({"messages", "tools"}), or all of them, in selection order.

        Reads each shard's positions and only the conversations below `limit`."""
        found = []
        for file in self.manifest["validation_conversation_files"]:
            f = pq.ParquetFile(self.path / file, memory_map=True)
            for g in range(f.num_row_groups):
                vpos = f.read_row_group(g, columns=["vpos"]).column("vpos").to_numpy()
                keep = np.flatnonzero(vpos < limit) if limit is not None else np.arange(len(vpos))
                if len(keep):
                    texts = f.read_row_group(g, columns=["conversation"]).column("conversation")
                    found += [(int(vpos[k]), texts[int(k)].as_py()) for k in keep]
        return [json.loads(text) for _, text in sorted(found)]


def open_entry(cache_dir: str | Path, key: str) -> Optional[CachedData]:
    """The complete entry of `key`, or None (absent, half-written, or of another format)."""
    path = entry_dir(cache_dir, key)
    try:
        manifest = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if manifest.get("key") != key or manifest.get("format") != CACHE_FORMAT:
        return None
    shards = [sh["file"] for s in manifest["splits"].values() for sh in s["shards"]]
    shards += manifest["validation_conversation_files"]
    if not all((path / f).is_file() for f in shards):
        return None
    return CachedData(path, manifest)


class ExampleStore:
    """Encoded examples by index, read from Parquet shards one row group at a time.

    Holds the shards' metadata and the last few decoded row groups only: a worker's data memory is a few of its
    micro batches' row groups, whatever the dataset's size. Files are memory-mapped, so the page cache, not the
    process, holds what was read.

    Args:
        files: the shard files.
        rows: rows in each shard.
        order: example i is stored row order[i] of the shards taken in turn.
    """

    _KEEP = 8  # decoded row groups kept (each `_ROW_GROUP` examples)

    def __init__(self, files: list[Path], rows: list[int], order: list[int]):
        self.files, self.order = files, order
        self.starts = [0]
        for n in rows:
            self.starts.append(self.starts[-1] + n)
        self._readers: dict[int, tuple[pq.ParquetFile, list[int]]] = {}
        self._groups: OrderedDict = OrderedDict()

    def __len__(self) -> int:
        return self.starts[-1]

    def _reader(self, shard: int):
        if shard not in self._readers:
            f = pq.ParquetFile(self.files[shard], memory_map=True)
            starts = [0]
            for g in range(f.num_row_groups):
                starts.append(starts[-1] + f.metadata.row_group(g).num_rows)
            self._readers[shard] = (f, starts)
        return self._readers[shard]

    def __getitem__(self, i: int) -> dict:
        if not 0 <= i < len(self):
            raise IndexError(f"example {i} of {len(self)}")
        i = self.order[i]
        shard = bisect.bisect_right(self.starts, i) - 1
        f, starts = self._reader(shard)
        j = i - self.starts[shard]
        g = bisect.bisect_right(starts, j) - 1
        key = (shard, g)
        if key not in self._groups:
            t = f.read_row_group(g, columns=["input_ids", "labels"])
            self._groups[key] = (t.column("input_ids").combine_chunks(), t.column("labels").combine_chunks())
            if len(self._groups) > self._KEEP:
                self._groups.popitem(last=False)
        self._groups.move_to_end(key)
        ids, labels = self._groups[key]
        k = j - starts[g]
        return {"input_ids": ids[k].values.to_numpy().tolist(), "labels": labels[k].values.to_numpy().tolist()}
