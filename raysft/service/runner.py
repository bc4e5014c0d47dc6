"""Runs jobs as Ray Jobs through the Ray Jobs API (the dashboard's HTTP endpoint).

The server builds every entrypoint itself: `raysft train job_spec.yaml` (or `raysft tune`) with the
validated spec uploaded as the job's working_dir, so `ray job list` / `ray job logs` show raysft jobs
and clients never send commands or runtime environments. The Ray submission id is the job id.

Ray clusters with token authentication (the default for a new local cluster) get the token as a bearer
header: RAY_AUTH_TOKEN, else the file RAY_AUTH_TOKEN_PATH, else ~/.ray/auth_token when present.
"""

from __future__ import annotations

import asyncio
import codecs
import os
import sys
import tempfile
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator, Optional

import yaml

from raysft.service.errors import Unavailable

__all__ = ["RayJobsRunner", "RayJobInfo", "JobVanished", "SubmitRejected", "ray_auth_token"]

_SPEC_FILE = "job_spec.yaml"


class JobVanished(Exception):
    """The Ray cluster has no job with this submission id (it restarted, or the job was deleted)."""


class SubmitRejected(Exception):
    """Ray refused the submission for a reason retrying will not fix."""


class _NoLogApi(Exception):
    """The dashboard's log streaming API answered with an error status."""


@dataclass(frozen=True)
class RayJobInfo:
    """What Ray reports about a job: status, its message, and the entrypoint's exit code once it ended."""

    status: str  # PENDING, RUNNING, SUCCEEDED, FAILED, STOPPED
    message: str
    exit_code: Optional[int]


def ray_auth_token() -> Optional[str]:
    """The Ray cluster token this process would use, or None."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return os.environ["RAY_AUTH_TOKEN"].strip()
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token").expanduser()
    return path.read_text().strip() if path.is_file() else None


class RayJobsRunner:
    """Submits, inspects, stops and reads the logs of Ray Jobs on the cluster at `address`.

    Args:
        address: the Ray dashboard URL (http://host:8265).
        timeout_s: per HTTP request.
        driver_cpus, driver_memory_bytes: what each job's driver reserves on the cluster (Ray's entrypoint_num_cpus
            and entrypoint_memory), so Ray queues drivers it has no room for instead of starting them all.
    """

    def __init__(self, address: str, *, timeout_s: float = 10.0, driver_cpus: float = 1.0,
                 driver_memory_bytes: Optional[int] = None):
        self.address = address if "://" in address else f"http://{address}"
        self._timeout = timeout_s
        self._entrypoint = {"entrypoint_num_cpus": driver_cpus}
        if driver_memory_bytes:
            self._entrypoint["entrypoint_memory"] = int(driver_memory_bytes)
        self._lock = threading.Lock()
        self._sdk = None
        token = ray_auth_token()
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}

    # ------------------------------------------------------------------------------- connection

    def _client(self):
        with self._lock:
            if self._sdk is None:
                from ray.job_submission import JobSubmissionClient

                try:
                    self._sdk = JobSubmissionClient(self.address, headers=dict(self._headers))
                except Exception as exc:  # ConnectionError, AuthenticationError, ...: all mean "cannot use it now"
                    raise Unavailable(f"cannot reach the Ray cluster at {self.address}: {_short(exc)}; check that it is "
                                      "running (`raysft serve --ray-address`) and that the server has its token") from None
            return self._sdk

    def ping(self) -> None:
        """Raise Unavailable unless the Ray Jobs API answers (a cheap GET, no job touched)."""
        request = urllib.request.Request(f"{self.address}/api/version", headers=self._headers)
        try:
            with urllib.request.urlopen(request, timeout=self._timeout):
                pass
        except (OSError, urllib.error.URLError) as exc:
            raise Unavailable(f"cannot reach the Ray cluster at {self.address}: {_short(exc)}; retry when it is up") from None

    def _call(self, what: str, fn, *args):
        try:
            return fn(*args)
        except RuntimeError as exc:
            text = str(exc)
            if "404" in text or "does not exist" in text:
                raise JobVanished(text) from None
            raise Unavailable(f"Ray could not {what}: {_short(exc)}") from None
        except Exception as exc:  # connection and authentication errors
            raise Unavailable(f"Ray could not {what}: {_short(exc)}") from None

    # ------------------------------------------------------------------------------------- jobs

    def submit(self, job_id: str, kind: str, spec: dict) -> None:
        """Start `raysft <kind>` on the spec as the Ray job `job_id`; a job already submitted is left as it is.

        Raises:
            Unavailable: Ray cannot take it now (unreachable, its job agent still starting): retry later.
            SubmitRejected: Ray refused it for good.
        """
        client = self._client()
        env = {
            # The server's interpreter first: on the embedded cluster (and clusters built from the same image)
            # that is where `raysft` lives even when the venv is not activated; ${PATH} is expanded by Ray.
            "PATH": f"{Path(sys.executable).parent}:${{PATH}}",
            "PYTHONUNBUFFERED": "1",
        }
        if kind == "train":
            # Trials of a tune campaign each number their events from 1, so only train jobs stream them.
            env["RAYSFT_EVENTS_TO_STDOUT"] = "1"
        with tempfile.TemporaryDirectory(prefix="raysft-job-") as tmp:
            (Path(tmp) / _SPEC_FILE).write_text(yaml.safe_dump(spec, sort_keys=False, allow_unicode=True), encoding="utf-8")
            try:
                client.submit_job(entrypoint=f"raysft {kind} {_SPEC_FILE}", submission_id=job_id,
                                  runtime_env={"working_dir": tmp, "env_vars": env},
                                  metadata={"raysft_job_id": job_id, "raysft_kind": kind}, **self._entrypoint)
            except RuntimeError as exc:
                text = str(exc)
                if "already exists" in text:
                    return  # submitted before a restart: attach to it
                if "status code 4" in text:
                    raise SubmitRejected(f"Ray refused the job: {_short(exc)}") from None
                raise Unavailable(f"Ray could not take the job yet: {_short(exc)}") from None
            except Exception as exc:
                raise Unavailable(f"Ray could not take the job yet: {_short(exc)}") from None

    def info(self, job_id: str) -> RayJobInfo:
        """Status of the Ray job. Raises JobVanished or Unavailable."""
        d = self._call("report the job status", self._client().get_job_info, job_id)
        return RayJobInfo(str(getattr(d.status, "value", d.status)), d.message or "", d.driver_exit_code)

    def stop(self, job_id: str) -> None:
        """Ask Ray to stop the job (SIGTERM, then SIGKILL after its grace period). Raises JobVanished or Unavailable."""
        self._call("stop the job", self._client().stop_job, job_id)

    def delete(self, job_id: str) -> None:
        """Forget a terminal Ray job (its log files stay on the cluster). Raises JobVanished or Unavailable."""
        self._call("delete the job", self._client().delete_job, job_id)

    def logs(self, job_id: str) -> str:
        """The whole driver log of the job. Raises JobVanished or Unavailable."""
        return self._call("return the job logs", self._client().get_job_logs, job_id)

    async def tail(self, job_id: str) -> AsyncIterator[str]:
        """Log text as the job writes it, from the beginning, until cancelled (or the job ends).

        Follows the driver's log file through the dashboard's log API, which polls it every 0.1 s (new
        lines arrive within ~0.1 s wherever the cluster runs); where that API is unavailable, Ray's job-log
        websocket, which polls once a second.
        """
        info = await asyncio.to_thread(self._call, "report the job status", self._client().get_job_info, job_id)
        while info.driver_node_id is None and info.status == "PENDING":
            await asyncio.sleep(0.2)  # the driver's node is known once Ray has started it
            info = await asyncio.to_thread(self._call, "report the job status", self._client().get_job_info, job_id)
        if info.driver_node_id:
            try:
                async for text in self._follow_log(job_id, info.driver_node_id):
                    yield text
                return
            except _NoLogApi:
                pass
        async for chunk in self._client().tail_job_logs(job_id):
            yield chunk

    async def _follow_log(self, job_id: str, node_id: str) -> AsyncIterator[str]:
        import aiohttp  # ray[default] brings it; the job SDK uses it too

        params = {"submission_id": job_id, "node_id": node_id, "lines": "-1", "interval": "0.1"}
        decode = codecs.getincrementaldecoder("utf-8")("replace")  # a chunk may end mid-character
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self._timeout)
        async with aiohttp.ClientSession(headers=self._headers, timeout=timeout) as session:
            async with session.get(f"{self.address}/api/v0/logs/stream", params=params) as response:
                if response.status != 200:
                    raise _NoLogApi(response.status)
                async for chunk in response.content.iter_any():
                    yield decode.decode(chunk)


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) < 300 else text[:297] + "..."
