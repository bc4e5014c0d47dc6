"""Reading data files in every supported format, and normalising records into conversations."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raysft.data.errors import DataError
from raysft.data.records import RecordError, iter_raw, load_conversations, to_conversation

U = lambda c, **k: {"role": "user", "content": c, **k}
A = lambda c, **k: {"role": "assistant", "content": c, **k}
S = lambda c: {"role": "system", "content": c}
GOOD = {"messages": [U("Hi"), A("Hello")]}


def _codes(path):
    out = []
    for line, value in iter_raw(path):
        try:
            to_conversation(value)
            out.append((line, "ok"))
        except RecordError as e:
            out.append((line, e.code))
    return out


# ------------------------------------------------------------------------------------ to_conversation


def test_prompt_completion_becomes_system_user_assistant():
    record = {"system": "Classify.", "prompt": "应用闪退", "completion": "technical", "metadata": {"id": 3}}
    assert to_conversation(record) == [S("Classify."), U("应用闪退"), A("technical")]


def test_messages_are_copied_with_only_the_fields_training_reads():
    record = {"messages": [U("a", name="x"), A("b", weight=0, audio="x.wav")]}
    assert to_conversation(record) == [U("a"), A("b", weight=0)]


@pytest.mark.parametrize(
    "record, code, fragment",
    [
        ([1, 2], "invalid_json", "expected a JSON object, got list"),
        ({"text": "hi"}, "missing_messages", "keys: ['text']"),
        ({"messages": []}, "missing_messages", "non-empty list"),
        ({"messages": "hi"}, "missing_messages", "non-empty list"),
        ({"messages": [U("a"), {"role": "asistant", "content": "b"}]}, "bad_role", "did you mean 'assistant'"),
        ({"messages": [{"role": "human", "content": "a"}, A("b")]}, "bad_role", "did you mean 'user'"),
        ({"messages": [{"from": "human", "value": "a"}]}, "bad_role", "rename from/value to role/content"),
        ({"messages": ["hi", A("b")]}, "bad_content", "message 1 must be an object"),
        ({"messages": [{"role": "user"}, A("b")]}, "bad_content", "content is missing"),
        ({"messages": [U([{"type": "text"}]), A("b")]}, "bad_content", "non-blank string"),
        ({"prompt": "q"}, "bad_content", "'completion' is missing"),
        ({"prompt": " ", "completion": "a"}, "bad_content", "'prompt' must be a non-blank string"),
        ({"messages": [U("a"), S("s"), A("b")]}, "system_not_first", "message 2"),
        ({"messages": [S("s")]}, "last_not_assistant", "'system'"),
    ],
)
def test_to_conversation_rejects_with_code_and_fix(record, code, fragment):
    with pytest.raises(RecordError) as info:
        to_conversation(record)
    assert info.value.code == code
    assert fragment in info.value.message
    assert isinstance(info.value, ValueError)


def test_first_problem_wins_in_message_order():
    record = {"messages": [{"role": "usr", "content": ""}, S("s"), U("q")]}
    with pytest.raises(RecordError) as info:
        to_conversation(record)
    assert info.value.code == "bad_role"  # role of message 1 is checked before its content and the order rules


# ------------------------------------------------------------------------------------------ formats


def test_jsonl_bom_crlf_blank_lines_and_bad_bytes(tmp_path):
    path = tmp_path / "d.jsonl"
    good = json.dumps(GOOD).encode()
    path.write_bytes(b"\xef\xbb\xbf" + good + b"\r\n\r\n  \n" + b"\xff\xfe" + good + b"\n" + good)
    lines = list(iter_raw(path))
    assert [line for line, _ in lines] == [1, 4, 5]
    assert lines[0][1] == GOOD and lines[2][1] == GOOD
    assert isinstance(lines[1][1], RecordError) and "UTF-8" in lines[1][1].message


def test_json_array_reports_the_line_each_element_starts(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(
        "[\n"
        f"  {json.dumps(GOOD)},\n"
        '  {"messages": [{"role": "bot", "content": "a"}]},\n'
        "  {\n"
        '    "prompt": "q", "completion": "a"\n'
        "  },\n"
        '  "just a string"\n'
        "]\n"
    )
    assert _codes(path) == [(2, "ok"), (3, "bad_role"), (4, "ok"), (7, "invalid_json")]


def test_broken_json_array_stops_at_the_bad_element(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(f"[{json.dumps(GOOD)},\n\n  {{\"messages\": oops}}]")
    assert _codes(path) == [(1, "ok"), (3, "invalid_json")]


def test_json_extension_with_jsonl_content_is_read_as_lines(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps(GOOD) + "\n" + json.dumps(GOOD) + "\n")
    assert _codes(path) == [(1, "ok"), (2, "ok")]


def test_jsonl_extension_never_sniffs_an_array(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("[1, 2]\n" + json.dumps(GOOD) + "\n")
    assert _codes(path) == [(1, "invalid_json"), (2, "ok")]


def _rows():
    return [
        {"messages": [U("a"), {"role": "assistant", "content": "b"}], "source": "x"},
        {"messages": [U("c"), {"role": "asistant", "content": "d"}], "source": "y"},
        {"messages": [U("e"), {"role": "assistant", "content": "f"}], "source": "z"},
    ]


def test_parquet_rows_numbered_across_row_groups(tmp_path):
    path = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pylist(_rows()), path, row_group_size=2)
    assert _codes(path) == [(1, "ok"), (2, "bad_role"), (3, "ok")]
    assert next(iter_raw(path))[1]["source"] == "x"


def test_parquet_mixing_messages_and_prompt_completion_rows(tmp_path):
    message = pa.struct([("role", pa.string()), ("content", pa.string())])
    schema = pa.schema([("messages", pa.list_(message)), ("prompt", pa.string()), ("completion", pa.string())])
    rows = [{"messages": [U("a"), A("b")]}, {"prompt": "q", "completion": "c"}, {"prompt": "q"}]
    path = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    assert _codes(path) == [(1, "ok"), (2, "ok"), (3, "bad_content")]


def test_corrupt_parquet_is_a_data_error(tmp_path):
    path = tmp_path / "d.parquet"
    path.write_bytes(b"PAR1 not really")
    with pytest.raises(DataError, match="d.parquet: not a readable Parquet file"):
        list(iter_raw(path))


def test_saved_dataset_directory(tmp_path):
    import datasets

    datasets.Dataset.from_list(_rows()).save_to_disk(str(tmp_path / "ds"))
    assert _codes(tmp_path / "ds") == [(1, "ok"), (2, "bad_role"), (3, "ok")]


def test_saved_dataset_dict_asks_for_one_split(tmp_path):
    import datasets

    ds = datasets.Dataset.from_list(_rows())
    datasets.DatasetDict({"train": ds, "test": ds}).save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(DataError, match=r"splits \['test', 'train'\]; point at one split"):
        iter_raw(tmp_path / "dd")


def test_missing_path_and_plain_directory_are_data_errors(tmp_path):
    with pytest.raises(DataError, match="nope.jsonl: no such file or directory"):
        iter_raw(tmp_path / "nope.jsonl")
    (tmp_path / "plain").mkdir()
    with pytest.raises(DataError, match="not one written by datasets' save_to_disk"):
        iter_raw(tmp_path / "plain")


def test_load_conversations_keeps_records_and_counts_invalid(tmp_path):
    path = tmp_path / "d.jsonl"
    rows = [
        {"prompt": "q", "completion": "a", "metadata": {"industry": "retail"}},
        {"messages": [U("q")]},
        GOOD,
    ]
    path.write_text("\n".join(map(json.dumps, rows)) + "\n{oops\n")
    examples, invalid = load_conversations(path)
    assert invalid == 2
    assert examples == [
        {"messages": [U("q"), A("a")], "tools": None, "record": rows[0]},
        {"messages": GOOD["messages"], "tools": None, "record": GOOD},
    ]
