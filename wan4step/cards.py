"""The table of known GPUs (`data/cards.json`) and matching a device name to it.

torch reports names such as "NVIDIA GeForce RTX 4080 SUPER" or "NVIDIA H100 80GB HBM3";
a card matches when all its `match` tokens appear in the name and the name carries no
distinguishing token the card lacks ("ti", "super", "laptop", ...), so an RTX 4080 is
not taken for a 4080 SUPER, nor a laptop 3060 for the desktop one. Where several
entries match (A100 40/80 GB) the nearest VRAM wins.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

DATA_FILE = Path(__file__).resolve().parent / "data" / "cards.json"
MiB = 1024**2

# Tokens that make a different product when present; a card must list them to match.
_DISTINGUISHING = {"ti", "super", "laptop", "mobile", "max", "q", "pcie", "nvl", "sxm"}


@dataclass(frozen=True)
class Card:
    name: str
    match: tuple[str, ...]
    exclude: tuple[str, ...]
    capability: tuple[int, int]
    vram_bytes: int
    bf16_tflops: float
    fp8_tflops: float | None
    int8_tops: float | None
    mem_bw_gbs: float
    pcie_gbs: float
    consumer: bool
    recipe_weights: str | None = None  # the recipe page's primary weights format (DESIGN.md table)
    recipe_text: str | None = None

    @property
    def arch(self) -> str:
        return f"sm_{self.capability[0]}{self.capability[1]}"

    @property
    def fp8_tensor_cores(self) -> bool:
        return self.capability >= (8, 9)


def parse_capability(text: str | tuple[int, int] | None) -> tuple[int, int] | None:
    """"8.9", "sm_89", "89", (8, 9) -> (8, 9); "" / "auto" / None -> None."""
    if text is None:
        return None
    if isinstance(text, tuple):
        return (int(text[0]), int(text[1]))
    s = str(text).strip().lower().removeprefix("sm_").removeprefix("sm")
    if s in ("", "auto"):
        return None
    if "." in s:
        major, minor = s.split(".", 1)
        return (int(major), int(minor))
    if s.isdigit() and len(s) >= 2:
        return (int(s[:-1]), int(s[-1]))
    raise ValueError(f"compute capability {text!r} is not like '8.9' or 'sm_89'")


def _tokens(name: str) -> set[str]:
    s = name.lower().replace("nvidia", " ").replace("geforce", " ")
    return set(re.findall(r"[a-z]+|\d+[a-z]*", s)) | set(re.findall(r"[a-z0-9]+", s))


def _card(d: dict) -> Card:
    return Card(
        name=d["name"],
        match=tuple(t.lower() for t in d["match"]),
        exclude=tuple(t.lower() for t in d.get("exclude", ())),
        capability=parse_capability(d["capability"]),
        vram_bytes=int(d["vram_mib"]) * MiB,
        bf16_tflops=float(d["bf16_tflops"]),
        fp8_tflops=float(d["fp8_tflops"]) if d.get("fp8_tflops") else None,
        int8_tops=float(d["int8_tops"]) if d.get("int8_tops") else None,
        mem_bw_gbs=float(d["mem_bw_gbs"]),
        pcie_gbs=float(d["pcie_gbs"]),
        consumer=bool(d.get("consumer", True)),
        recipe_weights=(d.get("recipe") or {}).get("weights"),
        recipe_text=(d.get("recipe") or {}).get("text"),
    )


@lru_cache(maxsize=1)
def load_cards() -> tuple[Card, ...]:
    with open(DATA_FILE, encoding="utf-8") as f:
        return tuple(_card(d) for d in json.load(f)["cards"])


@lru_cache(maxsize=1)
def floor_recipe() -> dict:
    """The recipes' smallest supported machine (8 GB VRAM, 16 GB RAM)."""
    with open(DATA_FILE, encoding="utf-8") as f:
        return dict(json.load(f)["floor_recipe"])


def card_names() -> list[str]:
    return [c.name for c in load_cards()]


def by_name(name: str) -> Card | None:
    """Exact table name (what the advisor node's `gpu` list shows)."""
    for c in load_cards():
        if c.name.lower() == name.strip().lower():
            return c
    return None


def find_card(device_name: str | None, vram_bytes: int | None = None) -> Card | None:
    """The table entry for a device name as torch reports it, or None for unknown cards."""
    if not device_name:
        return None
    exact = by_name(device_name)
    if exact is not None:
        return exact
    toks = _tokens(device_name)
    hits = []
    for c in load_cards():
        if not all(t in toks for t in c.match):
            continue
        if any(t in toks for t in c.exclude):
            continue
        if any(t in toks and t not in c.match for t in _DISTINGUISHING - {"pcie", "sxm"}):
            continue
        hits.append(c)
    if not hits:
        return None
    if vram_bytes:
        hits.sort(key=lambda c: abs(c.vram_bytes - vram_bytes))
    return hits[0]


def nearest_proxy(capability: tuple[int, int] | None, vram_bytes: int) -> Card | None:
    """A known card of the same architecture and nearest VRAM, for a labelled rough estimate."""
    if capability is None:
        return None
    same = [c for c in load_cards() if c.capability == capability]
    if not same:
        same = [c for c in load_cards() if c.capability[0] == capability[0]]
    if not same:
        return None
    return min(same, key=lambda c: abs(c.vram_bytes - vram_bytes))
