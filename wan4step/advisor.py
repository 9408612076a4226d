"""Which weights, offload and decode settings fit this machine, and why.

`recommend(machine, request)` is a pure function of numbers: a `Machine` (GPU name,
VRAM, compute capability, RAM, disk; detected by `wan4step.hardware` or typed in by a
user planning for a card they don't have) and a `Request` (size, frames, priority).
It never touches torch.cuda, so every decision is unit-tested.

How it decides:
1. Every weights choice the GPU can compute with natively (FP8 needs sm_89+, INT8 and
   BF16 need sm_80+, GGUF runs anywhere) gets the fewest streamed blocks whose sampling
   phase fits the usable VRAM (memory model, `memory_model.py`), a text-encoder
   placement, and a RAM check (pinned blocks; disk streaming when RAM is short).
2. Priority picks one: speed = the fastest estimated step among choices of acceptable
   quality (ties go to FP8 > INT8 > GGUF > BF16, the recipes' order); quality = the
   closest to the BF16 release that fits; fit = speed's pick with 15 % VRAM left free,
   the text encoder on the CPU and a tiled VAE.
3. Files: a distilled file beats a base model + distill LoRA of the same format (the LoRA is
   a rank-64 approximation of the distillation; merged at load, the step costs the same).
   When the disk is known, choices whose downloads fit it come first: that is where base +
   LoRA wins (e.g. city96's Q4_K_M base + the 631 MB LoRA is 10.7 GB, QuantStack's distilled
   Q4_K_M 11.6 GB because it carries VACE blocks); otherwise it is listed as an alternative.
4. The reason says what was chosen and why, compares with the recipe for known cards,
   and states that the step time is an estimate and what it is scaled from.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

from . import cards as cards_mod
from .catalog import DEFAULT_VAE, TEXT_ENCODERS_TABLE, VAES, WEIGHTS, WeightsChoice, download_size, files_for
from .errors import SettingsError
from .memory_model import GiB, MemoryModel, VramBreakdown, video_tokens

PRIORITIES = ("speed", "quality", "fit")
TE_DEVICES = ("gpu", "gpu_then_free", "cpu")
# The pack's backend names (wan4step/attention.py BACKENDS), so the output wires into the loader.
ATTENTION_CHOICES = ("auto", "sdpa", "8bit", "sage", "flash", "fa4")


def auto_attention(capability: tuple[int, int] | None) -> str:
    """What the loader's `auto` runs on a GPU of this capability, for planning: the pack's 8-bit
    attention on sm80+ except datacenter Blackwell (wan4step/attention.py AUTO_ORDER, whose first
    choice this mirrors; fa4 there is optional, so plans assume SDPA). A unit test keeps them in step."""
    if capability is None or tuple(capability) < (8, 0) or tuple(capability)[0] == 10:
        return "sdpa"
    return "8bit"
PLACEMENTS = ("gpu", "stream", "disk")
STEPS = 4  # the distilled recipe

_KIND_LABEL = {"fp8": "LightX2V FP8", "int8": "LightX2V INT8", "bf16": "LightX2V BF16", "gguf": "GGUF"}


def _gib(n: float) -> str:
    return f"{n / GiB:.1f} GiB"


def _gb(n: float) -> str:
    return f"{n / 1e9:.1f} GB"


# --------------------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Machine:
    """The numbers the advisor decides from; `sources` says where each came from."""

    gpu_name: str | None
    vram_total_bytes: int
    vram_free_bytes: int  # what the pack can use: free now + what ComfyUI itself already holds
    capability: tuple[int, int] | None
    ram_total_bytes: int
    ram_available_bytes: int  # RAM the ComfyUI process can use
    disk_free_bytes: int | None = None
    gpu_count: int = 1
    gpu_index: int = 0
    other_gpus: tuple[str, ...] = ()
    sources: dict = field(default_factory=dict)

    @property
    def has_gpu(self) -> bool:
        return bool(self.gpu_name) and self.vram_total_bytes > 0


@dataclass(frozen=True)
class Request:
    width: int = 832
    height: int = 480
    frames: int = 81
    priority: str = "speed"
    attention: str = "auto"
    prefetch: int = 2  # Wan4Step Block Swap's default: a ring of 3 block slots
    # Only these weights kinds ("gguf", "fp8", ...); empty = every kind. A workflow built for
    # one loader path (GGUF) asks which of its files fits, not which format is fastest.
    formats: tuple[str, ...] = ()
    # catalog files already in ComfyUI's model folders (their `FileSpec.dest`): not downloaded again,
    # so a base model already on disk makes base + distill LoRA a 0.63 GB download
    present: frozenset = frozenset()

    def __post_init__(self) -> None:
        if self.priority not in PRIORITIES:
            raise SettingsError(
                f"unknown priority {self.priority!r}", expected=" / ".join(PRIORITIES), fix="pick speed, quality or fit."
            )
        if self.attention not in ATTENTION_CHOICES:
            raise SettingsError(
                f"unknown attention backend {self.attention!r}",
                expected=" / ".join(ATTENTION_CHOICES),
                fix="pick auto unless you installed sageattention (sage), flash-attn (flash) or flash-attn-4 (fa4).",
            )
        object.__setattr__(self, "formats", tuple(self.formats))  # frozen: a list from JSON becomes a tuple
        kinds = sorted({w.kind for w in WEIGHTS.values()})
        if any(f not in kinds for f in self.formats):
            raise SettingsError(
                f"unknown weights format in {list(self.formats)}", expected=" / ".join(kinds),
                fix="leave it empty (any) or name formats from the list.",
            )


def _os_reserve(model: MemoryModel) -> int:
    return int(model.host("os_reserve_bytes"))


def machine_from_info(info, gpu_index: int | None = None, own_vram_bytes: int = 0, own_ram_bytes: int = 0,
                      model: MemoryModel | None = None) -> Machine:
    """A `Machine` from `hardware.MachineInfo`.

    gpu_index: the GPU ComfyUI runs on (None: the one with the most VRAM).
    own_vram_bytes / own_ram_bytes: what this ComfyUI process already holds (loaded
    models it would free for the new ones), added back to the free amounts.
    """
    model = model or MemoryModel.load()
    ram_budget = min(info.ram_available_bytes + own_ram_bytes, max(info.ram_total_bytes - _os_reserve(model), 0))
    base = dict(
        ram_total_bytes=int(info.ram_total_bytes),
        ram_available_bytes=int(ram_budget),
        disk_free_bytes=info.disk_free_bytes,
        sources={"gpu": "detected", "vram": "detected", "capability": "detected", "ram": "detected", "disk": "detected"},
    )
    if not info.gpus:
        return Machine(gpu_name=None, vram_total_bytes=0, vram_free_bytes=0, capability=None, gpu_count=0, **base)
    if gpu_index is None or not any(g.index == gpu_index for g in info.gpus):
        gpu = max(info.gpus, key=lambda g: g.total_bytes)
    else:
        gpu = next(g for g in info.gpus if g.index == gpu_index)
    # Measuring free memory created this process's CUDA context, which the memory model
    # counts itself: add it back so the budget is what the whole process may hold.
    free = min(gpu.free_bytes + own_vram_bytes + model.context_bytes, gpu.total_bytes)
    others = tuple(f"GPU {g.index}: {g.name} ({_gib(g.total_bytes)})" for g in info.gpus if g.index != gpu.index)
    return Machine(
        gpu_name=gpu.name,
        vram_total_bytes=int(gpu.total_bytes),
        vram_free_bytes=int(free),
        capability=tuple(gpu.capability),
        gpu_count=len(info.gpus),
        gpu_index=gpu.index,
        other_gpus=others,
        **base,
    )


def with_overrides(
    machine: Machine,
    *,
    gpu: str | None = None,
    vram_gb: float = 0,
    free_vram_gb: float = 0,
    capability: str | None = None,
    ram_gb: float = 0,
    disk_gb: float = 0,
    model: MemoryModel | None = None,
) -> Machine:
    """Replace detected values by typed-in ones (0 / "" / "auto" keep the detected value).

    gpu: a card from the table (its VRAM and architecture are used unless also typed
    in), "none" for a CPU-only plan, or any other name (numbers stay as detected).
    vram_gb / free_vram_gb / ram_gb / disk_gb are in GiB (what nvidia-smi and the OS show).
    """
    model = model or MemoryModel.load()
    m = machine
    src = dict(m.sources)
    g = (gpu or "").strip()
    if g.lower() in ("none", "cpu", "cpu only", "none (cpu only)"):
        m = replace(m, gpu_name=None, vram_total_bytes=0, vram_free_bytes=0, capability=None, gpu_count=0,
                    other_gpus=())
        src.update(gpu="override", vram="override", capability="override")
    elif g and g.lower() not in ("auto", "auto (detected)"):
        card = cards_mod.by_name(g)
        if card is not None:
            reserve = int(model.decision("desktop_reserve_bytes")) if card.consumer else 0
            m = replace(m, gpu_name=card.name, vram_total_bytes=card.vram_bytes,
                        vram_free_bytes=card.vram_bytes - reserve, capability=card.capability,
                        gpu_count=max(m.gpu_count, 1), other_gpus=())
            src.update(gpu="card table", vram="card table", capability="card table")
        else:
            m = replace(m, gpu_name=g)
            src.update(gpu="override")
    if vram_gb and vram_gb > 0:
        total = int(vram_gb * GiB)
        reserve = int(model.decision("desktop_reserve_bytes")) if not m.gpu_name or _is_consumer(m.gpu_name) else 0
        m = replace(m, vram_total_bytes=total, vram_free_bytes=max(total - reserve, 0),
                    gpu_name=m.gpu_name or "GPU", gpu_count=max(m.gpu_count, 1))
        src["vram"] = "override"
    if free_vram_gb and free_vram_gb > 0:
        m = replace(m, vram_free_bytes=min(int(free_vram_gb * GiB), m.vram_total_bytes or int(free_vram_gb * GiB)))
        if not m.vram_total_bytes:
            m = replace(m, vram_total_bytes=int(free_vram_gb * GiB), gpu_name=m.gpu_name or "GPU", gpu_count=1)
        src["vram"] = "override"
    cap = cards_mod.parse_capability(capability) if capability else None
    if cap is not None:
        m = replace(m, capability=cap)
        src["capability"] = "override"
    if ram_gb and ram_gb > 0:
        total = int(ram_gb * GiB)
        m = replace(m, ram_total_bytes=total, ram_available_bytes=max(total - _os_reserve(model), 0))
        src["ram"] = "override"
    if disk_gb and disk_gb > 0:
        m = replace(m, disk_free_bytes=int(disk_gb * GiB))
        src["disk"] = "override"
    return replace(m, sources=src)


def _is_consumer(name: str) -> bool:
    card = cards_mod.find_card(name)
    return card.consumer if card is not None else True


# --------------------------------------------------------------------------------------
# output
# --------------------------------------------------------------------------------------
@dataclass
class Recommendation:
    fits: bool
    weights_key: str
    weights_label: str
    kind: str  # fp8 | int8 | bf16 | gguf
    tier: str | None
    model_name: str  # loader `model_name`
    blocks_to_swap: int
    prefetch: int
    placement: str  # gpu | stream | disk
    text_encoder_key: str
    text_encoder_name: str
    text_encoder_device: str  # gpu | gpu_then_free | cpu
    vae_key: str
    vae_name: str
    vae_tiled: bool
    attention: str
    tokens: int
    vram_budget_bytes: int
    usable_vram_bytes: int
    sampling: dict  # VramBreakdown.as_dict()
    peak_vram_bytes: int  # the largest phase
    phase_peaks: dict  # sampling / text_encoder / vae
    peak_ram_bytes: int
    ram_budget_bytes: int
    step_time_s: float | None
    total_time_s: float | None
    time_basis: str
    download_bytes: int
    model_status: str  # memory model "calibrated" / "uncalibrated"
    reason: str
    warnings: list[str] = field(default_factory=list)
    alternatives: list[str] = field(default_factory=list)
    machine: dict = field(default_factory=dict)
    lora_name: str | None = None  # the Model Loader's lora_name when the pick is base + distill LoRA
    route: str = "distilled"  # "distilled" | "base+lora"

    def as_dict(self) -> dict:
        return asdict(self)

    def report(self) -> str:
        """The text shown on the node: the reason, then the settings and numbers."""
        lines = [self.reason, ""]
        lines.append(f"Weights: {self.weights_label}  ->  model_name = {self.model_name}"
                     + (f", lora_name = {self.lora_name} (merged at load)" if self.lora_name else ""))
        lines.append(f"Block swap: blocks_to_swap = {self.blocks_to_swap}, prefetch = {self.prefetch} ({self.placement})")
        lines.append(f"Text encoder: {self.text_encoder_name} on {self.text_encoder_device}")
        lines.append(f"VAE: {self.vae_name}, {'tiled' if self.vae_tiled else 'untiled'} decode")
        lines.append(f"Attention: {self.attention}")
        p = self.phase_peaks
        lines.append(
            f"Predicted VRAM peak {_gib(self.peak_vram_bytes)} of {_gib(self.vram_budget_bytes)} available "
            f"(sampling {_gib(p['sampling'])}, text encoder {_gib(p['text_encoder'])}, VAE {_gib(p['vae'])}); "
            f"RAM {_gib(self.peak_ram_bytes)} of {_gib(self.ram_budget_bytes)}"
        )
        if self.step_time_s is not None:
            lines.append(f"Step time ~{self.step_time_s:.1f} s, {STEPS} steps ~{self.total_time_s:.0f} s ({self.time_basis})")
        else:
            lines.append(f"Step time: {self.time_basis}")
        lines.append(f"Downloads: {_gb(self.download_bytes)}; memory model: {self.model_status}")
        for w in self.warnings:
            lines.append(f"! {w}")
        if self.alternatives:
            lines.append("Alternatives: " + " | ".join(self.alternatives))
        return "\n".join(lines)


# --------------------------------------------------------------------------------------
# time estimate
# --------------------------------------------------------------------------------------
def _lin_rate(card: cards_mod.Card, kind: str, eff: dict) -> float:
    """Effective FLOP/s of the block linears in this format on this card.

    INT8 is never assumed faster than FP8 where FP8 exists: on the H100 it reached 75 %
    of FP8 (930 vs 1,250 TOPS) at equal peak specs, so GeForce's 2x INT8 spec is not
    trusted without a measurement.
    """
    bf16 = card.bf16_tflops * 1e12 * eff["bf16"]
    if kind in ("bf16", "gguf"):
        return card.bf16_tflops * 1e12 * eff[kind]
    fp8 = card.fp8_tflops * 1e12 * eff["fp8"] if card.fp8_tflops else None
    if kind == "fp8":
        return fp8 or bf16  # no FP8 tensor cores: dequantized bf16 matmul
    int8 = card.int8_tops * 1e12 * eff["int8"] if card.int8_tops else bf16
    return min(int8, fp8) if fp8 else int8


def estimate_step_time(
    model: MemoryModel,
    choice: WeightsChoice,
    tokens: int,
    blocks_to_swap: int,
    placement: str,
    attention: str,
    card: cards_mod.Card,
) -> tuple[float, dict]:
    """Seconds per sampling step (one DiT forward: CFG is off) and its parts.

    Per block: attention 4*L*(L+text)*dim FLOPs at the card's bf16 peak x the H100's
    measured SDPA efficiency (59.7 %), linears 2*L*(6*dim^2 + 2*dim*ffn) FLOPs at the
    format's peak x its measured H100 efficiency, elementwise work as bytes over memory
    bandwidth. Streaming overlaps compute: a step takes max(compute, bytes / link).
    On the H100 this reproduces DESIGN.md's 74 ms (480p) and 291 ms (720p) per block.
    """
    t = model.data["timing"]
    dims = model.data["model"]
    d, f, text = dims["dim"], dims["ffn_dim"], dims["text_len"]
    n = model.num_blocks
    attn_flops = 4.0 * tokens * (tokens + text) * d
    lin_flops = 2.0 * tokens * (6 * d * d + 2 * d * f) + 2.0 * text * 2 * d * d
    attn_s = attn_flops / (card.bf16_tflops * 1e12 * t["attention_efficiency"][attention])
    lin_s = lin_flops / _lin_rate(card, choice.kind, t["linear_efficiency"])
    bw = card.mem_bw_gbs * 1e9
    misc_s = tokens * t["misc_bytes_per_token"] / bw
    block_bytes = model.block_bytes(choice)
    deq_s = 0.0
    if choice.kind == "gguf":
        bf16_block = model.data["formats"]["bf16"]["block_bytes"]
        deq_s = t["gguf_dequant_traffic_factor"] * (bf16_block + block_bytes) / bw
    compute = n * (attn_s + lin_s + misc_s + deq_s)
    k = blocks_to_swap if placement != "gpu" else 0
    link = card.pcie_gbs * 1e9 if placement != "disk" else float(model.host("disk_read_bytes_per_s"))
    stream = k * block_bytes / link if k else 0.0
    step = max(compute, stream) + k * t["stream_overhead_s_per_block"]
    parts = dict(attention_s=n * attn_s, linears_s=n * lin_s, elementwise_s=n * misc_s, dequant_s=n * deq_s,
                 compute_s=compute, stream_s=stream, streamed_bytes=k * block_bytes, step_s=step)
    return step, parts


def _time_basis(card: cards_mod.Card, proxy: bool, placement: str, model: MemoryModel, device_name: str) -> str:
    fp8 = f", {card.fp8_tflops:g} FP8" if card.fp8_tflops else ""
    who = f"{card.name}'s" if not proxy else f"{card.name}'s (nearest known card to {device_name}: rough)"
    link = f"{card.pcie_gbs:g} GB/s PCIe" if placement != "disk" else f"{model.host('disk_read_bytes_per_s') / 1e9:g} GB/s disk"
    return (
        "an estimate, not a measurement: the H100's measured block times (74 ms per block at 480p in bf16) "
        f"scaled by {who} published dense throughput ({card.bf16_tflops:g} BF16{fp8} TFLOPs, "
        f"{card.mem_bw_gbs:g} GB/s memory) and {link} for streamed blocks"
    )


# --------------------------------------------------------------------------------------
# the decision
# --------------------------------------------------------------------------------------
@dataclass
class _Candidate:
    choice: WeightsChoice
    k: int
    placement: str
    te_key: str
    te_device: str
    sampling: VramBreakdown
    ram: int
    step_s: float | None
    parts: dict

    @property
    def quality(self) -> int:
        return self.choice.quality


def _allowed(kind: str, cap: tuple[int, int] | None) -> str | None:
    """None if the GPU computes this format natively, else why not."""
    if cap is None:
        return None if kind == "gguf" else "compute capability unknown"
    if kind == "fp8" and cap < (8, 9):
        return f"sm_{cap[0]}{cap[1]} has no FP8 tensor cores (FP8 would be dequantized, slower than INT8)"
    if kind in ("int8", "bf16") and cap < (8, 0):
        return f"sm_{cap[0]}{cap[1]} predates Ampere ({kind} kernels need sm_80+)"
    return None


def _te_order(priority: str) -> list[str]:
    return ["umt5_bf16", "umt5_fp8"] if priority == "quality" else ["umt5_fp8"]


def _evaluate(choice, tokens, usable, ram_budget, req, attention, model, card, notes) -> _Candidate | None:
    px = req.width * req.height * req.frames
    k = model.min_blocks_to_swap(choice, tokens, usable, req.prefetch, attention, pixel_frames=px)
    if k is None:
        need = model.sampling_vram(choice, tokens, model.num_blocks, req.prefetch, attention).total
        notes[choice.key] = f"needs {_gib(need)} even with all 40 blocks streamed (or the VAE decode beside them)"
        return None
    te_act = model.data["text_encoder"]["activation_bytes"]

    def te_devices(te_bytes: int) -> list[str]:
        alone = model.text_encoder_vram(te_bytes) <= usable
        with_te = model.sampling_vram(choice, tokens, k, req.prefetch, attention, te_bytes + te_act)
        if req.priority != "fit" and with_te.total <= usable and model.decode_fits(with_te, px, usable):
            return ["gpu", "cpu"]
        if req.priority != "fit" and alone:
            return ["gpu_then_free", "cpu"]
        return ["cpu"] + (["gpu_then_free"] if alone else [])  # fit: CPU unless RAM forbids it

    # Pinned streaming beats a better text-encoder placement; disk streaming is the last resort.
    for placement in (["gpu"] if k == 0 else ["stream", "disk"]):
        for te_key in _te_order(req.priority):
            te = TEXT_ENCODERS_TABLE[te_key]
            for dev in te_devices(te.size_bytes):
                ram = model.host_ram(choice, k, placement, te.size_bytes if dev == "cpu" else 0)
                if ram > ram_budget:
                    continue
                sampling = model.sampling_vram(choice, tokens, k, req.prefetch, attention,
                                               te.size_bytes + te_act if dev == "gpu" else 0)
                step, parts = (None, {})
                if card is not None:
                    step, parts = estimate_step_time(model, choice, tokens, k, placement, attention, card)
                return _Candidate(choice, k, placement, te_key, dev, sampling, ram, step, parts)
    need = model.host_ram(choice, k, "disk" if k else "gpu", 0)
    notes[choice.key] = f"needs {_gib(need)} of RAM, {_gib(ram_budget)} available"
    return None


def _download(c: _Candidate, present: frozenset = frozenset()) -> int:
    """Bytes still to download for a candidate's DiT (+ LoRA), text encoder and VAE."""
    files = files_for(weights_key=c.choice.key, text_encoder_key=c.te_key, vae_key=DEFAULT_VAE)
    return sum(f.size_bytes for f in files if f.dest not in present)


def _pick(cands: list[_Candidate], priority: str, model: MemoryModel, disk_free: int | None = None,
          present: frozenset = frozenset()) -> _Candidate:
    floor = int(model.decision("min_quality"))
    pool = [c for c in cands if c.quality >= floor] or cands
    if disk_free is not None:  # downloads that fit the disk first (base + LoRA is smaller than a VACE tier)
        pool = [c for c in pool if _download(c, present) <= disk_free] or pool
    if priority != "quality":
        # Disk streaming is the fallback: its speed depends on a drive we cannot see
        # (an HDD is 20x slower than the NVMe rate assumed), so pinned RAM wins when any
        # choice of acceptable quality fits it.
        pool = [c for c in pool if c.placement != "disk"] or pool
    pref = list(model.decision("speed_preference"))

    def rank(c: _Candidate) -> int:
        return pref.index(c.choice.kind) if c.choice.kind in pref else len(pref)

    if priority == "quality":
        best_q = max(c.quality for c in pool)
        top = [c for c in pool if c.quality == best_q]
        return min(top, key=lambda c: (c.step_s if c.step_s is not None else 0.0, rank(c)))
    if all(c.step_s is None for c in pool):  # no timing: smallest streaming, best quality
        return min(pool, key=lambda c: (c.k, -c.quality, rank(c)))
    fastest = min(c.step_s for c in pool)
    tie = fastest * (1 + float(model.decision("speed_tie_frac")))
    top = [c for c in pool if c.step_s <= tie]
    return min(top, key=lambda c: (rank(c), -c.quality, c.step_s))


def _route_alternative(pick: _Candidate, cands: list[_Candidate], present: frozenset = frozenset()) -> str | None:
    """The other route (distilled file vs base + distill LoRA) in the pick's format: the same tier,
    else the best one whose download is no larger than the pick's."""
    other_route = "distilled" if pick.choice.route == "base+lora" else "base+lora"
    same = [c for c in cands if c.choice.route == other_route and c.choice.kind == pick.choice.kind]
    mine = _download(pick, present)
    tier = [c for c in same if pick.choice.tier and c.choice.tier == pick.choice.tier]
    same = tier or [c for c in same if _download(c, present) <= mine]
    if not same:
        return None
    c = max(same, key=lambda c: (c.quality, -_download(c, present)))
    dl, mine = _download(c, present) / 1e9, mine / 1e9
    if other_route == "base+lora":
        return (f"base + distill LoRA: {c.choice.label}, {c.k} blocks swapped; downloads {dl:.1f} GB instead of "
                f"{mine:.1f} GB, merged at load (same step time; a rank-64 approximation of the distilled weights)")
    return f"distilled file: {c.choice.label}, {c.k} blocks swapped; downloads {dl:.1f} GB instead of {mine:.1f} GB"


def _usable(budget: int, total: int, priority: str, model: MemoryModel) -> int:
    headroom = max(int(model.decision("headroom_min_bytes")), int(model.decision("headroom_frac") * total))
    if priority == "fit":
        headroom = max(headroom, int(model.decision("fit_headroom_frac") * budget))
    return max(budget - headroom, 0)


def recommend(machine: Machine, request: Request | None = None, *, model: MemoryModel | None = None) -> Recommendation:
    """The recommended settings for generating `request` on `machine`."""
    req = request or Request()
    model = model or MemoryModel.load()
    tokens = video_tokens(req.width, req.height, req.frames)
    attention = req.attention
    if attention == "auto":
        attention = auto_attention(machine.capability) if machine.has_gpu else "sdpa"
    if not machine.has_gpu:
        return _recommend_cpu(machine, req, tokens, attention, model)

    card = cards_mod.find_card(machine.gpu_name, machine.vram_total_bytes)
    cap = machine.capability or (card.capability if card else None)
    timing_card, proxy = card, False
    if timing_card is None:
        timing_card, proxy = cards_mod.nearest_proxy(cap, machine.vram_total_bytes), True
    budget = machine.vram_free_bytes
    usable = _usable(budget, machine.vram_total_bytes, req.priority, model)
    ram_budget = machine.ram_available_bytes

    notes: dict[str, str] = {}
    excluded: dict[str, str] = {}
    cands: list[_Candidate] = []
    for choice in WEIGHTS.values():
        if not choice.recommendable or (req.formats and choice.kind not in req.formats):
            continue
        why_not = _allowed(choice.kind, cap)
        if why_not:
            excluded[choice.kind] = why_not
            continue
        c = _evaluate(choice, tokens, usable, ram_budget, req, attention, model, timing_card, notes)
        if c is not None:
            cands.append(c)

    px = req.width * req.height * req.frames
    if not cands:
        return _no_fit(machine, req, tokens, attention, model, budget, usable, card, notes)

    disk = machine.disk_free_bytes
    pick = _pick(cands, req.priority, model, disk, req.present)
    resident_beside_vae = pick.sampling.weights + pick.sampling.ring + pick.sampling.text_encoder
    untiled = model.vae_vram(px, tiled=False, resident_bytes=resident_beside_vae)
    vae_tiled = req.priority == "fit" or untiled > usable
    vae_peak = model.vae_vram(px, tiled=vae_tiled, resident_bytes=resident_beside_vae)
    te = TEXT_ENCODERS_TABLE[pick.te_key]
    te_peak = model.text_encoder_vram(te.size_bytes) if pick.te_device != "cpu" else model.context_bytes
    phases = {"sampling": pick.sampling.total, "text_encoder": te_peak, "vae": vae_peak}

    alternatives = []
    for prio in PRIORITIES:
        if prio == req.priority:
            continue
        other = _pick(cands, prio, model, disk, req.present)
        if other.choice.key != pick.choice.key:
            t = f", ~{other.step_s:.1f} s/step" if other.step_s is not None else ""
            alternatives.append(f"{prio}: {other.choice.label}, {other.k} blocks swapped{t}")
    route = _route_alternative(pick, cands, req.present)
    if route:
        alternatives.append(route)

    step = pick.step_s
    rec = Recommendation(
        fits=True,
        weights_key=pick.choice.key,
        weights_label=pick.choice.label,
        kind=pick.choice.kind,
        tier=pick.choice.tier,
        model_name=pick.choice.model_name,
        blocks_to_swap=pick.k,
        prefetch=req.prefetch,
        placement=pick.placement,
        text_encoder_key=pick.te_key,
        text_encoder_name=te.name,
        text_encoder_device=pick.te_device,
        vae_key=DEFAULT_VAE,
        vae_name=VAES[DEFAULT_VAE].name,
        vae_tiled=vae_tiled,
        attention=attention,
        tokens=tokens,
        vram_budget_bytes=budget,
        usable_vram_bytes=usable,
        sampling=pick.sampling.as_dict(),
        peak_vram_bytes=max(phases.values()),
        phase_peaks=phases,
        peak_ram_bytes=pick.ram,
        ram_budget_bytes=ram_budget,
        step_time_s=step,
        total_time_s=step * STEPS if step is not None else None,
        time_basis=(_time_basis(timing_card, proxy, pick.placement, model, machine.gpu_name or "")
                    if timing_card else "no estimate: unknown card and architecture"),
        download_bytes=_download(pick, req.present),
        model_status=model.status,
        reason="",
        alternatives=alternatives,
        machine=_machine_dict(machine),
        lora_name=pick.choice.lora_name,
        route=pick.choice.route,
    )
    rec.warnings = _warnings(machine, rec, model, card)
    rec.reason = _reason(machine, req, rec, pick, card, cap, excluded, notes, cands, model)
    return rec


# --------------------------------------------------------------------------------------
# special cases
# --------------------------------------------------------------------------------------
def _recommend_cpu(machine: Machine, req: Request, tokens: int, attention: str, model: MemoryModel) -> Recommendation:
    """No CUDA GPU: everything in RAM; pick the best weights that fit it."""
    te = TEXT_ENCODERS_TABLE["umt5_fp8"]
    act = model.activation_bytes("bf16", tokens, attention)
    ram_budget = machine.ram_available_bytes
    fitting = []
    for choice in WEIGHTS.values():
        if not choice.recommendable or (req.formats and choice.kind not in req.formats):
            continue
        ram = model.host_ram(choice, 0, "gpu", te.size_bytes) + model.weights_bytes(choice) + act
        if ram <= ram_budget:
            fitting.append((choice, ram))
    fits = bool(fitting)
    if fitting:
        choice, ram = max(fitting, key=lambda x: (x[0].quality, -x[1]))
    else:
        choice = WEIGHTS["gguf_Q2_K"]
        ram = model.host_ram(choice, 0, "gpu", te.size_bytes) + model.weights_bytes(choice) + act
    reason = (
        "No CUDA GPU found: this plan only makes the 14B model fit in RAM; on a CPU one step takes hours, "
        "so use a machine with an NVIDIA GPU (8 GB is the floor) if you can. "
        + (f"{choice.label} is the best weights choice that fits {_gib(ram_budget)} of RAM "
           f"(needs ~{_gib(ram)} with the text encoder and activations)."
           if fits else f"Even {choice.label} needs ~{_gib(ram)} of RAM and only {_gib(ram_budget)} is available.")
    )
    zero = {"sampling": 0, "text_encoder": 0, "vae": 0}
    return Recommendation(
        fits=fits, weights_key=choice.key, weights_label=choice.label, kind=choice.kind, tier=choice.tier,
        model_name=choice.model_name, blocks_to_swap=0, prefetch=req.prefetch, placement="gpu",
        text_encoder_key=te.key, text_encoder_name=te.name, text_encoder_device="cpu",
        vae_key=DEFAULT_VAE, vae_name=VAES[DEFAULT_VAE].name, vae_tiled=True, attention=attention, tokens=tokens,
        vram_budget_bytes=0, usable_vram_bytes=0, sampling={}, peak_vram_bytes=0, phase_peaks=zero,
        peak_ram_bytes=ram, ram_budget_bytes=ram_budget, step_time_s=None, total_time_s=None,
        time_basis="no estimate on CPU (hours per step)",
        download_bytes=download_size(weights_key=choice.key, text_encoder_key=te.key, vae_key=DEFAULT_VAE),
        model_status=model.status, reason=reason, warnings=[], alternatives=[], machine=_machine_dict(machine),
    )


def max_frames_that_fit(width: int, height: int, usable: int, model: MemoryModel, prefetch: int = 1,
                        attention: str = "sdpa") -> int:
    """Longest 4n+1 clip at this size that fits fully streamed with the smallest weights (0 if none)."""
    choice = WEIGHTS["gguf_Q2_K"]
    best = 0
    for frames in range(1, 1001, 4):
        tokens = video_tokens(width, height, frames)
        if model.sampling_vram(choice, tokens, model.num_blocks, prefetch, attention).total <= usable:
            best = frames
        else:
            break
    return best


def _no_fit(machine, req, tokens, attention, model, budget, usable, card, notes) -> Recommendation:
    choice = WEIGHTS["gguf_Q2_K"]
    k = model.num_blocks
    sampling = model.sampling_vram(choice, tokens, k, req.prefetch, attention)
    frames = max_frames_that_fit(req.width, req.height, usable, model, req.prefetch, attention)
    name = card.name if card else (machine.gpu_name or "this GPU")
    if frames:
        fix = f"at {req.width}x{req.height} at most {frames} frames fit"
    else:
        fix = "even one frame does not fit at this size; lower the resolution"
    ram_note = ""
    if notes and all("RAM" in v for v in notes.values()):
        fix = f"system RAM is the limit ({_gib(machine.ram_available_bytes)} usable): add RAM or close programs"
        ram_note = " RAM, not VRAM, is what runs out."
    reason = (
        f"{name}: {req.width}x{req.height}x{req.frames} ({tokens:,} tokens) does not fit in {_gib(usable)} of usable "
        f"VRAM with any weights: the activations alone are ~{_gib(sampling.activations)} and even fully streamed "
        f"{choice.label} needs ~{_gib(sampling.total)}.{ram_note} Fix: {fix}."
    )
    te = TEXT_ENCODERS_TABLE["umt5_fp8"]
    phases = {"sampling": sampling.total, "text_encoder": model.text_encoder_vram(te.size_bytes),
              "vae": model.vae_vram(req.width * req.height * req.frames, tiled=True)}
    return Recommendation(
        fits=False, weights_key=choice.key, weights_label=choice.label, kind=choice.kind, tier=choice.tier,
        model_name=choice.model_name, blocks_to_swap=k, prefetch=req.prefetch, placement="stream",
        text_encoder_key=te.key, text_encoder_name=te.name, text_encoder_device="cpu",
        vae_key=DEFAULT_VAE, vae_name=VAES[DEFAULT_VAE].name, vae_tiled=True, attention=attention, tokens=tokens,
        vram_budget_bytes=budget, usable_vram_bytes=usable, sampling=sampling.as_dict(),
        peak_vram_bytes=max(phases.values()), phase_peaks=phases,
        peak_ram_bytes=model.host_ram(choice, k, "stream", te.size_bytes), ram_budget_bytes=machine.ram_available_bytes,
        step_time_s=None, total_time_s=None, time_basis="no estimate: the setting does not fit",
        download_bytes=0, model_status=model.status, reason=reason,
        warnings=[f"does not fit: {fix}"], alternatives=[], machine=_machine_dict(machine),
    )


# --------------------------------------------------------------------------------------
# words
# --------------------------------------------------------------------------------------
def _machine_dict(m: Machine) -> dict:
    d = asdict(m)
    d["capability"] = f"{m.capability[0]}.{m.capability[1]}" if m.capability else None
    return d


def _warnings(machine: Machine, rec: Recommendation, model: MemoryModel, card) -> list[str]:
    out = []
    if not model.calibrated:
        out.append("memory model uncalibrated: coefficients are first-principles estimates, not yet checked on a GPU")
    if machine.disk_free_bytes is not None and rec.download_bytes > machine.disk_free_bytes:
        out.append(f"downloads need {_gb(rec.download_bytes)} but only {_gb(machine.disk_free_bytes)} of disk is free")
    if rec.placement == "disk":
        out.append("blocks stream from disk (memory-mapped) because RAM cannot pin them: keep the model on an SSD")
    if machine.gpu_count > 1:
        out.append(f"{machine.gpu_count} GPUs found; this plan is for GPU {machine.gpu_index} ({machine.gpu_name}), "
                   "the one ComfyUI runs on; the pack uses one GPU")
    return out


def _reason(machine, req, rec: Recommendation, pick: _Candidate, card, cap, excluded, notes, cands, model) -> str:
    name = card.name if card else (machine.gpu_name or "GPU")
    arch = f"sm_{cap[0]}{cap[1]}" if cap else "unknown architecture"
    src = machine.sources.get("gpu")
    where = " (planned from the card table, not detected)" if src == "card table" else ""
    if card is None:
        where += " (not in the known-card table: planned from its own numbers)"
    head = f"{name}{where} ({arch}, {_gib(machine.vram_total_bytes)}, {_gib(rec.usable_vram_bytes)} usable):"
    kind = pick.choice.kind
    why = []
    if kind == "fp8":
        why.append(f"{arch} has FP8 tensor cores, so {pick.choice.label}")
    elif kind == "int8" and "fp8" in excluded:
        why.append(f"no FP8 tensor cores, so {pick.choice.label} (8-bit weights on the INT8 tensor cores)")
    elif kind == "int8":
        why.append(f"{pick.choice.label}")
    elif kind == "bf16":
        why.append(f"{pick.choice.label}, the full-precision release" + (" (quality priority)" if req.priority == "quality" else ""))
    else:
        eight = [c for c in cands if c.choice.kind in ("fp8", "int8")]
        better = [notes[k] for k in ("lightx2v_fp8", "lightx2v_int8") if k in notes]
        if eight and all(c.placement == "disk" for c in eight):
            because = (f": the 8-bit LightX2V weights would have to stream from disk here (RAM too small to pin "
                       f"their {eight[0].k} streamed blocks), so the best GGUF tier that streams from pinned RAM")
        elif better:
            because = f": the 8-bit LightX2V weights {better[0]}"
        else:
            because = ""
        why.append(f"{pick.choice.label}{because}")
    if pick.choice.route == "base+lora":
        dl = _download(pick, req.present) / 1e9
        distilled = [c for c in cands if c.choice.route == "distilled"]
        smallest = min((_download(c, req.present) for c in distilled), default=None)
        if machine.disk_free_bytes is not None and smallest is not None and smallest > machine.disk_free_bytes:
            why.append(f"the distilled files need at least {smallest / 1e9:.1f} GB of disk and "
                       f"{machine.disk_free_bytes / 1e9:.1f} GB are free, so the base model + the LightX2V distill "
                       f"LoRA ({dl:.1f} GB), merged into the weights at load: the same step time as a distilled file")
        else:
            why.append(f"base model + the LightX2V distill LoRA ({dl:.1f} GB), merged into the weights at load: "
                       "the same step time as a distilled file")
    if req.formats:
        why.append(f"only {' / '.join(f.upper() for f in req.formats)} weights were considered, as asked")
    if cap and cap >= (12, 0):
        why.append("NVFP4 checkpoints exist only for I2V-14B-480P and T2V-1.3B, not this model")
    size = f"{req.width}x{req.height}x{req.frames} ({rec.tokens:,} tokens)"
    if pick.k == 0:
        blocks = f"{_gib(machine.vram_total_bytes)} holds all 40 blocks at {size}"
    else:
        via = "pinned RAM" if pick.placement == "stream" else "disk (memory-mapped; RAM too small to pin them)"
        hidden = ""
        if pick.parts:
            s, c = pick.parts["stream_s"], pick.parts["compute_s"]
            hidden = (f", {_gb(pick.parts['streamed_bytes'])} per step in ~{s:.1f} s, hidden behind ~{c:.1f} s of compute"
                      if s <= c else f", {_gb(pick.parts['streamed_bytes'])} per step: the link ({s:.1f} s) is slower than compute ({c:.1f} s)")
        blocks = f"{pick.k} of 40 blocks stream from {via} at {size}{hidden}"
    blocks += f"; sampling peak ~{_gib(rec.phase_peaks['sampling'])}"
    te = TEXT_ENCODERS_TABLE[pick.te_key]
    te_txt = {
        "gpu": f"{te.label} stays on the GPU (fits beside the DiT)",
        "gpu_then_free": f"{te.label} loads on the GPU only to encode, then is freed (it does not fit beside the DiT; "
                         "a GPU encode takes well under a second, a CPU encode many seconds)",
        "cpu": f"{te.label} encodes on the CPU" + (" (fit priority: no VRAM for it at all)" if req.priority == "fit" else
                                                  " (it does not fit on the GPU)"),
    }[pick.te_device]
    vae_work = (rec.phase_peaks["vae"] - pick.sampling.weights - pick.sampling.ring - pick.sampling.text_encoder
                - model.context_bytes)
    vae_txt = f"VAE decode {'tiled' if rec.vae_tiled else 'untiled'} (~{_gib(vae_work)}, fits beside the resident DiT)"
    att_txt = "attention SDPA (fastest measured on the H100, always available)" if rec.attention == "sdpa" else \
        f"attention {rec.attention} (as asked; SDPA measured faster on the H100)"
    parts = [head, "; ".join(why) + ".", blocks + ".", te_txt + ".", vae_txt + "; " + att_txt + "."]
    if rec.step_time_s is not None:
        parts.append(f"Step ~{rec.step_time_s:.1f} s ({rec.time_basis}).")
    parts.append(_recipe_note(machine, req, rec, card, excluded))
    return " ".join(p for p in parts if p)


def _recipe_note(machine, req, rec: Recommendation, card, excluded) -> str:
    floor = cards_mod.floor_recipe()
    if card is not None and card.recipe_weights:
        if rec.kind == card.recipe_weights:
            extra = ""
            if card.name == "RTX 4080 SUPER" and rec.text_encoder_device == "gpu_then_free":
                extra = (" The recipe keeps the UMT5 on the CPU; here it visits the GPU only to encode and is freed "
                         "before sampling, which is faster and uses no VRAM during sampling (priority fit keeps it "
                         "on the CPU).")
            return f"Agrees with the recipe for {card.name}: {card.recipe_text}.{extra}"
        if req.formats and card.recipe_weights not in req.formats:
            return (f"The recipe for {card.name} is {card.recipe_text}; this differs because you asked for "
                    f"{' / '.join(f.upper() for f in req.formats)} weights only.")
        if req.priority != "speed":
            why = {"quality": "you asked for quality, so the closest to the BF16 release that fits",
                   "fit": "you asked for the safest fit"}[req.priority]
            return f"The recipe for {card.name} is {card.recipe_text}; this differs because {why}."
        return (f"The recipe for {card.name} is {card.recipe_text}; this differs because the recipe's format does not "
                "fit this budget or machine (see the numbers above).")
    if machine.vram_total_bytes <= (floor["vram_gib"] + 1) * GiB:
        return (f"Matches the recipes' floor: {floor['text']}." if rec.blocks_to_swap >= 30 or rec.kind == "gguf" else
                f"Recipes' floor: {floor['text']}.")
    return ""
