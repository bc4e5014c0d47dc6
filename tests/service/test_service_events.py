"""Training events read from logs: parsing, deduplication, progress, and checkpoint retention as Ray does it."""

import json

import pytest

from raysft.service.events import LineSplitter, best_step, parse_event_line, retain, take_training_events, transition
from raysft.service.states import IllegalTransition, JobState
from raysft.service.store import CheckpointRecord, JobRecord
from raysft.train.records import EVENT_PREFIX


def _line(seq, type_, data, prefix="(RayTrainWorker pid=123) ", second=0):
    record = {"seq": seq, "time": f"2026-01-01T00:00:{second:02d}+00:00", "level": "info", "type": type_,
              "message": f"{type_} {seq}", "data": data}
    return prefix + EVENT_PREFIX + json.dumps(record)


def _job(state=JobState.RUNNING):
    return JobRecord(id="j", kind="train", spec={}, state=state)


def test_lines_are_cut_at_newlines_across_chunks():
    split = LineSplitter()
    assert split.feed("a\nb") == ["a"]
    assert split.feed("c\n\nd") == ["bc", ""]
    assert split.feed("\n") == ["d"]


def test_event_lines_are_found_behind_ray_prefixes_and_damaged_ones_skipped():
    assert parse_event_line(_line(3, "metrics", {"step": 1}))["seq"] == 3
    assert parse_event_line(_line(3, "metrics", {}, prefix=""))["type"] == "metrics"
    assert parse_event_line("[raysft] step 1/3 | loss 2.0") is None
    assert parse_event_line(EVENT_PREFIX + '{"seq": 4, "type": "metr') is None  # cut off mid-line
    assert parse_event_line(EVENT_PREFIX + '{"type": "metrics"}') is None  # no seq: cannot be deduplicated


def test_duplicates_and_replayed_logs_are_taken_in_once_and_progress_follows():
    job, ckpts = _job(), {}
    lines = [_line(1, "started", {"total_steps": 4}, second=0), _line(2, "metrics", {"step": 1, "epoch": 0.25, "train_loss": 2.5,
             "tokens_per_s": 100.0}, second=2), _line(3, "metrics", {"step": 2, "epoch": 0.5, "train_loss": 2.0, "tokens_per_s": 120.0}, second=4)]
    records = [parse_event_line(line) for line in lines + lines[1:]]  # Ray printed some twice
    events = take_training_events(job, ckpts, records, keep_last=2, keep_best_by="eval_loss")
    assert [e.type for e in events] == ["started", "metrics", "metrics"]
    assert job.last_source_seq == 3
    assert job.progress["step"] == 2 and job.progress["total_steps"] == 4 and job.progress["train_loss"] == 2.0
    assert job.progress["eta_s"] == pytest.approx(4.0)  # 2 s per step since `started`, 2 steps left
    assert events[1].time == pytest.approx(events[0].time + 2)  # event time is when it happened on the worker
    # A server restart re-reads the whole log: nothing new comes of it.
    assert take_training_events(job, ckpts, [parse_event_line(line) for line in lines], 2, "eval_loss") == []


def _saved(seq, step, eval_loss=None):
    data = {"step": step, "uri": f"/r/checkpoints/checkpoint_{step:06d}", "epoch": 1.0}
    if eval_loss is not None:
        data["eval_loss"] = eval_loss
    return parse_event_line(_line(seq, "checkpoint_saved", data))


def test_retention_keeps_the_best_by_metric_plus_the_latest_like_ray():
    job, ckpts = _job(), {}
    events = take_training_events(job, ckpts, [_saved(1, 1, 2.0), _saved(2, 2, 1.0), _saved(3, 3, 3.0)], 2, "eval_loss")
    # Keep 2 by lowest eval_loss: steps 2 (1.0) and 1 (2.0); step 3 is worst but the latest, so Ray keeps it too.
    assert [e.type for e in events] == ["checkpoint_saved"] * 3
    assert sorted(s for s, c in ckpts.items() if not c.pruned) == [1, 2, 3]
    events = take_training_events(job, ckpts, [_saved(4, 4, 1.5)], 2, "eval_loss")
    assert [(e.type, e.data.get("step")) for e in events] == [("checkpoint_saved", 4), ("checkpoint_pruned", 3),
                                                              ("checkpoint_pruned", 1)]  # worst first
    assert sorted(s for s, c in ckpts.items() if not c.pruned) == [2, 4]
    assert best_step(list(ckpts.values()), "eval_loss") == 2
    assert ckpts[4].metrics == {"epoch": 1.0, "eval_loss": 1.5}


def test_retention_without_validation_keeps_the_most_recent():
    ckpts = {s: CheckpointRecord("j", s, f"u{s}", {}, 0.0, report_index=s) for s in (1, 2, 3)}
    assert [c.step for c in retain(ckpts, 2, "eval_loss")] == [1]
    assert best_step(list(ckpts.values()), "eval_loss") == 3
    higher = {s: CheckpointRecord("j", s, "u", {"exact_match": m}, 0.0, report_index=s) for s, m in ((1, 0.9), (2, 0.5), (3, 0.7))}
    assert [c.step for c in retain(higher, 1, "exact_match")] == [2]  # 1 is best, 3 is the latest
    assert best_step(list(higher.values()), "exact_match") == 1


def test_a_terminal_job_takes_no_more_events():
    job = _job(JobState.SUCCEEDED)
    assert take_training_events(job, {}, [parse_event_line(_line(1, "metrics", {"step": 1}))], 2, "eval_loss") == []
    assert job.last_source_seq == 0


def test_transition_records_times_and_refuses_illegal_moves():
    job = _job(JobState.STARTING)
    event = transition(job, JobState.RUNNING, "the Ray job is running", now=100.0)
    assert (job.state, job.started_at, event.type, event.data) == (
        JobState.RUNNING, 100.0, "state_changed", {"from": "STARTING", "to": "RUNNING", "reason": "the Ray job is running"})
    failed = transition(job, JobState.FAILED, "boom", now=105.0)
    assert job.ended_at == 105.0 and failed.level == "error"
    with pytest.raises(IllegalTransition):
        transition(job, JobState.RUNNING, "again")


def test_training_events_of_a_starting_job_first_mark_it_running():
    job = _job(JobState.STARTING)
    events = take_training_events(job, {}, [parse_event_line(_line(1, "started", {"total_steps": 3}))], 2, "eval_loss")
    assert [(e.type, e.data.get("to")) for e in events] == [("state_changed", "RUNNING"), ("started", None)]
    assert job.state == JobState.RUNNING and job.started_at is not None
