"""Which blocks to stream, and how many when the user leaves it to us."""

from __future__ import annotations

GiB = 1024**3


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


def auto_blocks_to_swap(
    free_bytes: int,
    block_bytes: int,
    nonblock_bytes: int,
    n_blocks: int,
    activation_bytes: int,
    prefetch: int = 2,
    margin_bytes: int = int(0.6 * GiB),
) -> int:
    """Fewest streamed blocks so that resident weights + ring + activations fit in free VRAM.

    free_bytes is what the GPU has free before this model loads; the ring holds
    prefetch + 1 blocks whenever at least one block is streamed.
    """
    for k in range(n_blocks + 1):
        ring = 0 if k == 0 else min(k, prefetch + 1) * block_bytes
        need = nonblock_bytes + (n_blocks - k) * block_bytes + ring + activation_bytes + margin_bytes
        if need <= free_bytes:
            return k
    return n_blocks
