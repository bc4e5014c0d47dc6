"""Operator caps on what one job may ask of the cluster (`raysft serve --max-workers ... --max-active-jobs ...`).

A spec over a per-job cap is INVALID_ARGUMENT naming the field and the cap; a CreateJob while `max_active_jobs`
jobs are queued or running is RESOURCE_EXHAUSTED (retry later); beyond `max_running_jobs` on Ray, jobs wait
QUEUED (raysft.service.jobs.admission). Job drivers reserve `driver_cpus` (and
`driver_memory_bytes`) on the cluster, so Ray starts no more drivers than it can hold.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from raysft.config import JobSpec, Violation

__all__ = ["Limits", "parse_resources"]


@dataclass(frozen=True)
class Limits:
    """Per-job caps (None: no cap) and what each job driver reserves."""

    max_workers: Optional[int] = None
    """scaling.num_workers at most this."""
    max_resources_per_worker: dict[str, float] = field(default_factory=dict)
    """scaling.resources_per_worker: each listed resource at most this; unlisted resources are refused."""
    max_trials: Optional[int] = None
    """Trials of a tune campaign (num_samples × grid sizes) at most this."""
    max_active_jobs: Optional[int] = None
    """Jobs queued, starting, running or cancelling at once, across all clients."""
    max_running_jobs: Optional[int] = None
    """Jobs on Ray (starting, running or cancelling) at once, across all clients; more wait in the queue."""
    driver_cpus: float = 1.0
    """CPUs each job driver (`raysft train` / `raysft tune` on the cluster) reserves: Ray's entrypoint_num_cpus."""
    driver_memory_bytes: Optional[int] = None
    """Memory each job driver reserves (Ray's entrypoint_memory)."""

    def problems(self, spec: JobSpec, kind: str) -> list[Violation]:
        """What in `spec` (run as `kind`) goes over a per-job cap, by field."""
        out = []
        workers = spec.scaling.num_workers
        if self.max_workers is not None and workers > self.max_workers:
            out.append(Violation("scaling.num_workers", f"{workers} is over this server's cap of {self.max_workers} "
                                                        "workers per job (--max-workers)"))
        if self.max_resources_per_worker:
            for name, amount in (spec.scaling.resources_per_worker or {}).items():
                cap = self.max_resources_per_worker.get(name)
                if cap is None:
                    out.append(Violation(f"scaling.resources_per_worker.{name}", "this server caps resources per worker "
                                         f"to {_show(self.max_resources_per_worker)} (--max-resources-per-worker); "
                                         f"{name} is not among them"))
                elif not amount <= cap:  # `not <=` also refuses NaN
                    out.append(Violation(f"scaling.resources_per_worker.{name}", f"{amount:g} is over this server's cap "
                                         f"of {cap:g} per worker (--max-resources-per-worker {name}={cap:g})"))
        if self.max_trials is not None and kind == "tune" and spec.tune is not None:
            from raysft.tune.space import trial_count  # Ray Tune is imported only for tune specs

            trials = trial_count(spec)
            if trials > self.max_trials:
                field_name = "tune.num_samples" if spec.tune.search in ("random", "optuna") else "tune.search_space"
                out.append(Violation(field_name, f"the campaign would run {trials} trials, over this server's cap of "
                                                 f"{self.max_trials} (--max-trials); search fewer values or samples"))
        return out


def parse_resources(items: list[str]) -> dict[str, float]:
    """`["CPU=8", "GPU=1"]` -> {"CPU": 8.0, "GPU": 1.0}; raises ValueError naming a bad item."""
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            amount = float(value)
        except ValueError:
            amount = float("nan")
        if not sep or not name or not amount >= 0:
            raise ValueError(f"--max-resources-per-worker {item!r}: write NAME=AMOUNT, e.g. CPU=8 or GPU=1")
        out[name] = amount
    return out


def _show(caps: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:g}" for k, v in sorted(caps.items()))
