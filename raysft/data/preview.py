"""`raysft data preview`: how each conversation is rendered and which tokens are trained, on training's code path.

Every line goes through `to_conversation` and `encode_conversation` exactly as `prepare_data` sends it, so what is
shown is what a job trains on. On a terminal the trained spans are highlighted (outside one they are set between
⟦ and ⟧); ``--json`` prints one object per input line instead:

    {"line": int, "examples": [{"input_ids": [int], "labels": [int], "prompt_text": str, "trained_text": [str]}]}
    {"line": int, "error": {"code": str, "message": str}}        (a line training skips)

`prompt_text` is the decoded text before the first trained token, `trained_text` the decoded trained spans in order.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

from raysft.data.records import RecordError, iter_raw, to_conversation, tools_of
from raysft.data.template import encode_conversation

__all__ = ["PreviewSummary", "highlighted", "label_spans", "preview_lines"]


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


def highlighted(tokenizer, example: dict, on: str = "⟦", off: str = "⟧") -> str:
    """The decoded example with each trained span set between `on` and `off` (brackets, or a terminal's colours)."""
    ids, out, pos = example["input_ids"], [], 0
    for a, b in label_spans(example["labels"]):
        out += [tokenizer.decode(ids[pos:a]), on + tokenizer.decode(ids[a:b]) + off]
        pos = b
    out.append(tokenizer.decode(ids[pos:]))
    return "".join(out)


@dataclass
class PreviewSummary:
    """What the previewed lines come to: `add` each (shown, result) pair `preview_lines` yields, then `format` it."""

    lines: int = 0
    rows: int = 0  # examples: a split conversation gives several
    tokens: int = 0
    trained: int = 0
    skipped: Counter = field(default_factory=Counter)  # error code -> lines training skips
    splits: Counter = field(default_factory=Counter)  # split reason -> conversations
    eos_appended: int = 0
    reasoning_dropped: int = 0

    def add(self, shown: dict, result) -> None:
        self.lines += 1
        if "error" in shown:
            self.skipped[shown["error"]["code"]] += 1
            return
        self.rows += len(shown["examples"])
        self.tokens += result.n_tokens
        self.trained += result.n_trained
        self.splits[result.split] += result.split is not None
        self.eos_appended += result.eos_appended
        self.reasoning_dropped += result.reasoning_dropped

    def format(self, eos_token: str) -> str:
        """The summary line, then a warning line for each template quirk seen (EOS appended, reasoning dropped)."""
        reasons = ", ".join(f"{n} {r}" for r, n in self.splits.items() if n) or "none"
        skips = ", ".join(f"{n} {code}" for code, n in self.skipped.items()) or "none"
        fraction = self.trained / self.tokens if self.tokens else 0.0
        out = [f"=== {self.lines} lines -> {self.rows} examples; split into one example per trained turn: "
               f"{sum(self.splits.values())} ({reasons}); skipped: {skips}; {fraction:.1%} of tokens trained on"]
        if self.eos_appended:
            out.append(f"warning: {self.eos_appended} conversations: the template writes nothing after an answer, "
                       f"so EOS {eos_token!r} is appended to the trained answers")
        if self.reasoning_dropped:
            out.append(f"warning: {self.reasoning_dropped} conversations: the template drops the reasoning of a "
                       "trained turn, so it is not trained on")
        return "\n".join(out)
