"""`raysft data preview`: the JSON schema per line, and the same examples training builds."""

import json

from raysft.cli import main
from raysft.data.template import encode_conversation

U = lambda c: {"role": "user", "content": c}
A = lambda c: {"role": "assistant", "content": c}


def test_preview_json_is_one_object_per_line_with_training_examples(tmp_path, chat_tokenizer, capsys):
    chat_tokenizer.save_pretrained(tmp_path / "tok")
    conversation = [U("Where is my parcel?"), A("Which order number?"), U("Order 4412."), A("shipping")]
    rows = [{"messages": conversation}, {"messages": [U("a"), {"role": "robot", "content": "b"}]}, {"messages": [U("x"), A("y")]}]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    code = main(["data", "preview", str(tmp_path / "d.jsonl"), "--tokenizer", str(tmp_path / "tok"), "--json",
                 "--loss-on", "last_assistant", "-n", "2"])
    out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 1 and [o["line"] for o in out] == [1, 2]
    expected = encode_conversation(chat_tokenizer, conversation, max_seq_len=2048, loss_on="last_assistant").examples
    (example,) = out[0]["examples"]
    assert {k: example[k] for k in ("input_ids", "labels")} == expected[0]
    assert example["trained_text"] == ["shipping<|im_end|>"]
    assert example["prompt_text"].endswith("Order 4412.<|im_end|>\n<|im_start|>assistant\n")
    assert out[1] == {"line": 2, "error": {"code": "bad_role", "message": out[1]["error"]["message"]}}


def test_preview_text_marks_trained_spans_and_summarises(tmp_path, chat_tokenizer, capsys):
    chat_tokenizer.save_pretrained(tmp_path / "tok")
    (tmp_path / "d.jsonl").write_text(json.dumps({"messages": [U("q"), A("billing")]}) + "\n", encoding="utf-8")
    assert main(["data", "preview", str(tmp_path / "d.jsonl"), "--tokenizer", str(tmp_path / "tok")]) == 0
    text = capsys.readouterr().out
    assert "⟦billing<|im_end|>⟧" in text and "=== 1 lines -> 1 examples" in text
