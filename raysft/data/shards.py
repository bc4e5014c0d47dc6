"""Reading the encoded cache's Parquet shards (`raysft.data.cache`) by row index, through the filesystem they lie in.

A worker reads only its micro batches' rows, one row group at a time: memory-mapped when the cache is local, by
ranged reads of just those row groups when it is an object store.
"""

from __future__ import annotations

import bisect
from collections import OrderedDict

import pyarrow.fs as pafs
import pyarrow.parquet as pq

__all__ = ["ExampleStore", "open_shard"]


def open_shard(fs: pafs.FileSystem, path: str) -> pq.ParquetFile:
    """A shard opened for reading by row group: memory-mapped when local (the page cache, not the process, holds
    what was read), else by ranged reads of the groups asked for."""
    if isinstance(fs, pafs.LocalFileSystem):
        return pq.ParquetFile(path, memory_map=True)
    return pq.ParquetFile(fs.open_input_file(path))


class ExampleStore:
    """Encoded examples by index, read from Parquet shards one row group at a time.

    Holds the shards' metadata and the last few decoded row groups only: a worker's data memory is a few of its
    micro batches' row groups, whatever the dataset's size. Local files are memory-mapped; others are read a row
    group at a time through their filesystem.

    Args:
        fs: the filesystem of the shards.
        files: the shard files, paths in `fs`.
        rows: rows in each shard.
        order: example i is stored row order[i] of the shards taken in turn.
    """

    _KEEP = 8  # decoded row groups kept (each `_ROW_GROUP` examples)

    def __init__(self, fs: pafs.FileSystem, files: list[str], rows: list[int], order: list[int]):
        self.fs, self.files, self.order = fs, files, order
        self.starts = [0]
        for n in rows:
            self.starts.append(self.starts[-1] + n)
        self._readers: dict[int, tuple[pq.ParquetFile, list[int]]] = {}
        self._groups: OrderedDict = OrderedDict()

    def __len__(self) -> int:
        return self.starts[-1]

    def _reader(self, shard: int):
        if shard not in self._readers:
            f = open_shard(self.fs, self.files[shard])
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
