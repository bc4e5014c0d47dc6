"""`raysft data preview`: how each conversation is rendered and which tokens are trained, on training's code path.

Every line goes through `to_conversation` and `encode_conversation` exactly as `prepare_data` sends it, so what is
shown is what a job trains on. On a terminal the trained spans are highlighted (outside one they are set between
⟦ and ⟧); ``--json`` prints one object per input line instead:

    {"line": int, "examples": [{"input_ids": [int], "labels": [int], "prompt_text": str, "trained_text": [str]}]}
    {"line": int, "error": {"code": str, "message": str}}        (a line training skips)

`prompt_text` is the decoded text before the first trained token, `trained_text` the decoded trained spans in order.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path
from typing import Optional, Union

from raysft.data.check import load_tokenizer_dir, print_text
from raysft.data.errors import DataError
from raysft.data.records import RecordError, iter_raw, to_conversation, tools_of
from raysft.data.template import encode_conversation

__all__ = ["label_spans", "preview_lines", "preview_main"]

_ON, _OFF = "\033[30;42m", "\033[0m"  # black on green, as `axolotl preprocess --debug` colours labels
_PLAIN_ON, _PLAIN_OFF = "⟦", "⟧"


def label_spans(labels: list[int]) -> list[tuple[int, int]]:
    """(start, end) of each run of trained tokens (labels other than -100)."""
    out, start = [], None
    for k, label in enumerate(labels + [-100]):
        if label != -100 and start is None:
            start = k
        elif label == -100 and start is not None:
            out.append((start, k))
            start = None
    return out


def preview_lines(path: Union[str, Path], tokenizer, *, loss_on: str = "assistant", max_seq_len: int = 2048,
                  limit: Optional[int] = None):
    """Yield (line, result) for the first `limit` records: the JSON-ready dict `--json` prints, plus "result".

    Raises:
        DataError: the file cannot be read; `ChatTemplateError` when the data has tool calls the template lacks.
    """
    for n, (line, value) in enumerate(iter_raw(path)):
        if limit is not None and n >= limit:
            return
        try:
            messages = to_conversation(value)
        except RecordError as e:
            yield {"line": line, "error": {"code": e.code, "message": e.message}}, None
            continue
        result = encode_conversation(tokenizer, messages, max_seq_len=max_seq_len, loss_on=loss_on,
                                     tools=tools_of(value))
        if not result.examples:
            message = result.error or {"dropped_too_long": f"longer than max_seq_len {max_seq_len}",
                                       "dropped_no_target": "no token left to train on"}[result.status]
            yield {"line": line, "error": {"code": result.status, "message": message}}, result
            continue
        examples = []
        for e in result.examples:
            spans = label_spans(e["labels"])
            examples.append({"input_ids": e["input_ids"], "labels": e["labels"],
                             "prompt_text": tokenizer.decode(e["input_ids"][: spans[0][0]]),
                             "trained_text": [tokenizer.decode(e["input_ids"][a:b]) for a, b in spans]})
        yield {"line": line, "examples": examples}, result


def _highlighted(tokenizer, example: dict, on: str, off: str) -> str:
    ids, out, pos = example["input_ids"], [], 0
    for a, b in label_spans(example["labels"]):
        out += [tokenizer.decode(ids[pos:a]), on + tokenizer.decode(ids[a:b]) + off]
        pos = b
    out.append(tokenizer.decode(ids[pos:]))
    return "".join(out)


def preview_main(path: Union[str, Path], tokenizer_dir: Union[str, Path], *, loss_on: str = "assistant",
                 max_seq_len: int = 2048, limit: Optional[int] = None, as_json: bool = False) -> int:
    """Run the preview for the CLI.

    Returns:
        0 when every shown line trains, 1 when some line is skipped, 2 when the file or tokenizer cannot be used.
    """
    try:
        tokenizer = load_tokenizer_dir(tokenizer_dir)
        on, off = (_ON, _OFF) if sys.stdout.isatty() else (_PLAIN_ON, _PLAIN_OFF)
        skipped: Counter = Counter()
        splits: Counter = Counter()
        notes: Counter = Counter()  # eos_appended, reasoning_dropped
        lines = rows = tokens = trained = 0
        for shown, result in preview_lines(path, tokenizer, loss_on=loss_on, max_seq_len=max_seq_len, limit=limit):
            lines += 1
            if "error" in shown:
                skipped[shown["error"]["code"]] += 1
            else:
                rows += len(shown["examples"])
                tokens += result.n_tokens
                trained += result.n_trained
                splits[result.split] += result.split is not None
                notes["eos_appended"] += result.eos_appended
                notes["reasoning_dropped"] += result.reasoning_dropped
            if as_json:
                print_text(json.dumps(shown, ensure_ascii=False))
            elif "error" in shown:
                print_text(f"--- line {shown['line']}: skipped, {shown['error']['code']}: {shown['error']['message']}")
            else:
                for k, example in enumerate(shown["examples"], 1):
                    part = f" (example {k} of {len(shown['examples'])})" if len(shown["examples"]) > 1 else ""
                    print_text(f"--- line {shown['line']}{part}\n{_highlighted(tokenizer, example, on, off)}")
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not as_json:
        reasons = ", ".join(f"{n} {r}" for r, n in splits.items() if n) or "none"
        skips = ", ".join(f"{n} {code}" for code, n in skipped.items()) or "none"
        fraction = trained / tokens if tokens else 0.0
        print_text(f"=== {lines} lines -> {rows} examples; split into one example per trained turn: "
               f"{sum(splits.values())} ({reasons}); skipped: {skips}; {fraction:.1%} of tokens trained on")
        if notes["eos_appended"]:
            print_text(f"warning: {notes['eos_appended']} conversations: the template writes nothing after an answer, "
                   f"so EOS {tokenizer.eos_token!r} is appended to the trained answers")
        if notes["reasoning_dropped"]:
            print_text(f"warning: {notes['reasoning_dropped']} conversations: the template drops the reasoning of a "
                   "trained turn, so it is not trained on")
    return 1 if skipped else 0
