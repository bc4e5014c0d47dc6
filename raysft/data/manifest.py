"""A cache entry's manifest, from the summaries the encode tasks return (`raysft.data.prepare`).

Per split: rows, tokens, trained tokens, per-example lengths and target counts in final order, the shards in
part order and `order` (final position -> stored row across those shards); plus composition, encoding counts
and the key with what went into it.
"""

from __future__ import annotations

import json

import numpy as np

from raysft.data.cache import CACHE_FORMAT
from raysft.data.errors import DataError
from raysft.data.packing import pack
from raysft.data.pipeline import merge_counts
from raysft.data.template import encoding_warnings

__all__ = ["build_manifest", "padding_efficiency"]

_SPLITS = ("train", "validation")


def padding_efficiency(lengths: list[int], max_seq_len: int, packing: bool) -> float:
    """Real tokens over the capacity of the rows they fill (rows × max_seq_len when packed, else each row's own
    length, so 1.0: unpacked batches pad only to their longest row, which the plan decides later)."""
    if not lengths:
        return 0.0
    if not packing:
        return 1.0
    return sum(lengths) / (len(pack(lengths, max_seq_len)) * max_seq_len)


def _split_entry(mine: list[dict]) -> dict:
    """Rows, lengths, targets and order of one split from its shards' summaries (sorted by part)."""
    shards = [s for s in mine if s["file"]]
    base = np.cumsum([0] + [len(s["seq"]) for s in shards])
    seq = np.concatenate([np.asarray(s["seq"], np.int64) for s in shards] or [np.zeros(0, np.int64)])
    sub = np.concatenate([np.asarray(s["sub"], np.int64) for s in shards] or [np.zeros(0, np.int64)])
    stored = np.concatenate([np.arange(b, b + len(s["seq"])) for b, s in zip(base, shards)] or [np.zeros(0, np.int64)])
    order = np.lexsort((sub, seq))
    lengths = np.concatenate([np.asarray(s["lengths"], np.int64) for s in shards] or [np.zeros(0, np.int64)])[order]
    targets = np.concatenate([np.asarray(s["targets"], np.int64) for s in shards] or [np.zeros(0, np.int64)])[order]
    return {"rows": len(order), "tokens": int(lengths.sum()), "trained_tokens": int(targets.sum()),
            "lengths": lengths.tolist(), "targets": targets.tolist(), "order": stored[order].tolist(),
            "shards": [{"file": s["file"], "rows": len(s["seq"])} for s in shards]}


def _counts(mine: list[dict], sources: list[str], eos_token: str) -> tuple[dict, dict]:
    """(composition, encoding counts) of one split, sources in the order their rows were numbered."""
    per_source: dict[str, dict] = {src: {} for src in sources}
    for s in mine:
        for source, counts in json.loads(s["stats"]).items():
            merge_counts(per_source[source], counts)
    stats: dict = {}
    for counts in per_source.values():
        merge_counts(stats, counts)
    if stats:
        stats["warnings"] = encoding_warnings(stats, eos_token)
    stats["trained_fraction"] = stats.get("trained_tokens", 0) / max(stats.get("tokens", 0), 1)
    composition = {src: {"rows": c.get("rows", 0), "tokens": c.get("tokens", 0),
                         "trained_tokens": c.get("trained_tokens", 0)} for src, c in per_source.items()}
    return composition, stats


def build_manifest(key: str, inputs: dict, summaries: list[dict], sources: dict[str, list[str]], data, skipped: int,
                   date, eos_token: str, n_val_convs: int) -> dict:
    """The manifest of an entry whose encode tasks returned `summaries`.

    Raises:
        DataError: no train example is left after encoding.
    """
    summaries = sorted(summaries, key=lambda s: s["part"])
    splits, composition, encoding = {}, {}, {}
    for split in _SPLITS:
        mine = [s for s in summaries if s["split"] == split]
        composition[split], encoding[split] = _counts(mine, sources[split], eos_token)
        splits[split] = _split_entry(mine)
    if not splits["train"]["rows"]:
        raise DataError(
            f"no train example is left after encoding ({encoding['train']}); raise data.max_seq_len, "
            "set data.on_too_long: truncate, or check loss_on")
    total = splits["train"]["rows"]
    for v in composition["train"].values():
        v["share"] = v["rows"] / total
    conversations = [s["file"] for s in summaries if s["split"] == "conversations"]
    return {"format": CACHE_FORMAT, "key": key, "inputs": inputs, "splits": splits, "composition": composition,
            "encoding": encoding, "skipped_invalid": skipped, "template_date": date.isoformat(),
            "validation_conversations": n_val_convs, "validation_conversation_files": conversations,
            "padding_efficiency": padding_efficiency(splits["train"]["lengths"], data.max_seq_len, data.packing)}
