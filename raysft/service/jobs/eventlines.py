"""The channel training events travel on: signed lines in a Ray job's log, read and checked field by field.

Rank 0 prints each event as `::raysft-event:: <mac> {json}` when the server hands the job its event key
(raysft.train.runlog), possibly behind a Ray prefix such as `(RayTrainWorker pid=123) ` (coloured or not). A line is an event
only when it starts so (after at most that prefix) and its MAC verifies under the job's key; whatever else the
job prints, a spec value or a data line quoted in an error included, is log text: without the key no text can
pass for an event, and the log shows MACs, never the key. The key is derived from a server secret and the job
id (`job_event_key`), so nothing per job is stored and a restarted server verifies the lines it re-reads.

Even a signed event is checked (`check_event`) before anything of it reaches the store: a bug in a writer,
or a value such as a NaN loss, must never make a job unreadable.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import math
import re
from typing import Any, Optional

from raysft.train.runlog import EVENT_PREFIX, event_mac

__all__ = ["LineSplitter", "job_event_key", "parse_event_line", "check_event", "checkpoint_prefix", "record_seq", "MAX_SEQ",
           "MAX_TEXT"]

MAX_SEQ = 2 ** 53 - 1  # exact in a double (JSON readers) and far inside the database's 64-bit integers
MAX_TEXT = 2_000  # characters of an event message or string value
_MAX_STEP = 2 ** 31 - 1
_MAX_DATA_KEYS = 64
_LEVELS = {"info", "warning", "error"}
_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")
_SGR = r"(?:\x1b\[[0-9;]*m)?"  # Ray colours the prefix unless RAY_COLOR_PREFIX=0
_LINE = re.compile(r"(?:" + _SGR + r"\([^()\n]{1,200}\)" + _SGR + r" )?" + re.escape(EVENT_PREFIX) + r"([0-9a-f]{32}) (\{.*\})\r?")
_EARLIEST = dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc).timestamp()


class LineSplitter:
    """Cuts a stream of text chunks into complete lines (a chunk may end mid-line).

    A line longer than `max_line` characters is no event (events are a few hundred): it is dropped as it
    grows, so a job printing without newlines cannot make the follower hold its whole output.
    """

    def __init__(self, max_line: int = 1 << 20) -> None:
        self._rest, self._max = "", max_line

    def feed(self, chunk: str) -> list[str]:
        """The lines completed by `chunk`."""
        *lines, rest = (self._rest + chunk).split("\n")
        self._rest = rest if len(rest) <= self._max else ""
        return lines


def job_event_key(server_key: bytes, job_id: str) -> bytes:
    """The key job `job_id` signs its event lines with (HMAC of the id under the server's secret)."""
    return hmac.new(server_key, b"raysft-events:" + job_id.encode(), hashlib.sha256).digest()


def parse_event_line(line: str, key: bytes) -> Optional[dict]:
    """The record a Ray job log line carries, or None when the line is no event signed with `key`.

    The record's fields are not checked here (see `check_event`).
    """
    m = _LINE.fullmatch(line)
    if m is None or not hmac.compare_digest(m.group(1), event_mac(key, m.group(2))):
        return None
    try:
        record = json.loads(m.group(2))
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def checkpoint_prefix(spec: dict) -> str:
    """Where a job's checkpoints live: `<checkpoint.storage_path or output_dir>/checkpoints/`, as the launcher puts them."""
    storage = (spec.get("checkpoint") or {}).get("storage_path") or spec.get("output_dir") or ""
    return f"{str(storage).rstrip('/')}/checkpoints/"


def check_event(record: dict, *, ckpt_prefix: str, now: float) -> tuple[Optional[dict], str]:
    """A training event record with every field checked: (clean record, "") or (None, what is wrong).

    Clean means: `seq` an integer in 1..MAX_SEQ; `type` a lowercase name of up to 32 characters; `level`
    info, warning or error (default info); `message` text, cut to MAX_TEXT characters; `time` epoch seconds
    (from the record's ISO time; now when it is missing, unreadable, before 2020 or over a day ahead); `data`
    at most 64 keys of JSON scalars (finite numbers, integers within ±MAX_SEQ, text cut to MAX_TEXT); `step`,
    `total_steps`, `best_step` non-negative 32-bit integers; a saved or pruned checkpoint's `uri` under `ckpt_prefix`.
    """
    seq, kind = record.get("seq"), record.get("type")
    level, message, data = record.get("level", "info"), record.get("message", ""), record.get("data") or {}
    if record_seq(record) is None:
        return None, f"seq must be an integer in 1..{MAX_SEQ} (got {_shown(seq)})"
    if not isinstance(kind, str) or not _NAME.fullmatch(kind):
        return None, f"type must be a lowercase name of up to 32 characters (got {_shown(kind)})"
    if level not in _LEVELS:
        return None, f"level must be info, warning or error (got {_shown(level)})"
    if not isinstance(message, str):
        return None, f"message must be text (got {_shown(message)})"
    if not isinstance(data, dict) or len(data) > _MAX_DATA_KEYS:
        return None, f"data must be a mapping of at most {_MAX_DATA_KEYS} keys"
    for k, v in data.items():
        if problem := _data_problem(k, v):
            return None, problem
    clean = {k: v[:MAX_TEXT] if isinstance(v, str) else v for k, v in data.items()}
    if problem := _steps_problem(kind, clean, ckpt_prefix):
        return None, problem
    return {"seq": seq, "type": kind, "level": level, "message": message[:MAX_TEXT], "data": clean,
            "time": _event_time(record.get("time"), now)}, ""


def _steps_problem(kind: str, data: dict, ckpt_prefix: str) -> str:
    for name in ("step", "total_steps", "best_step"):
        value = data.get(name)
        if value is not None and not (_is_int(value) and 0 <= value <= _MAX_STEP):
            return f"data.{name} must be an integer in 0..{_MAX_STEP} (got {_shown(value)})"
    if kind in ("checkpoint_saved", "checkpoint_pruned"):
        uri = data.get("uri")
        if data.get("step") is None:
            return f"a {kind} event needs data.step"
        # `..` after the prefix would climb out of it; a URI is compared as text, never resolved.
        if not (isinstance(uri, str) and uri.startswith(ckpt_prefix) and ".." not in uri[len(ckpt_prefix):].split("/")):
            return f"data.uri must lie under the job's checkpoint storage {ckpt_prefix} (got {_shown(uri)})"
    return ""


def record_seq(record: dict) -> Optional[int]:
    """The record's `seq` when it is an integer in 1..MAX_SEQ, else None (a record that has no place in the order)."""
    seq = record.get("seq")
    return seq if _is_int(seq) and 1 <= seq <= MAX_SEQ else None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _data_problem(key: Any, value: Any) -> str:
    if not isinstance(key, str) or not _NAME.fullmatch(key.lower()):
        return f"data keys must be short names (got {_shown(key)})"
    if value is None or isinstance(value, (bool, str)):
        return ""
    if _is_int(value):
        return "" if abs(value) <= MAX_SEQ else f"data.{key} must be an integer within ±{MAX_SEQ} (got {_shown(value)})"
    if isinstance(value, float):
        return "" if math.isfinite(value) else f"data.{key} must be a finite number (got {value})"
    return f"data.{key} must be a number, text, true/false or null (got {type(value).__name__})"


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _event_time(value: Any, now: float) -> float:
    try:
        stamp = dt.datetime.fromisoformat(value).timestamp() if isinstance(value, str) and len(value) <= 64 else None
    except (ValueError, OverflowError, OSError):
        stamp = None
    return stamp if stamp is not None and _EARLIEST <= stamp <= now + 86_400 else now
