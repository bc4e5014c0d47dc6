"""The training loop without Ray: `setup()` and `fit()` on a `LocalSession`, a few steps of a tiny model.

What a run relies on: the first step's loss is the token-mean cross-entropy of the global batch, evaluation loss
falls, the saved trainer state says where the run stands, early stopping stops at the step its rule names, a
resume continues at exactly the next step, and a resume under a changed spec names every field that changed.
"""

import json
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from raysft.config import load_spec
from raysft.train.loop import fit, setup
from raysft.train.runlog import read_jsonl
from raysft.train.rundata import WorkerInput, prepare_run_data
from raysft.train.session import LocalSession

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def train_file(tmp_path_factory):
    """80 ticket conversations: 22 training rows after the validation split, 6 steps of 4 rows per epoch."""
    path = tmp_path_factory.mktemp("data") / "tickets.jsonl"
    lines = (ROOT / "examples/data/tickets_train.jsonl").read_text(encoding="utf-8").splitlines()[:80]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _spec(base, train_file, out, **over):
    raw = {
        "model": {"name_or_path": str(base), "lora": {"rank": 8, "alpha": 16, "dropout": 0.0}},
        "data": {"train": [str(train_file)], "validation_split": 0.1, "max_seq_len": 256},
        "train": {"max_steps": 6, "learning_rate": 1e-3, "micro_batch_size": 2, "global_batch_size": 4,
                  "warmup_ratio": 0.0},
        "checkpoint": {"every_steps": 2, "keep_last": 2},
        "output_dir": str(out),
    }
    return load_spec(raw, [f"{k}={v}" for k, v in over.items()])


def _setup(spec, checkpoint=None):
    data, _ = prepare_run_data(spec, use_ray=False, announce=False)
    run = WorkerInput(spec=spec.model_dump(mode="json"), output_dir=spec.output_dir, storage_path=spec.output_dir,
                      cache_dir=data.cache_dir, data_key=data.key)
    session = LocalSession(spec.output_dir, checkpoint=checkpoint)
    return setup(run, session), session


def _global_batch_loss(trainer, step: int) -> float:
    """Token-mean next-token cross-entropy over the examples of `step`'s rows, each run alone through the model
    (no packing, no padding, not the loop's loss path)."""
    total = count = 0.0
    with torch.no_grad():
        for i in (i for row in trainer.data.plan.step_rows(step) for i in row):
            example = trainer.data.train[i]
            logits = trainer.model(input_ids=torch.tensor([example["input_ids"]])).logits[0, :-1]
            labels = torch.tensor(example["labels"])[1:]
            total += F.cross_entropy(logits.float(), labels, reduction="sum").item()
            count += (labels != -100).sum().item()
    return total / count


@pytest.fixture(scope="module")
def reference(tiny_model, train_file, tmp_path_factory):
    """Six steps from scratch, checkpoints at steps 2, 4 and 6."""
    spec = _spec(tiny_model, train_file, tmp_path_factory.mktemp("ref") / "out")
    trainer, session = _setup(spec)
    first_loss = _global_batch_loss(trainer, 0)
    result = fit(trainer)
    return {"spec": spec, "trainer": trainer, "session": session, "result": result, "first_loss": first_loss}


def test_fit_trains_from_the_global_batch_mean_loss_and_records_where_it_stands(reference):
    trainer, out = reference["trainer"], Path(reference["spec"].output_dir)
    metrics = read_jsonl(out / "metrics.jsonl")
    train = [m for m in metrics if "train_loss" in m]
    evals = [m["eval_loss"] for m in metrics if "eval_loss" in m]
    assert [m["step"] for m in train] == [1, 2, 3, 4, 5, 6]
    assert train[0]["train_loss"] == pytest.approx(reference["first_loss"], rel=1e-4)  # before any update
    assert len(evals) == 3 and evals[0] > evals[1] > evals[2]  # steps 2, 4, 6: the adapter learns
    plan = trainer.data.plan
    tokens = sum(trainer.data.targets[i] for s in range(6) for row in plan.step_rows(s) for i in row)
    assert (trainer.state.step, trainer.state.epoch, trainer.state.rows_consumed) == (6, 1.0, 24)
    assert trainer.state.trained_tokens == tokens == sum(m["trained_tokens"] for m in train)
    assert reference["result"] == {"step": 6, "best": evals[2], "best_step": 6, "early_stopped": False,
                                   "trained_tokens": tokens}
    saved = json.loads((out / "checkpoints/checkpoint_000004/trainer_state.json").read_text())
    assert saved == {"version": 1, "step": 4, "epoch": 4 / 6, "rows_consumed": 16, "best": evals[1], "best_step": 4,
                     "bad_evals": 0, "trained_tokens": sum(m["trained_tokens"] for m in train[:4])}
    assert [r["metrics"]["step"] for r in reference["session"].reports] == [2, 4, 6]


def test_a_resume_continues_at_the_next_step_and_names_what_the_spec_changed(reference, tiny_model, train_file, tmp_path):
    ref_out = Path(reference["spec"].output_dir)
    spec = _spec(tiny_model, train_file, tmp_path / "resumed", **{"checkpoint.keep_last": 3})
    trainer, _ = _setup(spec, checkpoint=ref_out / "checkpoints/checkpoint_000004")
    assert (trainer.state.step, trainer.state.rows_consumed) == (4, 16)
    result = fit(trainer)
    got = [m for m in read_jsonl(tmp_path / "resumed/metrics.jsonl") if "train_loss" in m]
    want = [m for m in read_jsonl(ref_out / "metrics.jsonl") if "train_loss" in m][4:]
    assert [m["step"] for m in got] == [5, 6]  # the same rows as the uninterrupted run: the same losses
    assert [m["train_loss"] for m in got] == pytest.approx([m["train_loss"] for m in want], rel=1e-5)
    assert result == {**reference["result"], "best": pytest.approx(reference["result"]["best"], rel=1e-5)}
    ref_weights = torch.load(ref_out / "checkpoints/checkpoint_000006/trainable.pt", weights_only=True)
    weights = torch.load(tmp_path / "resumed/checkpoints/checkpoint_000006/trainable.pt", weights_only=True)
    for name, value in ref_weights.items():
        torch.testing.assert_close(weights[name], value, rtol=1e-5, atol=1e-6)
    warned = [e for e in read_jsonl(tmp_path / "resumed/events.jsonl") if e["type"] == "warning"]
    changed = {e["data"]["field"]: e["message"] for e in warned if e["data"]["field"] != "train.max_steps"}
    assert sorted(changed) == ["checkpoint.keep_last", "output_dir"]
    assert changed["checkpoint.keep_last"] == ("checkpoint.keep_last: differs from the checkpoint at step 4 (2 there, "
                                               "3 in this run); training continues with this run's value")


def test_early_stopping_stops_at_the_step_its_patience_names(tiny_model, train_file, tmp_path):
    spec = _spec(tiny_model, train_file, tmp_path / "out", **{"train.max_steps": 40, "eval.every_steps": 1,
                                                        "eval.early_stopping": "{patience: 2, min_delta: 100.0}"})
    trainer, session = _setup(spec)
    result = fit(trainer)
    # The first evaluation sets the best; the next two fail to beat it by 100.
    assert result["early_stopped"] and result["step"] == 3 and result["best_step"] == 1
    assert (trainer.state.bad_evals, [r["metrics"]["step"] for r in session.reports]) == (2, [1, 2, 3])
    stop = [e for e in read_jsonl(tmp_path / "out/events.jsonl") if e["type"] == "early_stop"]
    assert [e["data"]["step"] for e in stop] == [3]
    assert stop[0]["message"].startswith("early stop at step 3: eval_loss has not improved for 2 evaluation(s)")


def test_the_spec_setting_trust_remote_code_loads_the_models_own_tokenizer_code(tiny_model, train_file, tmp_path, monkeypatch):
    custom = tmp_path / "custom"
    shutil.copytree(tiny_model, custom)
    config = json.loads((custom / "tokenizer_config.json").read_text())
    config["auto_map"] = {"AutoTokenizer": [None, "tokenization_tickets.TicketsTokenizer"]}
    (custom / "tokenizer_config.json").write_text(json.dumps(config))
    (custom / "tokenization_tickets.py").write_text(
        "import os\nfrom transformers import PreTrainedTokenizerFast\n\n\n"
        "class TicketsTokenizer(PreTrainedTokenizerFast):\n"
        "    def __init__(self, *args, **kwargs):\n"
        "        super().__init__(*args, **kwargs)\n"
        "        with open(os.environ['TICKETS_TOKENIZER_LOG'], 'a') as f:\n"
        "            f.write('loaded\\n')\n")
    log = tmp_path / "loaded.txt"
    log.touch()
    monkeypatch.setenv("TICKETS_TOKENIZER_LOG", str(log))
    plain, _ = _setup(_spec(custom, train_file, tmp_path / "plain", **{"train.max_steps": 1}))
    assert type(plain.tokenizer).__name__ != "TicketsTokenizer" and log.read_text() == ""  # off: the code never runs
    trusted, _ = _setup(_spec(custom, train_file, tmp_path / "trusted", **{"model.trust_remote_code": True,
                                                                          "train.max_steps": 1}))
    assert type(trusted.tokenizer).__name__ == "TicketsTokenizer"
    assert log.read_text() == "loaded\n" * 2  # the driver's data preparation and the worker's setup
