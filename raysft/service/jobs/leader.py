"""Which of the servers sharing a job store is the leader: the one that runs the supervisor (the reconciler and
the job followers, which submit queued jobs to Ray). Every server answers every RPC; a standby only stores.

On PostgreSQL the leader holds a session-level advisory lock on a connection of its own. Standbys try to take it
every `retry_s`; the leader runs a query on that connection as often, so a lost connection ends its leadership
(`on_lose`) before another server can have taken the lock, and the next acquire starts the supervisor again. When
the leader process dies its operating system closes the connection and PostgreSQL releases the lock at once;
when its whole host vanishes, the TCP keepalives set on the session (server side: `tcp_keepalives_*`; client
side: libpq's `keepalives*`) end the session within ~11 s, so a standby takes over within ~15 s either way.

On a SQLite file the leader holds an exclusive `flock` on `<database>.leader` beside it: released by the kernel
when the process ends, it makes a second server on the same file (same host only: flock does not span machines)
a standby instead of a second set of followers. An in-memory SQLite store has one server: it always leads (and so
does the server of any other database, warned to run alone).
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
from pathlib import Path
from typing import Callable, Optional

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

__all__ = ["Leadership", "LEADER_LOCK"]

log = logging.getLogger(__name__)

LEADER_LOCK = 0x7261_7973_6674_0003  # PostgreSQL advisory lock key of the leader ("raysft", 3; 1 and 2 are the store's)
# The leader's session: a dead peer (leader host or network gone) ends it in 5 + 3 x 2 = 11 s.
_KEEPALIVES = {"keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2, "keepalives_count": 3,
               "connect_timeout": 5}
_SERVER_KEEPALIVES = "SET tcp_keepalives_idle = 5; SET tcp_keepalives_interval = 2; SET tcp_keepalives_count = 3"


class _PostgresLock:
    """The advisory lock `LEADER_LOCK`, held by a dedicated autocommit connection."""

    def __init__(self, url: str):
        self._engine = create_engine(url, poolclass=NullPool, connect_args=_KEEPALIVES)
        self._conn = None

    def try_acquire(self) -> bool:
        if self._conn is None:
            self._conn = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            for statement in _SERVER_KEEPALIVES.split("; "):
                self._conn.execute(text(statement))
        return bool(self._conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": LEADER_LOCK}).scalar())

    def held(self) -> bool:
        # The lock lives as long as the session: a query that answers proves both.
        self._conn.execute(text("SELECT 1"))
        return True

    def release(self) -> None:
        """Close the connection (which releases the lock, when held)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # a connection already broken: nothing is held on it
                pass

    def close(self) -> None:
        self.release()
        self._engine.dispose()


class _FileLock:
    """An exclusive flock on a file beside the SQLite database."""

    def __init__(self, path: Path):
        self.path = path
        self._fd: Optional[int] = None

    def try_acquire(self) -> bool:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def held(self) -> bool:
        return True  # a lock the kernel holds for this process is lost only with the process

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # releases the flock

    def close(self) -> None:
        self.release()


class _NoLock:
    """An in-memory store (no other server can share it), or a database without a lock of ours."""

    def try_acquire(self) -> bool:
        return True

    def held(self) -> bool:
        return True

    def release(self) -> None:
        pass

    def close(self) -> None:
        pass


def _lock_for(url: str):
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "postgresql":
        return _PostgresLock(url)
    if backend == "sqlite":
        if not parsed.database or parsed.database == ":memory:":
            return _NoLock()
        return _FileLock(Path(parsed.database).expanduser().with_name(Path(parsed.database).name + ".leader"))
    log.warning("no leader election on a %s store: run one server on it (or use PostgreSQL for a standby)", backend)
    return _NoLock()


class Leadership:
    """Takes the leader's lock of the store at `url` when free, and keeps it while the process lives.

    Args:
        url: the store's SQLAlchemy URL.
        on_acquire: called (from the leadership thread) on becoming the leader; when it raises, the lock is let
            go and taken again later.
        on_lose: called when the lock was lost (the database connection broke) and by a leader's stop(); the
            process must stop acting as the leader before it returns.
        retry_s: seconds between a standby's attempts, and between the leader's checks of its connection.
    """

    def __init__(self, url: str, on_acquire: Callable[[], None], on_lose: Callable[[], None], retry_s: float = 2.0):
        self._lock = _lock_for(url)
        self._on_acquire, self._on_lose, self.retry_s = on_acquire, on_lose, retry_s
        self._leader = False
        self._unreachable = False  # warned once per outage, not every retry
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._listeners: list[Callable[[bool], None]] = []

    @property
    def is_leader(self) -> bool:
        return self._leader

    def on_change(self, listener: Callable[[bool], None]) -> None:
        """Call `listener(is_leader)` now and after every change (from the leadership thread; must be quick)."""
        self._listeners.append(listener)
        listener(self._leader)

    def start(self) -> None:
        """Try once now (a lone server leads before this returns), then keep trying in the background."""
        self._step()
        if not self._leader:
            log.info("standby: another server leads this job store; this one answers RPCs and takes over when it goes")
        self._thread = threading.Thread(target=self._run, name="leadership", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop trying; a leader calls `on_lose` before it lets go of the lock (no two servers follow at once)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._leader:
            self._set(False)
            self._on_lose()
        self._lock.close()

    def _run(self) -> None:
        while not self._stop.wait(self.retry_s):
            self._step()

    def _step(self) -> None:
        if self._leader:
            try:
                if self._lock.held():
                    return
            except Exception as exc:
                log.warning("standby: the leader's database connection was lost (%s); stopping the job followers", exc)
            self._set(False)
            self._on_lose()
            self._lock.release()
            return
        try:
            acquired = self._lock.try_acquire()
        except Exception as exc:  # the database is away: try again later
            if not self._unreachable:
                log.warning("standby: cannot reach the job store to take the leader's lock (%s); retrying", exc)
            self._unreachable = True
            self._lock.release()
            return
        self._unreachable = False
        if not acquired:
            return
        log.info("leader: this server now runs the reconciler and the job followers")
        try:
            self._on_acquire()
        except Exception:
            log.exception("standby again: starting the job followers failed; letting go of the leader's lock")
            self._on_lose()  # what did start stops before another server can take the lock
            self._lock.release()
            return
        self._set(True)

    def _set(self, leader: bool) -> None:
        if leader != self._leader:
            self._leader = leader
            for listener in self._listeners:
                listener(leader)
