"""Fixtures of the training tests that run on Ray: one in-process local Ray per module, and a tiny model."""

import os
from pathlib import Path

import pytest
import ray

from raysft.model.tiny import init_tiny
from raysft.local_ray.connect import connect_ray

TICKETS = Path(__file__).resolve().parents[2] / "examples/data/tickets_train.jsonl"


@pytest.fixture(scope="module")
def local_ray():
    connect_ray(num_cpus=2, configure_logging=False)  # the embedded default, dashboard included
    os.environ["RAY_TRAIN_ENABLE_PRINT_PATCH"] = "0"
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def base(tmp_path_factory, local_ray):
    """A tiny Llama with a tokenizer trained on the tickets data (512 tokens, 2 layers of 64)."""
    return str(init_tiny(tmp_path_factory.mktemp("base"), str(TICKETS), vocab_size=512, hidden_size=64, layers=2))
