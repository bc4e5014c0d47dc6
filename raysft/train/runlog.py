"""What rank 0 writes while training: metrics.jsonl, events.jsonl, samples.jsonl and console progress.

Files are appended line by line and flushed, so a watcher (`tail -f`) sees each line as it happens. On a
multi-node cluster output_dir must be shared storage (as Ray's storage_path is).

With RAYSFT_EVENT_KEY set (hex; the job service gives each job its own), every event is also printed as one
line `::raysft-event:: <mac> {json}`, where <mac> is an HMAC-SHA256 of the JSON under that key. Ray forwards
worker output into the Ray job's logs, so a watcher that can reach the cluster but not its disks (the gRPC
service) reads events from `ray job logs`; the MAC is what tells an event from any other text the job prints
(an error message quoting a spec value, a data line): without the key no such text can pass for an event.
Each event carries `seq`, increasing within a run (it continues after a resume), so a reader can drop the
duplicates that re-reading logs produces.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import hmac
import json
import os
import time
from pathlib import Path

from raysft.rundir import RunDir

__all__ = ["EVENT_PREFIX", "EVENT_KEY_ENV", "RunLog", "read_jsonl", "event_mac", "event_line"]

EVENT_PREFIX = "::raysft-event:: "
EVENT_KEY_ENV = "RAYSFT_EVENT_KEY"


def event_mac(key: bytes, payload: str) -> str:
    """The MAC an event line carries: HMAC-SHA256 of its JSON `payload` under the job's event key, 32 hex digits."""
    return hmac.new(key, payload.encode("utf-8"), hashlib.sha256).hexdigest()[:32]


def event_line(key: bytes, record: dict) -> str:
    """One signed event line, `::raysft-event:: <mac> {json}` (the JSON on one line: no raw newlines survive dumps)."""
    payload = json.dumps(record, ensure_ascii=False)
    return f"{EVENT_PREFIX}{event_mac(key, payload)} {payload}"


def read_jsonl(path: Path) -> list[dict]:
    """Every JSON line of `path` ([] when it does not exist)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


class RunLog:
    """Rank 0's run records; every method is a no-op on other ranks."""

    def __init__(self, output_dir: Path, enabled: bool, tracker=None):
        self.run, self.enabled = RunDir(output_dir), enabled
        self.tracker = tracker if enabled else None  # a raysft.train.tracking.Tracker: metrics also go there
        self.last_train_loss: float | None = None
        self._started = time.time()
        self._seq = 0
        if enabled:
            output_dir.mkdir(parents=True, exist_ok=True)
            self._seq = len(read_jsonl(self.run.events_file))

    @staticmethod
    def _append(path: Path, record: dict) -> None:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")

    def event(self, level: str, type_: str, message: str, data: dict | None = None) -> None:
        """One event for watchers: {time, level, type, message, data}."""
        if self.enabled:
            self._seq += 1
            now = _dt.datetime.now(_dt.timezone.utc).isoformat()
            record = {"seq": self._seq, "time": now, "level": level, "type": type_, "message": message, "data": data or {}}
            self._append(self.run.events_file, record)
            key = os.environ.get(EVENT_KEY_ENV)
            if key:
                print(event_line(bytes.fromhex(key), record), flush=True)

    def resumed(self, step: int) -> None:
        """Drop metric lines past `step`: those steps are re-run from the checkpoint, so none appears twice."""
        if not self.enabled:
            return
        path = self.run.metrics_file
        kept = [r for r in read_jsonl(path) if r["step"] <= step]
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in kept), encoding="utf-8")
        self.event("warning", "resumed", f"resumed from the checkpoint at step {step}", {"step": step})
        print(f"[raysft] resumed from the checkpoint at step {step}", flush=True)

    def step(self, metrics: dict, total_steps: int) -> None:
        """A training-step metrics line, an event, and a console progress line."""
        self.last_train_loss = metrics["train_loss"]
        if not self.enabled:
            return
        self._append(self.run.metrics_file, metrics)
        if self.tracker:
            self.tracker.log("train", metrics)
        self.event("info", "metrics", f"step {metrics['step']}", metrics)
        done = metrics["step"] / total_steps
        elapsed = time.time() - self._started
        eta = elapsed / done * (1 - done) if done else 0
        print(f"[raysft] step {metrics['step']}/{total_steps} | epoch {metrics['epoch']:.2f} | loss {metrics['train_loss']:.4f} "
              f"| lr {metrics['lr']:.2e} | {metrics['tokens_per_s']:,.0f} tok/s | ETA {_dt.timedelta(seconds=round(eta))}", flush=True)

    def eval(self, metrics: dict) -> None:
        """An evaluation metrics line and event."""
        if not self.enabled:
            return
        self._append(self.run.metrics_file, metrics)
        if self.tracker:
            self.tracker.log("eval", metrics)
        self.event("info", "eval", f"eval at step {metrics['step']}", metrics)
        shown = " | ".join(f"{k} {v:.4f}" for k, v in metrics.items() if k.startswith(("eval_", "exact")) and isinstance(v, float))
        print(f"[raysft] eval at step {metrics['step']}: {shown}", flush=True)

    def warning(self, field: str, message: str, data: dict | None = None) -> None:
        """A console warning and a `warning` event, shaped like the service's spec advisories ({"field": ...})."""
        self.event("warning", "warning", f"{field}: {message}", {"field": field, **(data or {})})
        if self.enabled:
            print(f"[raysft] warning: {field}: {message}", flush=True)

    def early_stop(self, step: int, key: str, state, train_loss: float | None) -> None:
        """Say why training stops early (overfitting when train loss still falls); `state` a `TrainerState`."""
        msg = (f"early stop at step {step}: {key} has not improved for {state.bad_evals} evaluation(s); "
               f"best {state.best:.4f} at step {state.best_step}")
        self.event("warning", "early_stop", msg, {"step": step, "best": state.best, "best_step": state.best_step,
                                                  "train_loss": train_loss})
        if self.enabled:
            print(f"[raysft] {msg}", flush=True)

    def samples(self, step: int, samples: list[dict]) -> None:
        """Prompt / reference / generation triples for a person to read (latest evaluation wins)."""
        if self.enabled and samples:
            lines = "".join(json.dumps({"step": step, **s}, ensure_ascii=False) + "\n" for s in samples)
            self.run.samples_file.write_text(lines, encoding="utf-8")
