"""The data doctor: every defect found at its line with its code, stats, labels, CLI output, robustness."""

import copy
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raysft.cli import main
from raysft.data.check import MAX_FINDINGS, check_file, format_report
from raysft.data.errors import DataError

BOM = b"\xef\xbb\xbf"
U = lambda c: {"role": "user", "content": c}
A = lambda c: {"role": "assistant", "content": c}
S = lambda c: {"role": "system", "content": c}


def _msgs(*messages, **extra) -> bytes:
    return json.dumps({"messages": list(messages), **extra}, ensure_ascii=False).encode()


CHARGED = [S("Route tickets."), U("I was charged twice."), A("billing")]
PARCEL_ZH = [S("你是客服分类助手。"), U("我的包裹在哪里？"), A("请提供订单号。"), U("订单 4412。"), A("shipping")]
PARCEL_ZH_NEAR = [S("你是客服分类助手"), U("我的包裹在哪里?"), A("请提供订单号"), U("订单4412"), A("Shipping")]
CRASH_ZH = {"prompt": "应用一打开就闪退，怎么办？", "completion": "technical"}
CRASH_EN = {"system": "Classify.", "prompt": "My app crashes on start.", "completion": "technical"}

# (physical line, bytes); lines joined with LF, the first two end in CRLF.
MIXED = [
    (1, BOM + _msgs(U("Where is my order?"), A("shipping")) + b"\r"),
    (2, _msgs(*CHARGED) + b"\r"),
    (3, b""),
    (4, json.dumps(CRASH_ZH, ensure_ascii=False).encode()),
    (5, b'{"messages": [{"role": "user"'),
    (6, b"[1, 2]"),
    (7, b'{"metadata": {"source": "crm"}}'),
    (8, b'{"messages": []}'),
    (9, _msgs(U("Reset my password"), {"role": "asistant", "content": "account"})),
    (10, _msgs(U(42), A("x"))),
    (11, _msgs(U("   "), A("x"))),
    (12, _msgs(U("hi"), S("late"), A("x"))),
    (13, _msgs(U("a"), A("b"), U("c"))),
    (14, _msgs(*CHARGED, metadata={"copy": True})),
    (15, _msgs(U("where is my ORDER"), A("Shipping."))),
    (16, _msgs(*PARCEL_ZH)),
    (17, _msgs(U("Hello"), U("Anyone there?"), A("Yes."))),
    (18, b'\xff\xfe{"messages": []}'),
    (19, b"  \t "),
    (20, json.dumps(CRASH_EN).encode()),
    (21, _msgs(*PARCEL_ZH_NEAR)),
]
MIXED_ERRORS = {
    5: "invalid_json", 6: "invalid_json", 7: "missing_messages", 8: "missing_messages", 9: "bad_role",
    10: "bad_content", 11: "bad_content", 12: "system_not_first", 13: "last_not_assistant", 18: "invalid_json",
}
MIXED_WARNINGS = {14: "duplicate", 15: "near_duplicate", 17: "not_alternating", 21: "near_duplicate"}


@pytest.fixture
def mixed_file(tmp_path):
    assert [n for n, _ in MIXED] == list(range(1, len(MIXED) + 1))
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(b"\n".join(raw for _, raw in MIXED) + b"\n")
    return path


def _write(path, conversations):
    lines = [json.dumps({"messages": c}, ensure_ascii=False) for c in conversations]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_mixed_file_every_finding_at_its_line(mixed_file):
    report = check_file(mixed_file)
    assert (report["total"], report["valid"]) == (19, 9)
    assert report["format_rate"] == pytest.approx(9 / 19)
    assert {f["line"]: f["code"] for f in report["errors"]} == MIXED_ERRORS
    assert {f["line"]: f["code"] for f in report["warnings"]} == MIXED_WARNINGS
    assert (report["errors_total"], report["warnings_total"]) == (10, 4)
    assert [f["line"] for f in report["errors"]] == sorted(MIXED_ERRORS)
    messages = {f["line"]: f["message"] for f in report["errors"] + report["warnings"]}
    assert "did you mean 'assistant'" in messages[9]
    assert "same conversation as line 2" in messages[14]
    assert "same as line 1 up to case" in messages[15]
    assert "same as line 16 up to case" in messages[21]
    assert "message 2 is 'user' where 'assistant' was expected" in messages[17]


def test_mixed_file_stats(mixed_file):
    stats = check_file(mixed_file)["stats"]
    valid = [
        [U("Where is my order?"), A("shipping")],
        CHARGED,
        [U(CRASH_ZH["prompt"]), A("technical")],
        CHARGED,
        [U("where is my ORDER"), A("Shipping.")],
        PARCEL_ZH,
        [U("Hello"), U("Anyone there?"), A("Yes.")],
        [S(CRASH_EN["system"]), U(CRASH_EN["prompt"]), A("technical")],
        PARCEL_ZH_NEAR,
    ]
    chars = sorted(sum(len(m["content"]) for m in c) for c in valid)
    assert stats["chars"] == {
        "min": chars[0], "p50": chars[4], "p90": chars[8], "max": chars[-1], "mean": round(sum(chars) / 9, 1),
    }
    assert stats["turns"]["histogram"] == {2: 6, 3: 1, 4: 2}
    assert (stats["turns"]["min"], stats["turns"]["max"]) == (2, 4)
    assert "labels" not in stats and "tokens" not in stats  # 5 distinct answers over 9 rows do not repeat enough


def test_exact_copy_of_a_near_duplicate_names_that_line(tmp_path):
    a, b = [U("Hello there"), A("Hi")], [U("hello, there!"), A("hi")]
    report = check_file(_write(tmp_path / "d.jsonl", [a, b, b, a]))
    assert [(f["line"], f["code"], f["message"].split(";")[0]) for f in report["warnings"]] == [
        (2, "near_duplicate", "same as line 1 up to case, spacing and punctuation"),
        (3, "duplicate", "same conversation as line 2"),
        (4, "duplicate", "same conversation as line 1"),
    ]


def test_assistant_first_is_not_alternating_but_valid(tmp_path):
    report = check_file(_write(tmp_path / "d.jsonl", [[S("Write a haiku."), A("Autumn moonlight")]]))
    assert report["valid"] == 1
    assert [(f["line"], f["code"]) for f in report["warnings"]] == [(1, "not_alternating")]


def _rendered_len(tokenizer, conversation):
    return len(tokenizer.apply_chat_template(conversation, tokenize=True)["input_ids"])


def test_too_long_counts_chat_template_tokens(tmp_path, chat_tokenizer):
    short, long = [U("Order 4412."), A("shipping")], [U("Where is my parcel? " * 30), A("shipping")]
    limit = _rendered_len(chat_tokenizer, short)
    path = _write(tmp_path / "d.jsonl", [short, long])
    report = check_file(path, chat_tokenizer, max_seq_len=limit)
    n_long = _rendered_len(chat_tokenizer, long)
    assert [(f["line"], f["code"]) for f in report["warnings"]] == [(2, "too_long")]
    assert f"{n_long} tokens > max_seq_len {limit}" in report["warnings"][0]["message"]
    assert (report["stats"]["tokens"]["min"], report["stats"]["tokens"]["max"]) == (limit, n_long)
    # A tokenizer without a template of its own is rendered with DEFAULT_CHAT_TEMPLATE (ChatML, the same here).
    bare = copy.deepcopy(chat_tokenizer)
    bare.chat_template = None
    assert check_file(path, bare, max_seq_len=limit)["stats"]["tokens"] == report["stats"]["tokens"]


def test_template_that_raises_is_a_template_rejected_error(tmp_path, chat_tokenizer):
    strict = copy.deepcopy(chat_tokenizer)
    strict.chat_template = (
        "{% if messages[0]['content'] == 'a' %}{{ raise_exception('roles must alternate') }}{% endif %}"
        + chat_tokenizer.chat_template)
    report = check_file(_write(tmp_path / "d.jsonl", [[U("b"), A("c")], [U("a"), A("b")]]), strict, max_seq_len=64)
    assert [(f["line"], f["code"]) for f in report["errors"]] == [(2, "template_rejected")]
    assert "roles must alternate" in report["errors"][0]["message"]
    assert (report["valid"], report["total"]) == (1, 2)


def _classification(tmp_path, counts):
    rows = [[U(f"ticket {label} {i}"), A(label)] for label, n in counts.items() for i in range(n)]
    return check_file(_write(tmp_path / "d.jsonl", rows))


def test_label_distribution_and_imbalance_warning(tmp_path):
    report = _classification(tmp_path, {"billing": 30, "shipping": 6, "technical": 5})
    assert report["stats"]["labels"] == {"billing": 30, "shipping": 6, "technical": 5}
    assert report["stats"]["labels_other"] == 0
    first = report["warnings"][0]
    assert (first["line"], first["code"]) == (0, "label_imbalance")
    assert "'billing' has 30 examples, 6.0x the 5 of 'technical'" in first["message"]


def test_balanced_labels_no_warning_and_generative_data_no_labels(tmp_path):
    report = _classification(tmp_path, {"billing": 9, "shipping": 8, "technical": 3})
    assert report["stats"]["labels"] == {"billing": 9, "shipping": 8, "technical": 3} and report["warnings"] == []
    essays = [[U(f"Question {i}?"), A(f"A long, different answer number {i}.")] for i in range(30)]
    assert "labels" not in check_file(_write(tmp_path / "g.jsonl", essays))["stats"]


def test_findings_are_capped_but_counted(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text("{oops\n" * (MAX_FINDINGS + 500))
    report = check_file(path)
    assert (len(report["errors"]), report["errors_total"]) == (MAX_FINDINGS, MAX_FINDINGS + 500)
    assert f"errors ({MAX_FINDINGS + 500}, first {MAX_FINDINGS} listed):" in format_report(report)


def test_empty_file(tmp_path, capsys):
    path = tmp_path / "empty.jsonl"
    path.write_text("\n  \n")
    report = check_file(path)
    assert (report["total"], report["valid"], report["format_rate"]) == (0, 0, 0.0)
    assert report["stats"]["chars"] == dict.fromkeys(["min", "p50", "p90", "max", "mean"])
    assert main(["data", "check", str(path)]) == 1
    assert "no examples found" in capsys.readouterr().out


def test_format_report_text(mixed_file):
    text = format_report(check_file(mixed_file))
    assert text.splitlines()[0] == "9 of 19 examples valid: format correctness rate 47.4%"
    assert "  line 9: bad_role: message 2 role 'asistant' is not one of" in text
    assert "  line 14: duplicate: same conversation as line 2" in text
    assert "user/assistant turns per example: min 2" in text


def test_check_json_is_one_object_and_exit_codes(mixed_file, tmp_path, capsys):
    assert main(["data", "check", str(mixed_file), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)  # fails unless stdout is exactly one JSON value
    assert report["errors_total"] == 10 and report["stats"]["turns"]["histogram"] == {"2": 6, "3": 1, "4": 2}
    # A label with a lone surrogate (legal in JSON) must still print as valid JSON.
    clean = tmp_path / "clean.jsonl"
    rows = [[U(f"q{i}"), A("\ud800" if i % 2 else "ok")] for i in range(4)]
    clean.write_text("".join(json.dumps({"messages": c}) + "\n" for c in rows))
    assert main(["data", "check", str(clean), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["stats"]["labels"] == {"ok": 2, "\ud800": 2}


def test_check_with_tokenizer_dir(tmp_path, chat_tokenizer, capsys):
    chat_tokenizer.save_pretrained(tmp_path / "tok")
    path = _write(tmp_path / "d.jsonl", [[U("Where is my parcel? " * 30), A("shipping")]])
    assert main(["data", "check", str(path), "--tokenizer", str(tmp_path / "tok"), "--max-seq-len", "16", "--json"]) == 0
    assert [f["code"] for f in json.loads(capsys.readouterr().out)["warnings"]] == ["too_long"]


def test_check_unreadable_inputs_exit_2(tmp_path, capsys):
    assert main(["data", "check", str(tmp_path / "missing.jsonl")]) == 2
    assert "missing.jsonl: no such file" in capsys.readouterr().err
    (tmp_path / "notok").mkdir()
    (tmp_path / "d.jsonl").write_text("{}\n")
    assert main(["data", "check", str(tmp_path / "d.jsonl"), "--tokenizer", str(tmp_path / "notok")]) == 2
    captured = capsys.readouterr()
    assert "notok: not a tokenizer directory" in captured.err and captured.out == ""
    with pytest.raises(DataError):
        check_file(tmp_path / "missing.jsonl")


# ------------------------------------------------------------------------------------------- properties

_LINE_PIECES = st.one_of(
    st.binary(max_size=40),
    st.sampled_from([b"", b"  ", b"\r", BOM, b"{}", b"[", b"]", b'{"messages": [', _msgs(U("q"), A("a"))]),
)
# Keys the reader looks for, so generated values sometimes get past the first checks.
_KEYS = st.sampled_from(["messages", "prompt", "completion", "system", "role", "content"]) | st.text(max_size=5)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_KEYS, inner, max_size=4),
    max_leaves=12,
)
_MESSAGE = st.fixed_dictionaries(
    {"role": st.sampled_from(["system", "user", "assistant", "asistant"]), "content": st.text(max_size=8) | st.none()}
)
_CONVERSATION = st.fixed_dictionaries({"messages": st.lists(_MESSAGE, max_size=5)})
_SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@_SETTINGS
@given(pieces=st.lists(_LINE_PIECES, max_size=12))
def test_arbitrary_bytes_never_raise(tmp_path, pieces):
    data = b"\n".join(pieces)
    path = tmp_path / "fuzz.jsonl"
    path.write_bytes(data)
    report = check_file(path)
    non_blank = sum(1 for line in data.removeprefix(BOM).split(b"\n") if line.strip())
    assert report["total"] == non_blank
    assert report["valid"] + report["errors_total"] == non_blank
    assert format_report(report).startswith(f"{report['valid']} of {non_blank}" if non_blank else "no examples")
    # Without the .jsonl suffix a leading '[' makes it a JSON array: other counts, still no exception.
    json_path = tmp_path / "fuzz.json"
    json_path.write_bytes(data)
    report = check_file(json_path)
    assert report["valid"] + report["errors_total"] == report["total"]


@_SETTINGS
@given(values=st.lists(_JSON | _CONVERSATION, max_size=10))
def test_arbitrary_json_values_never_raise(tmp_path, values):
    path = tmp_path / "fuzz.jsonl"
    path.write_text("".join(json.dumps(v) + "\n" for v in values))
    report = check_file(path)
    assert report["total"] == len(values)
    assert report["valid"] + report["errors_total"] == len(values)
    assert all(f["line"] in range(1, len(values) + 1) for f in report["errors"] + report["warnings"])


def _call(name, arguments, call_id="call_1"):
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def test_tool_call_codes_at_their_lines(tmp_path):
    tools = [{"type": "function", "function": {"name": "get_order", "parameters": {"type": "object"}}}]
    ask = U("Where is order 4412?")
    good = {"tools": tools, "messages": [
        ask, {"role": "assistant", "content": None, "tool_calls": [_call("get_order", '{"order_id": "4412"}')]},
        {"role": "tool", "tool_call_id": "call_1", "content": "in transit"}, A("It is in transit.")]}
    rows = [
        good,
        {"tools": tools, "messages": [ask, {"role": "assistant", "content": "", "tool_calls": [_call("", "{}")]}]},
        {"tools": tools, "messages": [ask, {"role": "assistant", "tool_calls": [_call("get_order", "{order: 4412")]}]},
        {"tools": tools, "messages": [ask, {"role": "assistant", "tool_calls": [_call("cancel_order", "{}")]}]},
        {"tools": tools, "messages": [ask, {"role": "tool", "tool_call_id": "call_9", "content": "x"}, A("done")]},
        {"messages": [ask, {"role": "assistant", "tool_calls": [_call("cancel_order", {"id": 1})]}]},  # no tools: any name
        {"messages": [ask, {"role": "assistant", "content": "b", "reasoning_content": "the order is late"}]},
    ]
    path = tmp_path / "tools.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    report = check_file(path)
    assert [(f["line"], f["code"]) for f in report["errors"]] == [
        (2, "bad_tool_call"), (3, "bad_tool_call"), (4, "unknown_tool"), (5, "orphan_tool_result")]
    assert "not valid JSON" in report["errors"][1]["message"] and "'cancel_order'" in report["errors"][2]["message"]
    assert (report["valid"], report["stats"]["tool_calls"], report["stats"]["reasoning"]) == (3, 2, 1)


def test_tool_data_with_a_template_without_tools_is_rejected(tmp_path, chat_tokenizer):
    rows = [{"messages": [U("q"), {"role": "assistant", "tool_calls": [_call("f", "{}")]}]}, {"messages": [U("q"), A("a")]}]
    path = tmp_path / "tools.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    report = check_file(path, chat_tokenizer)
    assert [(f["line"], f["code"]) for f in report["errors"]] == [(1, "template_rejected")]
    assert "no tool support" in report["errors"][0]["message"]
