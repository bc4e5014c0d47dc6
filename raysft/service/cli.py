"""`raysft serve` and `raysft jobs ...`: parsers and handlers for the `raysft` CLI to register.

    raysft serve [--host H] [--port P] [--db URL] [--token-file F | --insecure-no-auth] [--tenants FILE]
                 [--tls-cert C --tls-key K]
                 [--ray-address A] [--allowed-root DIR] [--allowed-storage URI] [--max-workers N] [--max-active-jobs N]
                 [--webhook URL] [--webhook-allow-prefix URL --webhook-secret-file F] ...
    raysft jobs submit SPEC [overrides] [--request-id ID] [--label k=v] [--max-attempts N] [--notify URL] [--wait] [--json]
    raysft jobs get|cancel|resume|delete|watch|checkpoints ID,  raysft jobs list,  raysft jobs logs ID [--follow]
    raysft tenants hash-token < token-file      (the sha256 line a tenants file holds for that token)

Server, token and CA come from --server / --token-file / --tls-ca or RAYSFT_SERVER / RAYSFT_TOKEN /
RAYSFT_TLS_CA. Without --token-file, `raysft serve` uses (creating it, mode 0600) the token file RAYSFT_TOKEN_FILE
or ~/.raysft/token, and `raysft jobs` reads the same file when neither --token-file nor RAYSFT_TOKEN is given;
with --tenants the tenants file's tokens are the credentials, and only a --token-file named too adds an admin's.
Exit codes: 0 ok; 1 the job ended FAILED or CANCELLED (submit --wait, watch); 2 bad input
or an RPC error, printed to stderr with its status code name and field violations.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import secrets
import sys
from pathlib import Path
from typing import Optional

__all__ = ["add_serve_parser", "add_jobs_parser", "add_tenants_parser", "cmd_serve", "cmd_jobs", "default_token_file"]

_STATES = ("QUEUED", "STARTING", "RUNNING", "CANCELLING", "SUCCEEDED", "FAILED", "CANCELLED")


# ------------------------------------------------------------------------------------------ serve


def add_serve_parser(subparsers) -> argparse.ArgumentParser:
    """Register `serve` (func=cmd_serve) on an argparse subparsers object."""
    p = subparsers.add_parser("serve", help="run the gRPC job service (jobs run as Ray Jobs)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind; anything but loopback needs --token-file or --tenants")
    p.add_argument("--port", type=int, default=50051)
    p.add_argument("--http-port", type=int, metavar="PORT", help="also serve the HTTP/JSON API, the web console and "
                                                                 "Prometheus /metrics on this port (needs raysft[http])")
    p.add_argument("--db", default="sqlite:///raysft-jobs.db", help="SQLAlchemy URL of the job store (default: %(default)s)")
    p.add_argument("--token-file", help="file holding the bearer token clients must send (default: RAYSFT_TOKEN_FILE or "
                                        "~/.raysft/token, created with a new token when missing)")
    p.add_argument("--tenants", metavar="FILE", help="tenants file: tenants, their token digests, roles (submitter | "
                                                     "viewer), roots and quotas, and admins; reloaded on SIGHUP and "
                                                     "when it changes (README: Tenants and roles)")
    p.add_argument("--insecure-no-auth", action="store_true",
                   help="loopback only: accept calls without a token (any local user can then run jobs as this user)")
    p.add_argument("--tls-cert", help="PEM certificate; with --tls-key the port speaks TLS")
    p.add_argument("--tls-key", help="PEM private key")
    p.add_argument("--ray-address", help="dashboard URL of the Ray cluster to run jobs on, e.g. http://head:8265 "
                                         "(default: start a local one)")
    p.add_argument("--allowed-root", action="append", metavar="DIR",
                   help="directory spec paths may point into (repeatable; default: the working directory)")
    p.add_argument("--jobs-root", metavar="DIR", help="where jobs without an output_dir write (default: <first root>/runs)")
    p.add_argument("--allowed-storage", action="append", default=[], metavar="URI",
                   help="remote URI prefix spec URIs may point under, e.g. s3://bucket/prefix (repeatable; default: none)")
    p.add_argument("--allow-remote-code", action="store_true", help="accept specs with model.trust_remote_code: true")
    p.add_argument("--max-workers", type=int, metavar="N", help="cap on scaling.num_workers per job")
    p.add_argument("--max-resources-per-worker", action="append", default=[], metavar="NAME=AMOUNT",
                   help="cap on scaling.resources_per_worker (repeatable, e.g. CPU=8 GPU=1); other resources are refused")
    p.add_argument("--max-trials", type=int, metavar="N", help="cap on the trials of one tune campaign")
    p.add_argument("--max-active-jobs", type=int, metavar="N", help="cap on jobs queued or running at once (more are "
                                                                    "refused: RESOURCE_EXHAUSTED)")
    p.add_argument("--max-running-jobs", type=int, metavar="N", help="cap on jobs on Ray at once; more wait QUEUED, "
                                                                     "by priority (0 holds them all; default: no cap)")
    p.add_argument("--ray-deadline-s", type=float, default=600.0, metavar="S",
                   help="a running job whose Ray stays unreachable this long fails (SYSTEM: retried when it has "
                        "attempts left; default: %(default)s)")
    p.add_argument("--driver-cpus", type=float, default=1.0, help="CPUs each job driver reserves on Ray (default: 1)")
    p.add_argument("--driver-memory-gb", type=float, help="memory each job driver reserves on Ray")
    p.add_argument("--webhook", action="append", default=[], metavar="URL",
                   help="POST a signed notice of every job's state changes here (repeatable)")
    p.add_argument("--webhook-allow-prefix", action="append", default=[], metavar="URL",
                   help="jobs' notify_urls may point under this scheme://host[:port][/path] (repeatable; none: nowhere)")
    p.add_argument("--webhook-secret-file", metavar="FILE",
                   help="file holding the key that signs webhooks (X-Raysft-Signature); needed with either flag above")
    p.set_defaults(func=cmd_serve)
    return p


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the server until SIGTERM / SIGINT."""
    import logging

    from raysft.service.jobs.limits import Limits, parse_resources
    from raysft.service.server import serve
    from raysft.service.jobs.webhooks import WebhookPolicy

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.max_running_jobs is not None and args.max_running_jobs < 0:
            raise ValueError(f"--max-running-jobs must be >= 0 (got {args.max_running_jobs})")
        token = _serve_token(args)
        limits = Limits(max_workers=args.max_workers, max_resources_per_worker=parse_resources(args.max_resources_per_worker),
                        max_trials=args.max_trials, max_active_jobs=args.max_active_jobs,
                        max_running_jobs=args.max_running_jobs, driver_cpus=args.driver_cpus,
                        driver_memory_bytes=int(args.driver_memory_gb * 2**30) if args.driver_memory_gb else None)
        webhooks = WebhookPolicy(tuple(args.webhook), tuple(args.webhook_allow_prefix), _webhook_secret(args.webhook_secret_file))
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    # Ray's job SDK prefers these variables over the address it is given: --ray-address decides here.
    for name in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS"):
        os.environ.pop(name, None)
    try:
        return serve(f"{args.host}:{args.port}", db_url=args.db, token=token, tls_cert=args.tls_cert, tls_key=args.tls_key,
                     ray_address=args.ray_address, allowed_roots=args.allowed_root, jobs_root=args.jobs_root,
                     allowed_storage=tuple(args.allowed_storage), limits=limits, allow_remote_code=args.allow_remote_code,
                     ray_deadline_s=args.ray_deadline_s, http_port=args.http_port, webhooks=webhooks,
                     tenants=args.tenants)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _webhook_secret(path: Optional[str]) -> Optional[bytes]:
    """--webhook-secret-file's key (read once, here). Raises ValueError for an empty file."""
    if not path:
        return None
    secret = Path(path).read_bytes().strip()
    if not secret:
        raise ValueError(f"webhook secret file {path} is empty; write a long random string to it")
    return secret


def default_token_file() -> Path:
    """The token file `raysft serve` creates and `raysft jobs` reads when none is named: RAYSFT_TOKEN_FILE or
    ~/.raysft/token."""
    return Path(os.environ.get("RAYSFT_TOKEN_FILE") or Path.home() / ".raysft" / "token").expanduser()


def _serve_token(args: argparse.Namespace) -> Optional[str]:
    """The server's token: --token-file's; none with --insecure-no-auth; else, on loopback, the default file's,
    created (0600, its path printed) when missing. Raises ValueError for an empty or unsafe file."""
    if args.insecure_no_auth:
        if args.token_file or args.tenants:
            raise ValueError(f"--insecure-no-auth and {'--token-file' if args.token_file else '--tenants'} contradict "
                             "each other; pass one")
        print("warning: --insecure-no-auth: any local user can submit jobs that run as this user", file=sys.stderr)
        return None
    from raysft.service.server import is_loopback

    if not args.token_file and (args.tenants or not is_loopback(args.host)):
        # With tenants, an admin token is the operator's choice; off loopback, create_server refuses without one.
        return None
    path = Path(args.token_file) if args.token_file else default_token_file()
    if not args.token_file and not path.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # O_EXCL: never write through a planted link
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32) + "\n")
        print(f"created token file {path} (mode 0600); `raysft jobs` on this machine reads it", flush=True)
    elif not args.token_file:
        info = path.stat()
        if info.st_uid != os.getuid() or info.st_mode & 0o077:  # someone else could know (or have planted) it
            raise ValueError(f"token file {path} belongs to another user or others can read it; `chmod 600 {path}` "
                             "if it is yours, or delete it for a new one")
        print(f"token file {path}", flush=True)
    token = path.read_text().strip() if path.is_file() else ""
    if not token:
        raise ValueError(f"token file {path} is missing or empty; write a long random string to it")
    return token


# ---------------------------------------------------------------------------------------- tenants


def add_tenants_parser(subparsers) -> argparse.ArgumentParser:
    """Register `tenants hash-token` on an argparse subparsers object."""
    p = subparsers.add_parser("tenants", help="tools for the tenants file of `raysft serve --tenants`")
    sub = p.add_subparsers(dest="action", required=True)
    hp = sub.add_parser("hash-token", help="print the sha256 of the token read from stdin (a new random token with "
                                           "--new: the token on stderr, its digest on stdout)")
    hp.add_argument("--new", action="store_true", help="make a new token instead of reading one")
    hp.set_defaults(func=cmd_hash_token)
    return p


def cmd_hash_token(args: argparse.Namespace) -> int:
    """Print the digest a tenants file holds for a token (the token itself never goes in the file)."""
    from raysft.service.jobs.tenants import hash_token

    if args.new:
        token = secrets.token_urlsafe(32)
        print(token, file=sys.stderr)
    else:
        token = sys.stdin.read().strip()
        if not token:
            print("error: no token on stdin; pipe it in: raysft tenants hash-token < token-file", file=sys.stderr)
            return 2
    print(hash_token(token))
    return 0


# ------------------------------------------------------------------------------------------- jobs


def add_jobs_parser(subparsers) -> argparse.ArgumentParser:
    """Register `jobs <action> ...` (func=cmd_jobs) on an argparse subparsers object."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--server", help="host:port of the job service (default: RAYSFT_SERVER or 127.0.0.1:50051)")
    common.add_argument("--token-file", help="file holding the bearer token (default: RAYSFT_TOKEN, else the "
                                                      "file `raysft serve` created: RAYSFT_TOKEN_FILE or ~/.raysft/token)")
    common.add_argument("--tls-ca", help="PEM CA certificate of the server; switches to TLS (default: RAYSFT_TLS_CA)")
    common.add_argument("--allow-plaintext-token", action="store_true",
                        help="send the token without TLS to a server off this machine (refused otherwise)")
    common.add_argument("--json", action="store_true", help="print JSON (the Job, or one event per line)")
    jobs = subparsers.add_parser("jobs", help="submit, watch and cancel jobs on a raysft job service")
    sub = jobs.add_subparsers(dest="action", required=True)

    sp = sub.add_parser("submit", parents=[common], help="submit a spec as a job")
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
        sp = sub.add_parser(action, parents=[common], help=text)
        sp.add_argument("job_id")
        if action == "watch":
            sp.add_argument("--after-sequence", type=int, default=0, help="resume after this event")
    sp = sub.add_parser("list", parents=[common], help="list jobs, newest first")
    sp.add_argument("--state", action="append", default=[], choices=_STATES)
    sp.add_argument("--label", action="append", default=[], metavar="KEY=VALUE")
    sp.add_argument("--limit", type=int, default=50)
    sp = sub.add_parser("logs", parents=[common], help="print a job's Ray driver log")
    sp.add_argument("job_id")
    sp.add_argument("--follow", "-f", action="store_true")
    sp.add_argument("--tail", type=int, default=0, metavar="N", help="only the last N lines")
    jobs.set_defaults(func=cmd_jobs)
    return jobs


def cmd_jobs(args: argparse.Namespace) -> int:
    """Run one `raysft jobs` action; returns the exit code."""
    from raysft.config import SpecError
    from raysft.service.client import JobClient, JobServiceError

    try:
        token = _client_token(args.token_file)
        labels = _labels(getattr(args, "label", []))
        with JobClient(args.server, token=token, tls_ca=args.tls_ca or os.environ.get("RAYSFT_TLS_CA"),
                       allow_plaintext_token=args.allow_plaintext_token) as client:
            return _ACTIONS[args.action](client, args, labels)
    except JobServiceError as exc:
        print(f"error: {_safe(str(exc), keep_lines=True)}", file=sys.stderr)
        return 2
    except (SpecError, OSError, ValueError) as exc:
        print(f"error: {_safe(str(exc), keep_lines=True)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


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
            raise ValueError(f"--label {item!r}: write KEY=VALUE")
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
        _print_job(job, args.json, brief=True)
        return 0
    if not args.json:
        again = job.create_time.seconds and job.create_time.seconds < asked - 5  # stored by an earlier run
        print(f"{'already submitted as' if again else 'submitted'} {job.id} ({_state(job)})"
              + (" — pass --new to run it once more" if again else "")
              + "".join(f"\nwarning: {_safe(w.field)}: {_safe(w.message)}" for w in job.warnings))
    if not args.wait:
        if args.json:
            _print_job(job, True)
        return 0
    return _follow(client, job.id, 0, args.json)


def _get(client, args, _labels) -> int:
    _print_job(client.get_job(args.job_id), args.json)
    return 0


def _cancel(client, args, _labels) -> int:
    _print_job(client.cancel_job(args.job_id), args.json, brief=True)
    return 0


def _resume(client, args, _labels) -> int:
    _print_job(client.resume_job(args.job_id), args.json, brief=True)
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
        print(json.dumps([_job_dict(j) for j in jobs], indent=2, allow_nan=False))
        return 0
    print(f"{'ID':<20} {'STATE':<11} {'QUEUE':>5} {'KIND':<6} {'STEP':>11}  {'CREATED':<20} LABELS")
    for j in jobs:
        step = f"{j.progress.step}/{j.progress.total_steps}" if j.progress.total_steps else "-"
        labels_text = _safe(",".join(f"{k}={v}" for k, v in sorted(j.labels.items())))
        queue = str(j.queue_position) if j.queue_position else "-"
        print(f"{_safe(j.id):<20} {_state(j):<11} {queue:>5} {_kind(j):<6} {step:>11}  {_when(j.create_time):<20} "
              f"{labels_text}")
    return 0


def _watch(client, args, _labels) -> int:
    return _follow(client, args.job_id, args.after_sequence, args.json)


def _logs(client, args, _labels) -> int:
    for text in client.logs(args.job_id, tail_lines=args.tail, follow=args.follow):
        sys.stdout.write(_safe(text, keep_lines=True))
        sys.stdout.flush()
    return 0


def _checkpoints(client, args, _labels) -> int:
    kept = client.checkpoints(args.job_id)
    if args.json:
        print(json.dumps([_message_dict(c) for c in kept], indent=2, allow_nan=False))
        return 0
    print(f"{'STEP':>6}  {'BEST':<4}  {'METRICS':<40}  URI")
    for c in kept:
        metrics = " ".join(f"{k} {v:.4g}" for k, v in sorted(c.metrics.items()) if isinstance(v, float))
        print(f"{c.step:>6}  {'*' if c.is_best else '':<4}  {_safe(metrics):<40}  {_safe(c.uri)}")
    return 0


_ACTIONS = {"submit": _submit, "get": _get, "cancel": _cancel, "resume": _resume, "delete": _delete, "list": _list, "watch": _watch,
            "logs": _logs, "checkpoints": _checkpoints}


# ---------------------------------------------------------------------------------------- output


def _follow(client, job_id: str, after: int, as_json: bool) -> int:
    """Print events as they come (a live progress bar on a terminal), then the final state; 1 unless SUCCEEDED."""
    bar = sys.stderr.isatty() and not as_json
    for event in client.watch(job_id, after_sequence=after):
        if as_json:
            print(json.dumps(_message_dict(event), allow_nan=False), flush=True)
        elif bar and event.type == "metrics":
            sys.stderr.write("\r" + _bar(client.get_job(job_id).progress))
            sys.stderr.flush()
        else:
            if bar:
                sys.stderr.write("\r\033[K")
            print(f"{_when(event.time)}  {_safe(event.type):<17} {_safe(event.message)}", flush=True)
    if bar:
        sys.stderr.write("\r\033[K")
    job = client.get_job(job_id)
    if as_json:  # the final Job as one more JSON line after the events
        print(json.dumps(_job_dict(job), allow_nan=False))
    else:
        _print_job(job, False, brief=True)
    return 0 if _state(job) == "SUCCEEDED" else 1


def _bar(p) -> str:
    frac = p.step / p.total_steps if p.total_steps else 0.0
    filled = int(frac * 24)
    parts = [f"[{'#' * filled}{'.' * (24 - filled)}] step {p.step}/{p.total_steps}", f"epoch {p.epoch:.2f}",
             f"loss {p.train_loss:.4f}"]
    if p.HasField("eval_loss"):
        parts.append(f"eval {p.eval_loss:.4f}")
    if p.HasField("eta"):
        parts.append(f"ETA {dt.timedelta(seconds=p.eta.seconds)}")
    return " | ".join(parts)


def _state(job) -> str:
    from raysft.service.v1 import jobs_pb2

    return jobs_pb2.JobState.Name(job.state)


def _kind(job) -> str:
    from raysft.service.v1 import jobs_pb2

    return jobs_pb2.JobKind.Name(job.kind)


def _when(stamp) -> str:
    if not stamp.seconds and not stamp.nanos:
        return "-"
    return stamp.ToDatetime(dt.timezone.utc).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _job_dict(job) -> dict:
    return _message_dict(job)


def _message_dict(msg) -> dict:
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


_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")
_CONTROL_BUT_LINES = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def _safe(text: str, keep_lines: bool = False) -> str:
    """Job-controlled text fit for a terminal: control characters (escape sequences, and line breaks unless kept)
    shown as \\xNN instead of acting on the terminal."""
    pattern = _CONTROL_BUT_LINES if keep_lines else _CONTROL
    return pattern.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def _print_job(job, as_json: bool, brief: bool = False) -> None:
    if as_json:
        print(json.dumps(_job_dict(job), indent=2, allow_nan=False))
        return
    state = _state(job)
    if state == "JOB_STATE_UNSPECIFIED":  # validate-only
        print("valid" + "".join(f"\nwarning: {_safe(w.field)}: {_safe(w.message)}" for w in job.warnings))
        return
    print(f"{_safe(job.id)}  {state}" + (f" (queue position {job.queue_position})" if job.queue_position else "")
          + (f": {_safe(job.state_reason)}" if job.state_reason else ""))
    if job.error.code:
        from raysft.service.v1 import jobs_pb2

        kind = f" ({jobs_pb2.ErrorKind.Name(job.error_kind)})" if job.error_kind else ""
        print(f"  error{kind}: {_safe(job.error.message)}")
    if job.output.adapter_uri and state == "SUCCEEDED":
        print(f"  adapter: {_safe(job.output.adapter_uri)}")
    if brief:
        return
    p = job.progress
    print(f"  kind: {_kind(job)}   priority: {job.priority}   "
          f"attempt: {job.attempt} of {max(job.max_attempts, job.attempt)}   "
          f"created: {_when(job.create_time)}   started: {_when(job.start_time)}   ended: {_when(job.end_time)}")
    if job.tenant and job.tenant != "default":  # the only tenant without --tenants: not worth a line
        print(f"  tenant: {_safe(job.tenant)}")
    if p.total_steps:
        print(f"  progress: {_bar(p)}")
    print(f"  output_dir: {_safe(job.output.output_dir) or '-'}")
    for w in job.warnings:
        print(f"  warning: {_safe(w.field)}: {_safe(w.message)}")
    if job.labels:
        print("  labels: " + _safe(", ".join(f"{k}={v}" for k, v in sorted(job.labels.items()))))
