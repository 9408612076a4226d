"""Which blocks to stream (how many: `memory_model.MemoryModel.auto_blocks_to_swap`)."""

from __future__ import annotations


def spread(k: int, n: int) -> list[int]:
    """k of n block indices, evenly spaced.

    Spacing streamed blocks between resident ones gives every copy the compute of
    the resident blocks before it to hide behind; streaming the last k in a row
    would leave only the streamed blocks' own compute for the whole transfer.
    """
    k = max(0, min(k, n))
    if k == 0:
        return []
    return sorted({(i * n) // k + (n // k) - 1 if k < n else i for i in range(k)})
