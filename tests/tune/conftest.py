"""Tune fixtures: a 2-CPU Ray cluster of our own, a tiny model, and small campaign specs.

The cluster is `raysft serve`'s embedded one (`ray start --head --block`, its processes given RAY_ADDRESS) rather
than `ray.init()`'s: Ray Train frees an ASHA-stopped trial's worker placement group through its PlacementGroupCleaner,
which asks the State API (served by the dashboard) of the cluster RAY_ADDRESS names whether the trial's controller is
alive, and other Ray clusters run on this machine. Subprocess drivers (`python -m raysft.tune`) connect to the same
cluster through RAY_ADDRESS. The cluster uses token authentication like every other in the tests (tests/conftest.py).
"""

import os
from pathlib import Path

import pytest
import ray

from raysft.model.tiny import init_tiny
from raysft.local_ray.cluster import LocalRayCluster

ROOT = Path(__file__).resolve().parents[2]
TRAIN = str(ROOT / "examples/data/tickets_train.jsonl")


@pytest.fixture(scope="module")
def ray_address(tmp_path_factory):
    """Address of a private 2-CPU Ray cluster with a dashboard; the test process is connected to it."""
    saved = os.environ.get("RAY_TRAIN_ENABLE_PRINT_PATCH")
    os.environ["RAY_TRAIN_ENABLE_PRINT_PATCH"] = "0"  # inherited by the head's processes
    cluster = LocalRayCluster(tmp_path_factory.mktemp("ray") / "cluster.json", num_cpus=2, num_gpus=0)
    cluster.start()
    ray.init(address=cluster.gcs_address, configure_logging=False)
    yield cluster.gcs_address
    ray.shutdown()
    cluster.stop(grace_s=5)  # a test cluster: no need to let it drain (up to 30 s)
    if saved is None:
        os.environ.pop("RAY_TRAIN_ENABLE_PRINT_PATCH")
    else:
        os.environ["RAY_TRAIN_ENABLE_PRINT_PATCH"] = saved


@pytest.fixture(scope="module")
def base_model(tmp_path_factory):
    """A 1-layer, 32-wide random Llama whose tokenizer is trained on the ticket data."""
    return str(init_tiny(tmp_path_factory.mktemp("base"), TRAIN, vocab_size=300, hidden_size=32, layers=1))


@pytest.fixture(scope="session")
def train_file() -> str:
    return TRAIN


@pytest.fixture(scope="session")
def campaign_raw():
    """Builds small campaign specs: campaign_raw(base, out, tune, train={...}, ...) -> raw spec mapping."""
    return _campaign_raw


def _campaign_raw(base: str, out: Path, tune: dict, **sections) -> dict:
    """A small campaign spec: 128-token rows, 2 × 2 rows per step, evaluation every 2 steps, keep_last 1."""
    raw = {
        "model": {"name_or_path": base, "lora": {"rank": 8, "alpha": 16, "dropout": 0.0}},
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
