"""`python -m raysft.service serve|jobs ...`: the service's commands on their own (the same as `raysft serve|jobs`)."""

import argparse
import sys

from raysft.service.cli import add_jobs_parser, add_serve_parser


def main(argv: list[str] | None = None) -> int:
    """Parse `serve ...` or `jobs ...` and run it; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m raysft.service", description="The raysft gRPC job service.")
    sub = parser.add_subparsers(dest="command", required=True)
    add_serve_parser(sub)
    add_jobs_parser(sub)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
