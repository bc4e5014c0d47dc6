"""What the functions Ray Data runs for `raysft.data.prepare` share: how a DataError leaves a task.

Raised inside a Ray task, an exception reaches the driver as its traceback text; the user must see the one line
naming the input and the fix. So a UDF returns the error as a one-row `data_error` table, and the driver raises it
again when it gathers the outputs.

Torch- and transformers-free, like `raysft.data.index`: a task process imports only what its function needs.
"""

from __future__ import annotations

import functools

import pyarrow as pa

from raysft.data.errors import DataError

__all__ = ["reports_data_errors", "gather"]


def reports_data_errors(fn):
    """`fn`, returning a DataError it raises as a one-row `data_error` table."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except DataError as exc:
            return pa.table({"data_error": [str(exc)]})
    return wrapper


def gather(tables: list[pa.Table]) -> pa.Table:
    """The UDFs' output tables as one; raises the first DataError one of them returned."""
    for t in tables:
        if "data_error" in t.column_names:
            raise DataError(t.column("data_error")[0].as_py())
    return pa.concat_tables(tables)
