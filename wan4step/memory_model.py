"""How much GPU memory and RAM a setting needs, from coefficients stored as data.

The model describes what the pack's block streamer does (DESIGN.md, "Block streaming"):

- resident on the GPU: non-block weights + (40 - k) blocks in their stored format;
- streamed: k blocks kept in pinned host RAM (or memory-mapped files in disk mode) and
  copied into a ring of `min(k, prefetch + 1)` GPU slots, each one block's stored bytes;
- activations grow linearly with the number of video tokens (SDPA attention is
  memory-efficient, so nothing is quadratic), plus a format's extra buffers (FP8/INT8
  quantized activation copies, GGUF dequantized weights);
- the text encoder and VAE run in their own phases (ComfyUI frees models to fit them),
  so the peak is the largest phase, plus the CUDA context.

Coefficients live in `data/memory_model.json`; until `scripts/bench_advisor.py` has
calibrated them on a GPU the file says `"status": "uncalibrated"` and every report
says so too.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

from .catalog import NUM_BLOCKS, WeightsChoice
from .errors import SettingsError

DATA_FILE = Path(__file__).resolve().parent / "data" / "memory_model.json"
GiB = 1024**3


def check_video_size(width: int, height: int, frames: int) -> None:
    """The recipe's shape rules: sides divisible by 16, frames = 4n + 1."""
    problems = []
    if width < 16 or width % 16:
        problems.append(f"width {width} is not a positive multiple of 16")
    if height < 16 or height % 16:
        problems.append(f"height {height} is not a positive multiple of 16")
    if frames < 1 or (frames - 1) % 4:
        problems.append(f"frames {frames} is not 4n+1 (1, 5, ..., 81)")
    if problems:
        raise SettingsError(
            "video size does not fit Wan2.1's latent grid: " + "; ".join(problems),
            expected="width and height multiples of 16, frames = 4n+1 (e.g. 832x480x81)",
            found=f"{width}x{height}x{frames}",
            fix="round width/height to a multiple of 16 and frames to 4n+1.",
        )


def latent_frames(frames: int) -> int:
    return (frames - 1) // 4 + 1


def video_tokens(width: int, height: int, frames: int) -> int:
    """Tokens the DiT sees: latent frames x (H/8/2) x (W/8/2) (VAE /8, patch 1x2x2).

    480x832x81 -> 21 x 30 x 52 = 32,760.
    """
    check_video_size(width, height, frames)
    return latent_frames(frames) * (height // 16) * (width // 16)


@dataclass(frozen=True)
class VramBreakdown:
    """Bytes of one sampling phase on the GPU, by what holds them."""

    non_block: int
    resident_blocks: int
    ring: int
    activations: int
    scratch: int
    overhead: int
    context: int
    text_encoder: int = 0  # only when the text encoder stays resident during sampling

    @property
    def weights(self) -> int:
        return self.non_block + self.resident_blocks

    @property
    def total(self) -> int:
        return (
            self.non_block
            + self.resident_blocks
            + self.ring
            + self.activations
            + self.scratch
            + self.overhead
            + self.context
            + self.text_encoder
        )

    def as_dict(self) -> dict[str, int]:
        d = asdict(self)
        d["total"] = self.total
        return d


class MemoryModel:
    """Coefficients + the arithmetic that turns a setting into bytes."""

    def __init__(self, data: dict) -> None:
        self.data = data

    @classmethod
    def load(cls, path: str | Path | None = None) -> MemoryModel:
        if path is None:
            return _default_model()
        with open(path, encoding="utf-8") as f:
            return cls(json.load(f))

    # -- metadata -------------------------------------------------------------------
    @property
    def status(self) -> str:
        return str(self.data.get("status", "uncalibrated"))

    @property
    def calibrated(self) -> bool:
        return self.status == "calibrated"

    @property
    def num_blocks(self) -> int:
        return int(self.data["model"].get("num_blocks", NUM_BLOCKS))

    @property
    def context_bytes(self) -> int:
        return int(self.data["cuda_context_bytes"])

    def decision(self, key: str):
        return self.data["decision"][key]

    def host(self, key: str):
        return self.data["host"][key]

    # -- weights --------------------------------------------------------------------
    def _fmt(self, kind: str) -> dict:
        try:
            return self.data["formats"][kind]
        except KeyError:
            raise SettingsError(
                f"the memory model has no coefficients for weights format {kind!r}",
                path=DATA_FILE,
                expected="one of " + ", ".join(self.data["formats"]),
                fix="add the format to data/memory_model.json.",
            ) from None

    def non_block_bytes(self, choice: WeightsChoice) -> int:
        return int(self._fmt(choice.kind)["non_block_bytes"])

    def block_bytes(self, choice: WeightsChoice) -> int:
        """One block as loaded: GGUF blocks are the loaded bytes minus the non-block part, / 40.

        Loaded, not downloaded: a QuantStack tier carries VACE blocks the t2v loader never reads
        (`catalog.vace_loaded_share`); a merged LoRA changes no sizes.
        """
        fmt = self._fmt(choice.kind)
        if fmt.get("block_bytes"):
            return int(fmt["block_bytes"])
        return max(0, choice.load_bytes - self.non_block_bytes(choice)) // self.num_blocks

    def weights_bytes(self, choice: WeightsChoice) -> int:
        return self.non_block_bytes(choice) + self.num_blocks * self.block_bytes(choice)

    # -- activations ----------------------------------------------------------------
    def attention_backends(self) -> list[str]:
        return list(self.data["attention"])

    def activation_bytes(self, kind: str, tokens: int, attention: str = "sdpa") -> int:
        act = self.data["activations"]
        try:
            att = self.data["attention"][attention]
        except KeyError:
            raise SettingsError(
                f"unknown attention backend {attention!r}",
                expected="one of " + ", ".join(self.data["attention"]),
                fix="pick sdpa unless you installed sageattention (sage) or flash-attn (flash).",
            ) from None
        per_token = act["bytes_per_token"] + self._fmt(kind)["act_extra_bytes_per_token"] + att["bytes_per_token"]
        return int(act["fixed_bytes"] + per_token * tokens)

    def overhead_bytes(self, transient: int, resident: int) -> int:
        """What the caching allocator and the model's small tensors take beyond the big ones
        (calibrated on the H100, docs/bench/advisor_s4_fit.log): a share of the activations (the
        allocator's reserve above the allocated peak grows with the big activation tensors: 0.16 /
        0.86 / 2.3 GiB at 5,184 / 32,760 / 75,600 tokens, with or without a streaming ring), plus a
        share of the resident weights (their biases, norms and alignment)."""
        return int(self.data["allocator_overhead_frac"] * transient
                   + self.data.get("resident_overhead_frac", 0.0) * resident
                   + self.data.get("fixed_overhead_bytes", 0))

    # -- phases ---------------------------------------------------------------------
    def sampling_vram(
        self,
        choice: WeightsChoice,
        tokens: int,
        blocks_to_swap: int,
        prefetch: int = 1,
        attention: str = "sdpa",
        text_encoder_bytes: int = 0,
    ) -> VramBreakdown:
        """GPU bytes while the DiT samples with `blocks_to_swap` blocks streamed."""
        n = self.num_blocks
        k = min(max(int(blocks_to_swap), 0), n)
        block = self.block_bytes(choice)
        ring = min(k, max(prefetch, 0) + 1) * block
        act = self.activation_bytes(choice.kind, tokens, attention)
        scratch = int(self._fmt(choice.kind)["scratch_bytes"])
        overhead = self.overhead_bytes(act + scratch, (n - k) * block + self.non_block_bytes(choice))
        return VramBreakdown(
            non_block=self.non_block_bytes(choice),
            resident_blocks=(n - k) * block,
            ring=ring,
            activations=act,
            scratch=scratch,
            overhead=overhead,
            context=self.context_bytes,
            text_encoder=int(text_encoder_bytes),
        )

    def min_blocks_to_swap(
        self,
        choice: WeightsChoice,
        tokens: int,
        usable_bytes: int,
        prefetch: int = 1,
        attention: str = "sdpa",
        text_encoder_bytes: int = 0,
        pixel_frames: int = 0,
    ) -> int | None:
        """Fewest streamed blocks whose sampling phase fits `usable_bytes` and, given the video's
        `pixel_frames`, whose resident weights leave room for the tiled VAE decode after it (at
        small sizes that needs more than sampling; ComfyUI would otherwise evict DiT weights to
        decode and reload them on the next run). None if even 40 don't fit."""
        for k in range(self.num_blocks + 1):
            s = self.sampling_vram(choice, tokens, k, prefetch, attention, text_encoder_bytes)
            if s.total <= usable_bytes and (not pixel_frames or self.decode_fits(s, pixel_frames, usable_bytes)):
                return k
        return None

    def decode_fits(self, sampling: VramBreakdown, pixel_frames: int, usable_bytes: int) -> bool:
        """Whether the tiled VAE decode fits beside what sampling leaves on the GPU (the DiT's resident
        weights and ring, a text encoder kept there)."""
        resident = sampling.weights + sampling.ring + sampling.text_encoder
        return self.vae_vram(pixel_frames, tiled=True, resident_bytes=resident) <= usable_bytes

    def auto_blocks_to_swap(
        self,
        *,
        block_bytes: int,
        non_block_bytes: int,
        n_blocks: int,
        kind: str,
        tokens: int,
        free_bytes: int,
        prefetch: int = 2,
        attention: str = "sdpa",
        pixel_frames: int = 0,
    ) -> int:
        """The advisor's blocks_to_swap for a model already loaded (Wan4Step Block Swap's "auto").

        Sizes come from the real modules; activations, scratch and allocator overhead from this
        model; the headroom is the advisor's. `free_bytes` is what the GPU has free now: the
        CUDA context exists already and is not counted again. Returns n_blocks when even
        streaming everything does not fit (the sampler's OOM message then says what to change).
        """
        act = self.activation_bytes(kind, tokens, attention)
        scratch = int(self._fmt(kind)["scratch_bytes"])
        headroom = max(int(self.decision("headroom_min_bytes")), int(self.decision("headroom_frac") * free_bytes))
        for k in range(n_blocks + 1):
            ring = min(k, max(prefetch, 0) + 1) * block_bytes
            resident = non_block_bytes + (n_blocks - k) * block_bytes
            need = resident + ring + act + scratch + self.overhead_bytes(act + scratch, resident)
            vae = self.vae_vram(pixel_frames, tiled=True, resident_bytes=resident + ring) - self.context_bytes
            if need <= free_bytes - headroom and (not pixel_frames or vae <= free_bytes - headroom):
                return k
        return n_blocks

    def text_encoder_vram(self, te_bytes: int) -> int:
        """GPU bytes while the text encoder runs alone on the GPU."""
        return int(te_bytes + self.data["text_encoder"]["activation_bytes"] + self.context_bytes)

    def vae_vram(self, pixel_frames: int, tiled: bool, resident_bytes: int = 0) -> int:
        """GPU bytes of a VAE decode; `resident_bytes` = whatever stays on the GPU beside it."""
        v = self.data["vae"]
        if tiled:
            work = v["tiled_fixed_bytes"] + v["tiled_bytes_per_pixel_frame"] * pixel_frames
        else:
            work = v["weights_bytes"] + v["untiled_bytes_per_pixel_frame"] * pixel_frames
        return int(work + resident_bytes + self.context_bytes)

    def host_ram(self, choice: WeightsChoice, blocks_to_swap: int, placement: str, te_cpu_bytes: int = 0) -> int:
        """RAM of the ComfyUI process while sampling.

        placement "stream": the k streamed blocks sit in pinned RAM; "disk": they are
        memory-mapped and read per step (page cache, reclaimable, not counted); "gpu":
        nothing streamed. A text encoder kept on the CPU adds its stored bytes.
        """
        ram = int(self.host("baseline_ram_bytes")) + int(self.data["vae"]["weights_bytes"]) + int(te_cpu_bytes)
        if placement == "stream":
            ram += int(blocks_to_swap) * self.block_bytes(choice)
        if choice.route == "base+lora":
            # the LoRA merge at load writes the merged weights into private RAM (the file itself stays
            # memory-mapped, reclaimable page cache) before ComfyUI moves the resident part to the GPU
            load = int(self.host("baseline_ram_bytes")) + int(self.data["vae"]["weights_bytes"]) + self.weights_bytes(choice)
            ram = max(ram, load + int(te_cpu_bytes))
        return ram


@lru_cache(maxsize=1)
def _default_model() -> MemoryModel:
    with open(DATA_FILE, encoding="utf-8") as f:
        return MemoryModel(json.load(f))
