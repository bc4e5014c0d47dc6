"""Which checkpoints a run keeps: rank 0 records Ray Train's answer after each report (checkpoint_saved, then
checkpoint_pruned for what Ray deleted), and the record is read back the same way everywhere; one run on a real
Ray checks that the record matches what Ray leaves on storage."""

import json
import tempfile
from pathlib import Path

import pytest
import ray.train
from ray.train import CheckpointConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from raysft.rundir import RunDir
from raysft.train.retention import Retention, best, kept_checkpoints
from raysft.train.runlog import EVENT_KEY_ENV, RunLog, read_jsonl
from raysft.train.session import LocalSession, RaySession


def _data(step, loss=None, root="/s"):
    data = {"step": step, "uri": f"{root}/checkpoints/checkpoint_{step:06d}", "epoch": step / 4}
    return data if loss is None else {**data, "eval_loss": loss}


def _names(*steps):
    return lambda: [f"checkpoint_{s:06d}" for s in steps]


def test_each_report_is_recorded_with_what_ray_deleted_and_the_record_reads_back(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(EVENT_KEY_ENV, "ab" * 32)
    log = RunLog(tmp_path, enabled=True)
    retention = Retention(log, keep_last=2)
    retention.reported(_data(1, 2.0), _names(1))
    retention.reported(_data(2, 1.0), _names(1, 2))
    retention.reported(_data(3, 3.0), _names(1, 2, 3))  # the latest is kept even when worst
    retention.reported(_data(4, 1.5), _names(2, 4))
    events = read_jsonl(RunDir(tmp_path).events_file)
    assert [(e["type"], e["data"]["step"]) for e in events] == [
        ("checkpoint_saved", 1), ("checkpoint_saved", 2), ("checkpoint_saved", 3), ("checkpoint_saved", 4),
        ("checkpoint_pruned", 1), ("checkpoint_pruned", 3)]
    assert [e["seq"] for e in events] == [1, 2, 3, 4, 5, 6]  # the run's one order: the service takes them as they come
    pruned = events[4]
    assert pruned["message"] == "checkpoint at step 1 pruned (keep_last 2)"
    assert pruned["data"] == {"step": 1, "uri": "/s/checkpoints/checkpoint_000001"}
    assert events[3]["data"] == _data(4, 1.5) and events[3]["message"] == "checkpoint at step 4"
    assert sum("::raysft-event::" in line for line in capsys.readouterr().out.splitlines()) == 6
    assert [c["step"] for c in kept_checkpoints(events)] == [2, 4]


def test_a_resumed_run_knows_the_earlier_checkpoints_and_records_their_pruning(tmp_path):
    Retention(RunLog(tmp_path, enabled=True), keep_last=1).reported(_data(2), _names(2))
    # The driver is killed while Ray registers step 4 and deletes 2: the run never records either.
    resumed = Retention(RunLog(tmp_path, enabled=True), keep_last=1)
    resumed.reported(_data(6), _names(6))
    events = read_jsonl(RunDir(tmp_path).events_file)
    assert [(e["type"], e["data"]["step"]) for e in events] == [
        ("checkpoint_saved", 2), ("checkpoint_saved", 6), ("checkpoint_pruned", 2)]
    assert [e["seq"] for e in events] == [1, 2, 3]  # the resumed run's seq continues the run's
    assert [c["step"] for c in kept_checkpoints(events)] == [6]


def test_a_step_saved_again_after_a_resume_counts_in_its_new_place(tmp_path):
    events = [{"type": "checkpoint_saved", "data": _data(2, 1.0)}, {"type": "checkpoint_saved", "data": _data(4, 2.0)},
              {"type": "checkpoint_pruned", "data": {"step": 2, "uri": _data(2)["uri"]}},
              {"type": "metrics", "data": {"step": 5}},
              {"type": "checkpoint_saved", "data": _data(2, 0.5)}]  # resumed from an earlier checkpoint
    assert [(c["step"], c["eval_loss"]) for c in kept_checkpoints(events)] == [(4, 2.0), (2, 0.5)]


def test_other_ranks_record_nothing_and_never_ask_ray(tmp_path):
    retention = Retention(RunLog(tmp_path, enabled=False), keep_last=1)
    retention.reported(_data(1), lambda: pytest.fail("asked Ray on a rank other than 0"))
    assert not RunDir(tmp_path).events_file.exists()


def test_the_best_is_by_the_metrics_direction_and_the_earliest_of_equals():
    kept = [{"step": 1, "eval_loss": 1.0, "exact_match": 0.5}, {"step": 2, "eval_loss": float("nan")},
            {"step": 3, "eval_loss": 1.0, "exact_match": 0.75}, {"step": 4}]
    assert best(kept, "eval_loss")["step"] == 1
    assert best(kept, "exact_match")["step"] == 3
    assert best([{"step": 1}], "eval_loss") is None and best([], "eval_loss") is None


def test_a_local_session_keeps_every_checkpoint_it_persisted(tmp_path):
    session = LocalSession(tmp_path)
    assert session.kept_checkpoints() == []
    for step in (2, 4):
        with tempfile.TemporaryDirectory() as tmp:
            Path(tmp, "state.json").write_text("{}")
            session.report({"step": step}, checkpoint=ray.train.Checkpoint.from_directory(tmp),
                           checkpoint_dir_name=f"checkpoint_{step:06d}")
    assert session.kept_checkpoints() == ["checkpoint_000002", "checkpoint_000004"]


@pytest.mark.integration
def test_the_record_matches_what_ray_train_keeps_on_storage(ray_address, tmp_path):
    losses = [2.0, 1.0, 3.0, 1.5, 0.5]

    def report_losses(config):  # nested: pickled by value, as the workers cannot import this test module
        session = RaySession()
        retention = Retention(RunLog(Path(config["out"]), enabled=session.world_rank == 0), keep_last=2)
        for step, loss in enumerate(config["losses"], start=1):
            name = f"checkpoint_{step:06d}"
            with tempfile.TemporaryDirectory() as tmp:
                Path(tmp, "state.json").write_text(json.dumps({"step": step}))
                session.report({"step": step, "eval_loss": loss}, checkpoint=ray.train.Checkpoint.from_directory(tmp),
                               checkpoint_dir_name=name)
            retention.reported({"step": step, "uri": f"{config['out']}/checkpoints/{name}", "eval_loss": loss},
                               session.kept_checkpoints)

    result = TorchTrainer(
        report_losses, train_loop_config={"out": str(tmp_path), "losses": losses},
        scaling_config=ScalingConfig(num_workers=2),
        run_config=RunConfig(name="checkpoints", storage_path=str(tmp_path), checkpoint_config=CheckpointConfig(
            num_to_keep=2, checkpoint_score_attribute="eval_loss", checkpoint_score_order="min")),
    ).fit()
    assert result.error is None
    events = read_jsonl(RunDir(tmp_path).events_file)
    on_disk = sorted(p.name for p in (tmp_path / "checkpoints").glob("checkpoint_0*"))
    assert on_disk == ["checkpoint_000002", "checkpoint_000005"]  # the 2 best; the latest is among them
    assert sorted(Path(c["uri"]).name for c in kept_checkpoints(events)) == on_disk
    pruned = [e["data"]["step"] for e in events if e["type"] == "checkpoint_pruned"]
    assert sorted(pruned) == [1, 3, 4] and [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert best(kept_checkpoints(events), "eval_loss")["step"] == 5
