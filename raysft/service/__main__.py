"""`python -m raysft.service serve|jobs|tenants ...`: the service's commands on their own (as `raysft ...`)."""

import argparse
import sys

from raysft.service.cli import add_jobs_parser, add_serve_parser, add_tenants_parser


def main(argv: list[str] | None = None) -> int:
    """Parse `serve ...`, `jobs ...` or `tenants ...` and run it; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m raysft.service", description="The raysft gRPC job service.")
    sub = parser.add_subparsers(dest="command", required=True)
    add_serve_parser(sub)
    add_jobs_parser(sub)
    add_tenants_parser(sub)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
