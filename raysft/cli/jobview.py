"""How `raysft jobs` shows what a server sends: a Job as text or JSON, its progress bar, times and names.

Everything a job or a server wrote goes through `safe` before it reaches the terminal.
"""

from __future__ import annotations

import datetime as dt
import json

from raysft.cli.terminal import safe

__all__ = ["kind_name", "message_dict", "print_job", "progress_bar", "state_name", "when"]


def progress_bar(p) -> str:
    """A Job's progress on one line: `[####....] step 3/8 | epoch 0.38 | loss 1.2345 | eval ... | ETA ...`."""
    frac = p.step / p.total_steps if p.total_steps else 0.0
    filled = int(frac * 24)
    parts = [f"[{'#' * filled}{'.' * (24 - filled)}] step {p.step}/{p.total_steps}", f"epoch {p.epoch:.2f}",
             f"loss {p.train_loss:.4f}"]
    if p.HasField("eval_loss"):
        parts.append(f"eval {p.eval_loss:.4f}")
    if p.HasField("eta"):
        parts.append(f"ETA {dt.timedelta(seconds=p.eta.seconds)}")
    return " | ".join(parts)


def state_name(job) -> str:
    from raysft.service.v1 import jobs_pb2

    return jobs_pb2.JobState.Name(job.state)


def kind_name(job) -> str:
    from raysft.service.v1 import jobs_pb2

    return jobs_pb2.JobKind.Name(job.kind)


def when(stamp) -> str:
    """A Timestamp in local time, `-` when unset."""
    if not stamp.seconds and not stamp.nanos:
        return "-"
    return stamp.ToDatetime(dt.timezone.utc).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def message_dict(msg) -> dict:
    """A message as JSON data; a number JSON cannot hold (NaN, infinity, in a Struct) becomes null."""
    from google.protobuf import json_format

    try:
        return json_format.MessageToDict(msg, preserving_proto_field_name=True)
    except (ValueError, json_format.SerializeToJsonError):  # it refuses non-finite Struct numbers
        copy = type(msg)()
        copy.CopyFrom(msg)
        _null_non_finite(copy)
        return json_format.MessageToDict(copy, preserving_proto_field_name=True)


def _null_non_finite(msg) -> None:
    import math

    if msg.DESCRIPTOR.full_name == "google.protobuf.Value" and msg.WhichOneof("kind") == "number_value" \
            and not math.isfinite(msg.number_value):
        msg.null_value = 0
        return
    for field, value in msg.ListFields():
        if field.message_type is None:
            continue
        if field.message_type.GetOptions().map_entry:
            items = value.values() if field.message_type.fields_by_name["value"].message_type else ()
        else:
            items = value if field.is_repeated else [value]
        for item in items:
            _null_non_finite(item)


def print_job(job, as_json: bool, brief: bool = False) -> None:
    """Print a Job: indented JSON, or its state line (error, adapter) and, unless brief, its details."""
    if as_json:
        print(json.dumps(message_dict(job), indent=2, allow_nan=False))
        return
    state = state_name(job)
    if state == "JOB_STATE_UNSPECIFIED":  # validate-only
        print("valid" + "".join(f"\nwarning: {safe(w.field)}: {safe(w.message)}" for w in job.warnings))
        return
    print(f"{safe(job.id)}  {state}" + (f" (queue position {job.queue_position})" if job.queue_position else "")
          + (f": {safe(job.state_reason)}" if job.state_reason else ""))
    if job.error.code:
        from raysft.service.v1 import jobs_pb2

        kind = f" ({jobs_pb2.ErrorKind.Name(job.error_kind)})" if job.error_kind else ""
        print(f"  error{kind}: {safe(job.error.message)}")
    if job.output.adapter_uri and state == "SUCCEEDED":
        print(f"  adapter: {safe(job.output.adapter_uri)}")
    if brief:
        return
    p = job.progress
    print(f"  kind: {kind_name(job)}   priority: {job.priority}   "
          f"attempt: {job.attempt} of {max(job.max_attempts, job.attempt)}   "
          f"created: {when(job.create_time)}   started: {when(job.start_time)}   ended: {when(job.end_time)}")
    if job.tenant and job.tenant != "default":  # the only tenant without --tenants: not worth a line
        print(f"  tenant: {safe(job.tenant)}")
    if p.total_steps:
        print(f"  progress: {progress_bar(p)}")
    print(f"  output_dir: {safe(job.output.output_dir) or '-'}")
    for w in job.warnings:
        print(f"  warning: {safe(w.field)}: {safe(w.message)}")
    if job.labels:
        print("  labels: " + safe(", ".join(f"{k}={v}" for k, v in sorted(job.labels.items()))))
