"""Shared fixtures: a tokenizer trained on local text (nothing downloads) and chat conversations.

Every Ray cluster the tests start, and this process, use token authentication, stated here before anything
imports ray. Left unset, Ray 2.60 switches a process to token mode for good the first time it starts a local
cluster (as `raysft train` does), after which that process refuses the calls of any cluster started later
without tokens: the mode must be the same for the whole session.
"""

import pytest

from raysft.local_ray import use_token_auth

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

