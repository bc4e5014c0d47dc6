"""Which rows each worker trains on at each optimizer step — deterministic, so a resumed run continues at
exactly the step it stopped and 2 workers × b see the same rows per step as 1 worker × 2b.
"""

from __future__ import annotations

import dataclasses
import math
import random
from dataclasses import dataclass, field

from raysft.config import Violation
from raysft.data.packing import collate, count_targets as _count_labels, pack

__all__ = ["MIN_STEPS", "StepPlan", "make_rows", "rows_of", "count_targets", "collate_rows", "step_advice"]

MIN_STEPS = 100
"""Fewer optimizer steps than this rarely fine-tune anything (a random-weight base needs many hundreds)."""


def count_targets(example: dict) -> int:
    """Tokens that contribute to the loss: labelled positions after the first (the first has no context)."""
    return _count_labels(example["labels"])


def make_rows(examples: list[dict], max_seq_len: int, packing: bool) -> list[list[int]]:
    """Group example indices into rows: best-fit packed, or one example per row."""
    return rows_of([len(e["input_ids"]) for e in examples], max_seq_len, packing)


def rows_of(lengths: list[int], max_seq_len: int, packing: bool) -> list[list[int]]:
    """Rows of example indices from the examples' token counts (a cache manifest holds them)."""
    if packing:
        return pack(lengths, max_seq_len)
    return [[i] for i in range(len(lengths))]


def collate_rows(examples: list[dict], rows: list[list[int]], *, pad_id: int, packed: bool) -> dict:
    """Tensors for `rows` (lists of example indices): packed rows, or one padded example per row."""
    if packed:
        return collate([[examples[i] for i in row] for row in rows], pad_id=pad_id, packed=True)
    return collate([examples[row[0]] for row in rows], pad_id=pad_id, packed=False)


@dataclass
class StepPlan:
    """The step schedule of one run.

    Each epoch shuffles the rows with `seed + epoch` and wraps around so every step has exactly
    `global_batch_size` rows (every row is seen at least once per epoch). Within a step, worker r takes
    rows r, r + W, r + 2W, ... and splits them into micro batches.
    """

    rows: list[list[int]]
    global_batch_size: int
    micro_batch_size: int
    world_size: int
    seed: int
    _orders: dict = field(default_factory=dict, repr=False)

    @property
    def steps_per_epoch(self) -> int:
        return max(1, math.ceil(len(self.rows) / self.global_batch_size))

    @property
    def accumulation_steps(self) -> int:
        return self.global_batch_size // (self.micro_batch_size * self.world_size)

    def total_steps(self, epochs: float, max_steps: int | None) -> int:
        total = max(1, math.ceil(epochs * self.steps_per_epoch))
        return min(total, max_steps) if max_steps else total

    def _epoch_order(self, epoch: int) -> list[int]:
        if epoch not in self._orders:
            order = list(range(len(self.rows)))
            random.Random(self.seed + epoch).shuffle(order)
            need = self.steps_per_epoch * self.global_batch_size
            self._orders = {epoch: (order * math.ceil(need / len(order)))[:need]}  # one epoch cached
        return self._orders[epoch]

    def step_rows(self, step: int) -> list[list[int]]:
        """Rows (as example-index lists) of 0-based optimizer step `step`, across all workers."""
        epoch, k = divmod(step, self.steps_per_epoch)
        order = self._epoch_order(epoch)[k * self.global_batch_size:(k + 1) * self.global_batch_size]
        return [self.rows[i] for i in order]

    def micro_batches(self, step: int, rank: int) -> list[list[list[int]]]:
        """This worker's micro batches for `step`: accumulation_steps lists of micro_batch_size rows."""
        mine = self.step_rows(step)[rank::self.world_size]
        m = self.micro_batch_size
        return [mine[i:i + m] for i in range(0, len(mine), m)]


def step_advice(plan: StepPlan, epochs: float, max_steps: int | None) -> Violation | None:
    """A warning when `plan` takes fewer than `MIN_STEPS` optimizer steps, naming the settings that would fix it.

    The fix offered is the largest global batch (a multiple of the workers) that reaches `MIN_STEPS` in the same
    epochs, with a micro batch that divides it; when even one row per worker falls short, also the epochs needed.
    """
    steps = plan.total_steps(epochs, max_steps)
    if steps >= MIN_STEPS:
        return None
    if max_steps and max_steps < MIN_STEPS:
        return Violation("train.max_steps", f"{max_steps} optimizer steps rarely fine-tune anything; "
                                            f"allow at least {MIN_STEPS}")
    w = plan.world_size
    fits = [g for g in range(w, plan.global_batch_size, w)
            if dataclasses.replace(plan, global_batch_size=g).total_steps(epochs, None) >= MIN_STEPS]
    g = fits[-1] if fits else w
    micro = max(m for m in range(1, plan.micro_batch_size + 1) if g % (m * w) == 0)
    fix = [f"train.global_batch_size: {g}"]
    if micro != plan.micro_batch_size:
        fix.append(f"train.micro_batch_size: {micro}")
    if not fits:
        fix.append(f"train.epochs: {math.ceil(MIN_STEPS / dataclasses.replace(plan, global_batch_size=g).steps_per_epoch)}")
    return Violation("train.global_batch_size",
                     f"{plan.global_batch_size} rows per step over {len(plan.rows)} rows × {epochs:g} epochs is only {steps} "
                     f"optimizer steps; fine-tuning usually needs {MIN_STEPS} or more (a random-weight base like "
                     f"`raysft model init-tiny`'s many hundreds): set {', '.join(fix)}, or add data")
