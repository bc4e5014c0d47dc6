"""Packing several examples per row without cross-contamination (see DESIGN.md decision 3).

Attention mechanism: a packed batch carries ``position_ids`` that restart at 0 for every example and carries
**no** ``attention_mask``. transformers (5.x) then finds the example boundaries itself from the position ids:

- sdpa / eager / flex: ``masking_utils.find_packed_sequence_indices`` turns the restarts into sequence ids and
  ``create_causal_mask`` builds a causal, block-diagonal mask (B, 1, T, T) per row;
- flash_attention_2/3: ``_is_packed_sequence`` turns the restarts into ``cu_seqlens`` for the varlen kernel, which
  never materialises a mask. That path requires batch size 1, so flatten a packed batch to (1, B*T) first
  (``t.view(1, -1)`` on each tensor): positions restart per example, so the flat row is the same batch.

Two conditions make transformers look at the position ids, and both are the caller's to meet: no 2D
``attention_mask`` is passed, and **``use_cache=False``** (Llama's config defaults to ``use_cache=True``, and with a
cache the packed-sequence detection is skipped and examples attend across boundaries). A precomputed 4D mask was
not chosen: eager attention needs it additive in the model dtype, it costs B*T*T memory, and flash attention
cannot use it at all.

The tail of a packed row is padding that forms its own segment (positions restart at 0 there too), so no real
token attends to it. Labels follow the transformers convention (unshifted: the model shifts them); the first label
of every example is set to -100, so the shifted loss never asks the last token of one example to predict the first
token of the next.
"""

from __future__ import annotations

import bisect
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    import torch

__all__ = ["collate", "count_targets", "pack"]

_IGNORE_INDEX = -100


def count_targets(labels: Sequence[int]) -> int:
    """Tokens that contribute to the loss: labelled positions after the first (the first has no context)."""
    return sum(1 for label in labels[1:] if label != _IGNORE_INDEX)


def pack(lengths: Sequence[int], max_seq_len: int) -> list[list[int]]:
    """Group example indices into rows of at most `max_seq_len` tokens, best-fit decreasing.

    Examples are placed longest first (ties by index), each into the fullest row it still fits in, else into a
    new row. Deterministic; O(n log n): rows are bucketed by free space, so finding the best fit is one bisect
    over at most `max_seq_len` distinct free-space values.

    Args:
        lengths: token count of each example.
        max_seq_len: most tokens per row.

    Returns:
        Rows of example indices, in the order the rows were opened; within a row, longest first.

    Raises:
        ValueError: an example is empty or longer than `max_seq_len`.
    """
    for i, n in enumerate(lengths):
        if not 0 < n <= max_seq_len:
            raise ValueError(
                f"example {i} has {n} tokens; packing needs 1..{max_seq_len} (max_seq_len): encode the data with "
                "the same max_seq_len so over-long examples are dropped or truncated first"
            )
    rows: list[list[int]] = []
    free_values: list[int] = []  # sorted distinct free-space values of rows that still have room
    rows_by_free: dict[int, list[int]] = {}
    for i in sorted(range(len(lengths)), key=lambda k: (-lengths[k], k)):
        n = lengths[i]
        at = bisect.bisect_left(free_values, n)
        if at == len(free_values):
            row, free = len(rows), max_seq_len - n
            rows.append([i])
        else:
            bucket = rows_by_free[free_values[at]]
            row = bucket.pop()
            free = free_values[at] - n
            if not bucket:
                del rows_by_free[free_values.pop(at)]
            rows[row].append(i)
        if free:
            if free not in rows_by_free:
                bisect.insort(free_values, free)
                rows_by_free[free] = []
            rows_by_free[free].append(row)
    return rows


def collate(
    examples: Sequence[dict] | Sequence[Sequence[dict]],
    *,
    pad_id: int,
    packed: bool,
    pad_to_multiple_of: int | None = None,
) -> dict[str, torch.Tensor]:
    """Turn encoded examples into a right-padded batch of tensors.

    Args:
        examples: with ``packed=False`` a list of examples (``{"input_ids", "labels"}``), one per row; with
            ``packed=True`` a list of rows, each a list of examples (e.g. from `pack`) concatenated into one row.
        pad_id: token id written into padding.
        packed: whether `examples` are rows of packed examples.
        pad_to_multiple_of: round the row length up to a multiple of this (None: the longest row).

    Returns:
        ``input_ids`` (B, T) long; ``labels`` (B, T) long, -100 on padding and on each example's first token;
        ``position_ids`` (B, T) long, restarting at 0 for each example; ``num_trained_tokens`` () long, the
        labelled tokens of the batch (the denominator of a token-normalised loss). Unpacked batches also carry
        ``attention_mask`` (B, T) long, 0 on padding; packed batches carry none (see the module docstring: call
        the model with ``use_cache=False``). Pop ``num_trained_tokens`` before ``model(**batch)``.
    """
    import torch  # here, not above: the cache's manifest needs only `pack`, and its encode actors import the
    # manifest, so a module-level torch cost each of them a second before its first piece

    rows = _rows(examples, packed)
    width = max(sum(len(e["input_ids"]) for e in row) for row in rows)
    if pad_to_multiple_of:
        width = -(-width // pad_to_multiple_of) * pad_to_multiple_of
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), _IGNORE_INDEX, dtype=torch.long)
    position_ids = torch.zeros((len(rows), width), dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for r, row in enumerate(rows):
        start = 0
        for example in row:
            ids, labs = example["input_ids"], example["labels"]
            n = len(ids)
            input_ids[r, start : start + n] = torch.tensor(ids, dtype=torch.long)
            labels[r, start + 1 : start + n] = torch.tensor(labs[1:], dtype=torch.long)
            position_ids[r, start : start + n] = torch.arange(n)
            start += n
        attention_mask[r, :start] = 1
        # Packed: the padding tail is a segment of its own; unpacked: it is masked, positions just run on.
        position_ids[r, start:] = torch.arange(width - start) + (0 if packed else start)
    batch = {"input_ids": input_ids, "labels": labels, "position_ids": position_ids}
    if not packed:
        batch["attention_mask"] = attention_mask
    batch["num_trained_tokens"] = (labels != _IGNORE_INDEX).sum()
    return batch


def _rows(examples, packed: bool) -> list[Sequence[dict]]:
    """Validate the collate input and return it as rows of examples."""
    if not examples:
        raise ValueError("collate got no examples: give at least one")
    if packed and any(isinstance(row, dict) for row in examples):
        raise TypeError(
            "packed=True takes rows (lists of examples), e.g. [[examples[i] for i in row] for row in pack(...)]"
        )
    if not packed and any(not isinstance(e, dict) for e in examples):
        raise TypeError("packed=False takes a list of examples (dicts); for rows of examples use packed=True")
    rows = examples if packed else [[e] for e in examples]
    for r, row in enumerate(rows):
        if not row:
            raise ValueError(f"row {r} has no examples")
        for example in row:
            if not example["input_ids"] or len(example["input_ids"]) != len(example["labels"]):
                raise ValueError(
                    f"row {r}: an example has {len(example['input_ids'])} input_ids and {len(example['labels'])} "
                    "labels; both must be the same non-zero length (encode it with raysft.data.template)"
                )
    return rows
