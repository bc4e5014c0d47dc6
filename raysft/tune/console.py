"""The live console table of a campaign's trials: state, config, step and latest / best metric."""

from __future__ import annotations

import time

import ray.tune

__all__ = ["LiveTable", "render_table"]


def _short(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    text = str(value)
    return text if len(text) <= 14 else text[:13] + "…"


def render_table(trials: list, keys: list[str], metric: str, best: dict[str, float], waiting: int = 0) -> str:
    """The table for Tune `Trial`s (or anything with trial_id, status, config, last_result).

    Args:
        trials: the campaign's trials so far, in creation order.
        keys: searched keys, shown as columns (the last part of each dotted key as the header).
        metric: the ranked metric; its latest and best value per trial are shown.
        best: trial id -> best metric value seen so far.
        waiting: trials not created yet because every slot the cluster fits is taken; counted as pending.
    """
    counts: dict[str, int] = {}
    for t in trials:
        counts[t.status] = counts.get(t.status, 0) + 1
    if waiting:
        counts["PENDING"] = counts.get("PENDING", 0) + waiting
    header = ["trial", "state", *(k.rsplit(".", 1)[-1] for k in keys), "step", metric, "best"]
    rows = []
    for t in trials:
        last = t.last_result or {}
        rows.append([t.trial_id, t.status, *(_short(t.config.get(k)) for k in keys), _short(last.get("step", "-")),
                     _short(last.get(metric, "-")), _short(best.get(t.trial_id, "-"))])
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    status = ", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items()))
    return "\n".join([f"[raysft] trials: {status}", fmt.format(*header), *(fmt.format(*map(str, r)) for r in rows)])


class LiveTable(ray.tune.Callback):
    """Prints the trial table when a trial changes state or reports, at most every `interval_s`, and at the end.

    A state change always prints. Trials wait for a slot (the searcher creates at most as many as the cluster
    fits); until then they count as pending, and so do created trials Tune has not placed yet.
    """

    def __init__(self, keys: list[str], metric: str, mode: str, total: int, interval_s: float = 10.0):
        self.keys, self.metric, self.mode, self.total, self.interval_s = keys, metric, mode, total, interval_s
        self._best: dict[str, float] = {}
        self._states: tuple = ()
        self._dirty, self._printed_at = False, 0.0

    def on_trial_result(self, iteration, trials, trial, result, **info):
        value = result.get(self.metric)
        if value is not None:
            old = self._best.get(trial.trial_id)
            better = old is None or (value < old if self.mode == "min" else value > old)
            self._best[trial.trial_id] = value if better else old
            self._dirty = True

    def on_step_end(self, iteration, trials, **info):
        states = tuple((t.trial_id, t.status) for t in trials)
        changed = states != self._states
        self._states = states
        if changed or (self._dirty and time.monotonic() - self._printed_at >= self.interval_s):
            self._print(trials)

    def on_experiment_end(self, trials, **info):
        self.total = len(trials)  # a time budget can end a campaign with trials never created
        self._print(trials)

    def _print(self, trials) -> None:
        waiting = max(0, self.total - len(trials))
        print(render_table(trials, self.keys, self.metric, self._best, waiting), flush=True)
        self._dirty, self._printed_at = False, time.monotonic()
