"""Constants and helpers shared by the job service tests (imported by name: tests/service is on sys.path)."""

from raysft.service.limits import Limits
from raysft.service.states import JobState
from raysft.service.store import JobRecord, NewEvent

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
