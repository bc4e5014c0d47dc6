"""Model-layer fixtures: a chat JSONL file and a tiny random-weight model built from it (once per session)."""

import json

import pytest

from raysft.model.tiny import init_tiny


@pytest.fixture(scope="session")
def chat_file(tmp_path_factory, conversations):
    path = tmp_path_factory.mktemp("data") / "chat.jsonl"
    path.write_text("".join(json.dumps({"messages": c}, ensure_ascii=False) + "\n" for c in conversations), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory, chat_file):
    """A 2-layer, 64-wide Llama with a tokenizer trained on the fixture conversations."""
    return init_tiny(tmp_path_factory.mktemp("tiny"), chat_file, vocab_size=600, hidden_size=64, layers=2, heads=4)
