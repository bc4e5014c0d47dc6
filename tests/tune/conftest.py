"""Tune fixtures: the ticket data and small campaign specs. The Ray cluster (`ray_address`) and the tiny model
(`tiny_model`) are the session's, from tests/conftest.py.
"""

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TRAIN = str(ROOT / "examples/data/tickets_train.jsonl")


@pytest.fixture(scope="session")
def train_file() -> str:
    return TRAIN


@pytest.fixture(scope="session")
def campaign_raw():
    """Builds small campaign specs: campaign_raw(base, out, tune, train={...}, ...) -> raw spec mapping."""
    return _campaign_raw


def _campaign_raw(base: str | Path, out: Path, tune: dict, **sections) -> dict:
    """A small campaign spec: 128-token rows, 2 × 2 rows per step, evaluation every 2 steps, keep_last 1."""
    raw = {
        "model": {"name_or_path": str(base), "lora": {"rank": 8, "alpha": 16, "dropout": 0.0}},
        "data": {"train": [TRAIN], "validation_split": 0.1, "max_seq_len": 128},
        "train": {"max_steps": 8, "learning_rate": 1e-3, "micro_batch_size": 2, "global_batch_size": 4,
                  "warmup_ratio": 0.0},
        "eval": {"every_steps": 2},
        "checkpoint": {"keep_last": 1},
        "output_dir": str(out),
        "tune": tune,
    }
    for name, values in sections.items():
        raw[name] = {**raw.get(name, {}), **values}
    return raw
