"""Training on a real Ray: 2-worker/1-worker equivalence, worker-kill resume, early stopping, incremental training,
and the run's outputs. On the session's Ray cluster (tests/conftest.py)."""

import json
import os
import signal
import threading
import time
from pathlib import Path

import psutil
import pytest
import torch
from safetensors.torch import load_file

from raysft.config import load_spec
from raysft.train.allocator import ENV
from raysft.train.launcher import RunError, run_training
from raysft.train.runlog import read_jsonl

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("ray_address")]
ROOT = Path(__file__).resolve().parents[2]
TRAIN = str(ROOT / "examples/data/tickets_train.jsonl")


def _spec(base, out, **over):
    raw = {
        "model": {"name_or_path": str(base), "lora": {"rank": 8, "alpha": 16, "dropout": 0.0}},
        "data": {"train": [TRAIN], "validation_split": 0.1, "max_seq_len": 256},
        "train": {"max_steps": 6, "learning_rate": 1e-3, "micro_batch_size": 2, "global_batch_size": 4, "warmup_ratio": 0.0},
        "checkpoint": {"every_steps": 2, "keep_last": 2},
        "output_dir": str(out),
    }
    return load_spec(raw, [f"{k}={v}" for k, v in over.items()])


def _adapter(out):
    return load_file(str(Path(out) / "adapter" / "adapter_model.safetensors"))


def _final_adapter(out):
    # The last checkpoint's trainable weights (the exported adapter is the best one, not the last).
    ckpts = sorted((Path(out) / "checkpoints").glob("checkpoint_0*"))
    return torch.load(ckpts[-1] / "trainable.pt", weights_only=True)


def test_run_writes_every_output_and_refuses_to_overwrite(tiny_model, tmp_path):
    out = tmp_path / "run"
    summary = run_training(_spec(tiny_model, out))
    for name in ("adapter/adapter_config.json", "adapter/adapter_model.safetensors", "spec.yaml", "metrics.jsonl",
                 "events.jsonl", "loss_curve.png", "summary.json"):
        assert (out / name).is_file(), name
    metrics = read_jsonl(out / "metrics.jsonl")
    assert [m["step"] for m in metrics if "train_loss" in m] == [1, 2, 3, 4, 5, 6]
    assert [m["step"] for m in metrics if "eval_loss" in m] == [2, 4, 6]
    saved = json.loads((out / "summary.json").read_text())
    assert saved["steps"] == 6 and saved["best"]["eval_loss"] == min(m["eval_loss"] for m in metrics if "eval_loss" in m)
    assert saved["trained_tokens"] > 0 and saved["data"]["composition"]["train"][TRAIN]["rows"] > 0
    assert len(list((out / "checkpoints").glob("checkpoint_0*"))) <= 2  # keep_last
    warnings = [e for e in read_jsonl(out / "events.jsonl") if e["type"] == "warning"]
    assert [e["data"]["field"] for e in warnings] == ["train.max_steps"]  # 6 steps: the few-steps advice
    assert load_spec(out / "spec.yaml").model.name_or_path == str(tiny_model)
    # One day for the whole run, in the spec a resume and `raysft eval` read back.
    assert load_spec(out / "spec.yaml").data.template_date.isoformat() == saved["data"]["template_date"]
    with pytest.raises(RunError, match="already holds a run"):
        run_training(_spec(tiny_model, out))
    assert summary["output_dir"] == str(out)


def test_two_workers_make_the_same_update_as_one_on_either_allocator(tiny_model, tmp_path, monkeypatch):
    with monkeypatch.context() as env:
        env.setenv(ENV, "system")
        run_training(_spec(tiny_model, tmp_path / "one", **{"train.micro_batch_size": 4}))
    run_training(_spec(tiny_model, tmp_path / "two", **{"train.micro_batch_size": 2, "scaling.num_workers": 2}))
    one, two = _final_adapter(tmp_path / "one"), _final_adapter(tmp_path / "two")
    assert one.keys() == two.keys()
    for name in one:
        torch.testing.assert_close(one[name], two[name], rtol=1e-4, atol=1e-5)
    assert any(v.abs().sum() > 0 for k, v in one.items() if "lora_B" in k)  # training moved the adapter
    # CPU workers allocate with jemalloc unless RAYSFT_CPU_ALLOCATOR=system keeps glibc's malloc
    started = {run: [e["data"]["allocator"] for e in read_jsonl(tmp_path / run / "events.jsonl") if e["type"] == "started"]
               for run in ("one", "two")}
    assert started == {"one": ["system"], "two": ["jemalloc"]}


def test_an_unknown_cpu_allocator_fails_before_any_work(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setenv(ENV, "tcmalloc")
    with pytest.raises(RunError, match="RAYSFT_CPU_ALLOCATOR='tcmalloc' is not one of"):
        run_training(_spec(tiny_model, tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def _kill_a_worker_after(out: Path, step: int, killed: list, cluster_pid: int):
    deadline = time.time() + 240
    while time.time() < deadline:
        events = read_jsonl(out / "events.jsonl") if (out / "events.jsonl").exists() else []
        if any(e["type"] == "checkpoint_saved" and e["data"]["step"] >= step for e in events):
            # Ray titles worker processes "ray::RayTrainWorker..."; kill one like a lost node would.
            # Only our own cluster's workers: its raylet is a child of its `ray start` process.
            ours = psutil.Process(cluster_pid).children(recursive=True)
            for proc in ours:
                if "ray::RayTrainWorker" in " ".join(proc.cmdline()):
                    os.kill(proc.pid, signal.SIGKILL)
                    killed.append(proc.pid)
                    return
        time.sleep(0.02)


def test_killed_worker_resumes_from_the_latest_checkpoint_without_repeating_steps(tiny_model, ray_cluster, tmp_path):
    over = {"train.max_steps": 30, "checkpoint.every_steps": 3, "eval.every_steps": 30}
    reference = tmp_path / "reference"
    run_training(_spec(tiny_model, reference, **over))
    out, killed = tmp_path / "killed", []
    cluster_pid = json.loads(ray_cluster.state_file.read_text())["pid"]
    watcher = threading.Thread(target=_kill_a_worker_after, args=(out, 6, killed, cluster_pid), daemon=True)
    watcher.start()
    run_training(_spec(tiny_model, out, **over))
    watcher.join(timeout=1)
    assert killed, "the run finished before a worker could be killed"
    events = read_jsonl(out / "events.jsonl")
    assert any(e["type"] == "resumed" for e in events)
    # The reference run encoded the data; this run read the same cache entry and resumed on it.
    assert [e["data"]["key"] for e in events if e["type"] == "data_cache_hit"]
    steps = [m["step"] for m in read_jsonl(out / "metrics.jsonl") if "train_loss" in m]
    assert steps == list(range(1, 31)), "every step appears exactly once"
    ref, got = _final_adapter(reference), _final_adapter(out)
    for name in ref:
        torch.testing.assert_close(got[name], ref[name], rtol=1e-4, atol=1e-5)


def test_early_stopping_stops_and_says_so(tiny_model, tmp_path):
    out = tmp_path / "early"
    summary = run_training(_spec(tiny_model, out, **{
        "train.max_steps": 40, "eval.every_steps": 1, "eval.early_stopping": "{patience: 2, min_delta: 100.0}"}))
    assert summary["early_stopped"] and summary["steps"] == 3  # first eval sets the best; two more fail to beat it by 100
    stop = [e for e in read_jsonl(out / "events.jsonl") if e["type"] == "early_stop"]
    assert len(stop) == 1 and "has not improved for 2 evaluation(s)" in stop[0]["message"]


def test_incremental_training_starts_from_an_earlier_runs_adapter(tiny_model, tmp_path):
    first = tmp_path / "first"
    run_training(_spec(tiny_model, first, **{"train.max_steps": 4}))
    second = tmp_path / "second"
    # A learning rate of ~0 leaves the adapter where it started: it must be the first run's adapter.
    run_training(_spec(tiny_model, second, **{"train.max_steps": 2, "model.init_adapter": str(first), "train.learning_rate": 1e-12,
                                        "checkpoint.every_steps": 1}))
    before, after = _adapter(first), _adapter(second)
    assert before.keys() == after.keys()
    for name in before:
        torch.testing.assert_close(after[name], before[name], rtol=1e-5, atol=1e-6)
    assert any(v.abs().sum() > 0 for k, v in before.items() if "lora_B" in k)


def test_data_prepare_on_ray_data_matches_the_in_memory_rows_and_names_a_bad_record_field(tiny_model, tmp_path, capsys,
                                                                                         monkeypatch):
    # Pieces of 4 KB: the tickets file is validated and encoded by many Ray Data tasks on 2 CPUs, in any order.
    import yaml

    import raysft.data.sources as sources
    from raysft import cli
    from raysft.data.pipeline import prepare_data
    from raysft.model.load import load_tokenizer

    monkeypatch.setattr(sources, "_PIECE_BYTES", 4096)
    spec = _spec(tiny_model, tmp_path / "run", **{"data.cache_dir": str(tmp_path / "cache"), "data.template_date": "2026-03-01",
                                            "data.stratify_by": "assistant"})
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec.model_dump(mode="json", exclude_unset=True)), encoding="utf-8")
    assert cli.main(["data", "prepare", str(path), "--json"]) == 0
    first = json.loads(capsys.readouterr().out)
    from raysft.data.cache import open_entry

    entry = open_entry(tmp_path / "cache", first["key"])
    assert not first["cache_hit"] and len(entry.split("train")["shards"]) > 2
    expected = prepare_data(spec.data, load_tokenizer(str(tiny_model)), spec.train.seed)
    train = entry.examples("train")
    assert [train[i] for i in range(len(train))] == expected.train and first["rows"] == len(expected.train)
    assert first["composition"] == expected.composition
    assert cli.main(["data", "prepare", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["cache_hit"]
    # A record field the split needs, missing: raised inside a Ray Data task, reported as the one-line DataError.
    assert cli.main(["data", "prepare", str(path), "data.stratify_by=metadata.nope", "--json"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]  # Ray logs too
    assert len(errors) == 1 and errors[0].startswith("error: data.stratify_by: record has no field 'metadata.nope'")
