"""Data files as pieces that Ray Data tasks read independently, on local paths or any URI pyarrow opens.

A piece is a byte range of a JSON Lines file, a row group of a Parquet file, one Arrow file of a `save_to_disk`
folder, or a whole JSON array file. Reading a piece yields (key, value) pairs: the key is the record's identity
in its file (byte offset of its line, or row number) and orders the file's records; the value is what
`raysft.data.records.iter_raw` yields for that record, so validation and invalid counts match `raysft data check`.
"""

from __future__ import annotations

import json
import urllib.parse
from typing import Iterator, Optional

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from raysft.data.errors import DataError
from raysft.data.records import BOM, SNIFF_BYTES, first_char, iter_json_array_bytes, parse_line

__all__ = ["identity", "open_path", "pieces", "read_piece", "shown"]

_PIECE_BYTES = 8 << 20  # JSON Lines bytes per piece: enough pieces to keep every CPU busy on a large file
_ARROW_FILE_ROWS = 1 << 40  # a save_to_disk key is file ordinal * this + row in the file


def shown(location: str) -> str:
    """A path or URI as messages, events and the console print it: a URI loses its user info (`key:secret@`) and
    query string (pyarrow options, which may carry keys too); the job's own processes keep the URI as given."""
    if "://" not in location:
        return location
    u = urllib.parse.urlsplit(location)
    return urllib.parse.urlunsplit((u.scheme, u.netloc.rpartition("@")[2], u.path, "", ""))


def open_path(path: str) -> tuple[pafs.FileSystem, str]:
    """The filesystem and in-filesystem path of a local path or a URI (`s3://`, `gs://`, `file://`, ...).

    Raises:
        DataError: the URI's filesystem cannot be opened (unknown scheme, missing credentials, bad bucket).
    """
    if "://" not in path:
        import os

        return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(path))
    try:
        return pafs.FileSystem.from_uri(path)
    except (OSError, ValueError) as e:  # ArrowInvalid, ArrowIOError
        raise DataError(f"{shown(path)}: cannot be opened ({e}); check the URI and the credentials for it") from None


def _info(path: str) -> tuple[pafs.FileSystem, str, pafs.FileInfo]:
    fs, p = open_path(path)
    try:
        info = fs.get_file_info(p)
    except OSError as e:
        raise DataError(f"{shown(path)}: cannot be read ({e}); check the URI and the credentials for it") from None
    if info.type == pafs.FileType.NotFound:
        raise DataError(f"{shown(path)}: no such file or directory; check the path (relative paths resolve against "
                        "the current directory)")
    return fs, p, info


def identity(path: str) -> dict:
    """What a cache key holds of a data file: its location, and the size and modification time of it (or of every
    file of a saved-dataset folder). pyarrow's object stores report an object's last-modified time, which a new
    upload changes.

    Raises:
        DataError: the path is missing or cannot be read.
    """
    fs, p, info = _info(path)
    if info.type == pafs.FileType.Directory:
        infos = sorted((i for i in fs.get_file_info(pafs.FileSelector(p, recursive=True))
                        if i.type == pafs.FileType.File), key=lambda i: i.path)
        files = [[i.path[len(p):].lstrip("/"), i.size, i.mtime_ns] for i in infos]
    else:
        _check_readable(fs, p, path)
        files = [[info.base_name, info.size, info.mtime_ns]]
    return {"path": _location(path, p), "files": files}


def _location(path: str, p: str) -> str:
    """Where a task opens `path`: its absolute path (a task's working directory is not the driver's), or the URI."""
    return path if "://" in path else p


def _check_readable(fs: pafs.FileSystem, p: str, path: str) -> None:
    try:
        fs.open_input_stream(p).close()
    except OSError as e:
        raise DataError(f"{path}: cannot be read ({e}); check the file permissions") from None


def pieces(path: str) -> list[dict]:
    """The pieces of a data file or saved-dataset folder, in record order (JSON-serialisable dicts: `path` as the
    spec names it, `at` where tasks open it, and `first`, the smallest key a piece can hold, so a key's piece is
    the last one whose `first` is not above it).

    Raises:
        DataError: missing, unreadable, or not the format its name says.
    """
    fs, p, info = _info(path)
    if info.type == pafs.FileType.Directory:
        return _saved_dataset_pieces(fs, p, path)
    at = _location(path, p)
    _check_readable(fs, p, path)
    if p.endswith(".parquet"):
        try:
            meta = pq.ParquetFile(fs.open_input_file(p)).metadata
        except (OSError, ValueError) as e:
            raise DataError(f"{path}: not a readable Parquet file ({e}); re-export it or use JSONL") from None
        out, start = [], 0
        for g in range(meta.num_row_groups):
            out.append({"kind": "parquet", "path": path, "at": at, "group": g, "first": start})
            start += meta.row_group(g).num_rows
        return out
    if not p.endswith(".jsonl") and _first_char(fs, p) == b"[":
        return [{"kind": "json_array", "path": path, "at": at, "first": 0}]
    return [{"kind": "jsonl", "path": path, "at": at, "first": s, "end": min(s + _PIECE_BYTES, info.size)}
            for s in range(0, max(info.size, 1), _PIECE_BYTES)]


def _first_char(fs: pafs.FileSystem, p: str) -> bytes:
    with fs.open_input_stream(p) as f:
        return first_char(f)


def _saved_dataset_pieces(fs: pafs.FileSystem, p: str, path: str) -> list[dict]:
    def read_json(name: str) -> Optional[dict]:
        try:
            with fs.open_input_stream(f"{p}/{name}") as f:
                return json.loads(f.read())
        except (OSError, ValueError):
            return None

    if (splits := read_json("dataset_dict.json")) is not None:
        names = sorted(splits.get("splits", []))
        raise DataError(f"{path}: a saved DatasetDict with splits {names}; point at one split, e.g. "
                        f"{path.rstrip('/')}/{names[0] if names else 'train'}")
    state = read_json("state.json")
    if not state or "_data_files" not in state:
        raise DataError(f"{path}: a directory, but not one written by datasets' save_to_disk (no state.json); "
                        "point at a data file or a saved dataset")
    return [{"kind": "arrow", "path": path, "at": _location(path, p), "file": f"{p}/{f['filename']}",
             "first": k * _ARROW_FILE_ROWS}
            for k, f in enumerate(state["_data_files"])]


def read_piece(piece: dict, wanted: Optional[set] = None) -> Iterator[tuple[int, object]]:
    """(key, value) for each record of `piece`; with `wanted`, only records whose key is in it (JSON Lines then
    skips parsing the others)."""
    fs, p = open_path(piece["at"])
    kind = piece["kind"]
    if kind == "jsonl":
        yield from _read_jsonl_range(fs, p, piece["first"], piece["end"], wanted)
        return
    if kind == "json_array":
        with fs.open_input_stream(p) as f:
            data = f.read()
        rows = ((k, v) for k, (_, v) in enumerate(iter_json_array_bytes(data)))
    elif kind == "parquet":
        table = pq.ParquetFile(fs.open_input_file(p)).read_row_group(piece["group"])
        rows = enumerate(table.to_pylist(), piece["first"])
    else:
        with fs.open_input_stream(piece["file"]) as f:
            table = pa.ipc.open_stream(f).read_all()
        rows = enumerate(table.to_pylist(), piece["first"])
    for key, value in rows:
        if wanted is None or key in wanted:
            yield key, value


def _read_jsonl_range(fs, p: str, start: int, end: int, wanted: Optional[set]) -> Iterator[tuple[int, object]]:
    """Lines that start in [start, end): a line crossing `end` belongs to this piece, one crossing `start` to the
    previous one."""
    base = max(start - 1, 0)  # one byte before: is `start` a line start?
    with fs.open_input_file(p) as f:
        f.seek(base)
        buf = f.read(end - base)
        while buf and not buf.endswith(b"\n"):  # complete the last line
            more = f.read(SNIFF_BYTES)
            if not more:
                break
            cut = more.find(b"\n")
            buf += more if cut < 0 else more[: cut + 1]
            if cut >= 0:
                break
    pos = 0 if start == 0 else (1 if buf[:1] == b"\n" else buf.find(b"\n", 1) + 1 or len(buf))
    while pos < len(buf):
        nl = buf.find(b"\n", pos)
        stop = len(buf) if nl < 0 else nl + 1
        line_start, raw = base + pos, buf[pos:stop]
        pos = stop
        if line_start == 0 and raw.startswith(BOM):
            raw = raw[3:]
        if (wanted is None or line_start in wanted) and raw.strip():
            yield line_start, parse_line(raw)
