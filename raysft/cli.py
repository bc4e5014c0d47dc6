"""The `raysft` command: parse arguments, call the library, print. No logic of its own.

Exit codes: 0 success; 1 the work ran and failed (data check found errors, training failed);
2 bad input (spec, paths, arguments).
"""

from __future__ import annotations

import argparse
import json
import sys

__all__ = ["main", "build_parser"]


def _warn(spec) -> None:
    from raysft.config import advisories

    for w in advisories(spec):
        print(f"warning: {w}", file=sys.stderr)


def _spec(args):
    from raysft.config import load_spec

    return load_spec(args.spec, args.overrides)


def cmd_config_show(args) -> int:
    from raysft.config import spec_to_yaml

    spec = _spec(args)
    _warn(spec)
    print(spec_to_yaml(spec), end="")
    return 0


def cmd_config_schema(args) -> int:
    from raysft.config import JobSpec

    print(json.dumps(JobSpec.model_json_schema(), indent=2))
    return 0


def cmd_data_check(args) -> int:
    from raysft.data.check import check_main

    return check_main(args.path, args.tokenizer, args.max_seq_len, args.json)


def cmd_data_preview(args) -> int:
    from raysft.data.preview import preview_main

    return preview_main(args.path, args.tokenizer, loss_on=args.loss_on, max_seq_len=args.max_seq_len, limit=args.n,
                        as_json=args.json)


def cmd_data_prepare(args) -> int:
    from raysft.train.launcher import connect_ray, fix_template_date
    from raysft.train.rundata import prepare_run_data

    spec = fix_template_date(_spec(args))
    _warn(spec)
    entry, hit = prepare_run_data(spec, before_encode=connect_ray, announce=not args.json)
    train = entry.split("train")
    report = {"cache_dir": str(entry.path), "cache_hit": hit, "key": entry.key, "rows": train["rows"],
              "tokens": train["tokens"], "trained_tokens": train["trained_tokens"],
              "trained_fraction": entry.encoding["train"]["trained_fraction"],
              "padding_efficiency": entry.manifest["padding_efficiency"], "validation_rows": entry.split("validation")["rows"],
              "composition": entry.composition, "skipped_invalid": entry.skipped_invalid,
              "template_date": entry.template_date}
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"{'cache hit' if hit else 'prepared'}: {report['cache_dir']}")
    print(f"train: {report['rows']} examples, {report['tokens']} tokens, {report['trained_fraction']:.1%} trained on, "
          f"padding efficiency {report['padding_efficiency']:.3f}; validation: {report['validation_rows']} examples")
    for source, c in entry.composition["train"].items():
        print(f"  {source}: {c['rows']} examples ({c['share']:.1%}), {c['tokens']} tokens")
    print(f"template date {entry.template_date} (pass data.template_date={entry.template_date} to train on this entry "
          "on another day)")
    return 0


def cmd_model_init_tiny(args) -> int:
    from raysft.model.tiny import init_tiny

    path = init_tiny(args.out_dir, args.data, vocab_size=args.vocab_size, hidden_size=args.hidden_size, layers=args.layers)
    print(f"wrote a tiny random-weight Llama model and a tokenizer trained on {args.data} to {path}")
    return 0


def cmd_train(args) -> int:
    from raysft.train.launcher import continued_spec, load_run_spec, run_training

    if args.resume:
        if args.spec:
            raise _Usage("pass either a spec or --resume OUTPUT_DIR, not both")
        spec = load_run_spec(args.resume)
    elif not args.spec:
        raise _Usage("pass a spec file: raysft train spec.yaml [key.path=value ...]")
    else:
        spec = _spec(args)
    if args.continue_run:
        spec = continued_spec(spec)
    _warn(spec)
    summary = run_training(spec, resume=bool(args.resume or args.continue_run), from_step=args.from_step)
    best = summary["best"]
    print(f"[raysft] done in {summary['wall_time_s']:.0f}s, {summary['steps']} steps; best "
          + ", ".join(f"{k} {v:.4f}" for k, v in best.items() if k in ("eval_loss", "exact_match") and v is not None))
    out = summary["output_dir"]
    print(f"[raysft] adapter: {summary['adapter'] or out + '/model'}\n[raysft] loss curve: {out}/loss_curve.png\n"
          f"[raysft] summary: {out}/summary.json")
    return 0


def cmd_eval(args) -> int:
    from raysft.train.exact_match import score_model

    result = score_model(args.model, args.data, max_new_tokens=args.max_new_tokens, limit=args.limit)
    if args.json:
        print(json.dumps({"exact_match": result["exact_match"], "n": result["n"]}))
    else:
        print(f"exact_match {result['exact_match']:.4f} on {result['n']} conversations from {args.data}")
    return 0


def cmd_estimate(args) -> int:
    from raysft.estimate import estimate_main

    return estimate_main(args.spec, args.overrides, args.gpu_memory_gb, args.json)


def cmd_export(args) -> int:
    from raysft.model.export import merge_adapter

    dest = merge_adapter(args.run_dir, args.merged)
    print(f"wrote the merged model to {dest}")
    return 0


class _Usage(ValueError):
    pass


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="raysft", description="Supervised fine-tuning of chat models on Ray.")
    sub = p.add_subparsers(dest="command", required=True)

    def spec_args(sp):
        sp.add_argument("spec", help="YAML job spec")
        sp.add_argument("overrides", nargs="*", help="key.path=value overrides, e.g. train.epochs=3")

    cfg = sub.add_parser("config", help="show the resolved spec or its JSON schema").add_subparsers(dest="action", required=True)
    sp = cfg.add_parser("show", help="print the fully resolved spec")
    spec_args(sp)
    sp.set_defaults(func=cmd_config_show)
    cfg.add_parser("schema", help="print the JSON schema of the spec").set_defaults(func=cmd_config_schema)

    data = sub.add_parser("data", help="data tools").add_subparsers(dest="action", required=True)
    sp = data.add_parser("check", help="validate a dataset and report its quality")
    sp.add_argument("path")
    sp.add_argument("--tokenizer", help="tokenizer directory, for token lengths and too_long warnings")
    sp.add_argument("--max-seq-len", type=int, default=None)
    sp.add_argument("--json", action="store_true", help="print exactly one JSON object")
    sp.set_defaults(func=cmd_data_check)
    sp = data.add_parser("preview", help="show how conversations are rendered and which tokens are trained")
    sp.add_argument("path")
    sp.add_argument("--tokenizer", required=True, help="tokenizer (or model) directory whose chat template is used")
    sp.add_argument("--loss-on", choices=["assistant", "last_assistant", "all"], default="assistant")
    sp.add_argument("--max-seq-len", type=int, default=2048)
    sp.add_argument("-n", type=int, default=None, metavar="K", help="only the first K lines")
    sp.add_argument("--json", action="store_true", help="one JSON object per input line")
    sp.set_defaults(func=cmd_data_preview)

    sp = data.add_parser("prepare", help="encode a spec's data into the cache ahead of training (Ray Data)")
    spec_args(sp)
    sp.add_argument("--json", action="store_true", help="print exactly one JSON object")
    sp.set_defaults(func=cmd_data_prepare)

    model = sub.add_parser("model", help="model tools").add_subparsers(dest="action", required=True)
    sp = model.add_parser("init-tiny", help="write a small random Llama model + a tokenizer trained on FILE")
    sp.add_argument("out_dir")
    sp.add_argument("--data", required=True, help="chat JSONL to train the tokenizer on")
    sp.add_argument("--vocab-size", type=int, default=2048)
    sp.add_argument("--hidden-size", type=int, default=128)
    sp.add_argument("--layers", type=int, default=2)
    sp.set_defaults(func=cmd_model_init_tiny)

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

    sp = sub.add_parser("eval", help="exact-match accuracy of a run or model on held-out conversations")
    sp.add_argument("--model", required=True, help="a run's output_dir (base + adapter) or a merged model dir")
    sp.add_argument("--data", required=True, help="chat data whose final assistant message is the reference")
    sp.add_argument("--metric", choices=["exact_match"], default="exact_match")
    sp.add_argument("--max-new-tokens", type=int, default=32)
    sp.add_argument("--limit", type=int, default=None)
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_eval)

    sp = sub.add_parser("estimate", help="predicted peak memory per GPU of a spec, and whether it fits")
    spec_args(sp)
    sp.add_argument("--gpu-memory-gb", type=float, default=None, help="memory of one GPU in GB")
    sp.add_argument("--json", action="store_true", help="print exactly one JSON object")
    sp.set_defaults(func=cmd_estimate)

    from raysft.service.cli import add_jobs_parser, add_serve_parser, add_tenants_parser
    from raysft.tune.cli import add_tune_parser

    add_tune_parser(sub)
    add_serve_parser(sub)
    add_jobs_parser(sub)
    add_tenants_parser(sub)

    sp = sub.add_parser("export", help="merge a run's adapter into its base model")
    sp.add_argument("run_dir")
    sp.add_argument("--merged", required=True, metavar="DEST", help="directory for the standalone merged model")
    sp.set_defaults(func=cmd_export)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `raysft` console script."""
    args = build_parser().parse_args(argv)
    # SpecError, DataError, ModelError and usage errors are ValueErrors that name the input and the fix;
    # catching the base class keeps `raysft config ...` from importing torch just to name ModelError.
    bad_input = (ValueError, FileNotFoundError)
    try:
        return args.func(args)
    except bad_input as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
