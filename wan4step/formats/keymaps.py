"""Key maps between checkpoint layouts and the canonical (original Wan / ComfyUI) names.

Table-driven and invertible: each rule is a (canonical, other) pair of name
fragments; `to_canonical` and `from_canonical` apply the table in opposite
directions, and the tests check that both directions are inverses over a full
state dict.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import TypeVar

T = TypeVar("T")

# (canonical, diffusers) for the non-block tensors
_DIFFUSERS_TOP: tuple[tuple[str, str], ...] = (
    ("text_embedding.0.", "condition_embedder.text_embedder.linear_1."),
    ("text_embedding.2.", "condition_embedder.text_embedder.linear_2."),
    ("time_embedding.0.", "condition_embedder.time_embedder.linear_1."),
    ("time_embedding.2.", "condition_embedder.time_embedder.linear_2."),
    ("time_projection.1.", "condition_embedder.time_proj."),
    ("head.head.", "proj_out."),
    ("head.modulation", "scale_shift_table"),
    ("patch_embedding.", "patch_embedding."),
)

# (canonical, diffusers) inside `blocks.N.`
_DIFFUSERS_BLOCK: tuple[tuple[str, str], ...] = (
    ("self_attn.q.", "attn1.to_q."),
    ("self_attn.k.", "attn1.to_k."),
    ("self_attn.v.", "attn1.to_v."),
    ("self_attn.o.", "attn1.to_out.0."),
    ("self_attn.norm_q.", "attn1.norm_q."),
    ("self_attn.norm_k.", "attn1.norm_k."),
    ("cross_attn.q.", "attn2.to_q."),
    ("cross_attn.k.", "attn2.to_k."),
    ("cross_attn.v.", "attn2.to_v."),
    ("cross_attn.o.", "attn2.to_out.0."),
    ("cross_attn.norm_q.", "attn2.norm_q."),
    ("cross_attn.norm_k.", "attn2.norm_k."),
    # diffusers' norm2 is the (affine) cross-attention norm, the original's norm3
    ("norm3.", "norm2."),
    ("ffn.0.", "ffn.net.0.proj."),
    ("ffn.2.", "ffn.net.2."),
    ("modulation", "scale_shift_table"),
)

# (canonical, diffusers) inside `vace_blocks.N.`: a block plus its projections
# (diffusers loaders/single_file_utils.py maps "before_proj" -> "proj_in", "after_proj" -> "proj_out")
_DIFFUSERS_VACE_BLOCK: tuple[tuple[str, str], ...] = (
    ("before_proj.", "proj_in."),
    ("after_proj.", "proj_out."),
    *_DIFFUSERS_BLOCK,
)

_BLOCK = re.compile(r"^((?:vace_)?blocks)\.(\d+)\.(.*)$")

# prefixes that checkpoints put in front of the canonical names
KNOWN_PREFIXES: tuple[str, ...] = ("model.diffusion_model.", "diffusion_model.", "model.", "transformer.")


def _swap(name: str, table: Iterable[tuple[str, str]], forward: bool) -> str | None:
    for canon, other in table:
        src, dst = (other, canon) if forward else (canon, other)
        if name.startswith(src):
            return dst + name[len(src) :]
    return None


def _map(key: str, forward: bool) -> str:
    m = _BLOCK.match(key)
    if m:
        table = _DIFFUSERS_VACE_BLOCK if m.group(1) == "vace_blocks" else _DIFFUSERS_BLOCK
        inner = _swap(m.group(3), table, forward=forward)
        return f"{m.group(1)}.{m.group(2)}.{inner}" if inner is not None else key
    out = _swap(key, _DIFFUSERS_TOP, forward=forward)
    return out if out is not None else key


def diffusers_to_canonical(key: str) -> str:
    return _map(key, forward=True)


def canonical_to_diffusers(key: str) -> str:
    return _map(key, forward=False)


def is_diffusers_layout(keys: Iterable[str]) -> bool:
    return any(k.startswith("condition_embedder.") or ".attn1.to_q." in k for k in keys)


def strip_prefix(sd: Mapping[str, T]) -> dict[str, T]:
    """Remove the one prefix that every DiT key shares (checkpoint / wrapper prefixes)."""
    for prefix in KNOWN_PREFIXES:
        if any(k.startswith(prefix + "blocks.") for k in sd):
            return {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}
    return dict(sd)


def to_canonical(sd: Mapping[str, T]) -> dict[str, T]:
    sd = strip_prefix(sd)
    if is_diffusers_layout(sd):
        return {diffusers_to_canonical(k): v for k, v in sd.items()}
    return dict(sd)
