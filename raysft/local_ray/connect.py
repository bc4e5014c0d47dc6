"""`raysft train` / `raysft tune`'s Ray: the cluster RAY_ADDRESS names, else a local one (the embedded default)."""

from __future__ import annotations

import os
import warnings

import ray

from raysft.local_ray import free_port

__all__ = ["connect_ray", "RayUnreachable"]


class RayUnreachable(RuntimeError):
    """RAY_ADDRESS names a cluster that does not answer; the message says how to start one or run locally."""


def connect_ray(**kwargs) -> None:
    """Connect to RAY_ADDRESS when set (a cluster, or the job's cluster under `ray job submit`), else start
    a local Ray: the embedded default. Token authentication is left to Ray's defaults: a local start creates
    ~/.ray/auth_token when needed and clients on this machine read it.

    The local Ray runs its dashboard, and its processes are told the dashboard's address: Ray Train's
    placement-group cleaner asks the State API whether a run's controller is alive, and without an answer every
    run ends waiting 12 s for the cleaner to give up (and a stopped Tune trial's CPUs never return). A local Ray
    is not the machine's "current" cluster, so the State API would otherwise ask whichever cluster that is.
    A dashboard that fails to start (its port taken in the meantime, a crash) costs those seconds, not the run.
    """
    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS") or None
    try:
        if address:
            ray.init(address=address, logging_level="warning", **kwargs)
        else:
            # "local": always a fresh instance; a bare ray.init() would attach to any cluster someone else
            # started on this machine.
            # include_dashboard=None: the full dashboard, but a failure to start it is logged, not raised.
            port = free_port()
            context = ray.init(address="local", include_dashboard=None, dashboard_host="127.0.0.1",
                               dashboard_port=port,
                               runtime_env={"env_vars": {"RAY_API_SERVER_ADDRESS": f"http://127.0.0.1:{port}"}},
                               logging_level="warning", **kwargs)
            if not context.dashboard_url:
                warnings.warn(f"the local Ray's dashboard did not start on 127.0.0.1:{port} (see the Ray log "
                              "above); training goes on, and each run ends ~12 s later than it would with it",
                              stacklevel=2)
    except ConnectionError as exc:
        raise RayUnreachable(f"cannot reach the Ray cluster at RAY_ADDRESS={address!r}: {exc}; start it with "
                       "`ray start --head` or unset RAY_ADDRESS to run locally") from None
