"""The job service's operations, free of gRPC: create (validated, idempotent), get, list, cancel, resume,
delete, watch, events, checkpoints and logs. The servicer translates messages to and from these calls.

Each takes the caller (`who`, a raysft.service.jobs.auth.Principal): a job belongs to the tenant whose token created
it, and a job of another tenant is NOT_FOUND with the same message as an id nobody uses (ids are not probed);
admins see every tenant's. `authorize` refuses the changes a viewer asks for.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import re
import secrets
import threading
import unicodedata
from typing import AsyncIterator, Optional

from raysft.config import JobSpec, SpecError, Violation, advisories, parse_spec
from raysft.service.jobs.auth import Principal, authorize
from raysft.service.jobs.admission import DEFAULT_PRIORITY, MAX_PRIORITY, Admission, job_workers
from raysft.service.jobs.errors import FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted, Unavailable
from raysft.service.jobs.events import best_step, transition
from raysft.service.jobs.limits import Limits
from raysft.service.jobs.paths import PathPolicy
from raysft.service.ray.failures import MAX_ATTEMPTS
from raysft.service.ray.runner import JobVanished, RayJobsRunner, ray_submission_id
from raysft.service.jobs.states import ACTIVE, JobState
from raysft.service.jobs.store import CheckpointRecord, EventRecord, JobRecord, NewEvent, Store
from raysft.service.ray.supervisor import Supervisor, next_attempt
from raysft.service.jobs.webhooks import WebhookPolicy
from raysft.service.jobs.tenants import Tenants

__all__ = ["Jobs", "until_set"]

_LABEL_KEY = re.compile(r"[a-z][a-z0-9_.\-]{0,62}")
_LABEL_VALUE = re.compile(r"[\w.\-/: ]{0,63}")
_REQUEST_ID = re.compile(r"[A-Za-z0-9_.:\-]{1,128}")
_MAX_PAGE = 1000


class Jobs:
    """Job operations over the store, the Ray runner and the supervisor.

    Args:
        allow_remote_code: accept `model.trust_remote_code: true` (model code from a hub repository runs on
            the cluster); off by default.
        limits: the operator's caps on workers, resources, trials and active jobs.
        webhooks: where jobs' notify_urls may point (none: nowhere).
        tenants: the tenants file's tenants (their roots); None: one tenant, "default".
    """

    def __init__(self, store: Store, runner: RayJobsRunner, supervisor: Supervisor, paths: PathPolicy, *,
                 allow_remote_code: bool = False, limits: Optional[Limits] = None,
                 webhooks: Optional[WebhookPolicy] = None, tenants: Optional[Tenants] = None):
        self.store, self.runner, self.supervisor, self.paths = store, runner, supervisor, paths
        self.tenants = tenants
        self.allow_remote_code = allow_remote_code
        self.limits = limits or Limits()
        self.webhooks = webhooks or WebhookPolicy()
        self._admit = threading.Lock()  # counting active jobs and storing a new one happen as one step

    # ----------------------------------------------------------------------------------- create

    def create(self, raw_spec: dict, *, who: Principal, kind: Optional[str], request_id: str, validate_only: bool,
               labels: dict, body_hash: str, max_attempts: int = 1, notify_urls: tuple[str, ...] = (),
               priority: Optional[int] = None) -> JobRecord:
        """Validate a spec and queue it (or only validate it) as a job of `who`'s tenant; the supervisor's
        admission queue starts it.

        Args:
            raw_spec: the spec mapping (only what the client set).
            kind: "train", "tune", or None to infer it from the spec (a tune section means tune).
            request_id: idempotency key ("" for none); body_hash identifies the rest of the request.
            max_attempts: attempts in all when the job fails for a SYSTEM reason (1 – MAX_ATTEMPTS; 0 means 1).
            notify_urls: URLs POSTed each state change (under the operator's --webhook-allow-prefix values).
            priority: 0 – 9, higher admitted first; None means DEFAULT_PRIORITY.

        Raises:
            InvalidArgument: every problem with the spec, kind, labels, priority or request id, by field path.
            AlreadyExists: request_id was used with another body.
            ResourceExhausted: the server's --max-active-jobs, or the tenant's max_queued_jobs, is reached.
            Unavailable: Ray cannot be reached (nothing is stored).
            PermissionDenied: `who` is a viewer.
        """
        authorize(who, "CreateJob")
        tenant = who.tenant
        spec, kind, max_attempts, priority, workers = self._checked(raw_spec, who, kind, request_id, labels,
                                                                   notify_urls, max_attempts, priority)
        if request_id and not validate_only and self.store.find_request(request_id, tenant=tenant):
            return self.store.replay_request(request_id, body_hash, tenant=tenant)  # a retry: no Ray needed
        job_id = None if validate_only else f"raysft-{secrets.token_hex(6)}"
        paths = self.paths_of(who)
        resolved = paths.apply(spec, job_id, lambda ref: self._job_output(ref, who))
        warnings = [Violation(v.field, v.message) for v in advisories(spec)]
        if kind == "train" and spec.tune is not None:
            warnings.append(Violation("tune", "a train job ignores the tune section; create a TUNE job to search"))
        record = JobRecord(id=job_id or "", kind=kind, spec=resolved, labels=dict(labels), request_id=request_id or None,
                           max_attempts=max_attempts, notify_urls=list(notify_urls), tenant=tenant, priority=priority,
                           workers=workers, warnings=[{"field": w.field, "message": w.message} for w in warnings])
        if validate_only:
            return record
        return self._store_new(record, warnings, paths, body_hash)

    def _checked(self, raw_spec: dict, who: Principal, kind: Optional[str], request_id: str, labels: dict,
                 notify_urls: tuple[str, ...], max_attempts: int, priority: Optional[int]) -> tuple:
        """The request's spec, kind, attempts, priority and workers once every field passed; InvalidArgument
        lists every problem at once."""
        problems = _request_problems(request_id, labels) + self.webhooks.problems(list(notify_urls))
        try:
            spec = parse_spec(raw_spec)
        except SpecError as exc:
            raise InvalidArgument(problems + exc.violations, "the job spec is invalid") from None
        kind = kind or ("tune" if spec.tune is not None else "train")
        problems += self._policy_problems(spec, kind)
        max_attempts = max_attempts or 1
        if not 1 <= max_attempts <= MAX_ATTEMPTS:
            problems.append(Violation("max_attempts", f"must be 1 – {MAX_ATTEMPTS} (got {max_attempts})"))
        elif max_attempts > 1 and kind != "train":
            problems.append(Violation("max_attempts", "only TRAIN jobs are retried (they resume from a checkpoint); "
                                                      "leave it at 1 for a TUNE job"))
        priority = DEFAULT_PRIORITY if priority is None else priority
        if not 0 <= priority <= MAX_PRIORITY:
            problems.append(Violation("priority", f"must be 0 – {MAX_PRIORITY} (got {priority}); higher starts first, "
                                                  f"{DEFAULT_PRIORITY} when unset"))
        workers = job_workers(spec, kind) if not problems else 0
        too_big = self.admission.workers_problem(who.tenant, workers)
        if too_big:
            problems.append(Violation("scaling.num_workers", too_big))
        if problems:
            raise InvalidArgument(problems, "the request is invalid")
        return spec, kind, max_attempts, priority, workers

    def _store_new(self, record: JobRecord, warnings: list[Violation], paths: PathPolicy, body_hash: str) -> JobRecord:
        """Store an accepted job QUEUED, its directories claimed, once there is room and Ray answers."""
        self._check_room(record.tenant)  # again below, under the lock: this one spares Ray a ping when full
        self.runner.ping()
        events = [NewEvent("info", "state_changed", "→ QUEUED: accepted", {"from": "", "to": JobState.QUEUED.value,
                                                                          "reason": "accepted"})]
        events += [NewEvent("warning", "warning", str(w), {"field": w.field}) for w in warnings]
        with self._admit:
            self._check_room(record.tenant)
            claimed = paths.claim(record.spec, record.id)
            try:
                job, created = self.store.create_job(record, events, body_hash)  # its QUEUED event nudges admission
            except BaseException:
                paths.release(claimed)
                raise
        if not created:
            paths.release(claimed)  # a concurrent retry of the same request stored its own job first
        return self._placed(job)

    @property
    def admission(self) -> Admission:
        """The admission queue's policy (the supervisor's: it admits; reads place jobs in its order)."""
        return self.supervisor.admission

    def _placed(self, job: JobRecord) -> JobRecord:
        return self.admission.place(self.store, [job])[0]

    def _check_room(self, tenant: str) -> None:
        self._check_active_jobs()
        self.admission.check_queue_room(self.store, tenant)

    def _check_active_jobs(self) -> None:
        cap = self.limits.max_active_jobs
        if cap is not None and len(self.store.list_jobs(states=tuple(ACTIVE), limit=cap)) >= cap:
            raise ResourceExhausted(f"this server runs at most {cap} jobs at once (--max-active-jobs) and that many are "
                                    "queued or running; retry when one ends, or cancel one")

    def paths_of(self, who: Principal) -> PathPolicy:
        """Where `who`'s jobs may read and write: the server's policy for admins and the default tenant; for a
        tenant of the file its roots (default: the server's) and `<jobs root>/<tenant>`, so tenants never share
        a job directory (nor the data cache beside them)."""
        if who.admin or self.tenants is None:
            return self.paths
        tenant = self.tenants.tenant(who.tenant)
        return self.paths.for_tenant(who.tenant, tenant.roots if tenant else None)

    def _job_output(self, job_id: str, who: Principal) -> str:
        """The output_dir of a SUCCEEDED job `who` may see, for `job:<id>` references; LookupError says why not."""
        try:
            job = self._find(job_id, who)
        except (NotFound, InvalidArgument):
            raise LookupError(f"job:{job_id}: no such job; list jobs with `raysft jobs list`") from None
        if job.state != JobState.SUCCEEDED:
            raise LookupError(f"job:{job_id} is {job.state.value}; its outputs can be used once it SUCCEEDED")
        return job.spec["output_dir"]

    def _policy_problems(self, spec: JobSpec, kind: str) -> list[Violation]:
        out = []
        if kind == "tune" and spec.tune is None:
            out.append(Violation("tune", "required for a TUNE job; add a tune section (search_space, search, ...)"))
        out += self.limits.problems(spec, kind)
        if spec.model.trust_remote_code and not self.allow_remote_code:
            out.append(Violation("model.trust_remote_code", "this server does not run model code from repositories; "
                                                            "remove it, or ask the operator for `raysft serve --allow-remote-code`"))
        return out

    # ------------------------------------------------------------------------------------ reads

    def get(self, job_id: str, *, who: Principal) -> JobRecord:
        """The job, with its queue_position. Raises NotFound (also for a job of another tenant)."""
        return self._placed(self._find(job_id, who))

    def _find(self, job_id: str, who: Principal) -> JobRecord:
        return self.store.get_job(_job_id(job_id), tenant=who.scope)

    def list(self, *, who: Principal, states: tuple[JobState, ...], labels: dict, page_size: int, page_token: str
             ) -> tuple[list[JobRecord], str]:
        """One page of `who`'s tenant's jobs (every tenant's for admins), newest first, and the token of the
        next page ("" after the last)."""
        if len(labels) > 64:  # each is a subquery: a filter of thousands would be a slow query, not a filter
            raise InvalidArgument([Violation("labels", f"filter by at most 64 labels (got {len(labels)})")])
        size = _page_size(page_size, 50)
        before = _decode_token(page_token, "j") if page_token else None
        jobs = self.store.list_jobs(states=states, labels=labels, limit=size + 1, before=before, tenant=who.scope)
        more = len(jobs) > size
        jobs = self.admission.place(self.store, jobs[:size])
        return jobs, self.page_token_after(jobs[-1]) if more else ""

    @staticmethod
    def page_token_after(job: JobRecord) -> str:
        """The ListJobs page token of the page that starts after `job`."""
        return _encode_token("j", job.ordinal)

    def events(self, job_id: str, *, who: Principal, after: int, page_size: int, page_token: str
               ) -> tuple[list[EventRecord], str]:
        """One page of a job's events in order, and the next page's token ("" at the end)."""
        self._find(job_id, who)
        if after < 0:
            raise InvalidArgument([Violation("after_sequence", f"must be >= 0 (got {after})")])
        start = _decode_token(page_token, "e") if page_token else after
        size = _page_size(page_size, 100)
        events = self.store.events(job_id, start, size + 1)
        more = len(events) > size
        events = events[:size]
        return events, _encode_token("e", events[-1].sequence) if more else ""

    def checkpoints(self, job_id: str, *, who: Principal) -> tuple[list[CheckpointRecord], Optional[int]]:
        """The kept checkpoints, newest first, and the best one's step."""
        job = self._find(job_id, who)
        kept = [c for c in self.store.checkpoints(job_id) if not c.pruned]
        keep_best_by = job.spec.model.checkpoint.keep_best_by
        return sorted(kept, key=lambda c: -c.step), best_step(kept, keep_best_by)

    async def watch(self, job_id: str, after: int, *, who: Principal) -> AsyncIterator[EventRecord]:
        """Events after `after`, then new ones as they are stored; ends after the terminal state event.

        Waiting holds no thread: the store's change notice wakes the stream on the event loop (a poll every
        second covers changes made by another server sharing the store). Each read takes a pool thread briefly.
        """
        self._find(job_id, who)
        if after < 0:
            raise InvalidArgument([Violation("after_sequence", f"must be >= 0 (got {after})")])
        loop, changed = asyncio.get_running_loop(), asyncio.Event()
        unsubscribe = self.store.subscribe(job_id, lambda: _wake(loop, changed))
        try:
            last = after
            while True:
                changed.clear()  # before the read: a change after it wakes the wait below
                # The state is read before the events: when it is terminal, the terminal event (stored in the same
                # transaction) is already among the events read next or sent before.
                job, batch = await asyncio.to_thread(lambda: (self.store.get_job(job_id), self.store.events(job_id, last, 500)))
                for event in batch:
                    yield event
                    last = event.sequence
                if not batch and job.state.terminal:
                    return
                if not batch:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(changed.wait(), 1.0)
        finally:
            unsubscribe()

    async def logs(self, job_id: str, *, who: Principal, tail_lines: int, follow: bool) -> AsyncIterator[str]:
        """The Ray job's driver log (its last `tail_lines` lines), then, with follow, new text until the job ends.

        Following streams the log from Ray's log API as it grows (nothing is downloaded twice) and holds no
        thread while it waits; it ends half a second after the store records the job's end.
        """
        if tail_lines < 0:
            raise InvalidArgument([Violation("tail_lines", f"must be >= 0 (got {tail_lines})")])
        job = self._find(job_id, who)
        while follow and job.submitted_at is None and not job.state.terminal:  # nothing on Ray yet
            await asyncio.sleep(0.5)
            job = self._find(job_id, who)
        if job.submitted_at is None:
            return
        if not follow or job.state.terminal:
            text = await asyncio.to_thread(self._log_text, job)
            shown = "".join(text.splitlines(keepends=True)[-tail_lines:]) if tail_lines else text
            if shown:
                yield shown
            return
        ended = asyncio.Event()
        watcher = asyncio.create_task(self._mark_end(job_id, ended))
        try:
            async for text in until_set(self.runner.tail(ray_submission_id(job.id, job.attempt), lines=tail_lines or -1), ended):
                yield text
        except JobVanished:
            raise self._gone(job) from None
        finally:
            watcher.cancel()

    async def _mark_end(self, job_id: str, ended: asyncio.Event) -> None:
        while not (await asyncio.to_thread(self.store.get_job, job_id)).state.terminal:
            await asyncio.sleep(0.5)
        await asyncio.sleep(0.5)  # the log's last lines reach the stream (Ray reads the file every 0.1 s)
        ended.set()

    def _gone(self, job: JobRecord) -> FailedPrecondition:
        return FailedPrecondition(f"Ray no longer has the logs of job {job.id}; look in its output_dir "
                                  f"{job.spec.get('output_dir')}")

    def _log_text(self, job: JobRecord) -> str:
        try:
            return self.runner.logs(ray_submission_id(job.id, job.attempt))
        except JobVanished:
            raise self._gone(job) from None

    # ----------------------------------------------------------------------------------- change

    def cancel(self, job_id: str, *, who: Principal) -> JobRecord:
        """Cancel a job: QUEUED ends CANCELLED at once; STARTING / RUNNING become CANCELLING until Ray stops
        it. A job already CANCELLING or terminal comes back unchanged."""
        authorize(who, "CancelJob")
        job_id = self._find(job_id, who).id  # a job's tenant never changes: the check holds for the update

        def change(job: JobRecord, _ckpts) -> list[NewEvent]:
            if job.state.terminal or job.state == JobState.CANCELLING:
                return []
            if job.state == JobState.QUEUED:
                job.error_code, job.error_message = "CANCELLED", "cancelled before it started"
                return [transition(job, JobState.CANCELLED, "cancelled before it started")]
            return [transition(job, JobState.CANCELLING, "cancel requested")]

        job, _ = self.store.update(_job_id(job_id), change)
        if job.state == JobState.CANCELLING and job.submitted_at is not None:  # else the supervisor ends it, Ray untouched
            try:  # the supervisor sends the stop too, and retries while Ray is unreachable
                self.runner.stop(ray_submission_id(job.id, job.attempt))
            except (Unavailable, JobVanished):
                pass
        return job

    def resume(self, job_id: str, *, who: Principal) -> JobRecord:
        """Queue a FAILED or CANCELLED train job's next attempt, which continues from its latest checkpoint.

        Raises:
            FailedPrecondition: the job is active or SUCCEEDED, has no checkpoint, or took MAX_ATTEMPTS attempts.
            ResourceExhausted: the server runs its most active jobs already, or the tenant has its most queued.
            Unavailable: Ray cannot be reached (nothing changes).
            PermissionDenied: `who` is a viewer.
        """
        authorize(who, "ResumeJob")

        def change(job: JobRecord, ckpts: dict[int, CheckpointRecord]) -> list[NewEvent]:
            latest = _resume_step(job, ckpts.values())  # again: the job may have changed since the check below
            return next_attempt(job, f"resumed from the checkpoint at step {latest} as attempt {job.attempt + 1}")

        job = self._find(job_id, who)
        _resume_step(job, self.store.checkpoints(job.id))  # refusals first: they need no Ray
        with self._admit:
            self._check_room(job.tenant)
            self.runner.ping()
            job, _ = self.store.update(job.id, change)  # back in the queue: its QUEUED event nudges admission
        return self._placed(job)

    def delete(self, job_id: str, *, who: Principal) -> None:
        """Delete a terminal job's record, events and checkpoints list (its files stay)."""
        authorize(who, "DeleteJob")

        def check(job: JobRecord) -> None:
            if not job.state.terminal:
                raise FailedPrecondition(f"job {job.id} is {job.state.value}; only a SUCCEEDED, FAILED or CANCELLED job "
                                         f"can be deleted: cancel it first (`raysft jobs cancel {job.id}`)")

        job = self._find(job_id, who)
        self.store.delete_job(job.id, check)
        if job.submitted_at is None:
            return
        for attempt in range(1, job.attempt + 1):
            try:
                self.runner.delete(ray_submission_id(job.id, attempt))
            except (Unavailable, JobVanished):
                pass  # already gone, or Ray is away: its record there does not matter


def _resume_step(job: JobRecord, ckpts) -> int:
    """The step a resumed `job` continues from (its latest kept checkpoint's).

    Raises:
        FailedPrecondition: the job is active or SUCCEEDED, has no checkpoint, or took MAX_ATTEMPTS attempts.
    """
    if job.state not in (JobState.FAILED, JobState.CANCELLED):
        raise FailedPrecondition(f"job {job.id} is {job.state.value}; only a FAILED or CANCELLED job can be resumed"
                                 + ("" if job.state.terminal else f" (cancel it first: `raysft jobs cancel {job.id}`)"))
    kept = [c.step for c in ckpts if not c.pruned]
    if not kept:
        raise FailedPrecondition(f"job {job.id} saved no checkpoint to resume from; submit its spec again "
                                 "(`raysft jobs submit --new`) to start over")
    if job.attempt >= MAX_ATTEMPTS:
        raise FailedPrecondition(f"job {job.id} ran {job.attempt} attempts, the most one job may; submit its spec "
                                 "again as a new job")
    return max(kept)


def _job_id(job_id: str) -> str:
    if not job_id:
        raise InvalidArgument([Violation("job_id", "required; pass the id CreateJob returned")])
    if len(job_id) > 64:  # the store's id column; no id is longer
        raise InvalidArgument([Violation("job_id", f"at most 64 characters (got {len(job_id)}); pass the id CreateJob returned")])
    if any(unicodedata.category(c)[0] in "CZ" for c in job_id):
        raise InvalidArgument([Violation("job_id", "not a job id (ids are printable characters without spaces); "
                                                   "pass the id CreateJob returned")])
    return job_id


def _request_problems(request_id: str, labels: dict) -> list[Violation]:
    out = []
    if request_id and not _REQUEST_ID.fullmatch(request_id):
        out.append(Violation("request_id", "use 1 – 128 letters, digits and _ . : - (a UUID works)"))
    if len(labels) > 64:
        out.append(Violation("labels", f"at most 64 labels (got {len(labels)})"))
    for key, value in labels.items():
        if not _LABEL_KEY.fullmatch(key):
            out.append(Violation(f"labels.{key}", "keys start with a lowercase letter and hold up to 63 lowercase "
                                                  "letters, digits and _ . -"))
        elif not _LABEL_VALUE.fullmatch(value):
            out.append(Violation(f"labels.{key}", "values hold up to 63 letters, digits, spaces and _ . - / :"))
    return out


def _page_size(size: int, default: int) -> int:
    if size < 0:
        raise InvalidArgument([Violation("page_size", f"must be >= 0 (got {size})")])
    return min(size or default, _MAX_PAGE)


def _wake(loop: asyncio.AbstractEventLoop, changed: asyncio.Event) -> None:
    with contextlib.suppress(RuntimeError):  # the loop closed (server stopping): nobody waits any more
        loop.call_soon_threadsafe(changed.set)


async def until_set(items: AsyncIterator[str], stop: asyncio.Event) -> AsyncIterator[str]:
    """The items of `items` until it ends or `stop` is set, whichever comes first; `items` is closed either way."""
    stopped, item = asyncio.ensure_future(stop.wait()), None
    try:
        while True:
            item = asyncio.ensure_future(anext(items))
            await asyncio.wait({item, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if not item.done():
                return
            try:
                value = item.result()
            except StopAsyncIteration:
                return
            item = None
            yield value
    finally:
        stopped.cancel()
        if item is not None and not item.done():  # the source must have stopped running before it is closed
            item.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await item
        await items.aclose()


def _encode_token(kind: str, value: int) -> str:
    return base64.urlsafe_b64encode(f"{kind}:{value}".encode()).decode()


def _decode_token(token: str, kind: str) -> int:
    try:
        got_kind, value = base64.urlsafe_b64decode(token.encode()).decode().split(":") if len(token) <= 64 else ("", "")
        if got_kind == kind and value.isdigit() and len(value) <= 18:  # within the database's 64-bit integers
            return int(value)
    except (ValueError, UnicodeError, binascii.Error):
        pass
    raise InvalidArgument([Violation("page_token", "not a token this list returned; pass next_page_token as it came, "
                                                   "or leave it empty for the first page")])
