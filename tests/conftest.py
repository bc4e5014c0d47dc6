"""Shared fixtures: a tokenizer trained on local text (nothing downloads) and chat conversations.

Every Ray cluster the tests start, and this process, use token authentication, stated here before anything
imports ray. Left unset, Ray 2.60 switches a process to token mode for good the first time it starts a local
cluster (as `raysft train` does), after which that process refuses the calls of any cluster started later
without tokens: the mode must be the same for the whole session.
"""

import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from raysft.local_ray import free_port, use_token_auth

use_token_auth()  # before anything imports ray

from raysft.model.tokenizer import train_tokenizer  # noqa: E402

CONVERSATIONS = [
    [
        {"role": "system", "content": "Route each support ticket to one team: billing, shipping, technical or account."},
        {"role": "user", "content": "I was charged twice for my last order."},
        {"role": "assistant", "content": "billing"},
    ],
    [
        {"role": "user", "content": "Where is my parcel? The tracking page has not changed for a week."},
        {"role": "assistant", "content": "Which order number?"},
        {"role": "user", "content": "Order 4412."},
        {"role": "assistant", "content": "shipping"},
    ],
    [
        {"role": "system", "content": "你是客服分类助手。"},
        {"role": "user", "content": "应用一打开就闪退，怎么办？"},
        {"role": "assistant", "content": "technical"},
    ],
    [
        {"role": "user", "content": "Thought: I need the weather.\nAction: search[weather Paris]"},
        {"role": "assistant", "content": "Observation: 18°C and sunny.\nFinal Answer: It is 18°C and sunny in Paris."},
    ],
]


@pytest.fixture(scope="session")
def conversations():
    return [list(map(dict, c)) for c in CONVERSATIONS]


@pytest.fixture(scope="session")
def chat_tokenizer():
    """A byte-level BPE tokenizer with ChatML tokens, trained on the fixture conversations."""
    texts = [m["content"] for c in CONVERSATIONS for m in c] * 20
    return train_tokenizer(texts, vocab_size=600)


@pytest.fixture(scope="session")
def mlflow_uri(tmp_path_factory):
    """A real MLflow tracking server (SQLite store, local artifacts) on a free 127.0.0.1 port."""
    root = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{root}/mlflow.db", "--artifacts-destination", str(root / "artifacts")],
        stdout=subprocess.DEVNULL, stderr=open(root / "server.log", "wb"))
    uri = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while True:
        try:
            urllib.request.urlopen(f"{uri}/health", timeout=2)
            break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                pytest.fail(f"mlflow server did not start: {(root / 'server.log').read_text()[-2000:]}")
            time.sleep(0.5)
    yield uri
    proc.terminate()
    proc.wait(timeout=30)
