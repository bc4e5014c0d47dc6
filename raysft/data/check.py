"""The data doctor (`raysft data check`): format correctness rate, line-numbered findings, quality stats.

`check_file` streams the file once. Per distinct example it keeps one dict entry for duplicate detection
(~130 bytes: 1M examples ~130 MB, whatever their length) and nothing else grows with the file;
percentiles come from a fixed-size reservoir sample (exact up to 10,000 examples).

Errors are the record codes of `raysft.data.records` (the line cannot be trained on), and with a tokenizer

    template_rejected  the tokenizer's chat template refuses the conversation (its own message is quoted), or
                       the conversation has tool calls and the template no tool support

Warnings (the line is usable but suspicious):

    duplicate        same conversation (roles and contents, other keys ignored) as an earlier line
    near_duplicate   the same after lowercasing and removing whitespace and punctuation
    not_alternating  user/assistant turns do not alternate starting with user (this includes a
                     conversation with no user turn at all)
    too_long         an example longer than max_seq_len (only with a tokenizer), encoded exactly as training
                     encodes it (the tokenizer's chat template, or DEFAULT_CHAT_TEMPLATE when it has none)
    reasoning_dropped  a file-level finding (line 0): the chat template leaves the reasoning of trained turns out
    label_imbalance  a file-level finding (line 0, listed first): the final answers look like class
                     labels and the largest class has more than LABEL_IMBALANCE_RATIO x the smallest

Final answers count as class labels when the LABEL_MAX_CLASSES most frequent (each at most 64
characters) cover at least LABEL_COVERAGE of the valid examples, there are at least two of them, and
they repeat (on average twice or more).

At most MAX_FINDINGS errors and MAX_FINDINGS warnings are listed (the first ones by line);
`errors_total` and `warnings_total` count all of them. `format_rate` is valid / total, and 0.0 for a
file with no records (nothing to train on).
"""

from __future__ import annotations

import math
import random
import re
import string
from collections import Counter
from pathlib import Path
from typing import Iterator, Optional, Union

from raysft.data.errors import DataError
from raysft.data.records import RecordError, iter_raw, to_conversation, tools_of
from raysft.data.render import split_reasoning
from raysft.data.template import ChatTemplateError, encode_conversation

__all__ = [
    "MAX_FINDINGS",
    "LABEL_MAX_CLASSES",
    "LABEL_COVERAGE",
    "LABEL_IMBALANCE_RATIO",
    "check_file",
    "format_report",
    "load_tokenizer_dir",
]

MAX_FINDINGS = 1000
LABEL_MAX_CLASSES = 20
LABEL_COVERAGE = 0.9
LABEL_IMBALANCE_RATIO = 3.0

_LABEL_MAX_CHARS = 64
# Distinct short answers counted before deciding the task is not classification; bounds the Counter.
_LABEL_TRACK = 1000
_SAMPLE = 10_000
_MASK32 = (1 << 32) - 1
_LINE_BITS = 40
_ASCII_IGNORED = (string.punctuation + string.whitespace).encode()
# UTF-8 of non-ASCII punctuation and spaces: U+0080-00BF (NBSP, ¡, «, »...), U+2000-206F (general
# punctuation, Unicode spaces), U+3000-303F (CJK, ideographic space, 、。「」) and full-width ！，：？ etc.
# A bytes regex over these few lead bytes runs ~3x faster than a Unicode `[\W_]` pattern.
_UNICODE_IGNORED = re.compile(
    rb"\xc2[\x80-\xbf]|\xe2\x80[\x80-\xbf]|\xe2\x81[\x80-\xaf]|\xe3\x80[\x80-\xbf]"
    rb"|\xef\xbc[\x80-\x8f\x9a-\xa0\xbb-\xbf]|\xef\xbd[\x80\x9b-\xa5]"
)


class _Findings:
    """Findings of one kind: the first MAX_FINDINGS are kept, all are counted."""

    def __init__(self):
        self.items: list[dict] = []
        self.total = 0

    def add(self, line: int, code: str, message: str) -> None:
        self.total += 1
        if len(self.items) < MAX_FINDINGS:
            self.items.append({"line": line, "code": code, "message": message})

    def add_file_level(self, code: str, message: str) -> None:
        """A finding about the whole file (line 0): listed first, and kept even when the list is full."""
        self.total += 1
        self.items.insert(0, {"line": 0, "code": code, "message": message})


class _Distribution:
    """Exact min/max/mean; p50/p90 from a reservoir sample of _SAMPLE values (seeded, so reproducible)."""

    def __init__(self):
        self.n, self.total, self.min, self.max = 0, 0, math.inf, -math.inf
        self.sample: list[int] = []
        self._random = random.Random(0).random

    def add(self, value: int) -> None:
        self.n += 1
        self.total += value
        if value < self.min:
            self.min = value
        if value > self.max:
            self.max = value
        if len(self.sample) < _SAMPLE:
            self.sample.append(value)
        else:
            slot = int(self._random() * self.n)
            if slot < _SAMPLE:
                self.sample[slot] = value

    def summary(self) -> dict:
        if not self.n:
            return dict.fromkeys(("min", "p50", "p90", "max", "mean"))
        ordered = sorted(self.sample)
        rank = lambda q: ordered[max(0, math.ceil(q * len(ordered)) - 1)]  # nearest-rank percentile
        mean = round(self.total / self.n, 1)
        return {"min": self.min, "p50": rank(0.5), "p90": rank(0.9), "max": self.max, "mean": mean}


class _Duplicates:
    """Finds exact and near duplicates with one dict entry per distinct near-duplicate key.

    Python's 64-bit string hash stands in for a digest (it only has to agree within this process):
    `_first` maps the near key hash to (32-bit exact fingerprint << 40 | first line). Exact duplicates
    are near duplicates too, so one lookup answers both; `_variants` (exact hash -> line) only holds lines
    that were near duplicates with different exact text, so a later exact copy of one names it.
    """

    def __init__(self):
        self._first: dict[int, int] = {}
        self._variants: dict[int, int] = {}

    def check(self, line: int, conversation: list[dict]) -> Optional[tuple[str, str]]:
        text = "\x00".join([m["role"] + "\x01" + m["content"] for m in conversation])
        exact = hash(text)
        near = text.lower().encode("utf-8", "surrogatepass").translate(None, _ASCII_IGNORED)
        if not text.isascii():
            near = _UNICODE_IGNORED.sub(b"", near)
        near = hash(near)
        entry = self._first.get(near)
        if entry is None:
            self._first[near] = (exact & _MASK32) << _LINE_BITS | line
            return None
        first_line = entry & ((1 << _LINE_BITS) - 1)
        if entry >> _LINE_BITS == exact & _MASK32:
            return "duplicate", f"same conversation as line {first_line}; remove one copy"
        earlier = self._variants.get(exact)
        if earlier is not None:
            return "duplicate", f"same conversation as line {earlier}; remove one copy"
        self._variants[exact] = line
        return "near_duplicate", f"same as line {first_line} up to case, spacing and punctuation; remove one"


class _Labels:
    """Counts short final answers to detect classification data; gives up past _LABEL_TRACK values."""

    def __init__(self):
        self.counts: Counter = Counter()
        self.rows = 0
        self.gave_up = False

    def add(self, answer: str) -> None:
        self.rows += 1
        answer = answer.strip()
        if self.gave_up or len(answer) > _LABEL_MAX_CHARS:
            return
        self.counts[answer] += 1
        if len(self.counts) > _LABEL_TRACK:
            self.gave_up = True
            self.counts.clear()

    def distribution(self) -> Optional[dict[str, int]]:
        top = self.counts.most_common(LABEL_MAX_CLASSES)
        covered = sum(count for _, count in top)
        if len(top) < 2 or covered < LABEL_COVERAGE * self.rows or covered < 2 * len(top):
            return None
        return dict(top)


class _Stats:
    """The `stats` of a report, gathered from the valid examples one at a time."""

    def __init__(self):
        self.chars, self.tokens, self.turns = _Distribution(), _Distribution(), _Distribution()
        self.turn_histogram: Counter = Counter()
        self.labels = _Labels()
        self.kinds: Counter = Counter()  # reasoning, tool_calls, split, reasoning_dropped

    def add(self, conversation: list[dict], n_tokens: Optional[int]) -> None:
        if n_tokens is not None:
            self.tokens.add(n_tokens)
        self.chars.add(sum(len(m["content"]) for m in conversation))
        n_turns = sum(m["role"] in ("user", "assistant") for m in conversation)
        self.turns.add(n_turns)
        self.turn_histogram[n_turns] += 1
        self.labels.add(conversation[-1]["content"])
        answers = [m for m in conversation if m["role"] == "assistant"]
        self.kinds["reasoning"] += any(split_reasoning(m)[0].strip() for m in answers)
        self.kinds["tool_calls"] += any(m.get("tool_calls") for m in answers)

    def summary(self, with_tokens: bool) -> dict:
        stats: dict = {
            "chars": self.chars.summary(),
            "turns": {**self.turns.summary(), "histogram": dict(sorted(self.turn_histogram.items()))},
        }
        stats["reasoning"], stats["tool_calls"] = self.kinds["reasoning"], self.kinds["tool_calls"]
        if with_tokens:
            stats["tokens"] = self.tokens.summary()
            stats["split"] = self.kinds["split"]
        distribution = self.labels.distribution()
        if distribution:
            stats["labels"] = distribution
            stats["labels_other"] = self.labels.rows - sum(distribution.values())
        return stats


def _alternation_problem(conversation: list[dict]) -> Optional[str]:
    expected = "user"
    for number, message in enumerate(conversation, 1):
        role = message["role"]
        if role == "system":
            continue
        if role != expected:
            return (
                f"message {number} is {role!r} where {expected!r} was expected; turns should alternate "
                "user/assistant starting with user (merge consecutive turns or add the missing one)"
            )
        expected = "assistant" if role == "user" else "user"
    return None


def _imbalance(distribution: dict[str, int]) -> Optional[str]:
    big, n_big = max(distribution.items(), key=lambda kv: kv[1])
    small, n_small = min(distribution.items(), key=lambda kv: kv[1])
    if n_big <= LABEL_IMBALANCE_RATIO * n_small:
        return None
    return (
        f"class {big!r} has {n_big} examples, {n_big / n_small:.1f}x the {n_small} of {small!r} "
        f"(threshold {LABEL_IMBALANCE_RATIO:g}x); add examples of the small classes or downsample the large one"
    )


def check_file(path: Union[str, Path], tokenizer=None, max_seq_len: Optional[int] = None) -> dict:
    """Check a data file and report its format correctness rate, findings and stats.

    Args:
        path: a data file or saved-dataset directory (any format `raysft.data.records.iter_raw` reads).
        tokenizer: a transformers tokenizer; adds token stats, and `too_long` when `max_seq_len` is set.
        max_seq_len: tokens per example allowed in training (`data.max_seq_len`).

    Returns:
        {"total", "valid", "format_rate", "errors", "errors_total", "warnings", "warnings_total", "stats"};
        each finding is {"line", "code", "message"}. `stats` has "chars" and "turns" (user/assistant
        messages per example, with a "histogram") summaries ({min, p50, p90, max, mean}, None values
        when there is no valid example), "reasoning" and "tool_calls" (valid examples whose assistant turns
        carry reasoning / tool calls), with a tokenizer "tokens" (the longest encoded example of each line) and
        "split" (conversations training makes one example per trained turn), and "labels" ({label: count}) plus
        "labels_other" (examples outside those labels) when the data looks like classification.

    Raises:
        DataError: the path does not exist or cannot be read. Bad content never raises.
    """
    errors, warnings = _Findings(), _Findings()
    duplicates, stats = _Duplicates(), _Stats()
    total = valid = 0
    for line, value in iter_raw(path):
        total += 1
        try:
            conversation = to_conversation(value)
        except RecordError as e:
            errors.add(line, e.code, e.message)
            continue
        n_tokens = None
        if tokenizer is not None:
            n_tokens = _encoded_tokens(tokenizer, conversation, tools_of(value), line, errors, stats.kinds)
            if n_tokens is None:
                continue
        valid += 1
        for code, message in _line_warnings(line, conversation, n_tokens, max_seq_len, duplicates):
            warnings.add(line, code, message)
        stats.add(conversation, n_tokens)
    summary = stats.summary(with_tokens=tokenizer is not None)
    _add_file_warnings(warnings, stats.kinds["reasoning_dropped"], summary.get("labels"))
    return {
        "total": total,
        "valid": valid,
        "format_rate": valid / total if total else 0.0,
        "errors": errors.items,
        "errors_total": errors.total,
        "warnings": warnings.items,
        "warnings_total": warnings.total,
        "stats": summary,
    }


def _line_warnings(line: int, conversation: list[dict], n_tokens: Optional[int], max_seq_len: Optional[int],
                   duplicates: _Duplicates) -> Iterator[tuple[str, str]]:
    """(code, message) of each reason a usable line is suspicious, in the order they are listed."""
    if n_tokens is not None and max_seq_len is not None and n_tokens > max_seq_len:
        yield "too_long", (f"{n_tokens} tokens > max_seq_len {max_seq_len}; training drops or truncates it "
                           "(data.on_too_long): shorten it or raise data.max_seq_len")
    found = duplicates.check(line, conversation)
    if found:
        yield found
    problem = _alternation_problem(conversation)
    if problem:
        yield "not_alternating", problem


def _add_file_warnings(warnings: _Findings, reasoning_dropped: int, labels: Optional[dict[str, int]]) -> None:
    """The file-level warnings, ahead of the per-line ones (label_imbalance first)."""
    if reasoning_dropped:
        warnings.add_file_level("reasoning_dropped", (
            f"the chat template leaves out the reasoning of trained turns in {reasoning_dropped} examples, "
            "so it is not trained on; use a template that renders reasoning (e.g. the updated DeepSeek-R1 one)"))
    imbalance = _imbalance(labels) if labels else None
    if imbalance:
        warnings.add_file_level("label_imbalance", imbalance)


def _encoded_tokens(tokenizer, conversation, tools, line: int, errors: _Findings, kinds: Counter) -> Optional[int]:
    """Tokens of the longest example training makes of the line (its own code path), None when it rejects it."""
    try:
        result = encode_conversation(tokenizer, conversation, max_seq_len=1 << 30, tools=tools)
    except ChatTemplateError as e:
        errors.add(line, "template_rejected", str(e))
        return None
    if result.status == "template_rejected":
        errors.add(line, "template_rejected", f"the tokenizer's chat template rejects it: {result.error}")
        return None
    kinds["split"] += result.split is not None
    kinds["reasoning_dropped"] += result.reasoning_dropped
    return max((len(e["input_ids"]) for e in result.examples), default=result.n_tokens)


# ------------------------------------------------------------------------------------------ output


def _summary_text(summary: dict) -> str:
    if summary["min"] is None:
        return "none"
    return "  ".join(f"{key} {summary[key]}" for key in ("min", "p50", "p90", "max", "mean"))


def format_report(report: dict) -> str:
    """Render a `check_file` report as readable text (same content as the JSON).

    Args:
        report: the dict returned by `check_file`.

    Returns:
        Multi-line text: the format correctness rate, each finding as `line N: code: message`
        (file-level findings as `file: code: message`), then the stats.
    """
    total, valid = report["total"], report["valid"]
    if total:
        out = [f"{valid} of {total} examples valid: format correctness rate {report['format_rate']:.1%}"]
    else:
        out = ["no examples found: the file is empty (format correctness rate 0.0%)"]
    for kind in ("errors", "warnings"):
        items, count = report[kind], report[f"{kind}_total"]
        listed = f", first {len(items)} listed" if len(items) < count else ""
        out.append(f"{kind} ({count}{listed}):" if count else f"{kind}: none")
        for f in items:
            where = f"line {f['line']}" if f["line"] else "file"
            out.append(f"  {where}: {f['code']}: {f['message']}")
    stats = report["stats"]
    out.append("stats:")
    out.append(f"  characters per example: {_summary_text(stats['chars'])}")
    if "tokens" in stats:
        out.append(f"  tokens per example: {_summary_text(stats['tokens'])}")
    histogram = ", ".join(f"{n} turns: {count}" for n, count in stats["turns"]["histogram"].items())
    histogram = f" ({histogram})" if histogram else ""
    out.append(f"  user/assistant turns per example: {_summary_text(stats['turns'])}{histogram}")
    out.append(f"  examples with reasoning: {stats['reasoning']}, with tool calls: {stats['tool_calls']}")
    if "split" in stats:
        out.append(f"  conversations training splits into one example per trained turn: {stats['split']}")
    if "labels" in stats:
        shown = ", ".join(f"{label!r}: {count}" for label, count in stats["labels"].items())
        out.append(f"  labels ({len(stats['labels'])} classes, {stats['labels_other']} other): {shown}")
    return "\n".join(out)


def load_tokenizer_dir(directory: Union[str, Path]):
    """A tokenizer from a local directory (never downloads); DataError naming the directory when it holds none."""
    path = Path(directory)
    if not path.is_dir():
        raise DataError(
            f"{path}: tokenizer directory not found; pass a model or tokenizer directory, or leave it out"
        )
    from transformers import AutoTokenizer  # deferred: seconds to import, only needed with a tokenizer

    try:
        return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except Exception as e:  # transformers/tokenizers raise OSError, ValueError, or a bare Exception from Rust
        raise DataError(
            f"{path}: not a tokenizer directory ({str(e).splitlines()[0]}); "
            f"it needs tokenizer.json or tokenizer_config.json, e.g. from tokenizer.save_pretrained({str(path)!r})"
        ) from e
