"""What one tenant may hold at once. The tenants file sets it (raysft.service.jobs.tenants); the admission queue
enforces it (raysft.service.jobs.admission). None means no cap of that kind."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

__all__ = ["Quota"]


@dataclass(frozen=True)
class Quota:
    """A tenant's caps: jobs running at once, jobs waiting in the queue, and training workers in use."""

    max_running_jobs: Optional[int] = None
    max_queued_jobs: Optional[int] = None
    max_workers: Optional[int] = None  # scaling.num_workers of running jobs (x trials at once for tune jobs)
