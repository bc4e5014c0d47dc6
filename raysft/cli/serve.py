"""`raysft serve` (the gRPC job service; jobs run as Ray Jobs) and `raysft tenants hash-token`.

    raysft serve [--host H] [--port P] [--db URL] [--token-file F | --insecure-no-auth] [--tenants FILE]
                 [--tls-cert C --tls-key K]
                 [--ray-address A] [--allowed-root DIR] [--allowed-storage URI] [--max-workers N] [--max-active-jobs N]
                 [--webhook URL] [--webhook-allow-prefix URL --webhook-secret-file F] ...
    raysft tenants hash-token < token-file      (the sha256 line a tenants file holds for that token)

Without --token-file, `raysft serve` uses (creating it, mode 0600) the token file RAYSFT_TOKEN_FILE or
~/.raysft/token, which `raysft jobs` reads too; with --tenants the tenants file's tokens are the credentials, and
only a --token-file named too adds an admin's. Exit codes: 0 stopped; 1 the server failed; 2 bad input, an
unreadable file among them (`raysft.cli.exits.SERVER`).
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from pathlib import Path
from typing import Optional

from raysft.cli.exits import SERVER, UsageError

__all__ = ["register", "cmd_serve", "cmd_hash_token", "default_token_file"]


def register(sub) -> None:
    """Register `serve` and `tenants hash-token` on the `raysft` subparsers."""
    _add_serve(sub)
    _add_tenants(sub)


def default_token_file() -> Path:
    """The token file `raysft serve` creates and `raysft jobs` reads when none is named: RAYSFT_TOKEN_FILE or
    ~/.raysft/token."""
    return Path(os.environ.get("RAYSFT_TOKEN_FILE") or Path.home() / ".raysft" / "token").expanduser()


# ------------------------------------------------------------------------------------------ serve


def _add_serve(sub) -> None:
    p = sub.add_parser("serve", help="run the gRPC job service (jobs run as Ray Jobs)")
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
    p.set_defaults(func=cmd_serve, exits=SERVER)


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the server until SIGTERM / SIGINT."""
    import logging

    from raysft.service.jobs.limits import Limits, parse_resources
    from raysft.service.jobs.webhooks import WebhookPolicy
    from raysft.service.server import serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.max_running_jobs is not None and args.max_running_jobs < 0:
        raise UsageError(f"--max-running-jobs must be >= 0 (got {args.max_running_jobs})")
    token = _serve_token(args)
    limits = Limits(max_workers=args.max_workers, max_resources_per_worker=parse_resources(args.max_resources_per_worker),
                    max_trials=args.max_trials, max_active_jobs=args.max_active_jobs,
                    max_running_jobs=args.max_running_jobs, driver_cpus=args.driver_cpus,
                    driver_memory_bytes=int(args.driver_memory_gb * 2**30) if args.driver_memory_gb else None)
    webhooks = WebhookPolicy(tuple(args.webhook), tuple(args.webhook_allow_prefix), _webhook_secret(args.webhook_secret_file))
    # Ray's job SDK prefers these variables over the address it is given: --ray-address decides here.
    for name in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS"):
        os.environ.pop(name, None)
    return serve(f"{args.host}:{args.port}", db_url=args.db, token=token, tls_cert=args.tls_cert, tls_key=args.tls_key,
                 ray_address=args.ray_address, allowed_roots=args.allowed_root, jobs_root=args.jobs_root,
                 allowed_storage=tuple(args.allowed_storage), limits=limits, allow_remote_code=args.allow_remote_code,
                 ray_deadline_s=args.ray_deadline_s, http_port=args.http_port, webhooks=webhooks,
                 tenants=args.tenants)


def _webhook_secret(path: Optional[str]) -> Optional[bytes]:
    """--webhook-secret-file's key (read once, here). Raises ValueError for an empty file."""
    if not path:
        return None
    secret = Path(path).read_bytes().strip()
    if not secret:
        raise ValueError(f"webhook secret file {path} is empty; write a long random string to it")
    return secret


def _serve_token(args: argparse.Namespace) -> Optional[str]:
    """The server's token: --token-file's; none with --insecure-no-auth; else, on loopback, the default file's,
    created (0600, its path printed) when missing. Raises ValueError for an empty or unsafe file."""
    if args.insecure_no_auth:
        if args.token_file or args.tenants:
            raise UsageError(f"--insecure-no-auth and {'--token-file' if args.token_file else '--tenants'} contradict "
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


def _add_tenants(sub) -> None:
    p = sub.add_parser("tenants", help="tools for the tenants file of `raysft serve --tenants`")
    actions = p.add_subparsers(dest="action", required=True)
    hp = actions.add_parser("hash-token", help="print the sha256 of the token read from stdin (a new random token with "
                                           "--new: the token on stderr, its digest on stdout)")
    hp.add_argument("--new", action="store_true", help="make a new token instead of reading one")
    hp.set_defaults(func=cmd_hash_token)


def cmd_hash_token(args: argparse.Namespace) -> int:
    """Print the digest a tenants file holds for a token (the token itself never goes in the file)."""
    from raysft.service.jobs.tenants import hash_token

    if args.new:
        token = secrets.token_urlsafe(32)
        print(token, file=sys.stderr)
    else:
        token = sys.stdin.read().strip()
        if not token:
            raise UsageError("no token on stdin; pipe it in: raysft tenants hash-token < token-file")
    print(hash_token(token))
    return 0
