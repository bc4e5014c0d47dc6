"""Follows each active job on Ray: submits it, mirrors its status, streams its events into the store.

One thread per active job, each running a small asyncio loop that polls the job's status while a task
follows the Ray job's log through the dashboard (`RayJobsRunner.tail`, so it works wherever the cluster
runs and needs no shared disk): training events reach the store ~0.1 s after they are printed. A
dropped connection is followed again from the start; duplicates are dropped by `seq`. When Ray reports
the job ended, the follower gets a last pass, the whole log is read once more (anything missed is taken
in) and the terminal state is stored last. Only lines signed with the job's event key count as events
(raysft.service.jobs.eventlines); a follower that fails is logged and started again, and one whose job ended is
forgotten.

It also runs the admission queue (raysft.service.jobs.admission): a loop that admits the QUEUED jobs that fit
(QUEUED → STARTING) and follows them; the follower submits an admitted job to Ray. The loop wakes when a
job is stored QUEUED or ends in this process, and every `poll_s` (jobs created or ended by another server
sharing the store). A job that goes back to QUEUED (a retry, ResumeJob) waits in the queue like a new one.

Started on the leader of the servers sharing the store (raysft.service.jobs.leader), it is also the reconciler:
every job the store lists as admitted and not terminal is followed again, which re-attaches to the Ray job of
its current attempt (`ray_submission_id`) when it is still running and fails the ones Ray no longer knows. How
an attempt failed decides what follows (raysft.service.ray.failures): a SYSTEM failure with attempts left queues
the job's next attempt, which continues from the latest checkpoint; anything else ends the job. The jobs
another server (a standby) queues reach the admission loop through its poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from typing import Callable, Optional

from raysft.config import SpecError
from raysft.rundir import ADAPTER_DIR, RunDir
from raysft.service.jobs.admission import Admission
from raysft.service.jobs.errors import NotFound, Unavailable
from raysft.service.jobs.eventlines import LineSplitter, job_event_key, parse_event_line, record_seq
from raysft.service.jobs.events import take_training_events, transition
from raysft.service.ray import failures
from raysft.service.ray.runner import JobVanished, RayJobInfo, RayJobsRunner, SubmitRejected, ray_submission_id
from raysft.service.jobs.states import JobState, from_ray_status
from raysft.service.jobs.store import CheckpointRecord, EventRecord, JobRecord, NewEvent, Store

__all__ = ["Supervisor", "next_attempt"]

log = logging.getLogger(__name__)

_RESTART_S = (1.0, 30.0)  # a failed follower starts again after 1 s, doubling up to 30 s


class Supervisor:
    """Keeps every active job in the store in step with its Ray job.

    Args:
        store: the job store.
        runner: the Ray Jobs client.
        poll_s: seconds between status polls of a job (events do not wait for it: they stream).
        ray_deadline_s: how long Ray may stay unreachable before a running job counts as failed (SYSTEM:
            retried when it has attempts left).
        on_event_lag: called with the seconds from each stored training event's worker time to its storing.
        admission: the admission queue's caps (default: none; every queued job is admitted at once).
    """

    def __init__(self, store: Store, runner: RayJobsRunner, poll_s: float = 0.5, ray_deadline_s: float = 600.0,
                 on_event_lag: Optional[Callable[[float], None]] = None, admission: Optional[Admission] = None):
        self.store, self.runner, self.poll_s, self.ray_deadline_s = store, runner, poll_s, ray_deadline_s
        self.admission = admission or Admission()
        self._on_event_lag = on_event_lag
        self._threads: dict[str, threading.Thread] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._admitter: Optional[threading.Thread] = None
        self._stopping.set()  # until start(): a standby server's follow() calls do nothing (the leader's do)
        self._server_key = store.secret("events")
        store.observe(self._nudge_on_change)

    def event_key(self, job_id: str) -> bytes:
        """The key job `job_id` signs its event lines with."""
        return job_event_key(self._server_key, job_id)

    def followed(self) -> list[str]:
        """Ids of the jobs followed now."""
        with self._lock:
            return [job_id for job_id, t in self._threads.items() if t.is_alive()]

    def start(self) -> None:
        """Reconcile (follow every admitted job the store has not seen end), then run the admission loop, which
        also admits the jobs queued by other servers sharing the store. Again after stop(): a server that lost
        the leadership and took it back."""
        if not self._stopping.is_set():
            return  # started already
        for thread in self._own_threads():
            thread.join(30.0)  # told to stop by stop(): each ends within a poll
        self._stopping.clear()
        self._admitter = None
        for job_id in self.store.active_job_ids(queued=False):
            self.follow(job_id)
        with self._lock:
            if self._admitter is None and not self._stopping.is_set():
                self._admitter = threading.Thread(target=self._admit_loop, name="admission", daemon=True)
                self._admitter.start()

    def nudge(self) -> None:
        """Run an admission pass soon (a job was queued, or one ended and freed room)."""
        self._wake.set()

    def _nudge_on_change(self, _job: JobRecord, events: list[EventRecord]) -> None:
        if any(e.type == "state_changed" and (e.data.get("to") == JobState.QUEUED.value or e.data.get("to") in _ENDED)
               for e in events):
            self._wake.set()

    def _admit_loop(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()  # before the pass: a change during it wakes the next one
            try:
                for job in self.admission.admit(self.store):
                    self.follow(job.id)
            except Exception:  # a store hiccup: the next pass tries again
                log.exception("an admission pass failed; trying again in %.1f s", self.poll_s)
            self._wake.wait(self.poll_s)

    def follow(self, job_id: str) -> None:
        """Follow a job until it ends (no-op when already followed)."""
        with self._lock:
            if self._stopping.is_set() or (job_id in self._threads and self._threads[job_id].is_alive()):
                return
            thread = threading.Thread(target=self._run, args=(job_id,), name=f"follow-{job_id}", daemon=True)
            self._threads[job_id] = thread
            thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop following (jobs keep running on Ray; the next server re-attaches)."""
        self._stopping.set()
        self._wake.set()
        deadline = time.time() + timeout_s
        for thread in self._own_threads():
            thread.join(max(0.0, deadline - time.time()))

    def _own_threads(self) -> list[threading.Thread]:
        with self._lock:
            threads = list(self._threads.values())
        return threads + ([self._admitter] if self._admitter is not None else [])

    # ---------------------------------------------------------------------------------- one job

    def _run(self, job_id: str) -> None:
        delay = _RESTART_S[0]
        try:
            while not self._stopping.is_set():
                try:
                    asyncio.run(self._follow(job_id))
                    return
                except Exception:  # a bug or a store hiccup must not leave the job unfollowed: start again
                    log.exception("the follower of job %s failed; starting it again in %.0f s", job_id, delay)
                if self._stopping.wait(delay):
                    return
                delay = min(delay * 2, _RESTART_S[1])
        finally:
            with self._lock:  # a finished follower is forgotten (follow() starts a new one if asked)
                if self._threads.get(job_id) is threading.current_thread():
                    del self._threads[job_id]
            # An admission between the last look at the job and the line above found this thread alive and
            # started none: the job's next attempt would go unfollowed.
            if not self._stopping.is_set() and self._admitted(job_id):
                self.follow(job_id)

    async def _follow(self, job_id: str) -> None:
        """Follow the job's attempts while it is admitted (a retry goes back to the queue and ends this)."""
        while not self._stopping.is_set():
            await self._follow_attempt(job_id)
            if not self._admitted(job_id):
                return

    def _admitted(self, job_id: str) -> bool:
        """Whether the job is out of the queue and not ended: what a follower is for."""
        try:
            state = self.store.get_job(job_id).state
        except NotFound:  # deleted
            return False
        return not state.terminal and state != JobState.QUEUED

    async def _follow_attempt(self, job_id: str) -> bool:
        """Follow the job's current attempt; True when the job went back to QUEUED for its next one."""
        job = self.store.get_job(job_id)
        try:
            job.spec.model  # noqa: B018 (parsing is the check: a spec this server cannot read never reaches Ray)
        except SpecError as exc:  # stored by an older server whose spec rules differed
            failure = failures.bad_stored_spec(str(exc))  # `exc` is unbound after the except block
            self.store.update(job_id, lambda j, c: _fail(j, failure))
            return False
        if not await self._submitted(job_id):
            return False
        attempt = self.store.get_job(job_id).attempt
        ray_id = ray_submission_id(job_id, attempt)
        tail = asyncio.create_task(self._tail(job_id, ray_id))
        stop_sent, unreachable_since = False, None
        try:
            while not self._stopping.is_set():
                job = self.store.get_job(job_id)
                if job.state.terminal or job.attempt != attempt:
                    return False
                try:
                    if job.state == JobState.CANCELLING and not stop_sent:
                        await asyncio.to_thread(self.runner.stop, ray_id)
                        stop_sent = True
                    info = await asyncio.to_thread(self.runner.info, ray_id)
                except JobVanished:
                    return self._end(job_id, attempt, failures.vanished(ray_id))
                except Unavailable as exc:
                    now = time.monotonic()
                    if unreachable_since is None:
                        log.warning("job %s: %s (retrying)", job_id, exc)
                        unreachable_since = now
                    elif now - unreachable_since > self.ray_deadline_s:
                        return self._end(job_id, attempt, failures.unreachable(self.ray_deadline_s, str(exc)))
                    await asyncio.sleep(max(self.poll_s, 2.0))
                    continue
                unreachable_since = None
                seen = from_ray_status(info.status)
                if seen.terminal:
                    logs = await self._drain(tail, job_id, ray_id)
                    return self.finish_attempt(job_id, attempt, ray_id, info, logs)
                if seen == JobState.RUNNING and job.state == JobState.STARTING:
                    self.store.update(job_id, lambda j, c: [transition(j, JobState.RUNNING, "the Ray job is running")]
                                 if j.state == JobState.STARTING and j.attempt == attempt else [])
                await asyncio.sleep(self.poll_s)
            return False
        finally:
            tail.cancel()

    async def _submitted(self, job_id: str) -> bool:
        """Submit an admitted job (STARTING, not yet on Ray), retrying while Ray is unavailable; False when there
        is nothing on Ray to follow (it is queued, ended, or was cancelled before it reached Ray)."""
        while not self._stopping.is_set():
            job = self.store.get_job(job_id)
            if job.state == JobState.QUEUED or job.state.terminal:
                return False
            if job.submitted_at is not None:
                return True
            if job.state == JobState.CANCELLING:
                self.store.update(job_id, _cancelled_before_ray)
                return False
            ray_id = ray_submission_id(job_id, job.attempt)
            try:
                if job.attempt > 1:  # the attempt before must be gone before this one writes to the same run
                    await self._stopped(ray_submission_id(job_id, job.attempt - 1))
                kept = [c.step for c in self.store.checkpoints(job_id) if not c.pruned]
                await asyncio.to_thread(self.runner.submit, job_id, job.kind, job.spec, self.event_key(job_id), job.attempt,
                                        max(kept) if kept and job.attempt > 1 else None, job.labels)
            except Unavailable as exc:
                log.info("job %s waits for Ray: %s", job_id, exc)
                await asyncio.sleep(max(self.poll_s, 1.0))
                continue
            except SubmitRejected as exc:
                failure = failures.rejected(str(exc))
                self.store.update(job_id, lambda j, c: _fail(j, failure))
                return False
            what = f"submitted to Ray as {ray_id}" + (f" (attempt {job.attempt})" if job.attempt > 1 else "")
            attempt = job.attempt

            def submitted(j: JobRecord, _c) -> list[NewEvent]:
                if j.attempt != attempt or j.submitted_at is not None or j.state == JobState.QUEUED or j.state.terminal:
                    return []
                j.submitted_at = time.time()
                if j.state == JobState.STARTING:
                    j.state_reason = what
                return [NewEvent("info", "submitted", what, {"ray_submission_id": ray_id, "attempt": attempt})]

            job, _ = self.store.update(job_id, submitted)
            if job.state.terminal:  # ended while it was being submitted
                await asyncio.to_thread(_quietly, self.runner.stop, ray_id)
                return False
            return job.submitted_at is not None
        return False

    async def _stopped(self, ray_id: str, timeout_s: float = 60.0) -> None:
        """Stop Ray job `ray_id` and wait until Ray reports it ended (or no longer knows it).

        Raises:
            Unavailable: Ray cannot be reached, or the job is still running after `timeout_s`.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                info = await asyncio.to_thread(self.runner.info, ray_id)
                if from_ray_status(info.status).terminal:
                    return
                await asyncio.to_thread(self.runner.stop, ray_id)
            except JobVanished:
                return
            if time.monotonic() > deadline:
                raise Unavailable(f"the Ray job {ray_id} of the previous attempt is still running after {timeout_s:.0f} s")
            await asyncio.sleep(max(self.poll_s, 0.5))

    # ----------------------------------------------------------------------------------- events

    def records(self, job_id: str, lines: list[str]) -> list[dict]:
        """The event records among a job's log lines (those signed with its key)."""
        key = self.event_key(job_id)
        return [r for r in (parse_event_line(line, key) for line in lines) if r is not None]

    async def _tail(self, job_id: str, ray_id: str) -> None:
        seen_gap = 0  # the first missing seq of a gap met once: met again on a read from the log's start, it is crossed
        while not self._stopping.is_set():
            lines = LineSplitter()
            try:
                async with contextlib.aclosing(self.runner.tail(ray_id)) as stream:
                    async for chunk in stream:
                        records = self.records(job_id, lines.feed(chunk))
                        missing = records and await asyncio.to_thread(self.take, job_id, records, seen_gap)
                        if missing:  # a line lost on its way, perhaps: read the log again from its start
                            log.info("job %s: training event %d is missing from the log; reading it again", job_id, missing)
                            seen_gap = missing
                            break
                    else:
                        return  # the websocket fallback ends when the job does
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # not started yet, or a dropped connection: again from the start
                log.debug("job %s: log follower interrupted (%s); reconnecting", job_id, exc)
                await asyncio.sleep(1.0)

    def take(self, job_id: str, records: list[dict], cross_gap_at: Optional[int] = None) -> int:
        """Take a job's event records into the store.

        Returns the first missing seq when records past a gap were held back (0 when none were): only a gap
        at `cross_gap_at` is crossed, or every gap with `cross_gap_at` -1 (the whole log of an ended attempt).
        """
        worker_times: list[float] = []

        def change(job: JobRecord, ckpts: dict[int, CheckpointRecord]) -> list[NewEvent]:
            new = take_training_events(job, ckpts, records, cross_gap=lambda seq: cross_gap_at in (seq, -1))
            # Events of worker records carry the worker's time; the server's own (a rejection) carry none or now.
            worker_times[:] = [e.time for e in new if e.time is not None and e.type not in ("event_rejected", "events_missing")]
            return new

        job, _ = self.store.update(job_id, change)
        if self._on_event_lag is not None:
            stored = time.time()
            for t in worker_times:
                self._on_event_lag(stored - t)
        held = not job.state.terminal and any((record_seq(r) or 0) > job.last_source_seq for r in records)
        return job.last_source_seq + 1 if held else 0

    async def _drain(self, tail: asyncio.Task, job_id: str, ray_id: str) -> str:
        """Take in every event of an ended attempt; returns its whole log ("" when Ray no longer has it)."""
        await asyncio.sleep(0.3)  # a last pass of the follower (the dashboard reads the log every 0.1 s)
        tail.cancel()
        try:
            text = await asyncio.to_thread(self.runner.logs, ray_id)
        except (JobVanished, Unavailable):
            return ""
        records = self.records(job_id, text.splitlines())
        if records:
            self.take(job_id, records, cross_gap_at=-1)  # the whole log: what it lacks is lost
        return text

    def finish_attempt(self, job_id: str, attempt: int, ray_id: str, info: RayJobInfo, logs: str) -> bool:
        """Store how an attempt ended; True when the job was queued for its next attempt."""
        ended = from_ray_status(info.status)
        if ended == JobState.SUCCEEDED:
            def change(job: JobRecord, ckpts: dict[int, CheckpointRecord]) -> list[NewEvent]:
                if job.state.terminal or job.attempt != attempt:
                    return []
                job.output = _outputs(job)
                return [transition(job, ended, "the job finished")]

            self.store.update(job_id, change)
            return False
        if ended == JobState.CANCELLED and self.store.get_job(job_id).state == JobState.CANCELLING:
            def cancelled(job: JobRecord, ckpts: dict[int, CheckpointRecord]) -> list[NewEvent]:
                if job.state.terminal or job.attempt != attempt:
                    return []
                _set_error(job, "CANCELLED", "cancelled", "")
                return [transition(job, ended, "cancelled")]

            self.store.update(job_id, cancelled)
            return False
        failure = failures.stopped_outside(ray_id) if ended == JobState.CANCELLED else failures.ray_failure(info, logs)
        return self._end(job_id, attempt, failure)

    def _end(self, job_id: str, attempt: int, failure: failures.Failure) -> bool:
        """End attempt `attempt` with `failure`: the job's next attempt when it is retryable and the job has
        attempts left (and is not being cancelled), else FAILED (CANCELLED when stopped outside raysft).
        True when the next attempt was queued."""

        def change(job: JobRecord, ckpts: dict[int, CheckpointRecord]) -> list[NewEvent]:
            if job.state.terminal or job.attempt != attempt:
                return []
            if failure.retryable and job.kind == "train" and job.attempt < job.max_attempts \
                    and job.state != JobState.CANCELLING:
                return next_attempt(job, f"attempt {job.attempt} failed ({failure.message}); retrying as attempt "
                                         f"{job.attempt + 1} of {job.max_attempts}")
            if failure.code == "CANCELLED":
                _set_error(job, failure.code, failure.message, failure.kind)
                return [transition(job, JobState.CANCELLED, failure.message)]
            return _fail(job, failure)

        job, _ = self.store.update(job_id, change)
        return job.state == JobState.QUEUED and job.attempt > attempt


def next_attempt(job: JobRecord, reason: str) -> list[NewEvent]:
    """Queue `job` for its next attempt (a retry or a resume); returns its state_changed event.

    The error of the attempt before is cleared, and so is the dedup mark of training events: the next attempt
    is a new Ray job whose log is read from its start.

    Raises:
        IllegalTransition: the job is in a state a new attempt cannot follow.
    """
    event = transition(job, JobState.QUEUED, reason)
    job.attempt += 1
    job.last_source_seq = 0
    job.submitted_at = job.ended_at = None
    _set_error(job, "", "", "")
    return [event]


def _cancelled_before_ray(job: JobRecord, _ckpts) -> list[NewEvent]:
    if job.state != JobState.CANCELLING or job.submitted_at is not None:
        return []
    _set_error(job, "CANCELLED", "cancelled before it started", "")
    return [transition(job, JobState.CANCELLED, "cancelled before it reached Ray")]


_ENDED = {s.value for s in JobState if s.terminal}


def _set_error(job: JobRecord, code: str, message: str, kind: str) -> None:
    job.error_code, job.error_message, job.error_kind = code, message, kind


def _fail(job: JobRecord, failure: failures.Failure) -> list[NewEvent]:
    if job.state.terminal:
        return []
    _set_error(job, failure.code, failure.message, failure.kind)
    return [NewEvent("error", "error", failure.message, {"code": failure.code, "kind": failure.kind}),
            transition(job, JobState.FAILED, failure.message)]


def _outputs(job: JobRecord) -> dict:
    """output_dir, the adapter and the run's summary: summary.json of `raysft train`, tune_summary.json (with the
    trial table the console shows) of `raysft tune`; read when the server shares the disk, else from events."""
    out_dir = str(job.spec.get("output_dir", ""))
    run = RunDir(out_dir)
    summary_file = run.tune_summary_file if job.kind == "tune" else run.summary_file
    try:
        summary = json.loads(summary_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        summary = {k: job.progress[k] for k in ("step", "eval_loss", "train_loss") if k in job.progress}
    adapter = summary.get("adapter") or f"{out_dir}/{ADAPTER_DIR}"
    return {"output_dir": out_dir, "adapter_uri": adapter if job.kind == "train" else "", "summary": summary}


def _quietly(fn, *args) -> Optional[object]:
    try:
        return fn(*args)
    except (JobVanished, Unavailable):
        return None
