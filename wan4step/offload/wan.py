"""Block-swap plans for a Wan DiT module tree (ComfyUI's WanModel or anything shaped like it).

A VACE model (ComfyUI's VaceWanModel) also has `vace_blocks`, each the size of a
main block, run right after its host main block (`vace_layers_mapping`: VACE block
j after block `j * (num_layers // len(vace_blocks))`). They are streamed in the
same proportion as the main blocks (`vace_share`), and the streamer gets every
module in execution order, each VACE block right after its host.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import torch

from .plan import spread
from .wrap import StreamedModule, stream_modules

log = logging.getLogger("wan4step")
GiB = 1024**3


def module_bytes(m: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in list(m.parameters()) + list(m.buffers()))


def weights_kind(block: torch.nn.Module) -> str:
    """The memory model's format name for a block of the pack's linears (fp8 / int8 / gguf / bf16).

    Other packs' quantized modules are named by the host (`choose_k(kind=...)`)."""
    for m in block.modules():
        kind = getattr(m, "qkind", None)
        if kind:
            return kind
    return "bf16"


@dataclass
class SwapPlan:
    indices: list[int]
    embeddings: bool
    streamer: object
    patches: dict[str, StreamedModule]
    streamed_param_bytes: int
    vace_indices: list[int] = field(default_factory=list)

    def describe(self, n_blocks: int) -> str:
        s = self.streamer
        where = "disk (memory-mapped, read ahead)" if s.disk else "pinned RAM"
        vace = f" + {len(self.vace_indices)} VACE blocks" if self.vace_indices else ""
        return (
            f"Wan4Step Block Swap: {len(self.indices)}/{n_blocks} blocks{vace} streamed from {where}"
            f"{' + text/time embeddings and head' if self.embeddings else ''}; "
            f"{s.streamed_bytes / GiB:.2f} GiB streamed per forward through a ring of {s.nslots} x "
            f"{s.slot_bytes / 2**20:.0f} MiB on {s.device}; {n_blocks - len(self.indices)} blocks resident"
        )


def original(m: torch.nn.Module) -> torch.nn.Module:
    """The real module behind stand-ins another (still loaded) MODEL clone may have put in the shared tree."""
    while isinstance(m, StreamedModule):
        m = m.inner
    return m


def vace_blocks(dm: torch.nn.Module) -> list[torch.nn.Module]:
    return list(getattr(dm, "vace_blocks", None) or [])


def vace_hosts(n: int, nv: int) -> list[int]:
    """The main block after which each VACE block runs (ComfyUI's `vace_layers_mapping`)."""
    return list(range(0, n, max(1, n // nv)))[:nv] if nv else []


def vace_share(k: int, n: int, nv: int) -> int:
    """VACE blocks streamed when k of n main blocks are: the same fraction, rounded up."""
    return min(nv, math.ceil(k * nv / n)) if n else 0


def choose_k(dm: torch.nn.Module, requested: int, device: torch.device, latent_shape, prefetch: int,
             free_bytes: int | None = None, kind: str | None = None) -> int:
    """Main blocks to stream (`vace_share` of the VACE blocks go with them): `requested`, or for -1
    ("auto") the fewest that let the rest fit in `free_bytes` (default: what CUDA reports free now)
    at this latent size. `kind` names the weights' format when the host knows better than
    `weights_kind` (another pack's modules)."""
    n = len(dm.blocks)
    if requested >= 0:
        return min(requested, n)
    if free_bytes is None:
        if device.type != "cuda":
            return 0  # nothing to fit into
        free_bytes = torch.cuda.mem_get_info(device)[0]
    from ..memory_model import MemoryModel

    free = free_bytes
    blocks = [original(b) for b in dm.blocks] + [original(b) for b in vace_blocks(dm)]
    b, _, t, h, w = tuple(latent_shape)
    k_all = MemoryModel.load().auto_blocks_to_swap(
        block_bytes=max(module_bytes(x) for x in blocks),
        non_block_bytes=sum(module_bytes(original(m)) for name, m in dm.named_children()
                            if name not in ("blocks", "vace_blocks")),
        n_blocks=len(blocks),
        kind=kind or weights_kind(blocks[0]),
        tokens=b * t * (h // 2) * (w // 2),
        free_bytes=free,
        prefetch=prefetch,
        pixel_frames=(h * 8) * (w * 8) * (4 * (t - 1) + 1),  # the decode that follows (Wan VAE: 8x, 4n+1)
    )
    return min(n, math.ceil(k_all * n / len(blocks)))  # k main blocks + vace_share(k) >= k_all


def plan_swap(
    dm: torch.nn.Module, k: int, device, prefetch: int = 2, pin: bool = True, disk: bool = False, embeddings: bool = False,
    **hooks,
) -> SwapPlan | None:
    """Stream k evenly spaced blocks (with their share of VACE blocks, and optionally the small
    non-block layers) of `dm`, handed to the streamer in execution order; `hooks` are
    BlockStreamer's host hooks (dtype_of, pinner)."""
    n = len(dm.blocks)
    indices = spread(k, n)
    vace = vace_blocks(dm)
    vace_indices = spread(vace_share(k, n, len(vace)), len(vace))
    after = {host: j for j, host in enumerate(vace_hosts(n, len(vace))) if j in vace_indices}
    modules: list[torch.nn.Module] = []
    names: list[str] = []
    if embeddings:
        for name in ("text_embedding", "time_embedding", "time_projection"):
            modules.append(original(getattr(dm, name)))
            names.append(name)
    for i in range(n):
        if i in indices:
            modules.append(original(dm.blocks[i]))
            names.append(f"blocks.{i}")
        if i in after:
            modules.append(original(vace[after[i]]))
            names.append(f"vace_blocks.{after[i]}")
    if embeddings:
        modules.append(original(dm.head))
        names.append("head")
    if not modules:
        return None
    param_bytes = sum(module_bytes(m) for m in modules)
    streamer, wrapped = stream_modules(modules, device, prefetch=prefetch, pin=pin, disk=disk, **hooks)
    return SwapPlan(indices, embeddings, streamer, dict(zip(names, wrapped, strict=True)), param_bytes, vace_indices)
