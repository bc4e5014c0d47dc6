"""`raysft tune`: its parser and handler, and `python -m raysft.tune` (the subcommand on its own).

    raysft tune SPEC [key.path=value ...]      start a campaign (the spec's tune: section)
    raysft tune --resume OUTPUT_DIR            continue an interrupted campaign

Exit codes follow `raysft` (`raysft.cli.exits`): 0 success; 1 the campaign ran and failed; 2 bad input.
"""

from __future__ import annotations

import argparse

from raysft.cli.exits import UsageError, run
from raysft.cli.spec import warn

__all__ = ["register", "cmd_tune", "main"]


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", nargs="?", help="YAML job spec with a tune: section")
    parser.add_argument("overrides", nargs="*", help="key.path=value overrides, e.g. tune.num_samples=8")
    parser.add_argument("--resume", metavar="OUTPUT_DIR", help="continue an interrupted campaign: finished trials are kept")


def register(sub) -> None:
    """Register `tune SPEC [overrides] [--resume OUTPUT_DIR]` (func=cmd_tune) on the `raysft` subparsers."""
    parser = sub.add_parser("tune", help="search hyperparameters with Ray Tune: one training run per trial")
    _add_arguments(parser)
    parser.set_defaults(func=cmd_tune)


def cmd_tune(args: argparse.Namespace) -> int:
    """Run or resume the campaign named by parsed arguments and print where its results are."""
    from raysft.config import load_spec
    from raysft.tune.campaign import load_campaign_spec, run_campaign

    if args.resume and (args.spec or args.overrides):
        raise UsageError("pass either a spec or --resume OUTPUT_DIR, not both")
    if not args.resume and not args.spec:
        raise UsageError("pass a spec file: raysft tune spec.yaml [key.path=value ...]")
    spec = load_campaign_spec(args.resume) if args.resume else load_spec(args.spec, args.overrides)
    warn(spec)
    summary = run_campaign(spec, resume=bool(args.resume))
    best, metric = summary["best"], summary["metric"]
    out = spec.output_dir
    print(f"[raysft] {summary['num_trials']} trials, {summary['steps_total']} training steps in {summary['wall_time_s']:.0f}s; "
          f"best trial {best['trial']}: {metric} {best[metric]:.4f} with {best['config']}")
    print(f"[raysft] best adapter: {best['dir']}  (raysft eval --model {best['dir']} / raysft export {best['dir']})\n"
          f"[raysft] summary: {out}/tune_summary.json\n[raysft] results: {out}/tune_results.csv\n"
          f"[raysft] curves: {out}/tune_curves.png")
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m raysft.tune SPEC [overrides] [--resume OUTPUT_DIR]`: the subcommand on its own; the exit code."""
    parser = argparse.ArgumentParser(prog="raysft tune", description="Search hyperparameters with Ray Tune.")
    _add_arguments(parser)
    parser.set_defaults(func=cmd_tune)
    return run(parser.parse_args(argv))
