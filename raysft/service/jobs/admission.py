"""The admission queue: which QUEUED jobs go to Ray next (`raysft serve --max-running-jobs N` and tenants' quotas).

A job stays QUEUED until a pass admits it (QUEUED → STARTING, in the store's one admission transaction:
Store.admit); the supervisor then submits it. The order of the queue: higher `priority` first (0 - 9), and
within a priority round-robin across tenants, each tenant's jobs first come first: the tenant whose last
admission is oldest goes next, so one tenant's burst cannot starve another. A pass walks that order and
admits what fits: the server's cap on jobs on Ray (STARTING, RUNNING, CANCELLING) and each tenant's quota
(raysft.service.jobs.quota). A job its tenant's quota holds back waits without holding back other tenants' jobs
(nor does a later job of the same tenant overtake it). `queue_position` is a job's place in the same order.
"""

from __future__ import annotations

import heapq
import itertools
from collections import defaultdict
from typing import Callable, Optional

from raysft.config import JobSpec
from raysft.service.jobs.errors import ResourceExhausted
from raysft.service.jobs.events import transition
from raysft.service.jobs.quota import Quota
from raysft.service.jobs.states import JobState
from raysft.service.jobs.store import CheckpointRecord, JobRecord, NewEvent, QueueEntry, Store

__all__ = ["Admission", "queue_order", "job_workers", "DEFAULT_PRIORITY", "MAX_PRIORITY"]

DEFAULT_PRIORITY = 5
MAX_PRIORITY = 9


def job_workers(spec: JobSpec, kind: str) -> int:
    """The training workers a job holds on Ray: scaling.num_workers, times the trials running at once for a
    tune job (tune.max_concurrent_trials; unset, every trial of the campaign may run at once)."""
    if kind != "tune" or spec.tune is None:
        return spec.scaling.num_workers
    trials = spec.tune.max_concurrent_trials
    if trials is None:
        from raysft.tune.space import trial_count  # Ray Tune is imported only for tune specs

        trials = trial_count(spec)
    return spec.scaling.num_workers * trials


def queue_order(queued: list[QueueEntry], turns: dict[str, float]) -> list[QueueEntry]:
    """The queue in admission order: by priority (highest first), then round-robin across tenants.

    Args:
        queued: the QUEUED jobs.
        turns: when each tenant last had a job admitted (a tenant not in it goes before every other).
    """
    by_priority: dict[int, dict[str, list[QueueEntry]]] = defaultdict(lambda: defaultdict(list))
    for entry in sorted(queued, key=lambda e: e.ordinal):
        by_priority[entry.priority][entry.tenant].append(entry)
    # A tenant's turn: (0, when it last had a job admitted) as stored, then (1, n) for the n-th taken here.
    last: dict[str, tuple] = {tenant: (0, at) for tenant, at in turns.items()}
    taken = itertools.count()
    out = []
    for priority in sorted(by_priority, reverse=True):
        lines = by_priority[priority]
        # Ties (tenants never admitted) go by their first job's age.
        heap = [(last.get(tenant, (0, -1.0)), jobs[0].ordinal, tenant) for tenant, jobs in lines.items()]
        heapq.heapify(heap)
        next_of = dict.fromkeys(lines, 0)
        while heap:
            _, _, tenant = heapq.heappop(heap)
            jobs, i = lines[tenant], next_of[tenant]
            out.append(jobs[i])
            next_of[tenant] = i + 1
            last[tenant] = (1, next(taken))
            if i + 1 < len(jobs):
                heapq.heappush(heap, (last[tenant], jobs[i + 1].ordinal, tenant))
    return out


def _no_quota(_tenant: str) -> Quota:
    return Quota()


class Admission:
    """The admission policy: the server's cap and each tenant's quota.

    Args:
        max_running_jobs: jobs on Ray at once across all tenants (None: no cap).
        quota_for: a tenant's quota (raysft.service.jobs.tenants); by default no tenant has one.
    """

    def __init__(self, max_running_jobs: Optional[int] = None, quota_for: Optional[Callable[[str], Quota]] = None):
        self.max_running_jobs, self.quota_for = max_running_jobs, quota_for or _no_quota

    def admit(self, store: Store) -> list[JobRecord]:
        """One admission pass: the jobs it moved to STARTING (to be submitted), in the order admitted."""
        return store.admit(self.pick, _admitted)

    def pick(self, queued: list[QueueEntry], on_ray: list[QueueEntry], turns: dict[str, float]) -> list[str]:
        """Ids of the queued jobs to admit now, in order, given the jobs on Ray and the tenants' last turns."""
        free = None if self.max_running_jobs is None else self.max_running_jobs - len(on_ray)
        if free is not None and free <= 0:
            return []
        running: dict[str, int] = defaultdict(int)
        workers: dict[str, int] = defaultdict(int)
        for entry in on_ray:
            running[entry.tenant] += 1
            workers[entry.tenant] += entry.workers
        quotas: dict[str, Quota] = {}
        held_back: set[str] = set()
        out = []
        for entry in queue_order(queued, turns):
            if free is not None and len(out) >= free:
                break
            tenant = entry.tenant
            if tenant in held_back:
                continue
            quota = quotas.get(tenant) or quotas.setdefault(tenant, self.quota_for(tenant))
            if quota.max_workers is not None and entry.workers > quota.max_workers:
                continue  # never fits while the quota stays (CreateJob refuses such jobs): it holds back nothing
            if (quota.max_running_jobs is not None and running[tenant] >= quota.max_running_jobs) or \
                    (quota.max_workers is not None and workers[tenant] + entry.workers > quota.max_workers):
                held_back.add(tenant)  # its later jobs wait behind it: first come, first served within a tenant
                continue
            running[tenant] += 1
            workers[tenant] += entry.workers
            out.append(entry.id)
        return out

    def place(self, store: Store, jobs: list[JobRecord]) -> list[JobRecord]:
        """Set each QUEUED job's queue_position (1 = next) from one read of the queue; returns `jobs`."""
        if any(job.state == JobState.QUEUED for job in jobs):
            queued, turns = store.queue()
            positions = {entry.id: n for n, entry in enumerate(queue_order(queued, turns), 1)}
            for job in jobs:
                job.queue_position = positions.get(job.id, 0) if job.state == JobState.QUEUED else 0
        return jobs

    def workers_problem(self, tenant: str, workers: int) -> Optional[str]:
        """Why a job of `workers` workers can never be admitted for the tenant (None: it can)."""
        cap = self.quota_for(tenant).max_workers
        if cap is not None and workers > cap:
            return (f"needs {workers} workers, over tenant {tenant}'s quota of {cap} (max_workers); "
                    "ask for fewer workers (or fewer trials at once)")
        return None

    def check_queue_room(self, store: Store, tenant: str) -> None:
        """Raises ResourceExhausted when the tenant has its quota's max_queued_jobs jobs QUEUED."""
        cap = self.quota_for(tenant).max_queued_jobs
        if cap is None:
            return
        queued = store.count_jobs(tenant=tenant, states=(JobState.QUEUED,))
        if queued >= cap:
            raise ResourceExhausted(f"tenant {tenant} has {queued} queued jobs (quota max_queued_jobs: {cap}); "
                                    "retry when some have started, or cancel some")


def _admitted(job: JobRecord, _ckpts: dict[int, CheckpointRecord]) -> list[NewEvent]:
    return [transition(job, JobState.STARTING, "admitted from the queue; submitting to Ray")]
