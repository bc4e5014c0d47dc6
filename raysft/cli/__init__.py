"""The `raysft` command: parse arguments, call the library, print. No logic of its own.

    spec.py      config show|schema, train, eval, export, estimate, model init-tiny
    data.py      data check|preview|prepare
    tune.py      tune (and `python -m raysft.tune`)
    serve.py     serve, tenants hash-token
    jobs.py      jobs submit|get|list|watch|... (the service's client; jobview.py shows what it returns)
    exits.py     the one map from errors to exit codes: 0 success; 1 the work ran and failed; 2 bad input
    terminal.py  printing data text whatever it holds; server text made harmless

Every module registers its own subcommands and imports what a command runs only when it runs, so that
`raysft config show` loads neither torch, Ray, grpc nor the server.
"""

from __future__ import annotations

import argparse

from raysft.cli import data, jobs, serve, spec, tune
from raysft.cli.exits import run

__all__ = ["main", "build_parser", "service_main"]


def build_parser() -> argparse.ArgumentParser:
    """The `raysft` parser: every command group's subcommands."""
    parser = argparse.ArgumentParser(prog="raysft", description="Supervised fine-tuning of chat models on Ray.")
    sub = parser.add_subparsers(dest="command", required=True)
    for group in (spec, data, tune, serve, jobs):
        group.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `raysft` console script; returns the exit code."""
    return run(build_parser().parse_args(argv))


def service_main(argv: list[str] | None = None) -> int:
    """`python -m raysft.service serve|jobs|tenants ...`: the service's commands on their own (as `raysft ...`)."""
    parser = argparse.ArgumentParser(prog="python -m raysft.service", description="The raysft gRPC job service.")
    sub = parser.add_subparsers(dest="command", required=True)
    serve.register(sub)
    jobs.register(sub)
    return run(parser.parse_args(argv))

