"""The durable job store: jobs, their events, checkpoints, labels and idempotency keys, in SQL.

SQLAlchemy 2 over a SQLite file by default (WAL mode: readers never wait for the writer, and a committed
transaction survives a killed process), or PostgreSQL by URL (`postgresql+psycopg://user:pw@host/db`, with
`pip install raysft[postgres]`), which several servers may share (raysft.service.lease picks the one that
runs the background work; all of them write). Every write is one transaction that first locks the job's
row (SELECT ... FOR UPDATE on PostgreSQL; SQLite has a single writer), so `last_sequence` is read and
advanced by one writer at a time across processes and events stay gap-free; within a process writes also
go through one lock. Times are epoch seconds (float).
"""

from __future__ import annotations

import copy
import dataclasses
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

from sqlalchemy import (JSON, Boolean, Float, ForeignKey, Integer, String, Text, create_engine, delete, event, func,
                        inspect, select, text)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.engine import RowMapping, make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
from sqlalchemy.pool import StaticPool

from raysft.service.errors import AlreadyExists, NotFound
from raysft.service.states import ACTIVE, JobState

__all__ = ["Store", "JobRecord", "EventRecord", "CheckpointRecord", "NewEvent"]


# ---------------------------------------------------------------------------------------- records


@dataclass
class JobRecord:
    """One job as the service sees it (a plain copy of its row; changing it changes nothing stored)."""

    id: str
    kind: str
    spec: dict
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
    error_kind: str = ""  # USER or SYSTEM when error_code is a failure's (raysft.service.failures)
    tenant: str = "default"  # the tenant whose token created it (raysft.service.tenants); only it sees the job


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


class _Secret(_Base):
    __tablename__ = "server_secrets"  # random keys the server derives per-job keys from (events' MACs)

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    value: Mapped[str] = mapped_column(String(128))


_SCHEMA_LOCK = 0x7261_7973_6674_0001  # PostgreSQL advisory lock key held while creating tables ("raysft", 1)
_JOBS = _Job.__table__
_JOB_FIELDS = [f.name for f in dataclasses.fields(JobRecord)]
_CKPT_FIELDS = [f.name for f in dataclasses.fields(CheckpointRecord)]


def _record(row: _Job | RowMapping) -> JobRecord:
    """A JobRecord from an ORM row, or from a Core row mapping (reads skip the ORM: half the cost of a GetJob)."""
    values = {name: row[name] for name in _JOB_FIELDS} if isinstance(row, RowMapping) else \
        {name: getattr(row, name) for name in _JOB_FIELDS}
    values["state"] = JobState(values["state"])
    for name in ("labels", "progress", "output", "spec"):  # JSON columns: copies, so edits are explicit
        values[name] = dict(values[name] or {})
    values["warnings"] = list(values["warnings"] or [])
    return JobRecord(**values)


def _event(row: _Event) -> EventRecord:
    return EventRecord(row.job_id, row.sequence, row.time, row.level, row.type, row.message, dict(row.data or {}))


def _checkpoint(row: _Checkpoint) -> CheckpointRecord:
    return CheckpointRecord(**{name: getattr(row, name) for name in _CKPT_FIELDS})


# ------------------------------------------------------------------------------------------ store


class Store:
    """Jobs and their history in a SQL database (created on first use)."""

    def __init__(self, url: str):
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
                    row = _Job(**{k: v for k, v in dataclasses.asdict(job).items() if k != "ordinal"})
                    row.state, row.created_at, row.updated_at = job.state.value, now, now
                    s.add(row)
                    s.flush()  # the job row must exist before rows that reference it
                    if job.request_id:
                        s.add(_Idempotency(request_id=job.request_id, body_hash=body_hash or "", job_id=job.id, created_at=now))
                    s.add_all(_Label(job_id=job.id, key=k, value=v) for k, v in job.labels.items())
                    appended = self._append(s, row, events, now)
                    created = _record(row)
            except IntegrityError:
                if not job.request_id:
                    raise
                return self.replay_request(job.request_id, body_hash), False
        self._observed(created, appended)
        self._touch(job.id)
        return created, True

    def replay_request(self, request_id: str, body_hash: Optional[str]) -> JobRecord:
        """The job stored for `request_id` when `body_hash` matches the one stored with it.

        Raises:
            AlreadyExists: the request id was used with another body.
        """
        found = self.find_request(request_id)
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
                job = _record(row)
                ckpt_rows = {c.step: c for c in s.scalars(select(_Checkpoint).where(_Checkpoint.job_id == job_id))}
                ckpts = {step: _checkpoint(c) for step, c in ckpt_rows.items()}
                before = (copy.deepcopy(job), copy.deepcopy(ckpts))
                new = change(job, ckpts)
                if not new and (job, ckpts) == before:
                    return job, []  # nothing changed: no write, update_time stays
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
                result = _record(row)
        self._observed(result, appended)
        self._touch(job_id)
        return result, appended

    @staticmethod
    def _append(s: Session, row: _Job, events: list[NewEvent], now: float) -> list[EventRecord]:
        # `row` is locked for this transaction (FOR UPDATE, or a new row nobody else sees yet): the
        # numbers below are taken by no other writer, in this process or another server's.
        out = []
        for e in events:
            row.last_sequence += 1
            item = _Event(job_id=row.id, sequence=row.last_sequence, time=e.time or now, level=e.level, type=e.type,
                          message=e.message, data=e.data)
            s.add(item)
            out.append(_event(item))
        return out

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

    def find_request(self, request_id: str) -> Optional[tuple[str, str]]:
        """(job id, body hash) stored for an idempotency key, or None."""
        with Session(self._engine) as s:
            row = s.get(_Idempotency, request_id)
            return (row.job_id, row.body_hash) if row else None

    def get_job(self, job_id: str) -> JobRecord:
        """Raises NotFound for an unknown id."""
        with self._engine.connect() as c:
            row = c.execute(select(_JOBS).where(_JOBS.c.id == job_id)).mappings().one_or_none()
        if row is None:
            raise NotFound(f"job {job_id!r} not found; list jobs with `raysft jobs list`")
        return _record(row)

    def list_jobs(self, *, states: tuple[JobState, ...] = (), labels: Optional[dict] = None, limit: int = 50,
                  before: Optional[int] = None) -> list[JobRecord]:
        """Jobs newest first, optionally in any of `states` and carrying every label; `before`: an ordinal."""
        q = select(_JOBS).order_by(_Job.ordinal.desc()).limit(limit)
        if states:
            q = q.where(_Job.state.in_([s.value for s in states]))
        for key, value in (labels or {}).items():
            q = q.where(_Job.id.in_(select(_Label.job_id).where(_Label.key == key, _Label.value == value)))
        if before is not None:
            q = q.where(_Job.ordinal < before)
        with self._engine.connect() as c:
            return [_record(r) for r in c.execute(q).mappings()]

    def state_counts(self) -> dict[JobState, int]:
        """How many jobs are in each state (states with none are left out)."""
        with Session(self._engine) as s:
            rows = s.execute(select(_Job.state, func.count()).group_by(_Job.state)).all()
        return {JobState(state): n for state, n in rows if state in _STATE_VALUES}

    def active_job_ids(self, states: Iterable[JobState] = ACTIVE) -> list[str]:
        """Ids of jobs not yet in a terminal state (or in one of `states`), oldest first."""
        with Session(self._engine) as s:
            q = select(_Job.id).where(_Job.state.in_([x.value for x in states])).order_by(_Job.ordinal)
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
