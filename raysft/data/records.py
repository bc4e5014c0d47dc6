"""Reading training data: JSONL, JSON arrays, Parquet and `datasets.save_to_disk` directories.

`iter_raw` streams (line, value) pairs without judging them, `to_conversation` turns one value into a
conversation or raises `RecordError`, and `load_conversations` does both for the training pipeline.

Accepted records (other keys, such as `metadata`, are kept in the record and ignored here):

    {"messages": [{"role": "system" | "user" | "assistant", "content": str}, ...]}
    {"prompt": str, "completion": str, "system": str (optional)}

Error codes, checked in this order (the first problem of a record wins):

    invalid_json        not valid JSON, not UTF-8, or not a JSON object
    missing_messages    no non-empty `messages` list and no prompt/completion pair
    bad_role            a role other than system/user/assistant (the closest one is suggested)
    bad_content         a message that is not an object, or content missing, not a string, or blank
    system_not_first    a system message after the first turn
    last_not_assistant  the conversation does not end with an assistant turn

A user turn is not required: `[system, assistant]` still trains the assistant turn, so the data check
warns about it (`not_alternating`) instead of rejecting it.
"""

from __future__ import annotations

import difflib
import json
import re
from pathlib import Path
from typing import Iterator, Union

from raysft.data.errors import DataError

__all__ = ["ERROR_CODES", "ROLES", "RecordError", "iter_raw", "to_conversation", "load_conversations"]

ROLES = ("system", "user", "assistant")
ERROR_CODES = (
    "invalid_json",
    "missing_messages",
    "bad_role",
    "bad_content",
    "system_not_first",
    "last_not_assistant",
)

_BOM = b"\xef\xbb\xbf"
# Role names of other chat formats (ShareGPT, Gemini) that difflib cannot match by spelling.
_ROLE_ALIASES = {"human": "user", "gpt": "assistant", "bot": "assistant", "model": "assistant"}
_JSON_WS = re.compile(r"[ \t\r\n]*")
_SNIFF_BYTES = 64 * 1024
_BATCH_ROWS = 1024


class RecordError(ValueError):
    """One record cannot be used; `code` is one of `ERROR_CODES`, `message` says why and how to fix it."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def _show(value: object, limit: int = 40) -> str:
    """A short repr of a user value for messages; repr escapes control characters and lone surrogates."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ------------------------------------------------------------------------------------------ reading


def iter_raw(path: Union[str, Path]) -> Iterator[tuple[int, object]]:
    """Stream the records of a data file as (line, value) pairs, without validating them.

    The format follows the path: a directory is read with `datasets.load_from_disk`, `*.parquet` with
    pyarrow (one row group batch at a time), `*.jsonl` as JSON Lines; any other file is a JSON array
    when its first non-space character is `[`, else JSON Lines.

    JSON Lines: UTF-8 with or without BOM, LF or CRLF; whitespace-only lines are skipped, and `line` is
    the 1-based physical line number. JSON arrays: `line` is the line where each element starts; the
    file is read into memory as text (not as objects), so prefer JSONL for large data. Parquet and
    saved datasets: `line` is the 1-based row number.

    Args:
        path: the data file or saved-dataset directory.

    Returns:
        An iterator of (line, value); value is the parsed JSON value, or a `RecordError` with code
        `invalid_json` when the line cannot be parsed (after an unparsable JSON array element the rest
        of that array cannot be located, so iteration stops there).

    Raises:
        DataError: the path does not exist or cannot be read as the format it names.
    """
    p = Path(path)
    if not p.exists():
        raise DataError(
            f"{p}: no such file or directory; check the path (relative paths resolve against {Path.cwd()})"
        )
    if p.is_dir():
        return _iter_saved_dataset(p)
    try:
        f = p.open("rb")
    except OSError as e:
        raise DataError(f"{p}: cannot be read ({e.strerror}); check the file permissions") from e
    if p.suffix == ".parquet":
        f.close()
        return _iter_parquet(p)
    if p.suffix != ".jsonl" and _first_char(f) == b"[":
        return _iter_json_array(f)
    return _iter_jsonl(f)


def _first_char(f) -> bytes:
    """The first non-whitespace byte after an optional BOM (b"" for a blank file); rewinds `f`."""
    head = f.read(_SNIFF_BYTES)
    while head and not head.removeprefix(_BOM).lstrip():
        more = f.read(_SNIFF_BYTES)
        if not more:
            break
        head = more
    f.seek(0)
    return head.removeprefix(_BOM).lstrip()[:1]


def _iter_jsonl(f) -> Iterator[tuple[int, object]]:
    loads = json.loads
    with f:
        # Binary mode: bad bytes on one line become one finding instead of an exception for the file.
        for number, raw in enumerate(f, 1):
            if number == 1 and raw.startswith(_BOM):
                raw = raw[3:]
            if not raw.strip():
                continue
            try:
                yield number, loads(raw.decode("utf-8"))
            except UnicodeDecodeError as e:
                yield number, RecordError(
                    "invalid_json", f"not valid UTF-8 (byte {e.start + 1} of the line); save the file as UTF-8"
                )
            except json.JSONDecodeError as e:
                yield number, RecordError("invalid_json", f"not valid JSON: {e.msg} at column {e.colno}")
            except (ValueError, RecursionError) as e:  # e.g. a 5000-digit integer, nesting 1000 deep
                yield number, RecordError("invalid_json", f"not usable JSON: {e}")


def _iter_json_array(f) -> Iterator[tuple[int, object]]:
    with f:
        data = f.read()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        bad_line = 1 + data.count(b"\n", 0, e.start)
        yield bad_line, RecordError("invalid_json", "not valid UTF-8; save the file as UTF-8")
        return
    decoder = json.JSONDecoder()
    pos = text.index("[") + 1
    line, counted_to, first = 1, 0, True

    def line_at(index: int) -> int:
        # Counting newlines incrementally keeps line numbers O(file) overall.
        nonlocal line, counted_to
        line += text.count("\n", counted_to, index)
        counted_to = index
        return line

    while True:
        pos = _JSON_WS.match(text, pos).end()
        if pos == len(text):
            yield line_at(pos), RecordError("invalid_json", "the JSON array is not closed; add the final ']'")
            return
        if text[pos] == "]":
            end = _JSON_WS.match(text, pos + 1).end()
            if end != len(text):
                yield line_at(end), RecordError("invalid_json", "text after the closing ']' of the JSON array")
            return
        if not first:
            if text[pos] != ",":
                yield line_at(pos), RecordError("invalid_json", "expected ',' between JSON array elements")
                return
            pos = _JSON_WS.match(text, pos + 1).end()
        first = False
        start_line = line_at(pos)
        try:
            value, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as e:
            yield line_at(e.pos), RecordError("invalid_json", f"not valid JSON: {e.msg} at column {e.colno}")
            return
        except (ValueError, RecursionError) as e:
            yield start_line, RecordError("invalid_json", f"not usable JSON: {e}")
            return
        yield start_line, value


def _iter_parquet(path: Path) -> Iterator[tuple[int, object]]:
    import pyarrow.parquet as pq  # deferred: ~55 MB of RSS that JSONL reading never needs

    try:
        batches = pq.ParquetFile(path).iter_batches(batch_size=_BATCH_ROWS)
        yield from _number_rows(batch.to_pylist() for batch in batches)
    except (OSError, ValueError) as e:  # pyarrow's errors subclass these by kind (ArrowIOError, ArrowInvalid)
        raise DataError(f"{path}: not a readable Parquet file ({e}); re-export it or use JSONL") from e


def _iter_saved_dataset(path: Path) -> Iterator[tuple[int, object]]:
    import datasets  # deferred: ~1 s and ~130 MB of RSS (with pyarrow) that other formats never need

    try:
        loaded = datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError, OSError) as e:
        raise DataError(
            f"{path}: a directory, but not one written by datasets' save_to_disk ({e}); "
            "point at a data file or a saved dataset"
        ) from e
    if isinstance(loaded, datasets.DatasetDict):
        splits = sorted(loaded)
        raise DataError(
            f"{path}: a saved DatasetDict with splits {splits}; point at one split, e.g. {path / splits[0]}"
        )
    # Arrow batches from the memory-mapped files: one batch of rows as Python objects at a time.
    return _number_rows(table.to_pylist() for table in loaded.with_format("arrow").iter(batch_size=_BATCH_ROWS))


def _number_rows(batches) -> Iterator[tuple[int, object]]:
    number = 0
    for rows in batches:
        for row in rows:
            number += 1
            yield number, row


# --------------------------------------------------------------------------------------- validation


def to_conversation(record: object) -> list[dict]:
    """Normalise one record into a conversation.

    Args:
        record: a value yielded by `iter_raw` (a `RecordError` from it is raised as is).

    Returns:
        A new list of {"role", "content"} dicts (other message keys dropped); a prompt/completion record
        becomes [system?, user, assistant].

    Raises:
        RecordError: the record is unusable; `.code` is the first problem in `ERROR_CODES` order.
    """
    if isinstance(record, RecordError):
        raise record
    if not isinstance(record, dict):
        raise RecordError("invalid_json", f"expected a JSON object, got {type(record).__name__} {_show(record)}")
    messages = record.get("messages")
    # A table mixing both shapes (Parquet, pandas) has null `messages` on its prompt/completion rows.
    if messages is None and ("prompt" in record or "completion" in record):
        conversation = _prompt_completion(record)
    elif "messages" in record:
        if not isinstance(messages, list) or not messages:
            raise RecordError("missing_messages", f"'messages' must be a non-empty list, got {_show(messages)}")
        conversation = [_to_message(i, m) for i, m in enumerate(messages, 1)]
    else:
        keys = sorted(map(str, record))[:8]
        raise RecordError(
            "missing_messages",
            f"no 'messages' list or 'prompt'/'completion' pair (keys: {keys}); "
            'write {"messages": [{"role": "user", "content": ...}, {"role": "assistant", "content": ...}]}',
        )
    for i, message in enumerate(conversation[1:], 2):
        if message["role"] == "system":
            raise RecordError("system_not_first", f"message {i} is a system message; move it to the start")
    if conversation[-1]["role"] != "assistant":
        raise RecordError(
            "last_not_assistant",
            f"the last message is {conversation[-1]['role']!r}; end with the assistant answer to train on",
        )
    return conversation


def _to_message(index: int, message: object) -> dict:
    if not isinstance(message, dict):
        raise RecordError(
            "bad_content", f"message {index} must be an object with role and content, got {_show(message)}"
        )
    if "role" not in message:
        hint = "; rename from/value to role/content" if "from" in message else ""
        raise RecordError("bad_role", f"message {index} has no 'role'{hint}")
    role = message["role"]
    if role not in ROLES:
        raise RecordError(
            "bad_role", f"message {index} role {_show(role)} is not one of {list(ROLES)}{_suggest(role)}"
        )
    content = message.get("content")
    if not isinstance(content, str) or not content.strip():
        what = "is missing" if content is None else f"must be a non-blank string, got {_show(content)}"
        raise RecordError("bad_content", f"message {index} ({role}) content {what}")
    return {"role": role, "content": content}


def _suggest(role: object) -> str:
    if not isinstance(role, str):
        return ""
    key = role.strip().lower()
    close = [_ROLE_ALIASES[key]] if key in _ROLE_ALIASES else difflib.get_close_matches(key, ROLES, n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _prompt_completion(record: dict) -> list[dict]:
    fields = [("system", "system")] if "system" in record else []
    conversation = []
    for key, role in fields + [("prompt", "user"), ("completion", "assistant")]:
        value = record.get(key)
        if not isinstance(value, str) or not value.strip():
            what = "is missing" if value is None else f"must be a non-blank string, got {_show(value)}"
            raise RecordError("bad_content", f"'{key}' {what}")
        conversation.append({"role": role, "content": value})
    return conversation


def load_conversations(path: Union[str, Path]) -> tuple[list[dict], int]:
    """Read every valid record of a data file; invalid ones are counted and skipped.

    Args:
        path: a file or saved-dataset directory, as for `iter_raw`.

    Returns:
        ([{"messages": conversation, "record": original value}, ...], number of invalid records).
        Run `raysft data check` to see which records were invalid and why.

    Raises:
        DataError: the path does not exist or cannot be read.
    """
    examples, invalid = [], 0
    for _, value in iter_raw(path):
        try:
            examples.append({"messages": to_conversation(value), "record": value})
        except RecordError:
            invalid += 1
    return examples, invalid
