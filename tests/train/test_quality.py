"""The product's promise on real tasks: LoRA and QLoRA on 2 CPU workers learn to classify conversations, judged by
exact match on held-out conversations that training never saw. Two generated tasks: English support tickets
(4 teams, examples/make_tickets.py) and Chinese customer-service intents (5 labels, confusable phrasings,
dialogue excerpts, examples/make_intents.py), each with its shipped recipe."""

from dataclasses import dataclass
from pathlib import Path

import pytest

from raysft.config import load_spec
from raysft.model.tiny import init_tiny
from raysft.train.launcher import run_training
from raysft.train.exact_match import score_model

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class _Task:
    spec: str
    train: str
    held_out: str
    n: int
    max_new_tokens: int


TASKS = {
    "tickets": _Task("examples/quickstart.yaml", "examples/data/tickets_train.jsonl", "examples/data/tickets_test.jsonl",
                     200, 4),
    "intents": _Task("examples/intents.yaml", "examples/data/intents_train.jsonl", "examples/data/intents_test.jsonl",
                     90, 6),
}


@pytest.fixture(scope="module")
def bases(tmp_path_factory, ray_address):
    """One tiny random base per task (its tokenizer trained on the task's train file; ~1 s each), sized for the task:
    the floors below were measured on these, not on the session's smaller tiny model. Trained on the session's Ray."""
    root = tmp_path_factory.mktemp("base")
    return {name: str(init_tiny(root / name, ROOT / task.train, vocab_size=1024, hidden_size=128, layers=2))
            for name, task in TASKS.items()}


# Each task once and each method once: the four pairs cost CI 3.5 minutes for what two of them show.
@pytest.mark.parametrize("task, method, floor", [("tickets", "lora", 0.9), ("intents", "qlora", 0.85)])
def test_fine_tuning_reaches_the_exact_match_floor_on_held_out_data(bases, tmp_path, monkeypatch, task, method, floor):
    monkeypatch.chdir(ROOT)  # the shipped specs name their data relative to the repository
    t, base = TASKS[task], bases[task]
    spec = load_spec(ROOT / t.spec, [f"model.name_or_path={base}", f"model.method={method}", f"output_dir={tmp_path / method}"])
    before = score_model(base, str(ROOT / t.held_out), max_new_tokens=t.max_new_tokens, limit=40)
    summary = run_training(spec)
    after = score_model(str(tmp_path / method), str(ROOT / t.held_out), max_new_tokens=t.max_new_tokens)
    assert after["n"] == t.n
    assert before["exact_match"] < 0.3, "an untrained model should not already know the labels"
    assert after["exact_match"] >= floor, (after["exact_match"], summary["best"])
