"""`raysft data check|preview|prepare`: the data tools, printing what `raysft.data` computes.

    check    exit 0 when every record is valid and there is at least one, 1 when any is invalid or there is none
    preview  exit 0 when every shown line trains, 1 when some line is skipped
    prepare  the spec's data encoded into the cache ahead of training (Ray Data)

A file or tokenizer that cannot be read is bad input (exit 2, `raysft.cli.exits`).
"""

from __future__ import annotations

import json
import sys

from raysft.cli.spec import add_spec_arguments, spec_from, warn
from raysft.cli.terminal import print_text

__all__ = ["register"]

# On a terminal, trained spans black on green (as `axolotl preprocess --debug` colours labels); else ⟦ ⟧.
_COLOURS = {"on": "\033[30;42m", "off": "\033[0m"}


def register(sub) -> None:
    """Register `data check|preview|prepare` on the `raysft` subparsers."""
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
    add_spec_arguments(sp)
    sp.add_argument("--json", action="store_true", help="print exactly one JSON object")
    sp.set_defaults(func=cmd_data_prepare)


def cmd_data_check(args) -> int:
    """Print the `check_file` report (exactly one JSON object with --json)."""
    from raysft.data.check import check_file, format_report, load_tokenizer_dir

    tokenizer = load_tokenizer_dir(args.tokenizer) if args.tokenizer else None
    report = check_file(args.path, tokenizer, args.max_seq_len)
    print_text(json.dumps(report, ensure_ascii=False) if args.json else format_report(report))
    return 1 if report["errors_total"] or not report["valid"] else 0


def cmd_data_preview(args) -> int:
    """Print each line as training encodes it (its trained spans marked), then the summary; --json: one object
    per line and no summary."""
    from raysft.data.check import load_tokenizer_dir
    from raysft.data.preview import PreviewSummary, highlighted, preview_lines

    tokenizer = load_tokenizer_dir(args.tokenizer)
    marks = _COLOURS if sys.stdout.isatty() else {}
    summary = PreviewSummary()
    for shown, result in preview_lines(args.path, tokenizer, loss_on=args.loss_on, max_seq_len=args.max_seq_len,
                                       limit=args.n):
        summary.add(shown, result)
        if args.json:
            print_text(json.dumps(shown, ensure_ascii=False))
        elif "error" in shown:
            print_text(f"--- line {shown['line']}: skipped, {shown['error']['code']}: {shown['error']['message']}")
        else:
            for k, example in enumerate(shown["examples"], 1):
                part = f" (example {k} of {len(shown['examples'])})" if len(shown["examples"]) > 1 else ""
                print_text(f"--- line {shown['line']}{part}\n{highlighted(tokenizer, example, **marks)}")
    if not args.json:
        print_text(summary.format(tokenizer.eos_token))
    return 1 if summary.skipped else 0


def cmd_data_prepare(args) -> int:
    """Encode the spec's data into the cache (or find it there) and print the entry: one JSON object with --json."""
    from raysft.local_ray.connect import connect_ray
    from raysft.train.launcher import fix_template_date
    from raysft.train.rundata import prepare_run_data

    spec = fix_template_date(spec_from(args))
    warn(spec)
    entry, hit = prepare_run_data(spec, before_encode=connect_ray, announce=not args.json)
    train = entry.split("train")
    report = {"cache_dir": entry.location, "cache_hit": hit, "key": entry.key, "rows": train["rows"],
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
