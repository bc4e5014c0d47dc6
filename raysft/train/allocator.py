"""The memory allocator of CPU training workers: the jemalloc Ray ships, in place of glibc's malloc.

On the CPU a step's activations, gradients and loss chunks are a few MB each. glibc serves blocks below its mmap
threshold from its heap, and raises that threshold (up to 32 MiB) each time a larger mapped block is freed, so after
the first step nearly every tensor comes from the heap, and the holes freed tensors leave stay resident. jemalloc
reuses them, so RSS follows the live tensors (`benchmarks/README.md`, "jemalloc"), and `raysft estimate`, which
counts the tensors, predicts a CPU run's memory. Ray ships jemalloc for its own processes (`ray/core/libjemalloc.so`)
and starts its workers without it; a CPU run's Ray Train workers preload it through their runtime environment, with
transparent huge pages for its extents (`thp:always`: without them a step was 4% slower than on glibc; where the
kernel's THP setting is `never` it is a no-op). GPU runs keep glibc: their activations live in CUDA memory.

`RAYSFT_CPU_ALLOCATOR=system`, in the environment of the process that launches the run, keeps glibc; a `MALLOC_CONF`
there replaces raysft's jemalloc options. The path is the driver's Ray install: on a multi-node CPU cluster whose
nodes install Ray elsewhere, the dynamic loader says it cannot preload it and the workers run on glibc.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from pathlib import Path
from typing import Literal

__all__ = ["ENV", "allocator_in_use", "cpu_allocator", "worker_runtime_env"]

ENV = "RAYSFT_CPU_ALLOCATOR"
# Found without importing ray, so `raysft estimate` (which reads cpu_allocator) stays free of it.
_JEMALLOC = Path(importlib.util.find_spec("ray").origin).parent / "core" / "libjemalloc.so"
_JEMALLOC_CONF = "thp:always,metadata_thp:always"
_CHOICES = ("jemalloc", "system")


def cpu_allocator() -> Literal["jemalloc", "system"]:
    """RAYSFT_CPU_ALLOCATOR: jemalloc (the default) or system.

    Raises:
        ValueError: it is set to anything else.
    """
    choice = os.environ.get(ENV, "jemalloc")
    if choice not in _CHOICES:
        raise ValueError(f"{ENV}={choice!r} is not one of {list(_CHOICES)}; unset it to train CPU runs on jemalloc")
    return choice  # type: ignore[return-value]


def worker_runtime_env(use_gpu: bool) -> dict:
    """The runtime environment of a run's Ray Train workers: jemalloc preloaded on a CPU run, ahead of whatever
    the node already preloads (Ray expands `${LD_PRELOAD}` from the node's environment)."""
    if use_gpu or cpu_allocator() == "system" or not _JEMALLOC.is_file():
        return {}
    return {"env_vars": {"LD_PRELOAD": f"{_JEMALLOC}:${{LD_PRELOAD}}",
                         "MALLOC_CONF": os.environ.get("MALLOC_CONF") or _JEMALLOC_CONF}}


@functools.cache  # fixed when the process starts (LD_PRELOAD); the loss asks on every micro batch
def allocator_in_use() -> Literal["jemalloc", "system"]:
    """What this process allocates with: jemalloc when it is loaded, else the system's malloc."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:  # not Linux
        return "system"
    return "jemalloc" if "libjemalloc" in maps else "system"
