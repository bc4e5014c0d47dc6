"""What events do to a job: state transitions, training events taken in, the checkpoints they list.

Pure functions over store records: the supervisor calls them inside one `Store.update` transaction, so a
job's state, progress, checkpoints and events always change together. Training event records come from the
job's log (raysft.service.jobs.eventlines reads and verifies them); each is checked field by field here before it
counts, and carries `seq`, increasing within the run, so anything at or below the highest `seq` taken in is a
duplicate (re-reading the logs after a server restart repeats them all).

Which checkpoints are kept is Ray Train's decision, recorded by the run itself (raysft.train.retention): a
`checkpoint_saved` event lists a checkpoint and a `checkpoint_pruned` event marks it pruned; nothing here ranks them.
"""

from __future__ import annotations

import time
from typing import Callable, Optional

from raysft.service.jobs.eventlines import MAX_TEXT, check_event, checkpoint_prefix, record_seq
from raysft.service.jobs.states import JobState, check_transition
from raysft.service.jobs.store import CheckpointRecord, JobRecord, NewEvent
from raysft.train.retention import best

__all__ = ["transition", "take_training_events", "best_step", "MAX_TRAINING_EVENTS"]

MAX_TRAINING_EVENTS = 20_000  # per job: a 100k-step run logging every 5th step; later ones only move progress


def transition(job: JobRecord, to: JobState, reason: str, *, level: str = "info", now: Optional[float] = None) -> NewEvent:
    """Move `job` to state `to` (checked against the transition table) and return its state_changed event.

    Raises:
        IllegalTransition: the table does not allow it.
    """
    check_transition(job.id, job.state, to)
    old, job.state, job.state_reason = job.state, to, reason
    stamp = now or time.time()
    if to == JobState.RUNNING and job.started_at is None:
        job.started_at = stamp
    if to.terminal:
        job.ended_at = stamp
    level = "error" if to == JobState.FAILED else level
    return NewEvent(level, "state_changed", f"{old.value} → {to.value}: {reason}" if reason else f"{old.value} → {to.value}",
                    {"from": old.value, "to": to.value, "reason": reason})


def take_training_events(job: JobRecord, ckpts: dict[int, CheckpointRecord], records: list[dict], *,
                         now: Optional[float] = None,
                         cross_gap: Callable[[int], bool] = lambda missing: False) -> list[NewEvent]:
    """Take in training event records: update progress and checkpoints, and return the events to store.

    Records are taken in `seq` order; those at or below the highest `seq` already taken in are dropped, as is
    everything once the job is terminal (its terminal event stays the last one). A record that skips a `seq`
    (`last_source_seq` + 1 is missing: a line lost on its way) stops the taking, so that a read of the log from
    its start can still bring the missing one, unless `cross_gap(first missing seq)` says the gap is for good:
    then an `events_missing` warning names it. The first record of an attempt may have any `seq`.

    Each record is checked (eventlines.check_event): a bad one becomes an `event_rejected` warning and is
    skipped. Once a job holds MAX_TRAINING_EVENTS events its training events still move progress and
    checkpoints but are no longer stored (one warning says so).
    """
    out: list[NewEvent] = []
    if job.state.terminal:
        return out
    now = now or time.time()
    prefix, in_order = checkpoint_prefix(job.spec), []
    for record in records:
        seq = record_seq(record)
        if seq is not None and seq <= job.last_source_seq:
            continue  # taken in (or rejected) before: a re-read log repeats it
        clean, problem = check_event(record, ckpt_prefix=prefix, now=now)
        if seq is None:  # no place in the order: rejected (check_event says why)
            _rejected(job, out, problem, now)
        else:
            in_order.append((seq, clean, problem))
    for seq, clean, problem in sorted(in_order, key=lambda r: r[0]):
        last = job.last_source_seq
        if seq <= last:
            continue
        if last and seq > last + 1:
            if not cross_gap(last + 1):
                break
            _bounded(job, out, NewEvent("warning", "events_missing", f"training events {last + 1}–{seq - 1} never reached "
                                        "the server (lost from the job's log); the run's events.jsonl has them",
                                        {"first": last + 1, "last": seq - 1}, now))
        if clean is None:
            _rejected(job, out, problem, now)
            job.last_source_seq = seq
        else:
            _take(job, ckpts, out, clean)
    return out


def _rejected(job: JobRecord, out: list[NewEvent], problem: str, now: float) -> None:
    _bounded(job, out, NewEvent("warning", "event_rejected", f"a training event was skipped: {problem}"[:MAX_TEXT],
                                {"reason": problem[:MAX_TEXT]}, now))


def _take(job: JobRecord, ckpts: dict[int, CheckpointRecord], out: list[NewEvent], record: dict) -> None:
    if job.state == JobState.STARTING:  # training is under way before the status poll noticed
        out.append(transition(job, JobState.RUNNING, "the Ray job is running"))
    job.last_source_seq = record["seq"]
    kind, data, when = record["type"], record["data"], record["time"]
    _bounded(job, out, NewEvent(record["level"], kind, record["message"], data, when))
    _progress(job.progress, kind, data, when)
    if kind == "checkpoint_saved":
        step = data["step"]
        metrics = {k: v for k, v in data.items() if k not in ("step", "uri")}
        ckpts[step] = CheckpointRecord(job.id, step, data["uri"], metrics, when, False, len(ckpts))
    elif kind == "checkpoint_pruned" and data["step"] in ckpts and ckpts[data["step"]].uri == data["uri"]:
        ckpts[data["step"]].pruned = True


def _bounded(job: JobRecord, out: list[NewEvent], event: NewEvent) -> None:
    """Append `event` unless the job holds MAX_TRAINING_EVENTS already; the first one over says so instead."""
    if job.last_sequence + len(out) < MAX_TRAINING_EVENTS:
        out.append(event)
    elif not job.progress.get("events_truncated"):
        job.progress["events_truncated"] = True
        out.append(NewEvent("warning", "events_truncated", f"this job holds {MAX_TRAINING_EVENTS} events; later training "
                            "events only move its progress and checkpoints (the run's events.jsonl keeps them all)",
                            {"limit": MAX_TRAINING_EVENTS}, event.time))


def _progress(p: dict, kind: str, data: dict, when: Optional[float]) -> None:
    if kind == "resumed":
        p["step"] = data.get("step", p.get("step", 0))
    elif kind == "started":
        p["total_steps"] = data.get("total_steps", p.get("total_steps", 0))
        p["pace_from"] = [when, p.get("step", 0)]  # the ETA is measured from here: a resume restarts the clock
    elif kind == "metrics":
        for key, name in (("step", "step"), ("epoch", "epoch"), ("train_loss", "train_loss"), ("tokens_per_s", "tokens_per_second")):
            if isinstance(data.get(key), (int, float)):
                p[name] = data[key]
        origin, total = p.get("pace_from"), p.get("total_steps")
        if origin and origin[0] and when and total and p.get("step", 0) > origin[1]:
            per_step = (when - origin[0]) / (p["step"] - origin[1])
            p["eta_s"] = max(0.0, per_step * (total - p["step"]))
    elif kind == "eval" and isinstance(data.get("eval_loss"), (int, float)):
        p["eval_loss"] = data["eval_loss"]
    elif kind == "finished":
        p["step"] = data.get("step", p.get("step", 0))
        p["eta_s"] = 0.0


def best_step(ckpts: list[CheckpointRecord], keep_best_by: str) -> Optional[int]:
    """The step of the best kept checkpoint by `keep_best_by`, or of the latest when none reports it."""
    kept = sorted((c for c in ckpts if not c.pruned), key=lambda c: c.report_index)
    if not kept:
        return None
    chosen = best([{"step": c.step, **c.metrics} for c in kept], keep_best_by)
    return chosen["step"] if chosen else kept[-1].step
