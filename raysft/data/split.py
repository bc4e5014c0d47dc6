"""Deterministic validation split (optionally stratified), multi-task weights and general-data mixing.

Every function takes an explicit seed: the same spec always yields the same rows in the same split.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from typing import Optional

from raysft.data.errors import DataError

__all__ = ["stratum_of", "split_indices", "split_validation", "apply_weight", "mix_counts", "sample_rows"]


def stratum_of(item: dict, stratify_by: str) -> str:
    """The stratum of a conversation item (`{"messages", "record"}`).

    Args:
        item: a loaded conversation with its original record.
        stratify_by: `assistant` (the final assistant answer, e.g. a class label) or a dotted record
            field such as `metadata.industry`.

    Raises:
        DataError: the field is missing from the record.
    """
    if stratify_by == "assistant":
        return item["messages"][-1]["content"].strip()
    node = item["record"]
    for part in stratify_by.split("."):
        if not isinstance(node, dict) or part not in node:
            raise DataError(
                f"data.stratify_by: record has no field {stratify_by!r} (keys: {sorted(item['record'])}); "
                "name a field every record has, or use 'assistant'")
        node = node[part]
    return str(node)


def _held_out_count(n: int, fraction: float) -> int:
    # At least one row when there is anything to spare, never the whole group.
    if n < 2 or fraction <= 0:
        return 0
    return min(n - 1, max(1, round(n * fraction)))


def split_validation(items: list, fraction: float, seed: int, stratify_by: Optional[str] = None) -> tuple[list, list]:
    """Hold `fraction` of `items` out for validation, deterministically by `seed`.

    With `stratify_by`, each stratum contributes the same share, so class proportions match across splits.

    Returns:
        (train, validation), each in a seeded shuffled order.
    """
    strata = [stratum_of(item, stratify_by) for item in items] if stratify_by else None
    train_idx, val_idx = split_indices(len(items), fraction, seed, strata)
    return [items[i] for i in train_idx], [items[i] for i in val_idx]


def split_indices(n: int, fraction: float, seed: int, strata: Optional[list[str]] = None) -> tuple[list[int], list[int]]:
    """`split_validation` on positions 0..n-1 (with each position's stratum, when stratified): what a pipeline that
    holds only a per-row index, not the rows, splits with."""
    rng = random.Random(seed)
    if strata is None:
        order = list(range(n))
        rng.shuffle(order)
        k = _held_out_count(n, fraction)
        return order[k:], order[:k]
    groups: dict[str, list[int]] = defaultdict(list)
    for i, stratum in enumerate(strata):
        groups[stratum].append(i)
    train_idx, val_idx = [], []
    for key in sorted(groups):
        idx = groups[key]
        rng.shuffle(idx)
        k = _held_out_count(len(idx), fraction)
        val_idx += idx[:k]
        train_idx += idx[k:]
    rng.shuffle(train_idx)
    rng.shuffle(val_idx)
    return train_idx, val_idx


def sample_rows(items: list, n: int, rng: random.Random) -> list:
    """`n` rows of `items`: whole copies first, then a seeded sample without replacement for the rest."""
    if n <= 0 or not items:
        return []
    copies, rest = divmod(n, len(items))
    return items * copies + rng.sample(items, rest)


def apply_weight(items: list, weight: float, seed: int) -> list:
    """Repeat (weight > 1) or subsample (weight < 1) a source's rows for multi-task weighting."""
    return sample_rows(items, int(round(len(items) * weight)), random.Random(seed))


def mix_counts(n_domain: int, ratios: list[float]) -> list[int]:
    """Rows to draw from each mix source so that source i is ratios[i] of the final train set.

    With domain rows D and mix shares r_i (sum R < 1), the final size is D / (1 - R) and source i
    contributes r_i of it.
    """
    total = sum(ratios)
    if total >= 1:
        raise DataError(f"data.mix: ratios add up to {total:g}; they must sum below 1")
    final = n_domain / (1 - total)
    return [int(math.floor(final * r + 0.5)) for r in ratios]
