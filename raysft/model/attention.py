"""`packed_sdpa`: SDPA run per packed segment, so the blocks packing masks are never computed.

With a packed row (position ids restarting at 0 per example, no ``attention_mask``; see
`raysft.data.packing`), transformers' ``sdpa`` builds a (B, 1, T, T) block-diagonal mask and CPU SDPA
computes every block of the T x T scores, masked ones included. ``packed_sdpa`` builds no mask for such a
batch and calls SDPA with ``is_causal=True`` on each segment instead: a row of k examples of length n costs
k * n^2 instead of (k * n)^2, with the same result (each query sees exactly the keys it saw before).

Anything else goes to transformers' own sdpa mask and attention, unchanged, so packed_sdpa's result is always sdpa's:
a 2D padding mask, a KV cache in generation, query length != key length, a sliding-window or chunked layer (its mask
is more than causal-per-segment; Mistral, Gemma 3, Phi-3), and attention-logit soft-capping (Gemma 2), which sdpa
refuses by name.
"""

from __future__ import annotations

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

__all__ = ["PACKED_SDPA", "packed_sdpa_forward", "register_packed_sdpa"]

PACKED_SDPA = "packed_sdpa"


def _packed_sdpa_mask(*args, **kwargs):
    """No mask for a full causal pass without a padding mask or a window (segments come from the position ids), else
    sdpa's."""
    no_padding = kwargs.get("attention_mask") is None
    full_pass = kwargs.get("q_offset", 0) == 0 and kwargs.get("q_length") == kwargs.get("kv_length")
    if no_padding and full_pass and kwargs.get("local_size") is None:  # local_size: a sliding window or chunk
        return None
    return sdpa_mask(*args, **kwargs)


def _segments(position_ids: torch.Tensor) -> list[list[tuple[int, int]]]:
    """Per row, the (start, end) of each run of positions that starts at 0. One host sync per call."""
    batch, length = position_ids.shape
    starts = (position_ids == 0).nonzero().tolist()  # host sync
    rows: list[list[int]] = [[] for _ in range(batch)]
    for r, t in starts:
        rows[r].append(t)
    out = []
    for r in range(batch):
        s = rows[r] if rows[r] and rows[r][0] == 0 else [0] + rows[r]
        out.append(list(zip(s, s[1:] + [length])))
    return out


def packed_sdpa_forward(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """transformers attention function: (B, H, T, D) query/key/value -> ((B, T, H, D) output, None)."""
    position_ids = kwargs.get("position_ids")
    if (attention_mask is not None or position_ids is None or query.shape[2] != key.shape[2]
            or kwargs.get("softcap") is not None):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    n_rep = query.shape[1] // key.shape[1]
    key, value = repeat_kv(key, n_rep), repeat_kv(value, n_rep)
    position_ids = position_ids.reshape(-1, query.shape[2]).expand(query.shape[0], -1)  # (1, T) when not given
    rows = []
    # split/unbind, not slicing: a slice's backward allocates a full-size zero gradient per segment. 4D and
    # contiguous: otherwise CPU SDPA takes its math kernel (bmm + softmax over the segment), slower than the full mask.
    for q_row, k_row, v_row, segments in zip(query.unbind(0), key.unbind(0), value.unbind(0), _segments(position_ids)):
        sizes = [b - a for a, b in segments]
        parts = [
            torch.nn.functional.scaled_dot_product_attention(
                q[None].contiguous(), k[None].contiguous(), v[None].contiguous(),
                dropout_p=dropout if module.training else 0.0, scale=scaling, is_causal=True,
            )[0]
            for q, k, v in zip(q_row.split(sizes, dim=1), k_row.split(sizes, dim=1), v_row.split(sizes, dim=1))
        ]
        rows.append(torch.cat(parts, dim=1))  # (H, T, D)
    attn_output = torch.stack(rows, dim=0).transpose(1, 2).contiguous()
    return attn_output, None


def register_packed_sdpa() -> str:
    """Register `packed_sdpa` with transformers (idempotent) and return its name for ``attn_implementation``."""
    AttentionInterface.register(PACKED_SDPA, packed_sdpa_forward)
    AttentionMaskInterface.register(PACKED_SDPA, _packed_sdpa_mask)
    return PACKED_SDPA
