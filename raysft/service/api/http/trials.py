"""A tune job's trials for the console: the campaign summary's table and each trial's metric curve.

Curves come from `<output_dir>/trials/<trial>/metrics.jsonl`, read while the campaign runs (the server shares
the jobs' filesystem when it runs the embedded cluster; on a remote cluster only the summary's rows appear once
the job ends). The job's output_dir was resolved and confined by the server, but a job writes inside it, so
nothing there is trusted: links are not followed, names are checked, and every read is bounded.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from raysft.rundir import RunDir
from raysft.service.jobs.store import JobRecord

__all__ = ["read_trials", "MAX_TRIALS", "MAX_POINTS"]

MAX_TRIALS = 256
MAX_POINTS = 2000  # curve points per trial (the last ones)
_MAX_READ = 1 << 20  # bytes of one metrics.jsonl read (its end)
_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
_KEYS = ("step", "epoch", "train_loss", "eval_loss", "lr", "tokens_per_s")


def read_trials(job: JobRecord) -> list[dict[str, Any]]:
    """Rows {id, status, config, eval_loss, best_step, rank, curve} of a tune job ([] for a train job)."""
    if job.kind != "tune":
        return []
    rows: dict[str, dict] = {}
    for t in ((job.output.get("summary") or {}).get("trials") or [])[:MAX_TRIALS]:
        if isinstance(t, dict) and isinstance(t.get("id"), str) and _NAME.fullmatch(t["id"]):
            rows[t["id"]] = {"id": t["id"], "status": str(t.get("status") or ""), "config": _dict(t.get("config")),
                             "eval_loss": _number(t.get("eval_loss")), "best_step": _int(t.get("best_step")),
                             "rank": _int(t.get("rank")), "curve": []}
    trials_dir = RunDir(job.spec.get("output_dir") or "").trials
    if job.spec.get("output_dir") and trials_dir.is_dir() and not trials_dir.is_symlink():
        with os.scandir(trials_dir) as entries:
            names = sorted(e.name for e in entries if _NAME.fullmatch(e.name) and e.is_dir(follow_symlinks=False))
        for name in names[:MAX_TRIALS]:
            row = rows.setdefault(name, {"id": name, "status": "RUNNING", "config": {}, "eval_loss": None,
                                         "best_step": None, "rank": None, "curve": []})
            row["curve"] = _curve(RunDir(trials_dir / name).metrics_file)
    return sorted(rows.values(), key=lambda r: (r["rank"] is None, r["rank"] or 0, r["id"]))


def _curve(path: Path) -> list[dict]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return []
    with os.fdopen(fd, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        f.seek(max(0, size - _MAX_READ))
        text = f.read(_MAX_READ).decode("utf-8", "replace")
    points = []
    for line in text.splitlines()[-MAX_POINTS:]:
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a cut first line, or one still being written
        if isinstance(record, dict) and _int(record.get("step")) is not None:
            points.append({k: _number(record.get(k)) for k in _KEYS if _number(record.get(k)) is not None})
    return points


def _number(value: Any):
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value == value and abs(value) < 1e300
    return value if ok else None


def _int(value: Any):
    return value if isinstance(value, int) and not isinstance(value, bool) and abs(value) < 2**53 else None


def _dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}
