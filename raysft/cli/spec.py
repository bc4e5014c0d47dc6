"""The commands on one spec or one run: `config show|schema`, `train`, `eval`, `export`, `estimate`, `model init-tiny`.

Each handler imports what it runs when it runs: `raysft config show` must not pay for torch or Ray.
"""

from __future__ import annotations

import argparse
import json
import sys

from raysft.cli.exits import UsageError

__all__ = ["register", "add_spec_arguments", "spec_from", "warn"]


def add_spec_arguments(parser: argparse.ArgumentParser) -> None:
    """`SPEC [key.path=value ...]`, as every command taking a spec reads it."""
    parser.add_argument("spec", help="YAML job spec")
    parser.add_argument("overrides", nargs="*", help="key.path=value overrides, e.g. train.epochs=3")


def spec_from(args: argparse.Namespace):
    """The validated spec `args.spec` with `args.overrides` applied."""
    from raysft.config import load_spec

    return load_spec(args.spec, args.overrides)


def warn(spec) -> None:
    """Print the spec's advisories (values outside the usual ranges) as `warning: ...` lines on stderr."""
    from raysft.config import advisories

    for w in advisories(spec):
        print(f"warning: {w}", file=sys.stderr)


def register(sub) -> None:
    """Register config, model, train, eval, estimate and export on the `raysft` subparsers."""
    _add_config(sub)
    _add_model(sub)
    _add_train(sub)
    _add_eval(sub)
    _add_estimate(sub)
    _add_export(sub)


# ----------------------------------------------------------------------------------------- config


def _add_config(sub) -> None:
    cfg = sub.add_parser("config", help="show the resolved spec or its JSON schema").add_subparsers(dest="action", required=True)
    sp = cfg.add_parser("show", help="print the fully resolved spec")
    add_spec_arguments(sp)
    sp.set_defaults(func=cmd_config_show)
    cfg.add_parser("schema", help="print the JSON schema of the spec").set_defaults(func=cmd_config_schema)


def cmd_config_show(args) -> int:
    from raysft.config import spec_to_yaml

    spec = spec_from(args)
    warn(spec)
    print(spec_to_yaml(spec), end="")
    return 0


def cmd_config_schema(args) -> int:
    from raysft.config import JobSpec

    print(json.dumps(JobSpec.model_json_schema(), indent=2))
    return 0


# ------------------------------------------------------------------------------------------ model


def _add_model(sub) -> None:
    model = sub.add_parser("model", help="model tools").add_subparsers(dest="action", required=True)
    sp = model.add_parser("init-tiny", help="write a small random Llama model + a tokenizer trained on FILE")
    sp.add_argument("out_dir")
    sp.add_argument("--data", required=True, help="chat JSONL to train the tokenizer on")
    sp.add_argument("--vocab-size", type=int, default=2048)
    sp.add_argument("--hidden-size", type=int, default=128)
    sp.add_argument("--layers", type=int, default=2)
    sp.set_defaults(func=cmd_model_init_tiny)


def cmd_model_init_tiny(args) -> int:
    from raysft.model.tiny import init_tiny

    path = init_tiny(args.out_dir, args.data, vocab_size=args.vocab_size, hidden_size=args.hidden_size, layers=args.layers)
    print(f"wrote a tiny random-weight Llama model and a tokenizer trained on {args.data} to {path}")
    return 0


# ------------------------------------------------------------------------------------------ train


def _add_train(sub) -> None:
    sp = sub.add_parser("train", help="fine-tune on Ray (RAY_ADDRESS, else a local Ray)")
    sp.add_argument("spec", nargs="?", help="YAML job spec")
    sp.add_argument("overrides", nargs="*", help="key.path=value overrides")
    sp.add_argument("--resume", metavar="OUTPUT_DIR", help="continue a stopped run from its latest checkpoint")
    sp.add_argument("--continue-run", action="store_true",
                    help="with a spec: continue the run in its output_dir from its latest checkpoint when there is "
                         "one, else start it (what the job service runs for a job's next attempt)")
    sp.add_argument("--from-step", type=int, metavar="N",
                    help="with --resume or --continue-run: resume from the checkpoint at step N unless Ray Train "
                         "recorded a later one (it records each a moment after saving it)")
    sp.set_defaults(func=cmd_train)


def cmd_train(args) -> int:
    from raysft.train.launcher import continued_spec, load_run_spec, run_training

    if args.resume:
        if args.spec:
            raise UsageError("pass either a spec or --resume OUTPUT_DIR, not both")
        spec = load_run_spec(args.resume)
    elif not args.spec:
        raise UsageError("pass a spec file: raysft train spec.yaml [key.path=value ...]")
    else:
        spec = spec_from(args)
    if args.continue_run:
        spec = continued_spec(spec)
    warn(spec)
    summary = run_training(spec, resume=bool(args.resume or args.continue_run), from_step=args.from_step)
    best = summary["best"]
    print(f"[raysft] done in {summary['wall_time_s']:.0f}s, {summary['steps']} steps; best "
          + ", ".join(f"{k} {v:.4f}" for k, v in best.items() if k in ("eval_loss", "exact_match") and v is not None))
    out = summary["output_dir"]
    print(f"[raysft] adapter: {summary['adapter'] or out + '/model'}\n[raysft] loss curve: {out}/loss_curve.png\n"
          f"[raysft] summary: {out}/summary.json")
    return 0


# ------------------------------------------------------------------------------------ eval, export


def _add_eval(sub) -> None:
    sp = sub.add_parser("eval", help="exact-match accuracy of a run or model on held-out conversations")
    sp.add_argument("--model", required=True, help="a run's output_dir (base + adapter) or a merged model dir")
    sp.add_argument("--data", required=True, help="chat data whose final assistant message is the reference")
    sp.add_argument("--metric", choices=["exact_match"], default="exact_match")
    sp.add_argument("--max-new-tokens", type=int, default=32)
    sp.add_argument("--limit", type=int, default=None)
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_eval)


def cmd_eval(args) -> int:
    from raysft.train.exact_match import score_model

    result = score_model(args.model, args.data, max_new_tokens=args.max_new_tokens, limit=args.limit)
    if args.json:
        print(json.dumps({"exact_match": result["exact_match"], "n": result["n"]}))
    else:
        print(f"exact_match {result['exact_match']:.4f} on {result['n']} conversations from {args.data}")
    return 0


def _add_export(sub) -> None:
    sp = sub.add_parser("export", help="merge a run's adapter into its base model")
    sp.add_argument("run_dir")
    sp.add_argument("--merged", required=True, metavar="DEST", help="directory for the standalone merged model")
    sp.set_defaults(func=cmd_export)


def cmd_export(args) -> int:
    from raysft.model.export import merge_adapter

    dest = merge_adapter(args.run_dir, args.merged)
    print(f"wrote the merged model to {dest}")
    return 0


# --------------------------------------------------------------------------------------- estimate


def _add_estimate(sub) -> None:
    sp = sub.add_parser("estimate", help="predicted peak memory per GPU of a spec, and whether it fits")
    add_spec_arguments(sp)
    sp.add_argument("--gpu-memory-gb", type=float, default=None, help="memory of one GPU in GB")
    sp.add_argument("--json", action="store_true", help="print exactly one JSON object")
    sp.set_defaults(func=cmd_estimate)


def cmd_estimate(args) -> int:
    """Print the estimate (one JSON object with --json); 1 when it does not fit, 0 when it does or the GPU size is
    unknown."""
    from raysft.estimate import estimate_for_spec, format_estimate

    if args.gpu_memory_gb is not None and not args.gpu_memory_gb > 0:
        raise UsageError(f"--gpu-memory-gb {args.gpu_memory_gb:g} must be > 0 (e.g. 24, 40, 80)")
    est = estimate_for_spec(spec_from(args), args.gpu_memory_gb)
    print(json.dumps(est) if args.json else format_estimate(est))
    return 1 if est["fits"] is False else 0
