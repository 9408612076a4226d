"""VRAM and step-time estimate for the settings a graph already has (the web badges).

The advisor answers "what should I use on this machine"; this answers "what will *these*
settings cost": the weights the loader points at, the Block Swap count, the text-encoder
placement and VAE tiling, at the latent size in the graph. Same memory model
(`memory_model.py`), same step-time model (`advisor.estimate_step_time`), same card table,
so the two never disagree about a setting they both describe.

Weights are recognized from the loader's file name: the catalog's own names first, then a
GGUF tier in the name (`…-Q5_K_M.gguf`), then LightX2V's `distill_fp8/` / `distill_int8/`
folders and BF16/FP16 safetensors. Anything else (the tiny test models, other models) gets
no estimate and says why.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

from . import advisor, cards
from .catalog import TEXT_ENCODERS_TABLE, WEIGHTS, WeightsChoice
from .errors import SettingsError
from .memory_model import GiB, MemoryModel, video_tokens

_TIER = re.compile(r"(?i)(?:^|[-_.])(q[2-8]_k_[sml]|q[2-8]_k|q[458]_[01]|f16|bf16)(?=[-_.]|$)")


def weights_for(model_name: str | None) -> WeightsChoice | None:
    """The catalog choice a loader's `model_name` (or a catalog key) stands for; None when unknown."""
    if not model_name:
        return None
    if model_name in WEIGHTS:
        return WEIGHTS[model_name]
    name = model_name.replace("\\", "/").rstrip("/")
    base = name.rsplit("/", 1)[-1].lower()
    for w in WEIGHTS.values():
        mn = w.model_name.rstrip("/").lower()
        if name.lower() == mn or base == mn.rsplit("/", 1)[-1] and w.kind == "gguf":
            return w
    if "tiny" in base:
        return None
    if base.endswith(".gguf"):
        m = _TIER.search(base[:-5])
        if m:
            tier = m.group(1).upper()
            tier = {"Q4_K": "Q4_K_M", "Q5_K": "Q5_K_M", "Q3_K": "Q3_K_M", "BF16": "F16"}.get(tier, tier)
            return WEIGHTS.get(f"gguf_{tier}")
        return None
    if "int8" in base:
        return WEIGHTS["lightx2v_int8"]
    if "fp8" in base:
        return WEIGHTS["lightx2v_fp8"]
    if base.endswith((".safetensors", ".sft")) and ("bf16" in base or "fp16" in base or "distill_model" in base):
        return WEIGHTS["lightx2v_bf16"]
    return None


def text_encoder_bytes(name: str | None) -> int:
    """Stored size of the UMT5 file (or catalog key) the graph uses (catalog sizes; fp8 when unknown)."""
    if name in TEXT_ENCODERS_TABLE:
        return TEXT_ENCODERS_TABLE[name].size_bytes
    for te in TEXT_ENCODERS_TABLE.values():
        if name and name.rsplit("/", 1)[-1] == te.name:
            return te.size_bytes
    if name and ("fp16" in name or "bf16" in name):
        return TEXT_ENCODERS_TABLE["umt5_bf16"].size_bytes
    return TEXT_ENCODERS_TABLE["umt5_fp8"].size_bytes


@dataclass
class Estimate:
    known: bool  # False: no estimate (unknown weights or size); `note` says why
    note: str = ""
    weights_label: str = ""
    blocks_to_swap: int = 0
    blocks_auto: bool = False
    tokens: int = 0
    phase_peaks: dict = field(default_factory=dict)  # sampling / text_encoder / vae bytes
    peak_vram_bytes: int = 0
    vram_budget_bytes: int = 0
    fits: bool | None = None  # None: no GPU to compare with
    step_time_s: float | None = None
    total_time_s: float | None = None
    gpu: str = ""
    badge: str = ""  # one line for a node
    lines: list[str] = field(default_factory=list)  # the details

    def as_dict(self) -> dict:
        return asdict(self)


def _gib(n: int) -> str:
    return f"{n / GiB:.1f} GiB"


def estimate(machine: advisor.Machine, *, model_name: str | None, width: int, height: int, frames: int,
             blocks_to_swap: int = 0, prefetch: int = 2, te_name: str | None = None, te_device: str = "gpu",
             vae_tiling: str = "auto", attention: str = "auto", model: MemoryModel | None = None) -> Estimate:
    """Predicted per-phase VRAM peaks and step time of the given settings on `machine`."""
    choice = weights_for(model_name)
    if choice is None:
        why = "tiny test model" if model_name and "tiny" in model_name.lower() else f"unknown weights {model_name!r}"
        return Estimate(False, note=f"no estimate: {why}", badge=f"Wan4Step: no estimate ({why})")
    try:
        tokens = video_tokens(width, height, frames)
    except SettingsError as exc:
        return Estimate(False, note=str(exc), badge="Wan4Step: invalid video size")
    model = model or MemoryModel.load()
    attn = attention or "auto"
    if attn == "auto":
        attn = advisor.auto_attention(machine.capability) if machine.has_gpu else "sdpa"
    if attn not in model.attention_backends():
        attn = "sdpa"
    card = cards.find_card(machine.gpu_name, machine.vram_total_bytes) if machine.has_gpu else None
    timing = card or (cards.nearest_proxy(machine.capability, machine.vram_total_bytes) if machine.has_gpu else None)
    te_bytes = text_encoder_bytes(te_name)
    te_act = model.data["text_encoder"]["activation_bytes"]
    te_on_gpu = te_bytes + te_act if te_device == "gpu" else 0

    auto = blocks_to_swap is None or blocks_to_swap < 0
    if auto:
        if machine.has_gpu:
            usable = advisor._usable(machine.vram_free_bytes, machine.vram_total_bytes, "speed", model)
            k = model.min_blocks_to_swap(choice, tokens, usable, prefetch, attn, te_on_gpu,
                                         pixel_frames=width * height * frames)
            k = model.num_blocks if k is None else k
        else:
            k = 0
    else:
        k = min(int(blocks_to_swap), model.num_blocks)
    sampling = model.sampling_vram(choice, tokens, k, prefetch, attn, te_on_gpu)
    px = width * height * frames
    resident = sampling.weights + sampling.ring + sampling.text_encoder
    tiled = vae_tiling == "on" or (vae_tiling == "auto" and machine.has_gpu
                                   and model.vae_vram(px, False, resident) > machine.vram_free_bytes)
    phases = {
        "sampling": sampling.total,
        "text_encoder": model.text_encoder_vram(te_bytes) if te_device != "cpu" else model.context_bytes,
        "vae": model.vae_vram(px, tiled, resident),
    }
    peak = max(phases.values())
    step = None
    if timing is not None:
        placement = "gpu" if k == 0 else "stream"
        step, _ = advisor.estimate_step_time(model, choice, tokens, k, placement, attn, timing)
    fits = peak <= machine.vram_free_bytes if machine.has_gpu else None
    gpu = (card.name if card else machine.gpu_name) if machine.has_gpu else "no CUDA GPU"
    k_text = f"{k} blocks swapped" + (" (auto)" if auto and machine.has_gpu else " (auto: decided at run time)" if auto else "")
    badge = f"{gpu}: peak ~{_gib(peak)}" + (f" of {_gib(machine.vram_free_bytes)}" if machine.has_gpu else "")
    if step is not None:
        badge += f" · ~{step:.1f} s/step"
    lines = [
        f"{choice.label}, {k_text}, {tokens:,} tokens",
        f"VRAM: sampling {_gib(phases['sampling'])}, text encoder {_gib(phases['text_encoder'])}"
        f" ({te_device}), VAE {_gib(phases['vae'])}{' tiled' if tiled else ''}",
    ]
    if step is not None:
        lines.append(f"~{step:.1f} s/step, 4 steps ~{4 * step:.0f} s (estimate{'' if card else ', nearest known card'})")
    elif not machine.has_gpu:
        lines.append("no CUDA GPU detected: VRAM shown for reference, no step time")
    if fits is False:
        lines.append(f"does NOT fit {_gib(machine.vram_free_bytes)}: raise blocks_to_swap, put the text encoder on "
                     "the CPU or lower the size")
    return Estimate(True, weights_label=choice.label, blocks_to_swap=k, blocks_auto=auto, tokens=tokens,
                    phase_peaks=phases, peak_vram_bytes=peak, vram_budget_bytes=machine.vram_free_bytes, fits=fits,
                    step_time_s=step, total_time_s=4 * step if step is not None else None, gpu=gpu, badge=badge,
                    lines=lines)


def recommendation_line(rec: advisor.Recommendation) -> str:
    """The advisor's pick in one line, for the sampler's badge."""
    if not rec.fits:
        return "Advisor: nothing fits this size on this machine; see the VRAM Advisor node"
    swap = f", swap {rec.blocks_to_swap} blocks" if rec.blocks_to_swap else ""
    t = f", ~{rec.step_time_s:.1f} s/step" if rec.step_time_s is not None else ""
    return f"Advisor: {rec.weights_label}{swap}, text encoder {rec.text_encoder_device}{t}"
