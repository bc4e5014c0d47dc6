"""Constants and helpers shared by the job service tests (imported by name: tests/service is on sys.path)."""

import json
import urllib.error
import urllib.request

from raysft.service.jobs.limits import Limits
from raysft.service.jobs.states import JobState
from raysft.service.jobs.store import JobRecord, NewEvent

TOKEN = "test-token-0123456789"
AUTH = (("authorization", f"Bearer {TOKEN}"),)
NO_RAY = "http://127.0.0.1:1"  # connection refused at once
HOLD = Limits(max_running_jobs=0)  # the admission queue admits nothing: QUEUED jobs stay so on a server without Ray


def put_job(server, job_id: str, state: JobState, *, spec: dict | None = None, events: int = 1, **fields) -> JobRecord:
    """Store a job directly (as if it had come that far), with `events` state events."""
    spec = spec or {"model": {"name_or_path": "m"}, "data": {"train": [{"path": "/x.jsonl"}]}, "output_dir": f"/runs/{job_id}"}
    record = JobRecord(id=job_id, kind="train", spec=spec, state=state, **fields)
    stored, _ = server.store.create_job(record, [NewEvent("info", "state_changed", f"event {i}", {"i": i}) for i in range(events)])
    return stored


def http_call(port: int, path: str, method: str = "GET", token: str = TOKEN, body=None, timeout_s: float = 30):
    """(status, JSON body or text) of an HTTP API call on 127.0.0.1:`port` with bearer `token`."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as r:
            text = r.read().decode()
            return r.status, json.loads(text) if r.headers.get("content-type", "").startswith("application/json") else text
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")
