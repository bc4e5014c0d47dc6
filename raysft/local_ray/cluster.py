"""The embedded Ray cluster `raysft serve` starts when it is given no --ray-address.

It is `ray start --head --block` in its own process group with free ports (a fixed port such as the
dashboard agent's 52365 collides with other Ray instances on the machine) and its own temp dir (so
other programs' `ray.init()` on this machine do not find and join it). Its processes are given RAY_ADDRESS (its GCS):
Ray's own lookups from inside the cluster, such as Ray Train's placement-group cleaner asking the State API whether a
run's controller lives, reach this cluster and not whichever one is the machine's current. Its address is kept in a state
file: a server killed without shutting down leaves the cluster, and its jobs, running; the next server
with the same state file re-attaches to it instead of starting another. A graceful shutdown stops it.

The state file is not trusted: before the server sends the Ray token to the address it names, or would ever
signal its pid, that pid must be this user's `ray start --head` with the file's own temp dir and the addresses
must be on 127.0.0.1; anything else is ignored (and a new cluster started). The node's address is 127.0.0.1
(`--node-ip-address`), and the dashboard binds it; Ray 2.60's GCS and raylet still listen on every interface
whatever the node address (`ss -ltnp` shows `*:<port>`), guarded by the cluster's token only.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Optional

from raysft.local_ray import free_port, ray_auth_token

__all__ = ["LocalRayCluster", "trusted_state"]

log = logging.getLogger(__name__)

_DASHBOARD = re.compile(r"http://127\.0\.0\.1:\d{1,5}")
_GCS = re.compile(r"127\.0\.0\.1:\d{1,5}")
_TEMP_DIR = re.compile(r"/tmp/raysft-ray-[A-Za-z0-9_]{1,32}")


def _alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie does not: a re-attached cluster is no child of ours to reap)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


class LocalRayCluster:
    """A one-node Ray cluster with its dashboard on 127.0.0.1.

    Args:
        state_file: where the running cluster's address and process id are kept.
        num_cpus: CPUs Ray may use (default: all).
        num_gpus: GPUs Ray may use (default: all it detects).
    """

    def __init__(self, state_file: str | Path, num_cpus: Optional[int] = None, num_gpus: Optional[int] = None):
        self.state_file = Path(state_file)
        self.num_cpus, self.num_gpus = num_cpus, num_gpus
        self.address: Optional[str] = None  # the dashboard URL, once started
        self.gcs_address: Optional[str] = None  # host:port for ray.init(address=...) and RAY_ADDRESS
        self.reattached = False
        self._pid: Optional[int] = None
        self._temp_dir: Optional[str] = None

    def start(self, timeout_s: float = 180.0) -> str:
        """Start the cluster (or re-attach to the one in the state file); returns the dashboard URL.

        Raises:
            RuntimeError: Ray did not come up within `timeout_s`; the message points at its log.
        """
        previous = self._read_state()
        if previous and not trusted_state(previous):
            log.warning("ignoring %s: it does not describe an embedded Ray cluster of this user on 127.0.0.1", self.state_file)
            previous = None
        if previous and self._answers(previous["address"]):
            self.address, self._pid, self._temp_dir = previous["address"], previous["pid"], previous["temp_dir"]
            self.gcs_address = previous.get("gcs_address")
            self.reattached = True
            log.info("re-attached to the embedded Ray cluster at %s (pid %d)", self.address, self._pid)
            return self.address
        self._ensure_token()
        deadline = time.time() + timeout_s
        for attempt in range(1, 4):  # a free port can be taken before Ray binds it: retry on fresh ports
            proc = self._launch()
            while not self._answers(self.address):
                exited, late = proc.poll() is not None, time.time() > deadline
                if exited or late:
                    output = (Path(self._temp_dir) / "ray-start.log").read_text(errors="replace")[-2000:]
                    self.stop()  # removes the temp dir, log included: its end goes into the message
                    if exited and not late and attempt < 3:
                        log.warning("the embedded Ray cluster exited while starting; retrying on other ports. "
                                    "`ray start` said:\n%s", output)
                        break
                    raise RuntimeError(f"the embedded Ray cluster did not start; `ray start` said:\n{output}\n"
                                       "Fix what it says, or pass --ray-address of a running cluster")
                time.sleep(0.5)
            else:
                break
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        self.state_file.unlink(missing_ok=True)  # a file (or link) someone else put there is not written through
        fd = os.open(self.state_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"address": self.address, "gcs_address": self.gcs_address, "pid": self._pid, "temp_dir": self._temp_dir}, f)
        log.info("started an embedded Ray cluster, dashboard at %s", self.address)
        return self.address

    def _launch(self) -> subprocess.Popen:
        """`ray start --head --block` on free ports, in a temp dir of its own, with its output in ray-start.log."""
        dashboard, gcs = free_port(), free_port()
        # Short path: Ray's unix sockets live under it and socket paths are limited to ~100 characters.
        self._temp_dir = tempfile.mkdtemp(prefix="raysft-ray-", dir="/tmp")
        cmd = [str(Path(sys.executable).parent / "ray"), "start", "--head", "--block", "--disable-usage-stats",
               f"--port={gcs}", "--node-ip-address=127.0.0.1", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
               "--include-dashboard=true",  # a dashboard that cannot start stops `ray start` (and so is retried)
               f"--dashboard-agent-listen-port={free_port()}", f"--ray-client-server-port={free_port()}",
               f"--temp-dir={self._temp_dir}"]
        if self.num_cpus is not None:
            cmd.append(f"--num-cpus={self.num_cpus}")
        if self.num_gpus is not None:
            cmd.append(f"--num-gpus={self.num_gpus}")
        self.gcs_address = f"127.0.0.1:{gcs}"
        out = open(Path(self._temp_dir) / "ray-start.log", "wb")
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, "RAY_ADDRESS": self.gcs_address})
        out.close()
        self._pid, self.address = proc.pid, f"http://127.0.0.1:{dashboard}"
        return proc

    def stop(self, grace_s: float = 10.0) -> None:
        """Stop the cluster (its running jobs end) and forget it.

        `ray start --block` stops its processes on SIGTERM (signalling them all at once instead makes it
        wait out long timeouts); it takes ~2 s on an idle cluster but up to half a minute once jobs have
        run, so after `grace_s` every process of the cluster's session is killed.
        """
        started = time.time()
        if self._pid is not None and _alive(self._pid):
            try:
                os.kill(self._pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            deadline = time.time() + grace_s
            while _alive(self._pid) and time.time() < deadline:
                _reap(self._pid)
                time.sleep(0.2)
            for pid in [self._pid] + _session_members(self._pid):  # Ray's workers have process groups of their own
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            _reap(self._pid)
        self.state_file.unlink(missing_ok=True)
        if self._temp_dir:
            shutil.rmtree(self._temp_dir, ignore_errors=True)
        if self._pid is not None:
            log.info("stopped the embedded Ray cluster in %.1f s", time.time() - started)
        self._pid = None

    @staticmethod
    def _ensure_token() -> None:
        # `ray start` turns token authentication on only when a token exists (a new `ray.init()` cluster
        # creates one): create it, so the embedded cluster is never open to every local user.
        if os.environ.get("RAY_AUTH_MODE") or ray_auth_token():
            return
        subprocess.run([str(Path(sys.executable).parent / "ray"), "get-auth-token", "--generate"],
                       check=True, capture_output=True)

    def _read_state(self) -> Optional[dict]:
        try:
            state = json.loads(self.state_file.read_text())
            return state if {"address", "pid", "temp_dir"} <= state.keys() else None
        except (OSError, ValueError):
            return None

    @staticmethod
    def _answers(address: str) -> bool:
        token = ray_auth_token()
        request = urllib.request.Request(f"{address}/api/version", headers={"Authorization": f"Bearer {token}"} if token else {})
        try:
            with urllib.request.urlopen(request, timeout=2):
                return True
        except OSError:
            return False


def trusted_state(state: dict) -> bool:
    """Whether a state file's content describes a live embedded cluster of this user: addresses on 127.0.0.1, a
    raysft temp dir of this user, and a pid that is this user's `ray start --head` with that temp dir."""
    pid, temp_dir, gcs = state.get("pid"), state.get("temp_dir"), state.get("gcs_address")
    if not (isinstance(pid, int) and pid > 1 and isinstance(temp_dir, str) and _TEMP_DIR.fullmatch(temp_dir)
            and isinstance(state.get("address"), str) and _DASHBOARD.fullmatch(state["address"])
            and (gcs is None or (isinstance(gcs, str) and _GCS.fullmatch(gcs)))):
        return False
    try:
        if os.stat(f"/proc/{pid}").st_uid != os.getuid() or os.stat(temp_dir).st_uid != os.getuid():
            return False
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return _alive(pid) and b"start" in args and b"--head" in args and f"--temp-dir={temp_dir}".encode() in args


def _session_members(sid: int) -> list[int]:
    """Processes of session `sid` (the `ray start` process leads the cluster's session), from /proc."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 3 and int(fields[3]) == sid and int(stat.parent.name) != sid:  # state ppid pgrp session ...
            members.append(int(stat.parent.name))
    return members


def _reap(pid: int) -> None:
    # Our child when this process started it: collect its exit status so it does not linger as a zombie.
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
