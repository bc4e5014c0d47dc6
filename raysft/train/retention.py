"""Which checkpoints a run keeps: Ray Train's answer, recorded once in the run's events.

Ray Train's checkpoint manager decides (`CheckpointConfig(num_to_keep=keep_last, checkpoint_score_attribute=
keep_best_by)`, built by the launcher) and deletes the rest from storage. After each report rank 0 asks it which
checkpoints it keeps (`ray.train.get_all_reported_checkpoints`, public) and records the answer in the run's events:
`checkpoint_saved` once Ray has registered a checkpoint, `checkpoint_pruned` for each recorded one Ray no longer
keeps. Those events travel in rank 0's own `seq` order (raysft.train.runlog), so the job service stores them as
they come; the launcher's summary, a tune trial's outcome and the service's checkpoint list all read that record
(`kept_checkpoints`) and pick the best of it the same way (`best`). Nothing reimplements Ray's ranking, and
nothing reads Ray's private run snapshot.
"""

from __future__ import annotations

import math
from typing import Callable, Iterable, Optional

from raysft.config import higher_is_better
from raysft.train.runlog import RunLog, read_jsonl

__all__ = ["Retention", "kept_checkpoints", "best", "checkpoint_name_of"]


def checkpoint_name_of(uri: str) -> str:
    """The directory name a checkpoint's URI (or local path) ends in, `checkpoint_000004`."""
    return uri.rstrip("/").rsplit("/", 1)[-1]


def kept_checkpoints(events: list[dict]) -> list[dict]:
    """The checkpoints a run's events say are kept, oldest save first: each one's `checkpoint_saved` data
    ({step, uri, eval_loss, ...}) unless a `checkpoint_pruned` of its URI followed. A resumed run saves the steps
    after its checkpoint again: the later save counts, in its place."""
    kept: dict[str, dict] = {}
    for event in events:
        uri = (event.get("data") or {}).get("uri")
        if event.get("type") in ("checkpoint_saved", "checkpoint_pruned"):
            kept.pop(uri, None)
        if event.get("type") == "checkpoint_saved":
            kept[uri] = event["data"]
    return list(kept.values())


def best(checkpoints: list[dict], metric: str) -> Optional[dict]:
    """The best of `checkpoints` (dicts holding `metric`) by `metric`'s direction, the earliest of equals; None
    when none holds a finite value of it (a run without validation data)."""
    scored = [c for c in checkpoints if isinstance(c.get(metric), (int, float)) and math.isfinite(c[metric])]
    if not scored:
        return None
    return (max if higher_is_better(metric) else min)(scored, key=lambda c: c[metric])


class Retention:
    """Rank 0's record of the checkpoints Ray Train keeps (a no-op on other ranks, as their `RunLog` is).

    Args:
        log: this rank's run log; a resumed run's earlier events say which checkpoints were kept before it.
        keep_last: checkpoint.keep_last, named in each pruned event.
    """

    def __init__(self, log: RunLog, keep_last: int):
        self.log, self.keep_last = log, keep_last
        self._kept = {c["uri"]: c for c in kept_checkpoints(read_jsonl(log.run.events_file))} if log.enabled else {}

    def reported(self, data: dict, ray_kept: Callable[[], Iterable[str]]) -> None:
        """Record the checkpoint just reported to Ray (`data`: {step, uri, metrics...}) and what Ray pruned.

        `ray_kept` returns the names of the checkpoints Ray keeps once it has registered this report (the session's
        `kept_checkpoints`). It waits for Ray Train's controller to take the report in, up to its poll interval
        (2 s), so only rank 0 calls it; the other ranks wait for rank 0 at their next collective.
        """
        if not self.log.enabled:
            return
        names = set(ray_kept())
        self.log.event("info", "checkpoint_saved", f"checkpoint at step {data['step']}", data)
        self._kept.pop(data["uri"], None)
        self._kept[data["uri"]] = data
        for uri, gone in list(self._kept.items()):
            # Also one deleted before a killed driver's run could record it: the resumed run's first report says so.
            if checkpoint_name_of(uri) not in names:
                del self._kept[uri]
                self.log.event("info", "checkpoint_pruned", f"checkpoint at step {gone['step']} pruned "
                               f"(keep_last {self.keep_last})", {"step": gone["step"], "uri": uri})
