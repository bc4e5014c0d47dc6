"""Reading training data: JSONL, JSON arrays, Parquet and `datasets.save_to_disk` directories.

`iter_raw` streams (line, value) pairs without judging them, `to_conversation` turns one value into a
conversation or raises `RecordError`, and `load_conversations` does both for the training pipeline.

Accepted records (other keys, such as `metadata`, are kept in the record and ignored here):

    {"messages": [{"role": "system" | "user" | "assistant" | "tool", "content": str}, ...], "tools": [...]}
    {"prompt": str, "completion": str, "system": str (optional)}

Assistant messages may carry `reasoning_content` (str), `tool_calls` (OpenAI format: [{"id", "type": "function",
"function": {"name", "arguments": JSON string or object}}], content then optional) and `weight` (0: context,
not trained; 1: trained). A `tool` message answers an earlier call by its `tool_call_id`. `tools` (optional) is
the OpenAI list of function schemas the conversation may call.

Error codes, checked in this order (the first problem of a record wins):

    invalid_json        not valid JSON, not UTF-8, or not a JSON object
    missing_messages    no non-empty `messages` list and no prompt/completion pair
    bad_role            a role other than system/user/assistant/tool (the closest one is suggested)
    bad_content         a message that is not an object, or content missing, not a string, or blank (an
                        assistant message with tool calls may have none); reasoning_content not a string
    bad_weight          an assistant `weight` other than 0 or 1
    system_not_first    a system message after the first turn
    bad_tool_call       a tool call (or `tools` entry) without a function name, or arguments that are not JSON
    unknown_tool        a called function that `tools` does not declare (checked when `tools` is given)
    orphan_tool_result  a `tool` message whose `tool_call_id` matches no earlier call
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

__all__ = ["BOM", "ERROR_CODES", "ROLES", "RecordError", "SNIFF_BYTES", "first_char", "iter_json_array_bytes", "iter_raw", "parse_line", "to_conversation", "tools_of", "load_conversations"]

ROLES = ("system", "user", "assistant", "tool")
ERROR_CODES = (
    "invalid_json",
    "missing_messages",
    "bad_role",
    "bad_content",
    "bad_weight",
    "system_not_first",
    "bad_tool_call",
    "unknown_tool",
    "orphan_tool_result",
    "last_not_assistant",
)

BOM = b"\xef\xbb\xbf"
# Role names of other chat formats (ShareGPT, Gemini) that difflib cannot match by spelling.
_ROLE_ALIASES = {"human": "user", "gpt": "assistant", "bot": "assistant", "model": "assistant"}
_JSON_WS = re.compile(r"[ \t\r\n]*")
SNIFF_BYTES = 64 * 1024  # bytes read at a time when looking ahead in a file
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
    array = p.suffix != ".jsonl" and first_char(f) == b"["
    f.seek(0)
    return _iter_json_array(f) if array else _iter_jsonl(f)


def first_char(f) -> bytes:
    """The first non-whitespace byte after an optional BOM (b"" for a blank file), read from the start of `f`."""
    head = f.read(SNIFF_BYTES)
    while head and not head.removeprefix(BOM).lstrip():
        more = f.read(SNIFF_BYTES)
        if not more:
            break
        head = more
    return head.removeprefix(BOM).lstrip()[:1]


def _iter_jsonl(f) -> Iterator[tuple[int, object]]:
    with f:
        # Binary mode: bad bytes on one line become one finding instead of an exception for the file.
        for number, raw in enumerate(f, 1):
            if number == 1 and raw.startswith(BOM):
                raw = raw[3:]
            if raw.strip():
                yield number, parse_line(raw)


def parse_line(raw: bytes) -> object:
    """One JSON Lines line (BOM already removed, not blank) as its value, or a `RecordError` (`invalid_json`)."""
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        return RecordError("invalid_json", f"not valid UTF-8 (byte {e.start + 1} of the line); save the file as UTF-8")
    except json.JSONDecodeError as e:
        return RecordError("invalid_json", f"not valid JSON: {e.msg} at column {e.colno}")
    except (ValueError, RecursionError) as e:  # e.g. a 5000-digit integer, nesting 1000 deep
        return RecordError("invalid_json", f"not usable JSON: {e}")


def _iter_json_array(f) -> Iterator[tuple[int, object]]:
    with f:
        data = f.read()
    return iter_json_array_bytes(data)


def iter_json_array_bytes(data: bytes) -> Iterator[tuple[int, object]]:
    """The elements of a JSON array file's bytes as (line, value), as `iter_raw` reads them."""
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
        A new list of message dicts with role, content and, where given, reasoning_content, tool_calls,
        tool_call_id and weight (other message keys dropped); a prompt/completion record becomes
        [system?, user, assistant].

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
    _check_tools(conversation, record.get("tools"))
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
    calls = message.get("tool_calls") if role == "assistant" else None
    blank_ok = bool(calls) and (content is None or isinstance(content, str))
    if not blank_ok and (not isinstance(content, str) or (not content.strip() and role != "tool")):
        what = "is missing" if content is None else f"must be a non-blank string, got {_show(content)}"
        raise RecordError("bad_content", f"message {index} ({role}) content {what}")
    out = {"role": role, "content": content or ""}
    if role == "assistant":
        out.update(_assistant_fields(index, message))
    if role == "tool" and message.get("tool_call_id") is not None:
        out["tool_call_id"] = message["tool_call_id"]
    return out


def _assistant_fields(index: int, message: dict) -> dict:
    out: dict = {}
    reasoning = message.get("reasoning_content")
    if reasoning is not None:
        if not isinstance(reasoning, str):
            raise RecordError("bad_content", f"message {index} reasoning_content must be a string, got {_show(reasoning)}")
        out["reasoning_content"] = reasoning
    if "weight" in message:
        weight = message["weight"]
        if weight not in (0, 1) or isinstance(weight, bool):
            raise RecordError("bad_weight", f"message {index} weight {_show(weight)} must be 0 (context) or 1 (trained)")
        out["weight"] = int(weight)
    if message.get("tool_calls") is not None:
        calls = message["tool_calls"]
        if not isinstance(calls, list):
            raise RecordError("bad_tool_call", f"message {index} tool_calls must be a list, got {_show(calls)}")
        out["tool_calls"] = [_tool_call(index, k, call) for k, call in enumerate(calls, 1)]
    return out


def _tool_call(index: int, k: int, call: object) -> dict:
    where = f"message {index} tool call {k}"
    function = call.get("function") if isinstance(call, dict) else None
    name = function.get("name") if isinstance(function, dict) else None
    if not isinstance(name, str) or not name.strip():
        raise RecordError("bad_tool_call", f"{where} has no function name; write {{\"function\": {{\"name\": ..., \"arguments\": ...}}}}")
    arguments = function.get("arguments", {})
    if isinstance(arguments, str):
        try:
            parsed = json.loads(arguments)
        except ValueError as e:
            raise RecordError("bad_tool_call", f"{where} ({name}) arguments are not valid JSON ({e}): {_show(arguments)}") from None
        if not isinstance(parsed, dict):
            raise RecordError("bad_tool_call", f"{where} ({name}) arguments must be a JSON object, got {_show(arguments)}")
    elif not isinstance(arguments, dict):
        raise RecordError("bad_tool_call", f"{where} ({name}) arguments must be a JSON string or object, got {_show(arguments)}")
    out = {"type": "function", "function": {"name": name, "arguments": arguments}}
    if isinstance(call.get("id"), str):
        out["id"] = call["id"]
    return out


def _check_tools(conversation: list[dict], tools: object) -> None:
    """Tool calls name declared tools (when `tools` is given) and every tool result answers an earlier call."""
    declared = None
    if tools is not None:
        if not isinstance(tools, list):
            raise RecordError("bad_tool_call", f"'tools' must be a list of function schemas, got {_show(tools)}")
        declared = set()
        for k, tool in enumerate(tools, 1):
            function = tool.get("function") if isinstance(tool, dict) else None
            name = function.get("name") if isinstance(function, dict) else None
            if not isinstance(name, str) or not name.strip():
                raise RecordError("bad_tool_call", f"tools[{k}] has no function name; write {{\"type\": \"function\", \"function\": {{\"name\": ...}}}}")
            declared.add(name)
    call_ids: set = set()
    for index, message in enumerate(conversation, 1):
        for call in message.get("tool_calls", ()):
            name = call["function"]["name"]
            if declared is not None and name not in declared:
                raise RecordError("unknown_tool", f"message {index} calls {name!r}, which 'tools' does not declare (declared: {sorted(declared)})")
            call_ids.add(call.get("id"))
        if message["role"] == "tool" and (message.get("tool_call_id") is None or message["tool_call_id"] not in call_ids):
            raise RecordError("orphan_tool_result", f"message {index} answers tool_call_id {_show(message.get('tool_call_id'))}, "
                              "which no earlier assistant tool call has; give the call its id or drop the result")


def tools_of(record: object) -> list | None:
    """The `tools` list of a record that `to_conversation` accepted (None when it declares none)."""
    return record.get("tools") if isinstance(record, dict) and record.get("tools") else None


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
        ([{"messages": conversation, "tools": tools or None, "record": original value}, ...], number of invalid
        records).
        Run `raysft data check` to see which records were invalid and why.

    Raises:
        DataError: the path does not exist or cannot be read.
    """
    examples, invalid = [], 0
    for _, value in iter_raw(path):
        try:
            examples.append({"messages": to_conversation(value), "tools": tools_of(value), "record": value})
        except RecordError:
            invalid += 1
    return examples, invalid
