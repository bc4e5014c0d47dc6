"""Model-layer fixtures: a chat JSONL file of the fixture conversations (init_tiny's own tests build from it)."""

import json

import pytest


@pytest.fixture(scope="session")
def chat_file(tmp_path_factory, conversations):
    path = tmp_path_factory.mktemp("data") / "chat.jsonl"
    path.write_text("".join(json.dumps({"messages": c}, ensure_ascii=False) + "\n" for c in conversations), encoding="utf-8")
    return path
