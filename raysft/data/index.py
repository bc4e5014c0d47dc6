"""Pass 1 of `raysft.data.prepare`: which records of the inputs are valid, as a global row number per record.

Each task reads and validates one piece (`raysft.data.sources`) and returns a row per record: its file, key,
validity and (when the split is stratified) stratum, a few bytes a record. The module imports neither torch nor
transformers, so a task process starts in a fraction of a second.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa

from raysft.data.records import RecordError, to_conversation
from raysft.data.sources import read_piece
from raysft.data.split import stratum_of
from raysft.data.udf import reports_data_errors

__all__ = ["RowIndex", "index_pieces"]

_INDEX = pa.schema([("file", pa.int32()), ("key", pa.int64()), ("valid", pa.bool_()), ("stratum", pa.string())])


@reports_data_errors
def index_pieces(batch: pa.Table) -> pa.Table:
    """Validate the records of each piece in `batch` (rows of file, piece, stratify_by): (file, key, valid,
    stratum) per record."""
    out = []
    for row in batch.to_pylist():
        piece, by = json.loads(row["piece"]), row["stratify_by"]
        keys, valid, strata = [], [], []
        for key, value in read_piece(piece):
            try:
                conv = to_conversation(value)
            except RecordError:
                conv = None
            keys.append(key)
            valid.append(conv is not None)
            strata.append(stratum_of({"messages": conv, "record": value}, by) if by and conv is not None else None)
        out.append(pa.table({"file": pa.array([row["file"]] * len(keys), pa.int32()), "key": pa.array(keys, pa.int64()),
                             "valid": pa.array(valid, pa.bool_()), "stratum": pa.array(strata, pa.string())}))
    return pa.concat_tables(out) if out else _INDEX.empty_table()


class RowIndex:
    """Every valid record of the inputs as one global row number (file-major, in file order)."""

    def __init__(self, table: pa.Table, paths: list[str]):
        table = table.sort_by([("file", "ascending"), ("key", "ascending")])
        files = table.column("file").to_numpy()
        valid = table.column("valid").to_numpy(zero_copy_only=False)
        self.invalid = np.bincount(files[~valid], minlength=len(paths))
        kept = table.filter(pa.array(valid))
        self.file = kept.column("file").to_numpy()
        self.key = kept.column("key").to_numpy()
        self.strata = kept.column("stratum").combine_chunks()
        self.bounds = np.searchsorted(self.file, np.arange(len(paths) + 1))
        self.ids = {p: i for i, p in enumerate(paths)}

    def read(self, path: str) -> tuple[list[int], int]:
        """A file's valid rows (global numbers) and its number of invalid records, as `select_rows` reads."""
        i = self.ids[path]
        return list(range(self.bounds[i], self.bounds[i + 1])), int(self.invalid[i])

    def stratum(self, row: int) -> str:
        return self.strata[row].as_py()
