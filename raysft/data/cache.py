"""The encoded cache: a spec's data, templated and tokenised once, as Parquet shards plus a manifest.

`data.cache_dir` is a local path or any URI pyarrow's filesystems open (`s3://`, `gs://`, `file://`, ...); every
read and write goes through that filesystem. Layout of one entry, `<data.cache_dir>/<key>/`:
    manifest.json                   the commit marker, written last: key and what went into it, `attempt` (the
                                    folder below holding the shards), rows, tokens, per-example lengths and target
                                    counts (what the step plan needs), `order` (example -> stored row),
                                    composition and encoding counts
    attempt-<id>/train/part-<n>.parquet
                                    int32 `input_ids` and `labels` lists, one encoded example per Parquet row, for
                                    part n: the records one encode task took from one input piece
                                    (`raysft.data.sources`), parts numbered in piece order
    attempt-<id>/validation/part-<n>.parquet
                                    the same for the validation split
    attempt-<id>/conversations/part-<n>.parquet
                                    held-out conversations (`vpos`, JSON) for generation eval (workers read the
                                    first `eval.generate.limit`)

Object stores cannot rename a folder, so an entry is committed by its manifest alone: each build writes its shards
into a fresh attempt folder, then the manifest naming it as one object (a single PUT is atomic on S3 and GCS; a
local file is written beside and renamed). An entry without a manifest is never read, so a job killed half-way
leaves an attempt folder nobody reads, removed once untouched for STALE_PARTIAL_S by the next job that builds into
the cache. Two jobs building one key at once both finish: a builder that finds a manifest already written keeps
that entry and drops its own attempt; when both write, the last manifest wins and the other attempt is swept like
a killed one (a run that already opened it reads it for that long). The key hashes everything that shapes the
rows (see `cache_key`): a changed file, tokenizer, chat template or data setting is a new key, never a silent reuse.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import pyarrow.fs as pafs

from raysft.data.errors import DataError
from raysft.data.shards import ExampleStore, open_shard
from raysft.data.sources import identity, open_path, shown

__all__ = ["CACHE_FORMAT", "STALE_PARTIAL_S", "Attempt", "CachedData", "cache_key",
           "default_cache_dir", "discard_attempt", "new_attempt", "open_entry", "publish_entry",
           "remove_stale_attempts"]

CACHE_FORMAT = 3
"""Bumped whenever encoding or the entry layout changes: older entries then simply miss."""

# Files of a tokenizer directory that change its tokens or its chat template (weights are not hashed: they never
# change the data).
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                    "tokenizer.model", "vocab.json", "vocab.txt", "merges.txt", "chat_template.jinja",
                    "chat_template.json", "generation_config.json")
_HASH_CHUNK = 1 << 20
STALE_PARTIAL_S = 24 * 3600
"""An attempt folder no manifest names, untouched this long, was left by a killed job (or lost a race)."""
_MANIFEST = "manifest.json"
_ATTEMPT = "attempt-"


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


def _cache_fs(cache_dir: str | Path) -> tuple[pafs.FileSystem, str]:
    """The filesystem of `data.cache_dir` and the cache's path in it.

    Raises:
        DataError: the URI's filesystem cannot be opened (unknown scheme, missing credentials).
    """
    try:
        return open_path(str(cache_dir))
    except DataError as exc:
        raise DataError(f"data.cache_dir: {exc}") from None


def _listing(fs: pafs.FileSystem, path: str, recursive: bool = False) -> list[pafs.FileInfo]:
    return fs.get_file_info(pafs.FileSelector(path, allow_not_found=True, recursive=recursive))


def _reason(exc: OSError) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _read_manifest(fs: pafs.FileSystem, entry: str, cache_dir: str | Path) -> Optional[dict]:
    """The manifest of the entry folder `entry`; None when there is none yet, or it does not parse.

    Raises:
        DataError: the cache cannot be reached or read (at once: a miss would wait for the same error to write).
    """
    try:
        with fs.open_input_stream(f"{entry}/{_MANIFEST}") as f:
            return json.loads(f.read())
    except (FileNotFoundError, NotADirectoryError, ValueError):  # not a directory: a file, which new_attempt reports
        return None
    except OSError as exc:
        raise DataError(f"data.cache_dir: cannot read {shown(str(cache_dir))} ({_reason(exc)}); check the path or URI "
                        "and the credentials for it") from None


@dataclass(frozen=True)
class Attempt:
    """One build of an entry: its shards go under `dir` (`<cache>/<key>/attempt-<id>` in `fs`), read by nobody
    until `publish_entry` writes the manifest naming it."""

    cache_dir: str
    key: str
    fs: pafs.FileSystem = field(repr=False)
    dir: str

    @property
    def name(self) -> str:
        return self.dir.rsplit("/", 1)[1]


def new_attempt(cache_dir: str | Path, key: str) -> Attempt:
    """A fresh attempt folder to build the entry of `key` in; checks that the cache is writable and sweeps what
    killed jobs left there.

    Raises:
        DataError: the cache dir cannot be opened, created or written.
    """
    fs, root = _cache_fs(cache_dir)
    attempt = Attempt(str(cache_dir), key, fs, f"{root}/{key}/{_ATTEMPT}{uuid.uuid4().hex[:12]}")
    try:
        fs.create_dir(attempt.dir)
        # A first object: a read-only or unreachable cache fails here, before any worker starts, and the attempt
        # has a modification time for the sweep before its first shard (object stores keep none for folders).
        with fs.open_output_stream(f"{attempt.dir}/started"):
            pass
    except OSError as exc:
        raise DataError(f"data.cache_dir: cannot write to {shown(str(cache_dir))} ({_reason(exc)}); choose a writable "
                        "folder or bucket") from None
    remove_stale_attempts(cache_dir)
    return attempt


def discard_attempt(attempt: Attempt) -> None:
    """Delete an attempt no manifest names (a failed build, or one another job published first)."""
    _remove(attempt.fs, attempt.dir)


def _remove(fs: pafs.FileSystem, path: str) -> None:
    try:
        fs.delete_dir(path)
    except OSError:  # gone already (swept or discarded by another job)
        pass


def remove_stale_attempts(cache_dir: str | Path, older_than_s: float = STALE_PARTIAL_S) -> list[str]:
    """Delete the attempt folders of the cache that no manifest names and that nothing was written to for
    `older_than_s` (a live build writes far more often than that). Returns their paths in the cache's filesystem.

    Costs a listing and a manifest read per key, and a listing per unnamed attempt: run once per build, not per hit.
    """
    fs, root = _cache_fs(cache_dir)
    removed, now_ns = [], time.time_ns()
    for entry in _listing(fs, root):
        if entry.type != pafs.FileType.Directory:
            continue
        named = (_read_manifest(fs, entry.path, cache_dir) or {}).get("attempt")
        for attempt in _listing(fs, entry.path):
            if (attempt.type != pafs.FileType.Directory or not attempt.base_name.startswith(_ATTEMPT)
                    or attempt.base_name == named):
                continue
            written = [i.mtime_ns for i in _listing(fs, attempt.path, recursive=True) if i.mtime_ns]
            if written and now_ns - max(written) > older_than_s * 1e9:
                _remove(fs, attempt.path)
                removed.append(attempt.path)
    return removed


def publish_entry(attempt: Attempt, manifest: dict) -> "CachedData":
    """Commit `attempt` as the entry of its key: write the manifest, naming the attempt, last.

    When another job published the key first, its entry is kept and this attempt dropped (both were built from the
    same inputs).
    """
    found = open_entry(attempt.cache_dir, attempt.key)
    if found is not None:
        discard_attempt(attempt)
        return found
    manifest = {**manifest, "attempt": attempt.name}
    fs, target, blob = attempt.fs, f"{attempt.dir.rsplit('/', 1)[0]}/{_MANIFEST}", json.dumps(manifest).encode()
    if isinstance(fs, pafs.LocalFileSystem):  # a local file can be read half-written: write beside, then rename
        tmp = f"{attempt.dir}/{_MANIFEST}.tmp"
        with fs.open_output_stream(tmp) as f:
            f.write(blob)
        fs.move(tmp, target)
    else:  # one object upload: it appears whole or not at all
        with fs.open_output_stream(target) as f:
            f.write(blob)
    return CachedData(attempt.cache_dir, fs, attempt.dir, manifest)


@dataclass
class CachedData:
    """One complete cache entry, as its manifest describes it (no rows are loaded)."""

    cache_dir: str
    """The `data.cache_dir` it lies in: a local path or a URI."""
    fs: pafs.FileSystem = field(repr=False)
    shards_dir: str
    """Its attempt folder in `fs`: the manifest's shard files are relative to it."""
    manifest: dict = field(repr=False)

    @property
    def key(self) -> str:
        return self.manifest["key"]

    @property
    def location(self) -> str:
        """`<cache_dir>/<key>` as the console, events and `raysft data prepare` name the entry (a URI without its
        credentials or options: `sources.shown`)."""
        return os.path.join(shown(self.cache_dir), self.key)

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

    def examples(self, name: str) -> ExampleStore:
        """The encoded examples of split `name`, read from their shards on demand."""
        s = self.split(name)
        return ExampleStore(self.fs, [f"{self.shards_dir}/{sh['file']}" for sh in s["shards"]],
                            [sh["rows"] for sh in s["shards"]], s["order"])

    def validation_conversations(self, limit: Optional[int] = None) -> list[dict]:
        """The first `limit` held-out conversations ({"messages", "tools"}), or all of them, in selection order.

        Reads each shard's positions and only the conversations below `limit`."""
        found = []
        for file in self.manifest["validation_conversation_files"]:
            f = open_shard(self.fs, f"{self.shards_dir}/{file}")
            for g in range(f.num_row_groups):
                vpos = f.read_row_group(g, columns=["vpos"]).column("vpos").to_numpy()
                keep = np.flatnonzero(vpos < limit) if limit is not None else np.arange(len(vpos))
                if len(keep):
                    texts = f.read_row_group(g, columns=["conversation"]).column("conversation")
                    found += [(int(vpos[k]), texts[int(k)].as_py()) for k in keep]
        return [json.loads(text) for _, text in sorted(found)]


def open_entry(cache_dir: str | Path, key: str) -> Optional[CachedData]:
    """The complete entry of `key`, or None (no manifest yet, a shard missing, or of another format).

    Raises:
        DataError: the cache dir cannot be opened or read.
    """
    fs, root = _cache_fs(cache_dir)
    manifest = _read_manifest(fs, f"{root}/{key}", cache_dir)
    if not manifest or manifest.get("key") != key or manifest.get("format") != CACHE_FORMAT:
        return None
    shards_dir = f"{root}/{key}/{manifest['attempt']}"
    present = {i.path for i in _listing(fs, shards_dir, recursive=True)}  # one listing, not a request per shard
    shards = [sh["file"] for s in manifest["splits"].values() for sh in s["shards"]]
    shards += manifest["validation_conversation_files"]
    if not all(f"{shards_dir}/{f}" in present for f in shards):
        return None
    return CachedData(str(cache_dir), fs, shards_dir, manifest)
