"""LoRA learns to call the right tool: OpenAI-format tool-calling data rendered with Qwen2.5's real chat template
(tools in the system prompt, calls as <tool_call> JSON), judged by exact match on held-out conversations whose
combinations (tool, phrasing, greeting, urgency) training never saw. The quickstart's recipe for a tiny random base: many steps, a high learning rate,
micro batch 1."""

import json
import random
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from raysft.config import load_spec
from raysft.data.render import Renderer
from raysft.model.tiny import init_tiny
from raysft.train.launcher import run_training
from raysft.train.exact_match import score_model

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "tests/data/templates/qwen2.5.jinja"

# tool -> (what users ask for, phrasings); `urgent` is true when the ticket says it is.
TOOLS = {
    "get_order_status": ["where is my order", "has my parcel shipped", "track my package", "when will it arrive"],
    "cancel_order": ["cancel my order", "I no longer want it", "stop the order", "please call off the purchase"],
    "request_refund": ["I want my money back", "refund me", "I was charged twice", "return the payment"],
    "change_address": ["ship it to my new address", "update my delivery address", "I moved house", "wrong address"],
}
OPENERS = ["Hi,", "Hello,", "Good morning,", "Dear support,"]
URGENT = ["It is urgent.", "Please hurry, this is urgent."]
CALM = ["No rush.", "Thanks."]


def _schema(name: str) -> dict:
    # Short schemas: Qwen2.5 prints each into the system prompt, and a tiny random base learns faster from short rows.
    return {"type": "function", "function": {"name": name, "parameters": {"properties": {"urgent": {"type": "boolean"}}}}}


def _conversation(name: str, phrase: str, opener: str, urgent: bool) -> dict:
    ask = f"{opener} {phrase}. {(URGENT if urgent else CALM)[len(phrase) % 2]}"
    call = {"id": "call_1", "type": "function",
            "function": {"name": name, "arguments": json.dumps({"urgent": urgent})}}
    return {"tools": [_schema(n) for n in TOOLS],
            "messages": [{"role": "user", "content": ask}, {"role": "assistant", "content": None, "tool_calls": [call]}]}


def _split() -> tuple[list[dict], list[dict]]:
    """Every (tool, phrase, opener, urgency) combination once; 32 of them held out, never trained on."""
    combos = [(n, p, o, u) for n, ps in TOOLS.items() for p in ps for o in OPENERS for u in (False, True)]
    random.Random(0).shuffle(combos)
    rows = [_conversation(*c) for c in combos]
    return rows[32:], rows[:32]


@pytest.fixture(scope="module")
def data_and_base(tmp_path_factory, ray_address):
    root = tmp_path_factory.mktemp("tools")
    train, test = _split()
    for name, rows in (("train.jsonl", train), ("test.jsonl", test)):
        (root / name).write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    # The tokenizer learns the rendered text (system prompt with the tool schemas, calls), so sequences stay short.
    probe = AutoTokenizer.from_pretrained(str(init_tiny(root / "probe", root / "train.jsonl", vocab_size=300)))
    probe.chat_template = TEMPLATE.read_text(encoding="utf-8")
    rendered = [Renderer(probe).render(r["messages"], r["tools"], False) for r in train[:48]]
    corpus = [{"messages": [{"role": "user", "content": text}, {"role": "assistant", "content": "ok"}]} for text in rendered]
    (root / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in corpus), encoding="utf-8")
    base = init_tiny(root / "base", root / "corpus.jsonl", vocab_size=1024, hidden_size=128, layers=2)
    tokenizer = AutoTokenizer.from_pretrained(str(base))
    tokenizer.chat_template = TEMPLATE.read_text(encoding="utf-8")
    tokenizer.save_pretrained(str(base))
    return root, str(base)


def test_lora_learns_to_emit_the_right_tool_call(data_and_base, tmp_path):
    root, base = data_and_base
    spec = load_spec(ROOT / "examples/quickstart.yaml", [
        f"model.name_or_path={base}", f"output_dir={tmp_path / 'run'}", f"data.train=[{root / 'train.jsonl'}]",
        "data.stratify_by=null", "data.max_seq_len=512", "train.epochs=32", "scaling.num_workers=1", "train.global_batch_size=1",
        "eval.generate.limit=8", "eval.generate.max_new_tokens=40"])
    before = score_model(base, str(root / "test.jsonl"), max_new_tokens=40, limit=8)
    run_training(spec)
    after = score_model(str(tmp_path / "run"), str(root / "test.jsonl"), max_new_tokens=40)
    print(f"held-out exact match {before['exact_match']:.3f} -> {after['exact_match']:.3f}")
    assert after["n"] == 32
    assert before["exact_match"] == 0.0
    # The same code scored 0.875 (28 of 32; the untrained base 0.0) in one environment's CI and 0.531 (17 of 32) in the
    # next, with a training curve identical to the current code's: the adapter kept is the checkpoint best by exact
    # match on 8 validation conversations, which peaks early (0.375 at step 516), so the score moves with numerics.
    # The floor asks for a majority of unseen combinations, which the untrained base never gets.
    assert after["exact_match"] >= 0.5, [(x["reference"], x["generation"]) for x in after["samples"]]
    assert '"name": "' in after["samples"][0]["reference"] and "<tool_call>" in after["samples"][0]["reference"]
