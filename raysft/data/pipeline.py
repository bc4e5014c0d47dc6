"""From a spec's `data` section to encoded train and validation examples, with the realised composition.

Order of operations (each step deterministic by `train.seed`):
1. read every train source (invalid lines are skipped and counted; `raysft data check` lists them);
2. hold the validation split out of the union of train sources (stratified when asked), or read
   `data.validation`;
3. apply multi-task weights to the remaining train rows of each source;
4. add `data.mix` general data at its share of the final train set;
5. template and tokenise with loss masks (see `raysft.data.template`): conversations the chat template rejects,
   over-length and target-less examples are dropped and counted; templates that print today's date see one date
   per run (`template_date`, recorded in the run's summary).
"""

from __future__ import annotations

import datetime
import random
from dataclasses import dataclass, field
from typing import Any, Callable

from raysft.config import DataSpec
from raysft.data.errors import DataError
from raysft.data.records import load_conversations
from raysft.data.split import apply_weight, mix_counts, sample_rows, split_indices, stratum_of
from raysft.data.template import encode_dataset

__all__ = ["PreparedData", "Selection", "merge_counts", "prepare_data", "select_conversations",
           "select_rows"]


@dataclass
class PreparedData:
    """Encoded examples ready for packing, plus what a person needs to trust them."""

    train: list[dict]
    """Encoded train examples ({input_ids, labels})."""
    validation: list[dict]
    """Encoded validation examples."""
    validation_conversations: list[dict]
    """Validation conversations ({"messages", "tools"}) for generation-based evaluation."""
    composition: dict
    """Rows and tokens per source and split, as realised."""
    encoding: dict = field(default_factory=dict)
    """Encoding counts per split: kept, truncated, dropped, tokens, trained tokens and fraction."""
    skipped_invalid: int = 0
    """Invalid records skipped across all files."""
    template_date: str = ""
    """The day (ISO) that templates printing today's date saw while encoding."""


def _load(path: str) -> tuple[list[dict], int]:
    return load_conversations(path)


def _no_valid_rows(path: str, invalid: int) -> DataError:
    return DataError(f"{path}: no valid conversations ({invalid} invalid lines); "
                     f"run `raysft data check {path}` to see why")


@dataclass
class Selection:
    """Which rows a spec trains and validates on, in order, before encoding."""

    train: list[tuple[str, Any]]
    """(source path, row) pairs of the final train set: split, weighted, mixed and shuffled."""
    validation: list[tuple[str, Any]]
    """(source path, row) pairs held out (or read from data.validation)."""
    skipped_invalid: int
    """Invalid records skipped across all files."""


def select_conversations(data: DataSpec, seed: int) -> Selection:
    """Steps 1-4 of the module docstring on conversation items read into this process.

    Raises:
        DataError: a file is missing or unreadable, or has no valid rows.
    """
    return select_rows(data, seed, _load, lambda item: stratum_of(item, data.stratify_by))


def select_rows(data: DataSpec, seed: int, read: Callable[[str], tuple[list, int]],
                stratum: Callable[[Any], str]) -> Selection:
    """Steps 1-4 of the module docstring, deterministically by `seed`, on rows of any kind.

    A row is whatever `read` returns for a file: a conversation item, or just a row id (`raysft.data.prepare`
    selects by row id and never holds the conversations). Every step only counts, orders and samples rows, so
    both give the same selection.

    Args:
        read: a file's valid rows in file order, and its number of invalid records.
        stratum: a row's stratum (used with `data.stratify_by`).

    Raises:
        DataError: a file has no valid rows (or whatever `read` raises).
    """
    skipped = 0

    def load(path: str) -> list:
        nonlocal skipped
        rows, invalid = read(path)
        if not rows:
            raise _no_valid_rows(path, invalid)
        skipped += invalid
        return rows

    sources: list[tuple[str, Any]] = []  # (source path, row), domain train sources in spec order
    for src in data.train:
        sources += [(src.path, row) for row in load(src.path)]

    if data.validation:
        val_pairs = [(data.validation, row) for row in load(data.validation)]
        train_pairs = sources
    else:
        strata = [stratum(row) for _, row in sources] if data.stratify_by else None
        train_idx, val_idx = split_indices(len(sources), data.validation_split, seed, strata)
        train_pairs, val_pairs = [sources[i] for i in train_idx], [sources[i] for i in val_idx]

    weighted: list[tuple[str, Any]] = []
    for i, src in enumerate(data.train):
        rows = [p for p in train_pairs if p[0] == src.path]
        weighted += apply_weight(rows, src.weight, seed + i) if src.weight != 1 else rows

    rng = random.Random(seed)
    counts = mix_counts(len(weighted), [m.ratio for m in data.mix])
    for mix, n in zip(data.mix, counts):
        weighted += [(mix.path, row) for row in sample_rows(load(mix.path), n, rng)]
    rng.shuffle(weighted)
    return Selection(weighted, val_pairs, skipped)


def prepare_data(data: DataSpec, tokenizer, seed: int) -> PreparedData:
    """Read, split, weight, mix and encode the data a spec names.

    Args:
        data: the spec's data section.
        tokenizer: the base model's tokenizer (its chat template renders the conversations).
        seed: seeds the split, weighting and mixing.

    Raises:
        DataError: a file is missing or unreadable, has no valid rows, or nothing is left to train on;
            `ChatTemplateError` (a DataError) when the data has tool calls the chat template cannot render.
    """
    template_date = data.template_date or datetime.date.today()  # runs fix it first (train/launcher.py)
    selected = select_conversations(data, seed)
    weighted, val_pairs, skipped = selected.train, selected.validation, selected.skipped_invalid

    composition: dict = {"train": {}, "validation": {}}
    encoded: dict[str, list[dict]] = {}
    encoding: dict[str, dict] = {}
    for split, pairs in (("train", weighted), ("validation", val_pairs)):
        examples, stats = [], {}
        for source in dict.fromkeys(p[0] for p in pairs):
            convs = [it for s, it in pairs if s == source]
            kept, counts_ = encode_dataset(
                tokenizer, convs, max_seq_len=data.max_seq_len, loss_on=data.loss_on, on_too_long=data.on_too_long,
                date=template_date)
            examples += kept
            composition[split][source] = {"rows": len(kept), "tokens": counts_["tokens"], "trained_tokens": counts_["trained_tokens"]}
            merge_counts(stats, counts_)
        stats["trained_fraction"] = stats.get("trained_tokens", 0) / max(stats.get("tokens", 0), 1)
        encoded[split], encoding[split] = examples, stats

    if not encoded["train"]:
        raise DataError(
            f"no train example is left after encoding ({encoding['train']}); raise data.max_seq_len, "
            "set data.on_too_long: truncate, or check loss_on")
    total_rows = sum(v["rows"] for v in composition["train"].values())
    for source, v in composition["train"].items():
        v["share"] = v["rows"] / total_rows
    return PreparedData(
        train=encoded["train"],
        validation=encoded["validation"],
        validation_conversations=[{"messages": it["messages"], "tools": it.get("tools")} for _, it in val_pairs],
        composition=composition,
        encoding=encoding,
        skipped_invalid=skipped,
        template_date=template_date.isoformat(),
    )


def merge_counts(stats: dict, counts: dict) -> None:
    """Add one source's encoding counts to its split's (numbers summed, reasons summed, warnings listed once)."""
    for k, v in counts.items():
        if k == "trained_fraction":
            continue
        if k == "split_reasons":
            reasons = stats.setdefault(k, {})
            for reason, n in v.items():
                reasons[reason] = reasons.get(reason, 0) + n
        elif k == "warnings":
            stats[k] = list(dict.fromkeys(stats.get(k, []) + v))
        else:
            stats[k] = stats.get(k, 0) + v
