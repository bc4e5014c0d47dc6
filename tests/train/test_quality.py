"""The product's promise on a real task: LoRA and QLoRA on 2 CPU workers learn to route support tickets,
judged by exact match on held-out conversations that training never saw (examples/data/tickets_test.jsonl)."""

from pathlib import Path

import pytest
import ray

from raysft.config import load_spec
from raysft.model.tiny import init_tiny
from raysft.train.launcher import connect_ray, run_training
from raysft.train.score import score_model

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
HELD_OUT = str(ROOT / "examples/data/tickets_test.jsonl")


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    connect_ray(num_cpus=2, configure_logging=False)  # the embedded default, dashboard included
    yield str(init_tiny(tmp_path_factory.mktemp("base"), ROOT / "examples/data/tickets_train.jsonl",
                        vocab_size=1024, hidden_size=128, layers=2))
    ray.shutdown()


@pytest.mark.parametrize("method, floor", [("lora", 0.9), ("qlora", 0.85)])
def test_fine_tuning_reaches_the_exact_match_floor_on_held_out_data(base, tmp_path, monkeypatch, method, floor):
    monkeypatch.chdir(ROOT)  # the quickstart spec names its data relative to the repository
    spec = load_spec(ROOT / "examples/quickstart.yaml",
                     [f"model.name_or_path={base}", f"model.method={method}", f"output_dir={tmp_path / method}"])
    before = score_model(base, HELD_OUT, max_new_tokens=4, limit=40)
    summary = run_training(spec)
    after = score_model(str(tmp_path / method), HELD_OUT, max_new_tokens=4)
    assert after["n"] == 200
    assert before["exact_match"] < 0.3, "an untrained model should not already know the labels"
    assert after["exact_match"] >= floor, (after["exact_match"], summary["best"])
