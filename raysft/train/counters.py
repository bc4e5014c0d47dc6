"""What the training loop keeps count of between steps: whether to stop early, and tokens per second."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Callable, Iterator

from raysft.config import JobSpec, higher_is_better
from raysft.train.checkpoint import TrainerState

__all__ = ["EarlyStopping", "Throughput"]


@dataclass(frozen=True)
class EarlyStopping:
    """Stop when `patience` evaluations in a row fail to beat the best score by more than `min_delta`.

    The best score, its step and the counter live in the `TrainerState`, so they survive a resume.
    """

    higher_is_better: bool
    min_delta: float = 0.0
    patience: int | None = None
    """None: never stop, only keep track of the best score."""

    @classmethod
    def of(cls, spec: JobSpec) -> "EarlyStopping":
        """The rule `spec` asks for: `eval.early_stopping`, scored by `checkpoint.keep_best_by`."""
        es = spec.eval.early_stopping
        return cls(higher_is_better=higher_is_better(spec.checkpoint.keep_best_by),
                   min_delta=es.min_delta if es else 0.0, patience=es.patience if es else None)

    def update(self, state: TrainerState, step: int, score: float | None) -> bool:
        """Record the evaluation at `step` in `state`; True when training should stop. No score: no change."""
        if score is None:
            return False
        if state.best is None or (score > state.best + self.min_delta if self.higher_is_better
                                  else score < state.best - self.min_delta):
            state.best, state.best_step, state.bad_evals = score, step, 0
        else:
            state.bad_evals += 1
        return self.patience is not None and state.bad_evals >= self.patience


class Throughput:
    """Tokens per second of training since the last `reset`; time inside `paused()` (evaluation, checkpoints)
    does not count, so the figure measures training alone.

    Args:
        clock: seconds, monotonic (the tests pass a fake one).
    """

    def __init__(self, clock: Callable[[], float] = time.perf_counter):
        self._clock = clock
        self.reset()

    def reset(self) -> None:
        self.tokens, self._since = 0, self._clock()

    def add(self, tokens: int) -> None:
        self.tokens += tokens

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        start = self._clock()
        try:
            yield
        finally:
            self._since += self._clock() - start

    def tokens_per_s(self) -> float:
        return self.tokens / max(self._clock() - self._since, 1e-9)
