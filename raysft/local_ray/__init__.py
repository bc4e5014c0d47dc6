"""Ray on this machine, below train/ and the service: small facts the launcher, the job service, the benchmarks and
the tests share (this module imports no Ray), how a run connects (`connect`), and the embedded cluster `raysft serve`
starts (`cluster`)."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Optional

__all__ = ["free_port", "use_token_auth", "ray_auth_token"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def use_token_auth() -> None:
    """Token authentication for this process and every Ray cluster it starts; call it before importing ray.

    Left unset, Ray 2.60 switches a process to token mode for good when it starts its first local cluster, and the
    process then refuses the calls of a cluster started later without tokens. ~/.ray/auth_token is created when
    missing, as a first local `ray.init()` would; `ray start --head` in token mode needs it to exist.
    """
    os.environ["RAY_AUTH_MODE"] = "token"
    if not (Path.home() / ".ray" / "auth_token").exists():
        from ray._private.authentication.authentication_token_setup import generate_and_save_token

        generate_and_save_token()


def ray_auth_token() -> Optional[str]:
    """The Ray cluster token this process would use, or None."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return os.environ["RAY_AUTH_TOKEN"].strip()
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token").expanduser()
    return path.read_text().strip() if path.is_file() else None
