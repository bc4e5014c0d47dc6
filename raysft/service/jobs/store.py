"""The durable job store: jobs, their events, checkpoints, labels, idempotency keys and webhook outbox, in SQL.

SQLAlchemy 2 over a SQLite file by default (WAL mode: readers never wait for the writer, and a committed
transaction survives a killed process), or PostgreSQL by URL (`postgresql+psycopg://user:pw@host/db`, with
`pip install raysft[postgres]`), which several servers may share (raysft.service.jobs.leader picks the one that
runs the background work; all of them write). Every write is one transaction that first locks the job's
row (SELECT ... FOR UPDATE on PostgreSQL; SQLite has a single writer), so `last_sequence` is read and
advanced by one writer at a time across processes and events stay gap-free; within a process writes also
go through one lock. Times are epoch seconds (float).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from sqlalchemy import (JSON, Boolean, Float, ForeignKey, Index, Integer, String, Text, create_engine, delete, event,
                        exists, func, inspect, or_, select, text)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.engine import RowMapping, make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, aliased, mapped_column
from sqlalchemy.pool import StaticPool

from raysft.service.jobs.auth import DEFAULT_TENANT
from raysft.service.jobs.errors import AlreadyExists, NotFound
from raysft.service.jobs.states import ACTIVE, JobState
from raysft.service.jobs.storedspec import StoredSpec
from raysft.service.jobs.webhooks import payload

__all__ = ["Store", "JobRecord", "EventRecord", "CheckpointRecord", "NewEvent", "DeliveryRecord", "QueueEntry"]


# ---------------------------------------------------------------------------------------- records


@dataclass
class JobRecord:
    """One job as the service sees it (a plain copy of its row; changing it changes nothing stored)."""

    id: str
    kind: str
    spec: StoredSpec
    state: JobState = JobState.QUEUED
    state_reason: str = ""
    error_code: str = ""
    error_message: str = ""
    labels: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)
    progress: dict = field(default_factory=dict)
    output: dict = field(default_factory=dict)
    request_id: Optional[str] = None
    last_sequence: int = 0
    last_source_seq: int = 0  # highest `seq` of the training events taken in (they are deduplicated by it)
    created_at: float = 0.0
    updated_at: float = 0.0
    submitted_at: Optional[float] = None  # when it went to Ray (None: never)
    started_at: Optional[float] = None
    ended_at: Optional[float] = None
    ordinal: int = 0  # creation order; ListJobs pages by it
    attempt: int = 1  # 1, 2, 3, ...: each resume or retry runs the job again as a new Ray job
    max_attempts: int = 1  # attempts in all when it fails for a SYSTEM reason
    error_kind: str = ""  # USER or SYSTEM when error_code is a failure's (raysft.service.ray.failures)
    tenant: str = "default"  # the tenant whose token created it (raysft.service.jobs.tenants); only it sees the job
    notify_urls: list = field(default_factory=list)  # webhooks of this job's state changes (raysft.service.jobs.webhooks)
    priority: int = 5  # 0 - 9: the admission queue starts higher ones first (raysft.service.jobs.admission)
    workers: int = 1  # training workers it holds while on Ray (admission.job_workers); tenants' max_workers counts them
    queue_position: int = 0  # computed when read (admission.place), never stored: 1 = next to start, 0 = not QUEUED

    def __post_init__(self) -> None:
        if not isinstance(self.spec, StoredSpec):
            self.spec = StoredSpec(self.spec)


@dataclass(frozen=True)
class QueueEntry:
    """What the admission queue knows of a job: whose it is, its place in line, and the workers it holds."""

    id: str
    tenant: str
    priority: int
    ordinal: int
    workers: int


@dataclass(frozen=True)
class NewEvent:
    """An event to append; its sequence number is given by the store."""

    level: str
    type: str
    message: str
    data: dict = field(default_factory=dict)
    time: Optional[float] = None  # when it happened; default: now


@dataclass(frozen=True)
class EventRecord:
    """A stored event: `sequence` runs 1, 2, 3, ... per job without gaps."""

    job_id: str
    sequence: int
    time: float
    level: str
    type: str
    message: str
    data: dict


@dataclass(frozen=True)
class DeliveryRecord:
    """One webhook POST in the outbox: `body` is sent as stored (it is what the signature covers)."""

    id: str
    job_id: str
    url: str
    body: str
    created_at: float
    attempts: int
    status: str  # pending, delivered, failed (given up)
    last_error: str
    delivered_at: Optional[float]


@dataclass
class CheckpointRecord:
    """A checkpoint a job reported; `pruned` once Ray has deleted it (checkpoint.keep_last)."""

    job_id: str
    step: int
    uri: str
    metrics: dict
    created_at: float
    pruned: bool = False
    report_index: int = 0  # order of saving, which breaks ties in ranking (as Ray does)


# ----------------------------------------------------------------------------------------- tables


class _Base(DeclarativeBase):
    pass


class _Job(_Base):
    __tablename__ = "jobs"
    __table_args__ = {"sqlite_autoincrement": True}  # ordinals are never reused after a delete

    ordinal: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16), index=True)
    state_reason: Mapped[str] = mapped_column(Text, default="")
    error_code: Mapped[str] = mapped_column(String(32), default="")
    error_message: Mapped[str] = mapped_column(Text, default="")
    spec: Mapped[dict] = mapped_column(JSON)
    labels: Mapped[dict] = mapped_column(JSON, default=dict)
    warnings: Mapped[list] = mapped_column(JSON, default=list)
    progress: Mapped[dict] = mapped_column(JSON, default=dict)
    output: Mapped[dict] = mapped_column(JSON, default=dict)
    request_id: Mapped[Optional[str]] = mapped_column(String(128), nullable=True)
    last_sequence: Mapped[int] = mapped_column(Integer, default=0)
    last_source_seq: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)
    submitted_at: Mapped[Optional[float]] = mapped_column(Float, nullable=True)
    started_at: Mapped[Optional[float]] = mapped_column(Float, nullable=True)
    ended_at: Mapped[Optional[float]] = mapped_column(Float, nullable=True)
    attempt: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    max_attempts: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    error_kind: Mapped[str] = mapped_column(String(8), default="", server_default="")
    tenant: Mapped[str] = mapped_column(String(63), default="default", server_default="default", index=True)
    notify_urls: Mapped[list] = mapped_column(JSON, default=list, server_default="[]")
    priority: Mapped[int] = mapped_column(Integer, default=5, server_default="5")
    workers: Mapped[int] = mapped_column(Integer, default=1, server_default="1")  # older servers' jobs count as 1


class _Event(_Base):
    __tablename__ = "events"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    sequence: Mapped[int] = mapped_column(Integer, primary_key=True)  # unique per job, no gaps
    time: Mapped[float] = mapped_column(Float)
    level: Mapped[str] = mapped_column(String(16))
    type: Mapped[str] = mapped_column(String(32))
    message: Mapped[str] = mapped_column(Text)
    data: Mapped[dict] = mapped_column(JSON, default=dict)


class _Checkpoint(_Base):
    __tablename__ = "checkpoints"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    step: Mapped[int] = mapped_column(Integer, primary_key=True)
    uri: Mapped[str] = mapped_column(Text)
    metrics: Mapped[dict] = mapped_column(JSON, default=dict)
    created_at: Mapped[float] = mapped_column(Float)
    pruned: Mapped[bool] = mapped_column(Boolean, default=False)
    report_index: Mapped[int] = mapped_column(Integer, default=0)


class _Label(_Base):
    __tablename__ = "job_labels"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(63), primary_key=True)
    value: Mapped[str] = mapped_column(String(63), index=True)


class _Idempotency(_Base):
    __tablename__ = "idempotency"

    request_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    body_hash: Mapped[str] = mapped_column(String(64))
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    created_at: Mapped[float] = mapped_column(Float)


class _Delivery(_Base):
    __tablename__ = "webhook_deliveries"  # the outbox; no foreign key: a delivery outlives a deleted job
    __table_args__ = (Index("ix_webhook_due", "status", "next_attempt_at"), Index("ix_webhook_order", "job_id", "url"),
                      {"sqlite_autoincrement": True})

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)  # the order of the state changes
    id: Mapped[str] = mapped_column(String(32), unique=True)
    job_id: Mapped[str] = mapped_column(String(64))
    url: Mapped[str] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Float)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[float] = mapped_column(Float)
    claimed_until: Mapped[Optional[float]] = mapped_column(Float, nullable=True)  # a sender holds it until then
    status: Mapped[str] = mapped_column(String(10), default="pending")
    last_error: Mapped[str] = mapped_column(Text, default="")
    delivered_at: Mapped[Optional[float]] = mapped_column(Float, nullable=True)


class _Turn(_Base):
    __tablename__ = "admission_turns"  # when each tenant last had a job admitted: the round-robin across tenants

    tenant: Mapped[str] = mapped_column(String(63), primary_key=True)
    admitted_at: Mapped[float] = mapped_column(Float)


class _Secret(_Base):
    __tablename__ = "server_secrets"  # random keys the server derives per-job keys from (events' MACs)

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    value: Mapped[str] = mapped_column(String(128))


_SCHEMA_LOCK = 0x7261_7973_6674_0001  # PostgreSQL advisory lock key held while creating tables ("raysft", 1)
_QUEUE_LOCK = 0x7261_7973_6674_0002  # ... and while admitting jobs from the queue ("raysft", 2)
_JOBS = _Job.__table__
_DELIVERIES = _Delivery.__table__
_JOB_FIELDS = [f.name for f in dataclasses.fields(JobRecord) if f.name in _JOBS.c]  # queue_position is computed
_ON_RAY = (JobState.STARTING.value, JobState.RUNNING.value, JobState.CANCELLING.value)  # what admission counts as running
_CKPT_FIELDS = [f.name for f in dataclasses.fields(CheckpointRecord)]


def _record(row: _Job | RowMapping) -> JobRecord:
    """A JobRecord from an ORM row, or from a Core row mapping (reads skip the ORM: half the cost of a GetJob)."""
    values = {name: row[name] for name in _JOB_FIELDS} if isinstance(row, RowMapping) else \
        {name: getattr(row, name) for name in _JOB_FIELDS}
    values["state"] = JobState(values["state"])
    for name in ("labels", "progress", "output"):  # JSON columns: copies, so edits are explicit
        values[name] = dict(values[name] or {})
    values["spec"] = StoredSpec(values["spec"] or {})  # a copy, so edits are explicit
    values["warnings"] = list(values["warnings"] or [])
    values["notify_urls"] = list(values["notify_urls"] or [])
    return JobRecord(**values)


def _event(row: _Event) -> EventRecord:
    return EventRecord(row.job_id, row.sequence, row.time, row.level, row.type, row.message, dict(row.data or {}))


def _checkpoint(row: _Checkpoint) -> CheckpointRecord:
    return CheckpointRecord(**{name: getattr(row, name) for name in _CKPT_FIELDS})


def _delivery(row: _Delivery) -> DeliveryRecord:
    return DeliveryRecord(row.id, row.job_id, row.url, row.body, row.created_at, row.attempts, row.status, row.last_error,
                          row.delivered_at)


# ------------------------------------------------------------------------------------------ store


class Store:
    """Jobs and their history in a SQL database (created on first use).

    Args:
        webhooks: URLs told of every job's state change (`raysft serve --webhook`), besides each job's notify_urls.
    """

    def __init__(self, url: str, *, webhooks: tuple[str, ...] = ()):
        parsed = make_url(url)
        # Enough pooled connections for the server's worker threads (32 concurrent clients in the benchmark).
        kwargs: dict[str, Any] = {"pool_size": 16, "max_overflow": 16}
        if parsed.get_backend_name() == "sqlite":
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
            if parsed.database and parsed.database != ":memory:":
                Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
            else:  # one shared in-memory database (tests); nothing survives the process
                kwargs = {"connect_args": kwargs["connect_args"], "poolclass": StaticPool}
        self.url = url
        self.webhooks = tuple(webhooks)
        self.backend = parsed.get_backend_name()  # "sqlite", "postgresql", ...
        # pre_ping: a pooled connection a restarted or failed-over database dropped is replaced, not handed out.
        self._engine = create_engine(url, pool_pre_ping=self.backend != "sqlite", **kwargs)
        if self.backend == "sqlite":
            event.listen(self._engine, "connect", _sqlite_pragmas)
            _Base.metadata.create_all(self._engine)
        else:
            with self._engine.begin() as c:
                if self.backend == "postgresql":  # servers starting together: one creates the tables, others wait
                    c.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _SCHEMA_LOCK})
                _Base.metadata.create_all(c)
        _add_missing_columns(self._engine)
        self._write = threading.Lock()
        self._listeners_lock = threading.Lock()
        self._listeners: dict[str, set[Callable[[], None]]] = {}
        self._observers: list[Callable[[JobRecord, list[EventRecord]], None]] = []

    def close(self) -> None:
        """Release the database connections."""
        self._engine.dispose()

    # --------------------------------------------------------------------------- change notices

    def subscribe(self, job_id: str, notify: Callable[[], None]) -> Callable[[], None]:
        """Call `notify()` after every change of the job made in this process (from the writing thread; it
        must be quick and never raise); returns the function that stops it."""
        with self._listeners_lock:
            self._listeners.setdefault(job_id, set()).add(notify)

        def unsubscribe() -> None:
            with self._listeners_lock:
                listeners = self._listeners.get(job_id, set())
                listeners.discard(notify)
                if not listeners:
                    self._listeners.pop(job_id, None)

        return unsubscribe

    def observe(self, observer: Callable[[JobRecord, list[EventRecord]], None]) -> None:
        """Call `observer(job, appended_events)` after every committed creation or change made in this process
        (metrics count creations and ends from it); it must be quick and never raise."""
        self._observers.append(observer)

    def _observed(self, job: JobRecord, events: list[EventRecord]) -> None:
        for observer in self._observers:
            observer(job, events)

    def _touch(self, job_id: str) -> None:
        with self._listeners_lock:
            listeners = list(self._listeners.get(job_id, ()))
        for notify in listeners:
            notify()

    # ----------------------------------------------------------------------------------- writes

    def create_job(self, job: JobRecord, events: list[NewEvent], body_hash: Optional[str] = None) -> tuple[JobRecord, bool]:
        """Store a new job with its first events; with a request id, at most one job per id.

        Returns:
            (the job, True) when created; (the job created earlier with the same request id and body, False).

        Raises:
            AlreadyExists: the request id was used before with another body.
        """
        now = time.time()
        with self._write:
            try:
                with Session(self._engine) as s, s.begin():
                    row = _Job(**{k: getattr(job, k) for k in _JOB_FIELDS if k != "ordinal"})
                    row.state, row.created_at, row.updated_at = job.state.value, now, now
                    s.add(row)
                    s.flush()  # the job row must exist before rows that reference it
                    if job.request_id:
                        s.add(_Idempotency(request_id=_request_key(job.tenant, job.request_id), body_hash=body_hash or "",
                                           job_id=job.id, created_at=now))
                    s.add_all(_Label(job_id=job.id, key=k, value=v) for k, v in job.labels.items())
                    appended = self._append(s, row, events, now)
                    created = _record(row)
            except IntegrityError:
                if not job.request_id:
                    raise
                return self.replay_request(job.request_id, body_hash, tenant=job.tenant), False
        self._observed(created, appended)
        self._touch(job.id)
        return created, True

    def replay_request(self, request_id: str, body_hash: Optional[str], *, tenant: str = DEFAULT_TENANT) -> JobRecord:
        """The job `tenant` stored for `request_id` when `body_hash` matches the one stored with it.

        Raises:
            AlreadyExists: the request id was used with another body.
        """
        found = self.find_request(request_id, tenant=tenant)
        if found is None:  # the integrity error was something else: let it surface
            raise RuntimeError(f"could not store the job for request_id {request_id!r}")
        job_id, stored_hash = found
        if stored_hash != (body_hash or ""):
            raise AlreadyExists(f"request_id {request_id!r} was already used for job {job_id} with a different request; "
                                "use a new request_id for a new job")
        return self.get_job(job_id)

    def update(self, job_id: str, change: Callable[[JobRecord, dict[int, CheckpointRecord]], list[NewEvent]]
               ) -> tuple[JobRecord, list[EventRecord]]:
        """Change a job in one transaction: `change(job, checkpoints_by_step)` edits them in place and returns
        events to append. An exception from `change` leaves everything as it was.

        Returns:
            The job after the change and the events appended.

        Raises:
            NotFound: no such job.
        """
        with self._write:
            with Session(self._engine) as s, s.begin():
                row = s.scalars(select(_Job).where(_Job.id == job_id).with_for_update()).one_or_none()
                if row is None:
                    raise NotFound(f"job {job_id!r} not found; list jobs with `raysft jobs list`")
                result, appended = self._apply(s, row, change)
        if appended is not None:
            self._observed(result, appended)
            self._touch(job_id)
        return result, appended or []

    def _apply(self, s: Session, row: _Job, change: Callable[[JobRecord, dict[int, CheckpointRecord]], list[NewEvent]]
               ) -> tuple[JobRecord, Optional[list[EventRecord]]]:
        """Apply `change` to the locked `row` and its checkpoints; the events appended are None when nothing changed."""
        job = _record(row)
        ckpt_rows = {c.step: c for c in s.scalars(select(_Checkpoint).where(_Checkpoint.job_id == row.id))}
        ckpts = {step: _checkpoint(c) for step, c in ckpt_rows.items()}
        before = (copy.deepcopy(job), copy.deepcopy(ckpts))
        new = change(job, ckpts)
        if not new and (job, ckpts) == before:
            return job, None  # nothing changed: no write, update_time stays
        now = time.time()
        for name in _JOB_FIELDS:
            if name not in ("id", "ordinal", "created_at", "last_sequence"):
                setattr(row, name, getattr(job, name))
        row.state, row.updated_at = job.state.value, now
        for step, c in ckpts.items():
            values = {name: getattr(c, name) for name in _CKPT_FIELDS}
            if step in ckpt_rows:
                for name, value in values.items():
                    setattr(ckpt_rows[step], name, value)
            else:
                s.add(_Checkpoint(**values))
        appended = self._append(s, row, new, now)
        return _record(row), appended

    def admit(self, pick: Callable[[list[QueueEntry], list[QueueEntry], dict[str, float]], list[str]],
              change: Callable[[JobRecord, dict[int, CheckpointRecord]], list[NewEvent]]) -> list[JobRecord]:
        """Admit jobs from the queue in one transaction: `pick(queued, on_ray, turns)` chooses among the QUEUED
        jobs (given those on Ray and when each tenant last had one admitted), and `change` moves each chosen
        job out of QUEUED (as Store.update does). Returns the jobs changed, in the order picked.

        Passes are serialised across servers (a PostgreSQL advisory lock; on SQLite the write lock, taken
        first), so what `pick` sees is what it changes: no job is admitted twice and no cap is overrun by two
        servers admitting at once. Each chosen row is locked and read again: one cancelled meanwhile is skipped.
        """
        changed: list[tuple[JobRecord, list[EventRecord]]] = []
        with self._engine.connect() as c:  # an empty queue (the usual pass) takes no lock
            if c.execute(select(_JOBS.c.id).where(_JOBS.c.state == JobState.QUEUED.value).limit(1)).first() is None:
                return []
        with self._write:
            with Session(self._engine) as s, s.begin():
                self._lock_queue(s)
                queued = self._entries(s, (JobState.QUEUED.value,))
                if not queued:
                    return []
                turns = dict(s.execute(select(_Turn.tenant, _Turn.admitted_at)).all())
                now = time.time()
                for rank, job_id in enumerate(pick(queued, self._entries(s, _ON_RAY), turns)):
                    row = s.scalars(select(_Job).where(_Job.id == job_id, _Job.state == JobState.QUEUED.value)
                                    .with_for_update()).one_or_none()
                    if row is None:
                        continue
                    result, appended = self._apply(s, row, change)
                    if appended is None:
                        continue
                    turn = s.get(_Turn, row.tenant) or _Turn(tenant=row.tenant)
                    turn.admitted_at = now + rank * 1e-6  # the order within one pass counts in the next
                    s.add(turn)
                    changed.append((result, appended))
        for job, appended in changed:
            self._observed(job, appended)
            self._touch(job.id)
        return [job for job, _ in changed]

    def _lock_queue(self, s: Session) -> None:
        if self.backend == "postgresql":
            s.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _QUEUE_LOCK})
        else:  # a write as the first statement takes SQLite's one write lock (waiting for it) before anything is read
            s.execute(text("UPDATE admission_turns SET tenant = tenant WHERE 1 = 0"))

    @staticmethod
    def _entries(s: Session, states: tuple[str, ...]) -> list[QueueEntry]:
        q = select(_Job.id, _Job.tenant, _Job.priority, _Job.ordinal, _Job.workers).where(_Job.state.in_(states))
        return [QueueEntry(*row) for row in s.execute(q.order_by(_Job.ordinal))]

    def _append(self, s: Session, row: _Job, events: list[NewEvent], now: float) -> list[EventRecord]:
        # `row` is locked for this transaction (FOR UPDATE, or a new row nobody else sees yet): the
        # numbers below are taken by no other writer, in this process or another server's.
        out = []
        for e in events:
            row.last_sequence += 1
            item = _Event(job_id=row.id, sequence=row.last_sequence, time=e.time or now, level=e.level, type=e.type,
                          message=e.message, data=e.data)
            s.add(item)
            out.append(_event(item))
            if e.type == "state_changed" and e.data.get("to"):
                self._outbox(s, row, out[-1], now)
        return out

    def _outbox(self, s: Session, row: _Job, change: EventRecord, now: float) -> None:
        # In the state change's own transaction: the webhooks are committed with it, or neither is.
        for url in dict.fromkeys([*self.webhooks, *(row.notify_urls or [])]):
            delivery_id = secrets.token_hex(16)
            body = payload(delivery_id, row.id, change.sequence, change.data["to"], change.data.get("from", ""),
                           change.data.get("reason", ""), change.time, dict(row.output or {}))
            s.add(_Delivery(id=delivery_id, job_id=row.id, url=url, body=body, created_at=now, attempts=0,
                            next_attempt_at=now, status="pending", last_error=""))

    # ------------------------------------------------------------------------------ webhook outbox

    def claim_deliveries(self, limit: int, lease_s: float) -> list[DeliveryRecord]:
        """Up to `limit` due deliveries, each the oldest pending one of its job and URL (so a receiver sees a job's
        states in order), held for `lease_s` seconds: no other sender, here or on another server, takes them meanwhile."""
        now = time.time()
        earlier = aliased(_Delivery)
        due = (_Delivery.status == "pending", _Delivery.next_attempt_at <= now,
               or_(_Delivery.claimed_until.is_(None), _Delivery.claimed_until < now))
        q = (select(_Delivery)
             .where(*due, ~exists().where(earlier.job_id == _Delivery.job_id, earlier.url == _Delivery.url,
                                         earlier.seq < _Delivery.seq, earlier.status == "pending"))
             .order_by(_Delivery.seq).limit(limit).with_for_update(skip_locked=True))
        with self._write:
            with Session(self._engine) as s, s.begin():
                rows = list(s.execute(q.with_only_columns(_Delivery.seq)).scalars())
                claimed = []
                for seq in rows:
                    # Taken only if still due: pysqlite reads outside the write transaction, so another process's
                    # sender may have read the same rows (PostgreSQL's SKIP LOCKED already kept them apart).
                    taken = s.execute(_DELIVERIES.update().where(_Delivery.seq == seq, *due)
                                      .values(claimed_until=now + lease_s)).rowcount
                    if taken:
                        claimed.append(seq)
                if not claimed:
                    return []
                found = s.scalars(select(_Delivery).where(_Delivery.seq.in_(claimed)).order_by(_Delivery.seq))
                return [_delivery(row) for row in found]

    def finish_delivery(self, delivery_id: str, *, delivered_at: Optional[float] = None, error: str = "",
                        retry_at: Optional[float] = None) -> None:
        """Record an attempt: delivered (`delivered_at`), to retry at `retry_at`, or else given up."""
        with self._write:
            with Session(self._engine) as s, s.begin():
                row = s.scalars(select(_Delivery).where(_Delivery.id == delivery_id).with_for_update()).one()
                row.attempts, row.claimed_until, row.last_error = row.attempts + 1, None, error
                if delivered_at is not None:
                    row.status, row.delivered_at = "delivered", delivered_at
                elif retry_at is not None:
                    row.next_attempt_at = retry_at
                else:
                    row.status = "failed"

    def prune_deliveries(self, before: float) -> int:
        """Forget deliveries delivered or given up that were created before `before`; returns how many."""
        with self._write:
            with Session(self._engine) as s, s.begin():
                gone = s.execute(delete(_Delivery).where(_Delivery.status != "pending", _Delivery.created_at < before))
                return gone.rowcount

    def deliveries(self, job_id: str) -> list[DeliveryRecord]:
        """The job's webhook deliveries in the order of its state changes."""
        with Session(self._engine) as s:
            q = select(_Delivery).where(_Delivery.job_id == job_id).order_by(_Delivery.seq)
            return [_delivery(r) for r in s.scalars(q)]

    def delete_job(self, job_id: str, check: Callable[[JobRecord], None]) -> None:
        """Delete a job and everything stored about it; `check(job)` may raise to refuse."""
        with self._write:
            with Session(self._engine) as s, s.begin():
                row = s.scalars(select(_Job).where(_Job.id == job_id).with_for_update()).one_or_none()
                if row is None:
                    raise NotFound(f"job {job_id!r} not found; list jobs with `raysft jobs list`")
                check(_record(row))
                for table in (_Event, _Checkpoint, _Label, _Idempotency):  # explicit: not every database cascades
                    s.execute(delete(table).where(table.job_id == job_id))
                s.delete(row)
        self._touch(job_id)

    def secret(self, name: str) -> bytes:
        """The server's random secret `name` (32 bytes), created on first use and kept with the jobs.

        In the store, not a file, so every server sharing the store (and a restarted one) derives the same
        per-job keys; whoever can read the database can forge those jobs' events, as they can edit its rows.
        """
        with self._write:
            try:
                with Session(self._engine) as s, s.begin():
                    row = s.get(_Secret, name)
                    if row is None:
                        row = _Secret(name=name, value=secrets.token_hex(32))
                        s.add(row)
                    value = row.value
            except IntegrityError:  # another server sharing the store created it first
                with Session(self._engine) as s:
                    value = s.get(_Secret, name).value
        return bytes.fromhex(value)

    # ------------------------------------------------------------------------------------ reads

    def find_request(self, request_id: str, *, tenant: str = DEFAULT_TENANT) -> Optional[tuple[str, str]]:
        """(job id, body hash) `tenant` stored for an idempotency key, or None (each tenant has its own keys)."""
        with Session(self._engine) as s:
            row = s.get(_Idempotency, _request_key(tenant, request_id))
            return (row.job_id, row.body_hash) if row else None

    def get_job(self, job_id: str, *, tenant: Optional[str] = None) -> JobRecord:
        """Raises NotFound for an unknown id, and for a job of another tenant than `tenant` (None: any), alike."""
        q = select(_JOBS).where(_JOBS.c.id == job_id)
        if tenant is not None:
            q = q.where(_JOBS.c.tenant == tenant)
        with self._engine.connect() as c:
            row = c.execute(q).mappings().one_or_none()
        if row is None:
            raise NotFound(f"job {job_id!r} not found; list jobs with `raysft jobs list`")
        return _record(row)

    def list_jobs(self, *, states: tuple[JobState, ...] = (), labels: Optional[dict] = None, limit: int = 50,
                  before: Optional[int] = None, tenant: Optional[str] = None) -> list[JobRecord]:
        """Jobs newest first, optionally in any of `states`, carrying every label and of `tenant` (None: any
        tenant); `before`: an ordinal."""
        q = select(_JOBS).order_by(_Job.ordinal.desc()).limit(limit)
        if tenant is not None:
            q = q.where(_Job.tenant == tenant)
        if states:
            q = q.where(_Job.state.in_([s.value for s in states]))
        for key, value in (labels or {}).items():
            q = q.where(_Job.id.in_(select(_Label.job_id).where(_Label.key == key, _Label.value == value)))
        if before is not None:
            q = q.where(_Job.ordinal < before)
        with self._engine.connect() as c:
            return [_record(r) for r in c.execute(q).mappings()]

    def queue(self) -> tuple[list[QueueEntry], dict[str, float]]:
        """The QUEUED jobs, oldest first, and when each tenant last had a job admitted (read, not locked)."""
        with Session(self._engine) as s:
            return self._entries(s, (JobState.QUEUED.value,)), dict(s.execute(select(_Turn.tenant, _Turn.admitted_at)).all())

    def count_jobs(self, *, tenant: str, states: tuple[JobState, ...]) -> int:
        """How many of the tenant's jobs are in any of `states`."""
        q = select(func.count()).select_from(_Job).where(_Job.tenant == tenant, _Job.state.in_([x.value for x in states]))
        with Session(self._engine) as s:
            return s.execute(q).scalar_one()

    def state_counts(self) -> dict[JobState, int]:
        """How many jobs are in each state (states with none are left out)."""
        with Session(self._engine) as s:
            rows = s.execute(select(_Job.state, func.count()).group_by(_Job.state)).all()
        return {JobState(state): n for state, n in rows if state in _STATE_VALUES}

    def active_job_ids(self, *, queued: bool = True) -> list[str]:
        """Ids of jobs not yet in a terminal state (without the QUEUED ones unless `queued`), oldest first."""
        states = [x.value for x in ACTIVE if queued or x != JobState.QUEUED]
        with Session(self._engine) as s:
            q = select(_Job.id).where(_Job.state.in_(states)).order_by(_Job.ordinal)
            return list(s.scalars(q))

    def events(self, job_id: str, after: int = 0, limit: int = 1000) -> list[EventRecord]:
        """Events with sequence > `after`, in order."""
        q = (select(_Event).where(_Event.job_id == job_id, _Event.sequence > after)
             .order_by(_Event.sequence).limit(limit))
        with Session(self._engine) as s:
            return [_event(r) for r in s.scalars(q)]

    def checkpoints(self, job_id: str) -> list[CheckpointRecord]:
        """Every checkpoint recorded for the job (pruned ones too), by step."""
        with Session(self._engine) as s:
            q = select(_Checkpoint).where(_Checkpoint.job_id == job_id).order_by(_Checkpoint.step)
            return [_checkpoint(r) for r in s.scalars(q)]


def _request_key(tenant: str, request_id: str) -> str:
    """The idempotency table's key: the request id itself for the default tenant (as stores from before tenants
    hold it), `<tenant>/<sha256 of it>` for others ("/" is in no request id; 63 + 1 + 64 fit the column)."""
    if tenant == DEFAULT_TENANT:
        return request_id
    return f"{tenant}/{hashlib.sha256(request_id.encode()).hexdigest()}"


def _add_missing_columns(engine) -> None:
    """Add the jobs columns a store made by an older server lacks (create_all makes only missing tables).

    Only columns with a server default are added, so existing rows read as that default (attempt 1, ...).
    """
    have = {c["name"] for c in inspect(engine).get_columns("jobs")}
    missing = [c for c in _JOBS.columns if c.name not in have and c.server_default is not None]
    with engine.begin() as conn:
        for column in missing:
            kind = column.type.compile(dialect=engine.dialect)
            default = column.server_default.arg
            conn.execute(text(f"ALTER TABLE jobs ADD COLUMN {column.name} {kind} NOT NULL DEFAULT '{default}'"))


_STATE_VALUES = {s.value for s in JobState}


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cur = dbapi_connection.cursor()
    # WAL: readers do not block the writer; NORMAL sync still survives a killed process (not power loss).
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()
