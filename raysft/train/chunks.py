"""How many positions one cross-entropy chunk of `raysft.train.loss` covers: torch-free, so `raysft estimate`
can model the same chunks without importing torch.

Why 32 MiB: glibc's malloc raises its mmap threshold to the size of each mapped block it frees, up to 32 MiB
(64-bit). Float32 chunk logits below that size come from the heap after the first chunk, and the heap, with
each chunk's small results allocated between the big temporaries, kept growing: with 16 MiB chunks one step
at T = 4,096, V = 151,936 retained 2.4 GB of RSS (the same step with a fixed threshold: none). At 32 MiB or
more every chunk tensor is mapped and handed back to the OS when freed.
"""

from __future__ import annotations

import math

__all__ = ["CHUNK_BYTES", "chunk_rows"]

CHUNK_BYTES = 32 * 2**20
"""Float32 logits of one chunk, at least (a chunk holds about four tensors of this size at its peak)."""


def chunk_rows(vocab_size: int) -> int:
    """Positions per chunk at a vocabulary of `vocab_size`: the fewest whose float32 logits fill CHUNK_BYTES."""
    return math.ceil(CHUNK_BYTES / (4 * vocab_size))
