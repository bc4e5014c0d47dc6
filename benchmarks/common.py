"""What the benchmarks share: the synthetic chat mix they train on, the machine description, medians.

The chat mix imitates a support team's SFT set: many short classification turns (a ticket and a one-word
team label) next to long answers and long multi-turn dialogues. That spread of lengths is what decides how
much of a padded batch is padding, so it is what a throughput comparison between packing and padding must
be run on; `length_summary` states it in tokens next to every figure.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import random
import statistics
import threading
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

import psutil

__all__ = ["chat_mix", "write_jsonl", "machine", "median", "length_summary", "StepCpuClock"]

_WORDS = (
    "order parcel refund charge invoice account password login tracking delivery week app crash screen update "
    "payment card address support team please thanks help issue error device setting email subscription plan "
    "upgrade cancel renew warranty replacement battery charger cable router network signal slow fast restart "
    "install version browser cache cookie profile photo upload download file folder share permission admin "
    "user group role token key secret backup restore sync calendar meeting reminder notification sound volume "
    "the a an of to in on for with my your our this that it is was will can could would should not no yes "
    "when where why how what which today yesterday tomorrow morning evening already still again never always"
).split()
_LABELS = ["billing", "shipping", "technical", "account"]
_SYSTEM = "Route each support ticket to one team: billing, shipping, technical or account."


def _sentence(rng: random.Random, lo: int, hi: int) -> str:
    return " ".join(rng.choices(_WORDS, k=rng.randint(lo, hi))).capitalize() + "."


def _paragraph(rng: random.Random, sentences: tuple[int, int]) -> str:
    return " ".join(_sentence(rng, 6, 18) for _ in range(rng.randint(*sentences)))


def chat_mix(n: int, seed: int = 0) -> list[dict]:
    """`n` chat records ({"messages": [...]}) with a realistic spread of lengths.

    Shares: 50% classification (system prompt, a 10–40 word ticket, a one-word label; ~60 tokens),
    25% single-turn questions with long answers (~100–400 tokens), 25% multi-turn dialogues of 3–7
    exchanges (~300–900 tokens).
    """
    rng = random.Random(seed)
    records = []
    for _ in range(n):
        kind = rng.random()
        if kind < 0.5:
            messages = [{"role": "system", "content": _SYSTEM},
                        {"role": "user", "content": _sentence(rng, 10, 40)},
                        {"role": "assistant", "content": rng.choice(_LABELS)}]
        elif kind < 0.75:
            messages = [{"role": "user", "content": _sentence(rng, 8, 30).rstrip(".") + "?"},
                        {"role": "assistant", "content": _paragraph(rng, (6, 24))}]
        else:
            messages = [{"role": "system", "content": "You are a helpful support agent."}]
            for _ in range(rng.randint(3, 7)):
                messages.append({"role": "user", "content": _sentence(rng, 5, 30)})
                messages.append({"role": "assistant", "content": _paragraph(rng, (2, 7))})
        records.append({"messages": messages})
    return records


def write_jsonl(path: str | Path, records: Iterable[dict]) -> Path:
    """Write records as JSON lines; returns the path."""
    path = Path(path)
    with open(path, "w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path


def length_summary(lengths: Sequence[int]) -> dict:
    """Token-length distribution of encoded examples: count, min, median, p90, max, mean."""
    ordered = sorted(lengths)
    return {"examples": len(ordered), "min": ordered[0], "median": ordered[len(ordered) // 2],
            "p90": ordered[int(0.9 * (len(ordered) - 1))], "max": ordered[-1],
            "mean": round(sum(ordered) / len(ordered), 1)}


def median(values: Sequence[float]) -> float:
    """The median of `values` (the benchmarks report medians of interleaved repeats)."""
    return statistics.median(values)


def machine() -> dict:
    """The machine a result is taken on: CPU model, cores usable by this process, memory, load, versions.

    Imports nothing heavy (versions come from package metadata), so calling it first keeps the benchmark
    process small for the benchmarks that measure memory in a child process.
    """
    model = next((line.split(":", 1)[1].strip() for line in _read("/proc/cpuinfo").splitlines()
                  if line.startswith("model name")), platform.processor() or "unknown")
    info = {
        "cpu": model,
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
    }
    for package in ("torch", "transformers", "peft", "ray"):
        try:
            info[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            info[package] = None
    return info


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


class StepCpuClock:
    """CPU seconds a training process uses per optimizer step, and what the processes around it use meanwhile.

    A step's wall-clock time on a shared machine includes the time the process waited for a core; its CPU
    time (user + system, all threads) does not, so CPU time stays comparable while other jobs run. `tick()`
    records, at the end of a step, the CPU time so far of the training process and of every other process
    this one started (a local Ray's raylet, GCS, controller and idle workers). Used as a context manager
    with `events`, a thread checks that events.jsonl every 10 ms and ticks at each new `metrics` line, which
    rank 0 writes at the end of every optimizer step.

    Args:
        training: returns the training process, or None while it has not started yet.
        events: the run's events.jsonl (it may not exist yet); None when the caller ticks itself.
    """

    def __init__(self, training: Callable[[], Optional[psutil.Process]], events: Optional[Path] = None):
        self._training, self._events = training, events
        self._process: Optional[psutil.Process] = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self.training_cpu: list[float] = []
        """Cumulative CPU seconds of the training process at each step end."""
        self.others_cpu: list[float] = []
        """CPU seconds this process's other descendants used since the first step end, at each step end."""
        self._others: dict[int, float] = {}  # pid -> CPU seconds at the last tick

    def tick(self) -> None:
        """Record the CPU times now (the end of a step)."""
        self._process = self._process or self._training()
        first, used = not self.others_cpu, 0.0
        for child in psutil.Process().children(recursive=True):
            if child.pid == getattr(self._process, "pid", None):
                continue
            now = _cpu(child)
            # Per process, so one that exits between ticks does not subtract; one started since counts whole.
            used += max(0.0, now - self._others.get(child.pid, now if first else 0.0))
            self._others[child.pid] = now
        self.training_cpu.append(_cpu(self._process) if self._process else float("nan"))
        self.others_cpu.append((self.others_cpu[-1] if self.others_cpu else 0.0) + used)

    def __enter__(self) -> "StepCpuClock":
        if self._events is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _watch(self) -> None:
        offset, pending = 0, b""
        while not self._stop.wait(0.01):
            try:
                with open(self._events, "rb") as f:
                    f.seek(offset)
                    chunk = f.read()
            except OSError:  # not written yet
                continue
            if not chunk:
                continue
            offset += len(chunk)
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:
                if line and json.loads(line)["type"] == "metrics":
                    self.tick()


def _cpu(process: psutil.Process) -> float:
    try:
        t = process.cpu_times()
        return t.user + t.system
    except psutil.Error:  # exited meanwhile: its CPU is no longer readable
        return 0.0
