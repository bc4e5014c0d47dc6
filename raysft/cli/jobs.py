"""`raysft jobs ...`: the job service's client commands.

    raysft jobs submit SPEC [overrides] [--request-id ID] [--label k=v] [--max-attempts N] [--notify URL] [--wait] [--json]
    raysft jobs get|cancel|resume|delete|watch|checkpoints ID,  raysft jobs list,  raysft jobs logs ID [--follow]

Server, token and CA come from --server / --token-file / --tls-ca or RAYSFT_SERVER / RAYSFT_TOKEN /
RAYSFT_TLS_CA; without --token-file or RAYSFT_TOKEN, the token file `raysft serve` created (RAYSFT_TOKEN_FILE or
~/.raysft/token) when there is one. Exit codes: 0 ok; 1 the job ended FAILED or CANCELLED (submit --wait, watch);
2 bad input or an RPC error, printed to stderr with its status code name and field violations; 130 interrupted
(`raysft.cli.exits.CLIENT`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Optional

from raysft.cli.exits import CLIENT, UsageError
from raysft.cli.jobview import kind_name, message_dict, print_job, progress_bar, state_name, when
from raysft.cli.serve import default_token_file
from raysft.cli.terminal import safe

__all__ = ["register", "cmd_jobs"]

_STATES = ("QUEUED", "STARTING", "RUNNING", "CANCELLING", "SUCCEEDED", "FAILED", "CANCELLED")


def register(sub) -> None:
    """Register `jobs <action> ...` (func=cmd_jobs) on the `raysft` subparsers."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--server", help="host:port of the job service (default: RAYSFT_SERVER or 127.0.0.1:50051)")
    common.add_argument("--token-file", help="file holding the bearer token (default: RAYSFT_TOKEN, else the "
                                                      "file `raysft serve` created: RAYSFT_TOKEN_FILE or ~/.raysft/token)")
    common.add_argument("--tls-ca", help="PEM CA certificate of the server; switches to TLS (default: RAYSFT_TLS_CA)")
    common.add_argument("--allow-plaintext-token", action="store_true",
                        help="send the token without TLS to a server off this machine (refused otherwise)")
    common.add_argument("--json", action="store_true", help="print JSON (the Job, or one event per line)")
    jobs = sub.add_parser("jobs", help="submit, watch and cancel jobs on a raysft job service")
    actions = jobs.add_subparsers(dest="action", required=True)

    sp = actions.add_parser("submit", parents=[common], help="submit a spec as a job")
    sp.add_argument("spec", help="YAML job spec")
    sp.add_argument("overrides", nargs="*", help="key.path=value overrides")
    sp.add_argument("--request-id", help="idempotency key: resubmitting with it returns the same job (default: one derived "
                                         "from the spec, kind and labels, so running the same command again never "
                                         "stores a second job)")
    sp.add_argument("--new", action="store_true", help="a fresh request id: run the same spec and labels once more")
    sp.add_argument("--label", action="append", default=[], metavar="KEY=VALUE")
    sp.add_argument("--kind", choices=["train", "tune"], help="default: tune when the spec has a tune section")
    sp.add_argument("--validate-only", action="store_true", help="check the spec on the server; run nothing")
    sp.add_argument("--max-attempts", type=int, default=1, metavar="N",
                    help="attempts in all (1 - 10) when a train job fails for a SYSTEM reason (its Ray job vanished, "
                         "a node died): each retry resumes from the latest checkpoint (default: 1, no retry)")
    sp.add_argument("--notify", action="append", default=[], metavar="URL",
                    help="POST a signed notice of each state change here (repeatable; under the server's "
                         "--webhook-allow-prefix values)")
    sp.add_argument("--priority", type=int, metavar="N", help="0 - 9: higher leaves the server's queue first (default: 5)")
    sp.add_argument("--wait", action="store_true", help="watch the job until it ends")
    for action, text in (("get", "show a job"), ("cancel", "cancel a job"),
                         ("resume", "continue a FAILED or CANCELLED job from its latest checkpoint (its next attempt)"),
                         ("delete", "delete a finished job's record"),
                         ("watch", "follow a job's events until it ends"), ("checkpoints", "list a job's kept checkpoints")):
        sp = actions.add_parser(action, parents=[common], help=text)
        sp.add_argument("job_id")
        if action == "watch":
            sp.add_argument("--after-sequence", type=int, default=0, help="resume after this event")
    sp = actions.add_parser("list", parents=[common], help="list jobs, newest first")
    sp.add_argument("--state", action="append", default=[], choices=_STATES)
    sp.add_argument("--label", action="append", default=[], metavar="KEY=VALUE")
    sp.add_argument("--limit", type=int, default=50)
    sp = actions.add_parser("logs", parents=[common], help="print a job's Ray driver log")
    sp.add_argument("job_id")
    sp.add_argument("--follow", "-f", action="store_true")
    sp.add_argument("--tail", type=int, default=0, metavar="N", help="only the last N lines")
    jobs.set_defaults(func=cmd_jobs, exits=CLIENT)


def cmd_jobs(args: argparse.Namespace) -> int:
    """Run one `raysft jobs` action; returns the exit code."""
    from raysft.service.client import JobClient

    token = _client_token(args.token_file)
    labels = _labels(getattr(args, "label", []))
    with JobClient(args.server, token=token, tls_ca=args.tls_ca or os.environ.get("RAYSFT_TLS_CA"),
                   allow_plaintext_token=args.allow_plaintext_token) as client:
        return _ACTIONS[args.action](client, args, labels)


def _client_token(token_file: Optional[str]) -> Optional[str]:
    """--token-file's token, else RAYSFT_TOKEN (None: the client reads it), else the default token file's, if any."""
    if token_file:
        return Path(token_file).read_text().strip()
    if os.environ.get("RAYSFT_TOKEN"):
        return None
    path = default_token_file()
    return path.read_text().strip() if path.is_file() else None


def _labels(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"--label {item!r}: write KEY=VALUE")
        out[key] = value
    return out


# ---------------------------------------------------------------------------------------- actions


def _submit(client, args, labels) -> int:
    import time
    import uuid

    from raysft.service.client import content_request_id, spec_message

    message = spec_message(args.spec, tuple(args.overrides))
    notify = tuple(args.notify)
    request_id = args.request_id or (str(uuid.uuid4()) if args.new else content_request_id(message, args.kind, labels,
                                                                                                    args.max_attempts, notify,
                                                                                                    args.priority))
    asked = time.time()
    job = client.create_job(message, kind=args.kind, request_id=request_id, validate_only=args.validate_only, labels=labels,
                            max_attempts=args.max_attempts, notify_urls=notify, priority=args.priority)
    if args.validate_only:
        print_job(job, args.json, brief=True)
        return 0
    if not args.json:
        again = job.create_time.seconds and job.create_time.seconds < asked - 5  # stored by an earlier run
        print(f"{'already submitted as' if again else 'submitted'} {job.id} ({state_name(job)})"
              + (" — pass --new to run it once more" if again else "")
              + "".join(f"\nwarning: {safe(w.field)}: {safe(w.message)}" for w in job.warnings))
    if not args.wait:
        if args.json:
            print_job(job, True)
        return 0
    return _follow(client, job.id, 0, args.json)


def _get(client, args, _labels) -> int:
    print_job(client.get_job(args.job_id), args.json)
    return 0


def _cancel(client, args, _labels) -> int:
    print_job(client.cancel_job(args.job_id), args.json, brief=True)
    return 0


def _resume(client, args, _labels) -> int:
    print_job(client.resume_job(args.job_id), args.json, brief=True)
    return 0


def _delete(client, args, _labels) -> int:
    client.delete_job(args.job_id)
    print(json.dumps({"deleted": args.job_id}) if args.json else f"deleted {args.job_id}")
    return 0


def _list(client, args, labels) -> int:
    from raysft.service.v1 import jobs_pb2

    states = tuple(jobs_pb2.JobState.Value(s) for s in args.state)
    jobs = []
    for job in client.list_jobs(states=states, labels=labels, page_size=min(args.limit, 1000)):
        jobs.append(job)
        if len(jobs) >= args.limit:
            break
    if args.json:
        print(json.dumps([message_dict(j) for j in jobs], indent=2, allow_nan=False))
        return 0
    print(f"{'ID':<20} {'STATE':<11} {'QUEUE':>5} {'KIND':<6} {'STEP':>11}  {'CREATED':<20} LABELS")
    for j in jobs:
        step = f"{j.progress.step}/{j.progress.total_steps}" if j.progress.total_steps else "-"
        labels_text = safe(",".join(f"{k}={v}" for k, v in sorted(j.labels.items())))
        queue = str(j.queue_position) if j.queue_position else "-"
        print(f"{safe(j.id):<20} {state_name(j):<11} {queue:>5} {kind_name(j):<6} {step:>11}  {when(j.create_time):<20} "
              f"{labels_text}")
    return 0


def _watch(client, args, _labels) -> int:
    return _follow(client, args.job_id, args.after_sequence, args.json)


def _logs(client, args, _labels) -> int:
    for text in client.logs(args.job_id, tail_lines=args.tail, follow=args.follow):
        sys.stdout.write(safe(text, keep_lines=True))
        sys.stdout.flush()
    return 0


def _checkpoints(client, args, _labels) -> int:
    kept = client.checkpoints(args.job_id)
    if args.json:
        print(json.dumps([message_dict(c) for c in kept], indent=2, allow_nan=False))
        return 0
    print(f"{'STEP':>6}  {'BEST':<4}  {'METRICS':<40}  URI")
    for c in kept:
        metrics = " ".join(f"{k} {v:.4g}" for k, v in sorted(c.metrics.items()) if isinstance(v, float))
        print(f"{c.step:>6}  {'*' if c.is_best else '':<4}  {safe(metrics):<40}  {safe(c.uri)}")
    return 0


_ACTIONS = {"submit": _submit, "get": _get, "cancel": _cancel, "resume": _resume, "delete": _delete, "list": _list, "watch": _watch,
            "logs": _logs, "checkpoints": _checkpoints}


def _follow(client, job_id: str, after: int, as_json: bool) -> int:
    """Print events as they come (a live progress bar on a terminal), then the final state; 1 unless SUCCEEDED."""
    bar = sys.stderr.isatty() and not as_json
    for event in client.watch(job_id, after_sequence=after):
        if as_json:
            print(json.dumps(message_dict(event), allow_nan=False), flush=True)
        elif bar and event.type == "metrics":
            sys.stderr.write("\r" + progress_bar(client.get_job(job_id).progress))
            sys.stderr.flush()
        else:
            if bar:
                sys.stderr.write("\r\033[K")
            print(f"{when(event.time)}  {safe(event.type):<17} {safe(event.message)}", flush=True)
    if bar:
        sys.stderr.write("\r\033[K")
    job = client.get_job(job_id)
    if as_json:  # the final Job as one more JSON line after the events
        print(json.dumps(message_dict(job), allow_nan=False))
    else:
        print_job(job, False, brief=True)
    return 0 if state_name(job) == "SUCCEEDED" else 1
