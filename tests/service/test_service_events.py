"""Training events read from logs: signed lines, field checks, deduplication, progress, and the checkpoints the run
says Ray keeps."""

import json

import pytest

from raysft.service.jobs.eventlines import LineSplitter, check_event, job_event_key, parse_event_line
from raysft.service.jobs.events import MAX_TRAINING_EVENTS, best_step, take_training_events, transition
from raysft.service.jobs.states import IllegalTransition, JobState
from raysft.service.jobs.store import CheckpointRecord, JobRecord
from raysft.train.runlog import EVENT_PREFIX, event_line

KEY = job_event_key(b"server secret", "j")
SPEC = {"output_dir": "/r"}


def _record(seq, type_, data, second=0):
    return {"seq": seq, "time": f"2026-01-01T00:00:{second:02d}+00:00", "level": "info", "type": type_,
            "message": f"{type_} {seq}", "data": data}


def _line(seq, type_, data, prefix="(RayTrainWorker pid=123) ", second=0, key=KEY):
    return prefix + event_line(key, _record(seq, type_, data, second))


def parse(line):
    return parse_event_line(line, KEY)


def _job(state=JobState.RUNNING):
    return JobRecord(id="j", kind="train", spec=dict(SPEC), state=state)


def test_lines_are_cut_at_newlines_across_chunks():
    split = LineSplitter()
    assert split.feed("a\nb") == ["a"]
    assert split.feed("c\n\nd") == ["bc", ""]
    assert split.feed("\n") == ["d"]


def test_event_lines_are_found_behind_ray_prefixes_and_damaged_ones_skipped():
    assert parse(_line(3, "metrics", {"step": 1}))["seq"] == 3
    assert parse(_line(3, "metrics", {}, prefix=""))["type"] == "metrics"
    assert parse(_line(3, "metrics", {}, prefix="\x1b[36m(RayTrainWorker pid=1, ip=10.0.0.2)\x1b[0m "))["seq"] == 3
    assert parse("[raysft] step 1/3 | loss 2.0") is None
    assert parse(_line(4, "metrics", {"step": 1})[:-5]) is None  # cut off mid-line: the MAC no longer matches


def test_only_lines_signed_with_the_jobs_key_and_starting_with_the_prefix_are_events():
    record = json.dumps(_record(5, "metrics", {"step": 1}))
    assert parse(EVENT_PREFIX + record) is None  # the old unsigned form: any job output could print it
    assert parse(EVENT_PREFIX + "0" * 32 + " " + record) is None  # a made-up MAC
    assert parse(_line(5, "metrics", {"step": 1}, key=job_event_key(b"server secret", "other-job"))) is None
    # A signed line quoted inside other text (an error message echoing a spec value) is text, not an event.
    assert parse("error: cannot load model " + _line(5, "metrics", {"step": 1}, prefix="")) is None
    tampered = _line(5, "metrics", {"step": 1}).replace('"step": 1', '"step": 9')
    assert parse(tampered) is None


@pytest.mark.parametrize("change, problem", [
    ({"seq": 2 ** 63}, "seq must be an integer"),
    ({"seq": True}, "seq must be an integer"),
    ({"seq": 0}, "seq must be an integer"),
    ({"type": "x" * 40}, "type must be"),
    ({"type": "Metrics\n"}, "type must be"),
    ({"level": "fatal"}, "level must be"),
    ({"message": {"a": 1}}, "message must be text"),
    ({"data": {"step": 1, "train_loss": float("inf")}}, "data.train_loss must be a finite number"),
    ({"data": {"step": 1, "train_loss": float("nan")}}, "data.train_loss must be a finite number"),
    ({"data": {"step": 2 ** 40}}, "data.step must be an integer"),
    ({"data": {"step": 1.5}}, "data.step must be an integer"),
    ({"data": {"step": 1, "nested": {"a": 1}}}, "data.nested must be a number"),
    ({"data": {f"k{i}": i for i in range(65)}}, "at most 64 keys"),
    ({"type": "checkpoint_saved", "data": {"step": 1, "uri": "s3://attacker/ck"}}, "data.uri must lie under"),
    ({"type": "checkpoint_saved", "data": {"step": 1, "uri": "/r/checkpoints/../../etc"}}, "data.uri must lie under"),
    ({"type": "checkpoint_saved", "data": {"uri": "/r/checkpoints/c"}}, "needs data.step"),
    ({"type": "checkpoint_pruned", "data": {"uri": "/r/checkpoints/c"}}, "needs data.step"),
    ({"type": "checkpoint_pruned", "data": {"step": 1, "uri": "/elsewhere/c"}}, "data.uri must lie under"),
])
def test_every_event_field_is_checked(change, problem):
    clean, why = check_event({**_record(1, "metrics", {"step": 1}), **change}, ckpt_prefix="/r/checkpoints/", now=1e9 * 1.8)
    assert clean is None and problem in why


def test_a_missing_or_absurd_time_is_now_and_long_text_is_cut():
    now = 1_800_000_000.0
    for time_value in (None, "not a time", "1970-01-01T00:00:00+00:00", "9999-01-01T00:00:00+00:00", 5):
        record = {k: v for k, v in _record(1, "metrics", {"step": 1}).items() if k != "time"}
        if time_value is not None:
            record["time"] = time_value
        clean, _ = check_event(record, ckpt_prefix="/r/checkpoints/", now=now)
        assert clean["time"] == now
    clean, _ = check_event({**_record(1, "metrics", {"note": "x" * 10_000}), "message": "m" * 10_000},
                           ckpt_prefix="/r/checkpoints/", now=now)
    assert len(clean["message"]) == 2000 and len(clean["data"]["note"]) == 2000


def test_a_bad_event_becomes_a_warning_and_the_next_good_one_is_taken():
    job = _job()
    bad = {**_record(1, "metrics", {"step": 1, "train_loss": float("inf")})}
    events = take_training_events(job, {}, [bad, _record(2, "metrics", {"step": 2, "train_loss": 1.5})])
    assert [(e.type, e.level) for e in events] == [("event_rejected", "warning"), ("metrics", "info")]
    assert "finite" in events[0].message and job.progress["step"] == 2 and job.last_source_seq == 2


def test_events_past_the_cap_move_progress_but_are_not_stored():
    job = _job()
    job.last_sequence = MAX_TRAINING_EVENTS - 1
    records = [_record(s, "metrics", {"step": s}) for s in range(1, 5)]
    events = take_training_events(job, {}, records)
    assert [e.type for e in events] == ["metrics", "events_truncated"]
    assert job.progress["step"] == 4
    job.last_sequence += len(events)
    assert take_training_events(job, {}, [_record(5, "metrics", {"step": 5})]) == []
    assert job.progress["step"] == 5


def test_a_line_without_newlines_does_not_grow_without_bound():
    split = LineSplitter(max_line=10)
    assert split.feed("x" * 25) == [] and split.feed("ab\ncd") == ["ab"]


def test_duplicates_and_replayed_logs_are_taken_in_once_and_progress_follows():
    job, ckpts = _job(), {}
    lines = [_line(1, "started", {"total_steps": 4}, second=0), _line(2, "metrics", {"step": 1, "epoch": 0.25, "train_loss": 2.5,
             "tokens_per_s": 100.0}, second=2), _line(3, "metrics", {"step": 2, "epoch": 0.5, "train_loss": 2.0, "tokens_per_s": 120.0}, second=4)]
    records = [parse(line) for line in lines + lines[1:]]  # Ray printed some twice
    events = take_training_events(job, ckpts, records)
    assert [e.type for e in events] == ["started", "metrics", "metrics"]
    assert job.last_source_seq == 3
    assert job.progress["step"] == 2 and job.progress["total_steps"] == 4 and job.progress["train_loss"] == 2.0
    assert job.progress["eta_s"] == pytest.approx(4.0)  # 2 s per step since `started`, 2 steps left
    assert events[1].time == pytest.approx(events[0].time + 2)  # event time is when it happened on the worker
    # A server restart re-reads the whole log: nothing new comes of it.
    assert take_training_events(job, ckpts, [parse(line) for line in lines]) == []


def _saved(seq, step, eval_loss=None):
    data = {"step": step, "uri": f"/r/checkpoints/checkpoint_{step:06d}", "epoch": 1.0}
    if eval_loss is not None:
        data["eval_loss"] = eval_loss
    return parse(_line(seq, "checkpoint_saved", data))


def _pruned(seq, step):
    return parse(_line(seq, "checkpoint_pruned", {"step": step, "uri": f"/r/checkpoints/checkpoint_{step:06d}"}))


def test_the_runs_pruned_events_mark_its_checkpoints_and_the_best_kept_one_is_named():
    job, ckpts = _job(), {}
    events = take_training_events(job, ckpts, [_saved(1, 1, 2.0), _saved(2, 2, 1.0), _saved(3, 3, 3.0)])
    assert [e.type for e in events] == ["checkpoint_saved"] * 3
    assert sorted(s for s, c in ckpts.items() if not c.pruned) == [1, 2, 3]
    # Keep 2 by lowest eval_loss plus the latest: after step 4 Ray Train deleted 3 and 1, and the run says so.
    events = take_training_events(job, ckpts, [_saved(4, 4, 1.5), _pruned(5, 3), _pruned(6, 1)])
    assert [(e.type, e.data.get("step")) for e in events] == [("checkpoint_saved", 4), ("checkpoint_pruned", 3),
                                                              ("checkpoint_pruned", 1)]
    assert sorted(s for s, c in ckpts.items() if not c.pruned) == [2, 4]
    assert best_step(list(ckpts.values()), "eval_loss") == 2
    assert ckpts[4].metrics == {"epoch": 1.0, "eval_loss": 1.5}


def test_a_pruned_event_marks_only_the_checkpoint_it_names():
    job, ckpts = _job(), {}
    take_training_events(job, ckpts, [_saved(1, 2, 1.0)])
    other = parse(_line(2, "checkpoint_pruned", {"step": 2, "uri": "/r/checkpoints/another_000002"}))
    events = take_training_events(job, ckpts, [other, _pruned(3, 7)])  # another URI; a step never saved
    assert [e.type for e in events] == ["checkpoint_pruned"] * 2 and not ckpts[2].pruned and list(ckpts) == [2]


def test_the_best_kept_checkpoint_is_the_latest_without_validation_and_by_the_metrics_direction_with_it():
    ckpts = {s: CheckpointRecord("j", s, f"u{s}", {}, 0.0, report_index=s) for s in (1, 2, 3)}
    ckpts[3].pruned = True
    assert best_step(list(ckpts.values()), "eval_loss") == 2
    higher = {s: CheckpointRecord("j", s, "u", {"exact_match": m}, 0.0, report_index=s) for s, m in ((1, 0.9), (2, 0.5), (3, 0.7))}
    higher[2].pruned = True
    assert best_step(list(higher.values()), "exact_match") == 1
    assert best_step([], "eval_loss") is None


def test_a_terminal_job_takes_no_more_events():
    job = _job(JobState.SUCCEEDED)
    assert take_training_events(job, {}, [parse(_line(1, "metrics", {"step": 1}))]) == []
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
    events = take_training_events(job, {}, [parse(_line(1, "started", {"total_steps": 3}))])
    assert [(e.type, e.data.get("to")) for e in events] == [("state_changed", "RUNNING"), ("started", None)]
    assert job.state == JobState.RUNNING and job.started_at is not None


def _steps(*seqs):
    return [_record(s, "metrics", {"step": s}) for s in seqs]


def test_a_record_past_a_missing_seq_waits_until_the_line_turns_up_or_is_called_lost():
    job = _job()
    take_training_events(job, {}, _steps(1, 2))
    assert take_training_events(job, {}, _steps(4, 5)) == []  # 3 lost on its way, perhaps
    assert (job.last_source_seq, job.progress["step"]) == (2, 2)
    events = take_training_events(job, {}, _steps(1, 2, 3, 4, 5))  # the log read again has it
    assert [e.data["step"] for e in events] == [3, 4, 5]
    events = take_training_events(job, {}, _steps(7, 8), cross_gap=lambda missing: missing == 6)
    assert [(e.type, e.level) for e in events] == [("events_missing", "warning"), ("metrics", "info"), ("metrics", "info")]
    assert events[0].data == {"first": 6, "last": 6} and "training events 6–6 never reached the server" in events[0].message
    assert (job.last_source_seq, job.progress["step"]) == (8, 8)


def test_a_new_attempts_first_record_may_have_any_seq():
    job = _job()
    assert [e.data["step"] for e in take_training_events(job, {}, _steps(41, 42))] == [41, 42]


def test_a_rejected_record_holds_its_place_and_is_reported_once_when_the_log_is_read_again():
    job = _job()
    records = _steps(1) + [_record(2, "metrics", {"step": 2, "train_loss": float("nan")})] + _steps(3)
    assert [e.type for e in take_training_events(job, {}, records)] == ["metrics", "event_rejected", "metrics"]
    assert take_training_events(job, {}, records) == [] and job.last_source_seq == 3
