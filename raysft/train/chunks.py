"""How many positions one cross-entropy chunk of `raysft.train.loss` covers: torch-free, so `raysft estimate`
can model the same chunks without importing torch.

A chunk's peak is two (k, V) float32 tensors: its logits and their log-sum-exp temporary in forward, the
recomputed logits (overwritten by their gradient) and the gradient of the head's output in backward. Smaller
chunks lower that peak, and below about 16 MiB of logits each the head's matmuls get too thin to stay fast
(at V = 151,936, 8 MiB chunks made an all-trained step about 50% slower).

Why the size depends on the allocator: glibc's malloc raises its mmap threshold to the size of each mapped
block it frees, up to 32 MiB (64-bit). Chunk tensors below that come from its heap after the first chunk, and
the heap, with each chunk's small results allocated between the big temporaries, kept growing: with 16 MiB
chunks one step at T = 4,096, V = 151,936 retained 2.4 GB of RSS. At 32 MiB every chunk tensor is mapped and
handed back when freed. jemalloc (what CPU workers run on, `raysft.train.allocator`) reuses freed extents
whatever their size, so there chunks are 16 MiB: half the peak, and as fast (`benchmarks/README.md`,
"loss_memory"). CUDA's caching allocator reuses its blocks too, but GPU runs keep 32 MiB until a GPU
measurement says otherwise.
"""

from __future__ import annotations

import math

__all__ = ["CHUNK_BYTES", "JEMALLOC_CHUNK_BYTES", "chunk_rows"]

CHUNK_BYTES = 32 * 2**20
"""Float32 logits of one chunk, at least: GPU workers and CPU workers on glibc."""
JEMALLOC_CHUNK_BYTES = 16 * 2**20
"""Float32 logits of one chunk, at least, on a CPU worker running on jemalloc."""


def chunk_rows(vocab_size: int, jemalloc: bool = False) -> int:
    """Positions per chunk at a vocabulary of `vocab_size`: the fewest whose float32 logits fill the chunk
    size of the worker's allocator (`jemalloc`: a CPU worker on jemalloc)."""
    return math.ceil((JEMALLOC_CHUNK_BYTES if jemalloc else CHUNK_BYTES) / (4 * vocab_size))
