"""Runs jobs as Ray Jobs through the Ray Jobs API (the dashboard's HTTP endpoint).

The server builds every entrypoint itself: `raysft train job_spec.yaml` (or `raysft tune`) with the
validated spec uploaded as the job's working_dir, so `ray job list` / `ray job logs` show raysft jobs
and clients never send commands or runtime environments. The Ray submission id is the job id for a job's
first attempt and `<job id>-a<N>` for attempt N > 1 (`ray_submission_id`, the one place that names them), which
runs `raysft train job_spec.yaml --continue-run --from-step N`: the run in its output_dir goes on from its latest
checkpoint.

Ray clusters with token authentication (the default for a new local cluster) get the token as a bearer
header: RAY_AUTH_TOKEN, else the file RAY_AUTH_TOKEN_PATH, else ~/.ray/auth_token when present.
"""

from __future__ import annotations

import asyncio
import codecs
import json
import sys
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator, Optional

import yaml

from raysft.local_ray import ray_auth_token
from raysft.service.jobs.errors import Unavailable
from raysft.train.runlog import EVENT_KEY_ENV

__all__ = ["RayJobsRunner", "RayJobInfo", "JobVanished", "SubmitRejected", "ray_submission_id"]

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


def ray_submission_id(job_id: str, attempt: int) -> str:
    """The Ray submission id of a job's attempt: the job id, then `<job id>-a2`, `-a3`, ... (Ray never reuses one)."""
    return job_id if attempt <= 1 else f"{job_id}-a{attempt}"


class RayJobsRunner:
    """Submits, inspects, stops and reads the logs of Ray Jobs on the cluster at `address`.

    `submit` takes a job id and its attempt; every other method the Ray submission id of one attempt.

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

    def _request(self, what: str, method: str, path: str) -> bytes:
        """One call of the Ray Jobs REST API; its body. The HTTP status decides: 404 is JobVanished (never the
        text of an error, which a job's own message could hold), anything else but 2xx Unavailable."""
        request = urllib.request.Request(f"{self.address}{path}", method=method, headers=self._headers)
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as response:
                return response.read()
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                raise JobVanished(f"Ray has no job at {path} (HTTP 404)") from None
            raise Unavailable(f"Ray could not {what}: HTTP {exc.code} {_short(exc.read(300).decode(errors='replace'))}") from None
        except (OSError, urllib.error.URLError) as exc:
            raise Unavailable(f"Ray could not {what}: {_short(exc)}") from None

    def _job(self, job_id: str) -> dict:
        body = self._request("report the job status", "GET", f"/api/jobs/{urllib.parse.quote(job_id, safe='')}")
        try:
            return json.loads(body)
        except ValueError:
            raise Unavailable(f"Ray answered the status of job {job_id} with something other than JSON") from None

    # ------------------------------------------------------------------------------------- jobs

    def submit(self, job_id: str, kind: str, spec: dict, event_key: bytes, attempt: int = 1,
               from_step: Optional[int] = None, labels: dict | None = None) -> None:
        """Start `raysft <kind>` on the spec as attempt `attempt` of job `job_id` (the Ray job
        `ray_submission_id(job_id, attempt)`); an attempt already submitted is left as it is.

        `event_key` goes to the job in its runtime environment: rank 0 signs its event lines with it; the job id
        and `labels` too, which experiment trackers record as the run's tags (raysft.train.tracking). An attempt
        after the first continues the run from its latest checkpoint (train jobs only): the one at `from_step`
        (the latest the service saw saved) unless Ray Train recorded a later one.

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
            "RAY_COLOR_PREFIX": "0",  # worker lines in the log as printed, without colour codes around their prefix
            "RAYSFT_JOB_ID": job_id,
            "RAYSFT_JOB_LABELS": json.dumps(labels or {}),
        }
        if kind == "train":
            # Trials of a tune campaign each number their events from 1, so only train jobs stream them.
            env[EVENT_KEY_ENV] = event_key.hex()
        entrypoint = f"raysft {kind} {_SPEC_FILE}"
        if attempt > 1:
            entrypoint += " --continue-run" + (f" --from-step {int(from_step)}" if from_step is not None else "")
        with tempfile.TemporaryDirectory(prefix="raysft-job-") as tmp:
            # dict(): a job's StoredSpec is a dict subclass, which yaml's safe dumper refuses to represent.
            text = yaml.safe_dump(dict(spec), sort_keys=False, allow_unicode=True)
            (Path(tmp) / _SPEC_FILE).write_text(text, encoding="utf-8")
            try:
                client.submit_job(entrypoint=entrypoint, submission_id=ray_submission_id(job_id, attempt),
                                  runtime_env={"working_dir": tmp, "env_vars": env},
                                  metadata={"raysft_job_id": job_id, "raysft_kind": kind, "raysft_attempt": str(attempt)},
                                  **self._entrypoint)
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
        d = self._job(job_id)
        code = d.get("driver_exit_code")
        return RayJobInfo(str(d.get("status", "")), str(d.get("message") or ""), code if isinstance(code, int) else None)

    def stop(self, job_id: str) -> None:
        """Ask Ray to stop the job (SIGTERM, then SIGKILL after its grace period). Raises JobVanished or Unavailable."""
        self._request("stop the job", "POST", f"/api/jobs/{urllib.parse.quote(job_id, safe='')}/stop")

    def delete(self, job_id: str) -> None:
        """Forget a terminal Ray job (its log files stay on the cluster). Raises JobVanished or Unavailable."""
        self._request("delete the job", "DELETE", f"/api/jobs/{urllib.parse.quote(job_id, safe='')}")

    def logs(self, job_id: str) -> str:
        """The whole driver log of the job. Raises JobVanished or Unavailable."""
        body = self._request("return the job logs", "GET", f"/api/jobs/{urllib.parse.quote(job_id, safe='')}/logs")
        try:
            return str(json.loads(body).get("logs", ""))
        except (ValueError, AttributeError):
            raise Unavailable(f"Ray answered the logs of job {job_id} with something other than JSON") from None

    async def tail(self, job_id: str, lines: int = -1) -> AsyncIterator[str]:
        """Log text as the job writes it, from the beginning (or its last `lines` lines), until cancelled.

        Follows the driver's log file through the dashboard's log API, which polls it every 0.1 s (new
        lines arrive within ~0.1 s wherever the cluster runs); where that API is unavailable, Ray's job-log
        websocket, which polls once a second.
        """
        info = await asyncio.to_thread(self._job, job_id)
        while info.get("driver_node_id") is None and info.get("status") == "PENDING":
            await asyncio.sleep(0.2)  # the driver's node is known once Ray has started it
            info = await asyncio.to_thread(self._job, job_id)
        if info.get("driver_node_id"):
            try:
                async for text in self._follow_log(job_id, info["driver_node_id"], lines):
                    yield text
                return
            except _NoLogApi:
                pass
        async for chunk in self._client().tail_job_logs(job_id):
            yield chunk

    async def _follow_log(self, job_id: str, node_id: str, lines: int) -> AsyncIterator[str]:
        import aiohttp  # ray[default] brings it; the job SDK uses it too

        params = {"submission_id": job_id, "node_id": node_id, "lines": str(lines), "interval": "0.1"}
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
