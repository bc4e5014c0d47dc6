"""Where the training loop gets its rank, device, model wrapping, checkpoints and reports from.

`train_loop_per_worker` talks to its runtime only through the members of `Session`, named after the Ray Train
calls they stand for:

    world_rank, world_size, device      ray.train.get_context(), ray.train.torch.get_device()
    prepare_model(model, **kwargs)      ray.train.torch.prepare_model
    get_checkpoint()                    ray.train.get_checkpoint
    report(metrics, checkpoint=, checkpoint_dir_name=)   ray.train.report
    kept_checkpoints()                  ray.train.get_all_reported_checkpoints

`RaySession` (the default, what `raysft train` uses) forwards each to Ray Train unchanged. `LocalSession`
runs the same loop in the calling process as the only worker, without Ray: the benchmarks use it to
measure what Ray costs per step (benchmarks/bench_train.py, `ray_overhead`), and tests/train/test_loop.py to
test `fit()` without a cluster. It persists each reported checkpoint to `<storage_path>/checkpoints/<name>` as
Ray does, but keeps every one (no `keep_last` pruning: all it has persisted is kept) and resumes only from a
checkpoint it is given.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Protocol

import ray
import ray.train
import ray.train.torch
import torch

__all__ = ["Session", "RaySession", "LocalSession"]


class Session(Protocol):
    """What the training loop needs from its runtime (`RaySession` or `LocalSession`)."""

    world_rank: int
    world_size: int
    device: torch.device

    def prepare_model(self, model: torch.nn.Module, **kwargs) -> torch.nn.Module:
        """The model moved to the device and, with more than one worker, wrapped in DDP / FSDP."""

    def get_checkpoint(self) -> ray.train.Checkpoint | None:
        """The checkpoint to resume from, or None to start fresh."""

    def report(self, metrics: dict, *, checkpoint: ray.train.Checkpoint | None = None,
               checkpoint_dir_name: str | None = None) -> None:
        """Hand metrics and a checkpoint to the runtime; under Ray every rank must call it (a sync point)."""

    def kept_checkpoints(self) -> list[str]:
        """Names of the checkpoints the runtime keeps, once it has taken in every report so far."""


class RaySession:
    """The loop's runtime under Ray Train: every member forwards to `ray.train` (call inside a worker)."""

    def __init__(self):
        ctx = ray.train.get_context()
        self.world_rank, self.world_size = ctx.get_world_rank(), ctx.get_world_size()
        self.device = ray.train.torch.get_device()

    prepare_model = staticmethod(ray.train.torch.prepare_model)
    get_checkpoint = staticmethod(ray.train.get_checkpoint)
    report = staticmethod(ray.train.report)

    @staticmethod
    def kept_checkpoints() -> list[str]:
        # COMMITTED: this run asks for no validation, so a registered checkpoint is final. Blocks until the
        # controller has registered (and pruned after) this worker's latest report.
        reported = ray.train.get_all_reported_checkpoints(ray.train.CheckpointConsistencyMode.COMMITTED)
        return [Path(r.checkpoint.path).name for r in reported]


class LocalSession:
    """The loop's runtime in this process, as the only worker (rank 0 of 1), without Ray.

    Args:
        storage_path: where reported checkpoints are persisted (`<storage_path>/checkpoints/<name>`).
        device: the device to train on.
        checkpoint: a checkpoint directory to resume from, or None to start fresh.
    """

    world_rank, world_size = 0, 1

    def __init__(self, storage_path: str | Path, *, device: str | torch.device = "cpu", checkpoint: str | Path | None = None):
        self.storage = Path(storage_path)
        self.device = torch.device(device)
        self._checkpoint = checkpoint
        self.reports: list[dict] = []
        """Every reported metrics dict with its persisted checkpoint path, in order."""

    def prepare_model(self, model: torch.nn.Module, *, move_to_device: bool = True, **_parallel) -> torch.nn.Module:
        # One worker: Ray Train wraps nothing either (DDP/FSDP only when world_size > 1), so only the move matters.
        return model.to(self.device) if move_to_device else model

    def get_checkpoint(self) -> ray.train.Checkpoint | None:
        return ray.train.Checkpoint.from_directory(str(self._checkpoint)) if self._checkpoint else None

    def report(self, metrics: dict, *, checkpoint: ray.train.Checkpoint | None = None, checkpoint_dir_name: str | None = None) -> None:
        path = None
        if checkpoint is not None:
            # Copied, not moved: the loop deletes its temporary directory after reporting, as under Ray.
            path = self.storage / "checkpoints" / (checkpoint_dir_name or f"checkpoint_{len(self.reports):06d}")
            shutil.copytree(checkpoint.path, path, dirs_exist_ok=True)
        self.reports.append({"metrics": dict(metrics), "checkpoint": str(path) if path else None})

    def kept_checkpoints(self) -> list[str]:
        root = self.storage / "checkpoints"
        return sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
