"""Follows each active job on Ray: submits it, mirrors its status, streams its events into the store.

One thread per active job, each running a small asyncio loop that polls the job's status while a task
follows the Ray job's log through the dashboard (`RayJobsRunner.tail`, so it works wherever the cluster
runs and needs no shared disk): training events reach the store ~0.1 s after they are printed. A
dropped connection is followed again from the start; duplicates are dropped by `seq`. When Ray reports
the job ended, the follower gets a last pass, the whole log is read once more (anything missed is taken
in) and the terminal state is stored last. Only lines signed with the job's event key count as events
(raysft.service.eventlines); a follower that fails is logged and started again, and one whose job ended is
forgotten.

Started with the server, it is also the reconciler: every job the store lists as not terminal is
followed again, which re-attaches to Ray jobs still running and fails the ones Ray no longer knows.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from pathlib import Path
from typing import Optional

from raysft.config import SpecError, parse_spec
from raysft.service.errors import Unavailable
from raysft.service.eventlines import LineSplitter, job_event_key, parse_event_line
from raysft.service.events import take_training_events, transition
from raysft.service.runner import JobVanished, RayJobInfo, RayJobsRunner, SubmitRejected
from raysft.service.states import IllegalTransition, JobState, from_ray_status
from raysft.service.store import CheckpointRecord, JobRecord, NewEvent, Store

__all__ = ["Supervisor"]

log = logging.getLogger(__name__)

_RESTART_S = (1.0, 30.0)  # a failed follower starts again after 1 s, doubling up to 30 s


class Supervisor:
    """Keeps every active job in the store in step with its Ray job.

    Args:
        store: the job store.
        runner: the Ray Jobs client.
        poll_s: seconds between status polls of a job (events do not wait for it: they stream).
    """

    def __init__(self, store: Store, runner: RayJobsRunner, poll_s: float = 0.5):
        self.store, self.runner, self.poll_s = store, runner, poll_s
        self._threads: dict[str, threading.Thread] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server_key = store.secret("events")

    def event_key(self, job_id: str) -> bytes:
        """The key job `job_id` signs its event lines with."""
        return job_event_key(self._server_key, job_id)

    def followed(self) -> list[str]:
        """Ids of the jobs followed now."""
        with self._lock:
            return [job_id for job_id, t in self._threads.items() if t.is_alive()]

    def start(self) -> None:
        """Reconcile: follow every job the store has not seen end."""
        for job_id in self.store.active_job_ids():
            self.follow(job_id)

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
        deadline = time.time() + timeout_s
        for thread in list(self._threads.values()):
            thread.join(max(0.0, deadline - time.time()))

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

    async def _follow(self, job_id: str) -> None:
        job = self.store.get_job(job_id)
        try:
            spec = parse_spec(job.spec)
        except SpecError as exc:  # stored by an older server whose spec rules differed
            reason = f"the stored spec no longer validates: {exc}"  # `exc` is unbound after the except block
            self.store.update(job_id, lambda j, c: _fail(j, "INTERNAL", reason))
            return
        keep = (spec.checkpoint.keep_last, spec.checkpoint.keep_best_by)
        if not await self._submitted(job_id):
            return
        tail = asyncio.create_task(self._tail(job_id, keep))
        stop_sent, warned = False, False
        try:
            while not self._stopping.is_set():
                job = self.store.get_job(job_id)
                if job.state.terminal:
                    return
                try:
                    if job.state == JobState.CANCELLING and not stop_sent:
                        await asyncio.to_thread(self.runner.stop, job_id)
                        stop_sent = True
                    info = await asyncio.to_thread(self.runner.info, job_id)
                except JobVanished:
                    self.store.update(job_id, lambda j, c: _fail(j, "UNAVAILABLE", _VANISHED.format(id=job_id)))
                    return
                except Unavailable as exc:
                    if not warned:
                        log.warning("job %s: %s (retrying)", job_id, exc)
                        warned = True
                    await asyncio.sleep(max(self.poll_s, 2.0))
                    continue
                seen = from_ray_status(info.status)
                if seen.terminal:
                    self._finish(job_id, info, await self._drain(tail, job_id, keep))
                    return
                if seen == JobState.RUNNING and job.state == JobState.STARTING:
                    self.store.update(job_id, lambda j, c: [transition(j, JobState.RUNNING, "the Ray job is running")]
                                 if j.state == JobState.STARTING else [])
                await asyncio.sleep(self.poll_s)
        finally:
            tail.cancel()

    async def _submitted(self, job_id: str) -> bool:
        """Submit a QUEUED job (retrying while Ray is unavailable); False when it ended meanwhile."""
        while not self._stopping.is_set():
            job = self.store.get_job(job_id)
            if job.state != JobState.QUEUED:
                return not job.state.terminal
            try:
                await asyncio.to_thread(self.runner.submit, job_id, job.kind, job.spec, self.event_key(job_id), job.labels)
            except Unavailable as exc:
                log.info("job %s waits for Ray: %s", job_id, exc)
                await asyncio.sleep(max(self.poll_s, 1.0))
                continue
            except SubmitRejected as exc:
                reason = str(exc)
                self.store.update(job_id, lambda j, c: _fail(j, "INTERNAL", reason))
                return False
            try:
                self.store.update(job_id, lambda j, c: [transition(j, JobState.STARTING, f"submitted to Ray as {job_id}")])
            except IllegalTransition:  # cancelled while it was being submitted
                await asyncio.to_thread(_quietly, self.runner.stop, job_id)
                return False
            return True
        return False

    # ----------------------------------------------------------------------------------- events

    def records(self, job_id: str, lines: list[str]) -> list[dict]:
        """The event records among a job's log lines (those signed with its key)."""
        key = self.event_key(job_id)
        return [r for r in (parse_event_line(line, key) for line in lines) if r is not None]

    async def _tail(self, job_id: str, keep: tuple) -> None:
        while not self._stopping.is_set():
            lines = LineSplitter()
            try:
                async for chunk in self.runner.tail(job_id):
                    records = self.records(job_id, lines.feed(chunk))
                    if records:
                        await asyncio.to_thread(self.take, job_id, records, keep)
                return  # the websocket fallback ends when the job does
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # not started yet, or a dropped connection: again from the start
                log.debug("job %s: log follower interrupted (%s); reconnecting", job_id, exc)
                await asyncio.sleep(1.0)

    def take(self, job_id: str, records: list[dict], keep: tuple) -> None:
        """Take a job's event records into the store; keep = (checkpoint.keep_last, checkpoint.keep_best_by)."""
        self.store.update(job_id, lambda j, c: take_training_events(j, c, records, *keep))

    async def _drain(self, tail: asyncio.Task, job_id: str, keep: tuple) -> str:
        """Take in every event of an ended job; returns its whole log ("" when Ray no longer has it)."""
        await asyncio.sleep(0.3)  # a last pass of the follower (the dashboard reads the log every 0.1 s)
        tail.cancel()
        try:
            text = await asyncio.to_thread(self.runner.logs, job_id)
        except (JobVanished, Unavailable):
            return ""
        records = self.records(job_id, text.splitlines())
        if records:
            self.take(job_id, records, keep)
        return text

    def _finish(self, job_id: str, info: RayJobInfo, logs: str) -> None:
        ended = from_ray_status(info.status)

        def change(job: JobRecord, ckpts: dict[int, CheckpointRecord]) -> list[NewEvent]:
            if job.state.terminal:
                return []
            if ended == JobState.SUCCEEDED:
                job.output = _outputs(job)
                return [transition(job, ended, "the job finished")]
            if ended == JobState.CANCELLED:
                how = "cancelled" if job.state == JobState.CANCELLING else "stopped outside raysft (ray job stop)"
                _set_error(job, "CANCELLED", how)
                return [transition(job, ended, how)]
            return _fail(job, "INVALID_ARGUMENT" if info.exit_code == 2 else "INTERNAL", _failure(info, logs))

        self.store.update(job_id, change)


_VANISHED = ("the Ray job {id} no longer exists on the cluster (the cluster restarted or the job was deleted "
             "while the server was away); submit the spec again")


def _set_error(job: JobRecord, code: str, message: str) -> None:
    job.error_code, job.error_message = code, message


def _fail(job: JobRecord, code: str, message: str) -> list[NewEvent]:
    if job.state.terminal:
        return []
    _set_error(job, code, message)
    return [NewEvent("error", "error", message, {"code": code}), transition(job, JobState.FAILED, message)]


def _failure(info: RayJobInfo, logs: str) -> str:
    """The reason a job failed: the CLI's `error: ...` line when it printed one, else Ray's message."""
    errors = [line.split("error: ", 1)[1] for line in logs.splitlines() if line.startswith("error: ")]
    if errors:
        return errors[-1][:2000]  # job output: bounded like an event's text
    code = f" (exit code {info.exit_code})" if info.exit_code is not None else ""
    return (info.message or "the Ray job failed").splitlines()[0][:500] + code


def _outputs(job: JobRecord) -> dict:
    """output_dir, the adapter and summary.json (read when the server shares the disk; else from events)."""
    out_dir = str(job.spec.get("output_dir", ""))
    summary_file = Path(out_dir) / "summary.json"
    try:
        summary = json.loads(summary_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        summary = {k: job.progress[k] for k in ("step", "eval_loss", "train_loss") if k in job.progress}
    adapter = summary.get("adapter") or f"{out_dir}/adapter"
    return {"output_dir": out_dir, "adapter_uri": adapter if job.kind == "train" else "", "summary": summary}


def _quietly(fn, *args) -> Optional[object]:
    try:
        return fn(*args)
    except (JobVanished, Unavailable):
        return None
