"""Experiment tracking against the real things: an `mlflow server` on 127.0.0.1 read back with MlflowClient,
TensorBoard event files read back with tensorboard's reader, W&B offline run files; one run across a resume."""

import json
from pathlib import Path

import pytest

from raysft.config import SpecError, load_spec, parse_spec
from raysft.local_ray import free_port
from raysft.train.launcher import run_training
from raysft.train.runlog import read_jsonl
from raysft.train.tracking import TRACKING_FILE, Tracker

ROOT = Path(__file__).resolve().parents[2]
TRAIN = str(ROOT / "examples/data/tickets_train.jsonl")


def _spec(base, out, tracking, steps, **sections):
    return load_spec({**sections,
        "model": {"name_or_path": str(base), "lora": {"rank": 8, "alpha": 16, "dropout": 0.0}},
        "data": {"train": [TRAIN], "validation_split": 0.1, "max_seq_len": 256},
        "train": {"max_steps": steps, "learning_rate": 1e-3, "micro_batch_size": 2, "global_batch_size": 4,
                  "warmup_ratio": 0.0, "log_every_steps": 1},
        "checkpoint": {"every_steps": 2, "keep_last": 2},
        "tracking": tracking,
        "output_dir": str(out),
    })


def _steps(client, run_id, key):
    return [m.step for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)]


@pytest.mark.integration
@pytest.mark.usefixtures("ray_address")
def test_a_run_logs_to_mlflow_tensorboard_and_wandb_and_a_resume_continues_the_same_run(
        tiny_model, mlflow_uri, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    # Set on the driver after Ray started: the workers only see it because the driver passes it on.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)
    monkeypatch.setenv("RAYSFT_JOB_ID", "job-123")
    monkeypatch.setenv("RAYSFT_JOB_LABELS", json.dumps({"team": "support"}))
    out = tmp_path / "run"
    tracking = {"mlflow": {"experiment": "tracking-test", "tags": {"purpose": "test"}},
                "tensorboard": {}, "wandb": {"project": "raysft-test", "mode": "offline"}}
    exact_match = {"generate": {"metric": "exact_match", "max_new_tokens": 4, "limit": 4}}
    run_training(_spec(tiny_model, out, tracking, steps=4, eval=exact_match))

    client = MlflowClient(mlflow_uri)
    state = json.loads((out / TRACKING_FILE).read_text())
    run = client.get_run(state["runs"]["mlflow"])
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    assert run.data.params["train.learning_rate"] == "0.001" and run.data.params["model.lora.rank"] == "8"
    assert run.data.tags["purpose"] == "test" and run.data.tags["team"] == "support"
    assert run.data.tags["raysft.job_id"] == "job-123"
    assert _steps(client, run.info.run_id, "train_loss") == [1, 2, 3, 4]
    assert _steps(client, run.info.run_id, "eval_loss") == [2, 4]
    assert {"train_loss", "lr", "tokens_per_s", "trained_tokens", "eval_loss", "eval_token_accuracy",
            "exact_match"} <= set(run.data.metrics)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"adapter", "loss_curve.png", "summary.json"} <= artifacts
    assert "adapter/adapter_model.safetensors" in {a.path for a in client.list_artifacts(run.info.run_id, "adapter")}

    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("train/train_loss")] == [1, 2, 3, 4]
    assert [e.step for e in events.Scalars("eval/eval_loss")] == [2, 4]
    logged = [m for m in read_jsonl(out / "metrics.jsonl") if "train_loss" in m]
    assert [e.value for e in events.Scalars("train/lr")] == pytest.approx([m["lr"] for m in logged])

    wandb_id = state["runs"]["wandb"]
    # wandb >= 0.2x keeps an offline run's config and history only in its .wandb log (read by the Go
    # wandb-core; the Python reader is gone): its protobuf records hold the keys as plain bytes.
    offline = sorted((out / "wandb").glob(f"offline-run-*-{wandb_id}"))
    assert len(offline) == 2  # the worker's metrics, then the driver's artifact upload: one run id for `wandb sync`
    worker_log = (offline[0] / f"run-{wandb_id}.wandb").read_bytes()
    for key in (b"train_loss", b"eval_loss", b"tokens_per_s", b"train.learning_rate", b"team=support"):
        assert key in worker_log, key
    assert b"loss_curve.png" in (offline[1] / f"run-{wandb_id}.wandb").read_bytes()

    # Resume with a longer schedule: the same MLflow run goes on at step 5, no step appears twice.
    run_training(_spec(tiny_model, out, tracking, steps=6, eval=exact_match), resume=True)
    again = json.loads((out / TRACKING_FILE).read_text())
    assert again["runs"] == state["runs"]
    assert _steps(client, run.info.run_id, "train_loss") == [1, 2, 3, 4, 5, 6]
    assert _steps(client, run.info.run_id, "eval_loss") == [2, 4, 6]
    assert len(client.search_runs([run.info.experiment_id])) == 1
    assert client.get_run(run.info.run_id).info.status == "FINISHED"


@pytest.mark.integration
@pytest.mark.usefixtures("ray_address")
def test_an_unreachable_mlflow_server_is_a_warning_and_training_goes_on(tiny_model, tmp_path, capfd):
    dead = f"http://127.0.0.1:{free_port()}"
    summary = run_training(_spec(tiny_model, tmp_path / "run", {"mlflow": {"tracking_uri": dead}}, steps=2))
    assert summary["steps"] == 2 and (tmp_path / "run" / "adapter").is_dir()
    err = capfd.readouterr().out
    assert f"tracking.mlflow: cannot reach {dead}" in err and "training goes on without it" in err


def test_tracker_skips_steps_it_logged_before_a_restart(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    spec = parse_spec({"model": {"name_or_path": "m"}, "data": {"train": "x.jsonl"}, "tracking": {"tensorboard": {}},
                       "output_dir": str(tmp_path)})
    config = {"env": {}, "runs": {}, "name": "run", "tags": {}, "parent": {}}
    first = Tracker(config, spec, tmp_path)
    for step in (1, 2, 3):
        first.log("train", {"step": step, "train_loss": float(step)})
    first.close()
    # A restarted worker resumes from the checkpoint at step 2 and re-runs step 3.
    second = Tracker(config, spec, tmp_path)
    for step in (3, 4):
        second.log("train", {"step": step, "train_loss": 10.0 + step})
    second.close()
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("train/train_loss")] == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 14.0)]


@pytest.mark.integration
def test_a_step_mlflow_took_before_the_worker_died_is_not_logged_again(mlflow_uri, tmp_path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(mlflow_uri)
    run_id = client.create_run(client.create_experiment("killed-worker")).info.run_id
    spec = parse_spec({"model": {"name_or_path": "m"}, "data": {"train": "x.jsonl"},
                       "tracking": {"mlflow": {"tracking_uri": mlflow_uri}}, "output_dir": str(tmp_path)})
    config = {"env": {}, "runs": {"mlflow": run_id}, "name": "run", "tags": {}, "parent": {}}
    first = Tracker(config, spec, tmp_path)
    for step in (1, 2, 3):
        first.log("train", {"step": step, "train_loss": float(step)})
    # Killed after MLflow answered step 3's call, before tracking.json recorded it.
    state = json.loads((tmp_path / TRACKING_FILE).read_text())
    (tmp_path / TRACKING_FILE).write_text(json.dumps({**state, "logged": {"train": 2}}))
    second = Tracker(config, spec, tmp_path)  # resumes from a checkpoint at step 2
    for step in (3, 4):
        second.log("train", {"step": step, "train_loss": 10.0 + step})
    history = sorted((m.step, m.value) for m in client.get_metric_history(run_id, "train_loss"))
    assert history == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 14.0)]


def test_a_bad_tracking_section_names_the_field():
    with pytest.raises(SpecError) as err:
        parse_spec({"model": {"name_or_path": "m"}, "data": {"train": "x.jsonl"},
                    "tracking": {"wandb": {"mode": "sometimes"}, "mlflow": {"tags": {"k": ""}}, "tensorbord": {}}})
    fields = {v.field for v in err.value.violations}
    assert {"tracking.wandb.mode", "tracking.mlflow.tags", "tracking.tensorbord"} <= fields, fields


def test_a_backend_that_is_not_installed_fails_validation_with_the_pip_command(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(SpecError, match=r"tracking.wandb: the wandb package is not installed; run `pip install 'raysft\[wandb\]'`"):
        parse_spec({"model": {"name_or_path": "m"}, "data": {"train": "x.jsonl"}, "tracking": {"wandb": {}}})
