"""A real PostgreSQL server for the tests: initdb + pg_ctl into a temporary directory, on a free port of 127.0.0.1.

The binaries come from Debian's `postgresql` package (scripts/setup.sh installs it): they live in
/usr/lib/postgresql/<version>/bin, which is not on PATH. PostgreSQL refuses to run as root, so as root
(CI) the server runs as the package's `postgres` user, in a directory it owns. Durability settings are
off (fsync, synchronous_commit): the tests kill raysft servers, never PostgreSQL, and it starts in ~1 s.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Optional

from raysft.local_ray import free_port

__all__ = ["PostgresServer", "postgres_bindir"]

SUPERUSER = "raysft"


def postgres_bindir() -> Optional[Path]:
    """The newest /usr/lib/postgresql/<version>/bin holding initdb and pg_ctl, else PATH's; None when absent."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("pg_ctl")
    return Path(on_path).resolve().parent if on_path and shutil.which("initdb") else None


class PostgresServer:
    """One PostgreSQL server in a temporary directory; `url(db)` is the SQLAlchemy URL of database `db`."""

    def __init__(self) -> None:
        bindir = postgres_bindir()
        if bindir is None:
            raise RuntimeError("PostgreSQL's initdb/pg_ctl were not found (not in /usr/lib/postgresql/*/bin nor on PATH); "
                               "install Debian's `postgresql` package (scripts/setup.sh does) to run the PostgreSQL tests")
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="raysft-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self._user = "postgres" if os.geteuid() == 0 else None
        if self._user:
            entry = pwd.getpwnam(self._user)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        self._databases = 0

    def _run(self, *args: str, timeout: float = 120) -> None:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self._user:
            cmd = ["runuser", "-u", self._user, "--", *cmd]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=self.root)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}): {done.stdout[-2000:]}{done.stderr[-2000:]}")

    def start(self) -> "PostgresServer":
        self._run("initdb", "-D", str(self.data), "-U", SUPERUSER, "--auth=trust", "-E", "UTF8", "--no-sync")
        options = (f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories={self.root} "
                   "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300 "
                   "-c shared_buffers=32MB")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"), "-w", "-t", "60", "-o", options, "start")
        return self

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A new empty database; returns its URL."""
        import psycopg

        self._databases += 1
        name = f"t{self._databases}"
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user={SUPERUSER} dbname=postgres", autocommit=True) as c:
            c.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop", timeout=60)
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
