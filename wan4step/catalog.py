"""Which files each weights choice needs, where they come from, where they go, and what they cost.

One table, so the advisor, the downloader, the README and the UI agree on names. Every
repository and file name here was checked against a public listing, model card or script, and
every size is the published one (decimal GB as Hugging Face lists them); the source is named
next to each entry, and `tests/unit/test_catalog.py` holds the same list with its citations.
The downloader always re-reads the real sizes and hashes from the hub before it trusts anything.

Two sizes per DiT choice:
- `size_bytes`: what is downloaded (disk checks, the download report);
- `loaded_bytes`: what the pack's loader holds in memory for text-to-video. They differ for
  QuantStack's distilled GGUF tiers, which carry the VACE control blocks: the Model Loader in
  `t2v` mode never reads those (`vace_loaded_share`).

Files land in the folders ComfyUI's own loaders list: `diffusion_models` (UNETLoader,
ComfyUI-GGUF's UnetLoaderGGUF and this pack's loader all list it; ComfyUI 0.33 registers
`models/unet` and `models/diffusion_models` under that one key), `text_encoders`, `vae`, `loras`.
The LightX2V block folders keep their layout under `diffusion_models/<repo name>/`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

GB = 1_000_000_000  # Hugging Face lists sizes in decimal gigabytes
MB = 1_000_000

# -- repositories -----------------------------------------------------------------
# The original LightX2V release (DESIGN.md "Facts"; LightX2V docs link
# distill_models/distill_model.safetensors: ModelTC/LightX2V docs/EN/source/getting_started).
LIGHTX2V_REPO = "lightx2v/Wan2.1-T2V-14B-StepDistill-CfgDistill-Lightx2v"
LIGHTX2V_DIR = "Wan2.1-T2V-14B-StepDistill-CfgDistill-Lightx2v"
# LightX2V's current single files (model card https://huggingface.co/lightx2v/Wan2.1-Distill-Models;
# names from ModelTC/LightX2V docs/EN/source/getting_started/model_structure.md "Text-to-Video Models").
LIGHTX2V_DISTILL_REPO = "lightx2v/Wan2.1-Distill-Models"
# QuantStack's GGUF of the distilled model with VACE pre-merged (no `QuantStack/Wan2.1-T2V-14B-GGUF`
# exists): repo and `Wan2.1_T2V_14B_LightX2V_StepCfgDistill_VACE-{quant}.gguf` as public scripts
# download them (e.g. GGUF_REPO_14B / GGUF_FILE_TEMPLATE / GGUF_QUANTS in a diffusers VACE runner,
# a Dockerfile fetching ...-Q8_0.gguf); sizes DESIGN.md, Q3_K_M "8.6 GB" also in a public README.
GGUF_REPO = "QuantStack/Wan2.1_T2V_14B_LightX2V_StepCfgDistill_VACE-GGUF"
# city96's GGUF of the base model (https://huggingface.co/city96/Wan2.1-T2V-14B-gguf/tree/main,
# blob pages for Q5_K_M / Q6_K; calcuis/wan-gguf LFS pointers of the same sizes).
CITY96_REPO = "city96/Wan2.1-T2V-14B-gguf"
# https://huggingface.co/Comfy-Org/Wan_2.1_ComfyUI_repackaged (split_files/...; LFS sizes of the text
# encoders in commit dfcea77).
COMFY_REPO = "Comfy-Org/Wan_2.1_ComfyUI_repackaged"
# https://huggingface.co/lightx2v/Wan2.1-Distill-Loras/tree/main
LORA_REPO = "lightx2v/Wan2.1-Distill-Loras"
# https://huggingface.co/Kijai/WanVideo_comfy/tree/main/Lightx2v
KIJAI_REPO = "Kijai/WanVideo_comfy"

NUM_BLOCKS = 40

# ComfyUI model folder keys (folder_paths names) the files land in.
DIFFUSION_MODELS = "diffusion_models"
TEXT_ENCODERS = "text_encoders"
VAE = "vae"
LORAS = "loras"


@dataclass(frozen=True)
class FileSpec:
    """One file (or one glob of files) in a hub repository and where it goes.

    pattern: a path inside the repo, or a glob (`distill_fp8/block_*.safetensors`);
             matched case-insensitively against the repo's file list.
    folder:  ComfyUI folder key the file lands in.
    dest:    path relative to that folder. For a glob, a directory that receives every
             match under its own base name; for a single file, the file's new path.
    count:   how many files the pattern must match (40 block files); a repo whose layout
             changed is refused instead of half-downloaded.
    size_bytes: the published size of everything the pattern matches.
    """

    repo_id: str
    pattern: str
    folder: str
    dest: str
    count: int = 1
    revision: str = "main"
    size_bytes: int = 0

    @property
    def is_glob(self) -> bool:
        return any(c in self.pattern for c in "*?[")


@dataclass(frozen=True)
class WeightsChoice:
    """A DiT weights choice the advisor can recommend and the downloader can fetch."""

    key: str  # catalog key, e.g. "lightx2v_fp8", "gguf_Q4_K_M", "lora_gguf_Q4_K_M"
    label: str  # what the UI shows
    kind: str  # "fp8" | "int8" | "bf16" | "gguf" (memory-model format, after any LoRA merge)
    tier: str | None  # GGUF tier name ("Q4_K_M"), None otherwise
    size_bytes: int  # published download size of all its files (LoRA included)
    quality: int  # 0..100, higher is closer to the BF16 distilled release (ordering only)
    model_name: str  # the loader's `model_name` (relative to diffusion_models)
    files: tuple[FileSpec, ...]
    recommendable: bool = True
    loaded_bytes: int = 0  # bytes the loader holds for T2V; 0 = the DiT files' size
    lora_name: str | None = None  # the loader's `lora_name` (relative to loras) for base + distill LoRA
    route: str = "distilled"  # "distilled" | "base+lora"

    @property
    def load_bytes(self) -> int:
        """What the Model Loader holds in memory (t2v mode; a merged LoRA adds nothing)."""
        if self.loaded_bytes:
            return self.loaded_bytes
        return sum(f.size_bytes for f in self.files if f.folder == DIFFUSION_MODELS) or self.size_bytes


@dataclass(frozen=True)
class ComponentChoice:
    """A text encoder, VAE or LoRA file."""

    key: str
    label: str
    size_bytes: int
    name: str  # the loader's file name (relative to its folder)
    files: tuple[FileSpec, ...] = field(default_factory=tuple)
    quality: int = 100


def _one(repo: str, path: str, folder: str, size: int, dest: str | None = None) -> FileSpec:
    return FileSpec(repo, path, folder, dest or path.rsplit("/", 1)[-1], size_bytes=size)


# -- the LightX2V release folders ----------------------------------------------------

def _lightx2v_dir(sub: str, label: str, kind: str, quality: int) -> WeightsChoice:
    dest = f"{LIGHTX2V_DIR}/{sub}"
    blocks, non_block = int(14.1 * GB), int(0.93 * GB)  # 40 x ~352 MB + 0.93 GB (DESIGN.md "Facts")
    return WeightsChoice(
        key=f"lightx2v_{kind}", label=label, kind=kind, tier=None, size_bytes=blocks + non_block,
        quality=quality,
        model_name=dest + "/",  # the model loader lists a block folder by its path with a trailing "/"
        files=(
            FileSpec(LIGHTX2V_REPO, f"{sub}/block_*.safetensors", DIFFUSION_MODELS, dest, count=NUM_BLOCKS,
                     size_bytes=blocks),
            FileSpec(LIGHTX2V_REPO, f"{sub}/non_block.safetensors", DIFFUSION_MODELS,
                     f"{dest}/non_block.safetensors", size_bytes=non_block),
        ),
    )


# -- QuantStack's distilled GGUF (VACE blocks included) -------------------------------

# Published sizes in GB (DESIGN.md "QuantStack GGUF of the distilled model") and an ordering
# score (bits per weight, K-quant over legacy quant; not a metric).
GGUF_TIERS: dict[str, tuple[float, int]] = {
    "Q2_K": (6.36, 55),
    "Q3_K_S": (7.84, 68),
    "Q3_K_M": (8.64, 72),
    "Q3_K_L": (9.37, 74),
    "Q4_0": (10.3, 81),
    "Q4_K_S": (10.6, 83),
    "Q4_1": (11.2, 83),
    "Q4_K_M": (11.6, 85),
    "Q5_K_S": (12.3, 89),
    "Q5_0": (12.5, 89),
    "Q5_K_M": (13.0, 91),
    "Q5_1": (13.3, 90),
    "Q6_K": (14.5, 94),
    "Q8_0": (18.7, 97),
}

# Bits per weight of each tier's main ggml type (ggml block sizes: Q2_K 84 B / 256, Q3_K 110 / 256,
# Q4_0 18 / 32, Q4_1 20 / 32, Q4_K 144 / 256, Q5_0 22 / 32, Q5_1 24 / 32, Q5_K 176 / 256,
# Q6_K 210 / 256, Q8_0 34 / 32). The _M/_L mixes keep a few tensors in a larger type, so the
# VACE share below is a lower bound and the T2V bytes an upper bound: safe for memory planning.
TIER_BITS: dict[str, float] = {
    "Q2_K": 2.625, "Q3_K_S": 3.4375, "Q3_K_M": 3.4375, "Q3_K_L": 3.4375, "Q4_0": 4.5, "Q4_1": 5.0,
    "Q4_K_S": 4.5, "Q4_K_M": 4.5, "Q5_0": 5.5, "Q5_1": 6.0, "Q5_K_S": 5.5, "Q5_K_M": 5.5, "Q6_K": 6.5625,
    "Q8_0": 8.5,
}

# Wan2.1-VACE-14B adds 8 VACE blocks (vace_layers [0, 5, ..., 35], vace_in_dim 96: diffusers
# scripts/convert_wan_to_diffusers.py "Wan2.1-VACE-14B" config; ComfyUI comfy/ldm/wan/model.py
# VaceWanModel / VaceWanAttentionBlock): each a full Wan block plus after_proj (dim x dim), block 0
# also before_proj, and a Conv3d patch embedding of 96 -> 5120 channels.
_DIM, _FFN = 5120, 13824
_BLOCK_LINEAR_PARAMS = 8 * _DIM * _DIM + 2 * _DIM * _FFN  # 351,272,960
VACE_BLOCKS = 8
VACE_LINEAR_PARAMS = VACE_BLOCKS * (_BLOCK_LINEAR_PARAMS + _DIM * _DIM) + _DIM * _DIM + _DIM * 96 * 4


def vace_bytes(tier: str) -> int:
    """Bytes of the VACE tensors in a QuantStack tier (at its main type: a lower bound)."""
    return int(VACE_LINEAR_PARAMS * TIER_BITS[tier] / 8)


def vace_loaded_share(tier: str) -> float:
    """The part of a QuantStack VACE tier the Model Loader reads in t2v mode."""
    size = GGUF_TIERS[tier][0] * GB
    return (size - vace_bytes(tier)) / size


def gguf_file_name(tier: str) -> str:
    """QuantStack's naming: `<repo name without -GGUF>-<TIER>.gguf`."""
    return f"Wan2.1_T2V_14B_LightX2V_StepCfgDistill_VACE-{tier}.gguf"


def _gguf(tier: str) -> WeightsChoice:
    size_gb, quality = GGUF_TIERS[tier]
    name = gguf_file_name(tier)
    size = int(size_gb * GB)
    return WeightsChoice(
        key=f"gguf_{tier}", label=f"GGUF {tier} ({size_gb:g} GB)", kind="gguf", tier=tier, size_bytes=size,
        quality=quality, model_name=name, files=(_one(GGUF_REPO, name, DIFFUSION_MODELS, size),),
        loaded_bytes=size - vace_bytes(tier),
    )


# -- LightX2V's current single files --------------------------------------------------
# Not yet recommended: their loader lands with issue 16 part 2 (branch `formats`); listed so the
# Download node and the README name them. Sizes: the model card's table gives ranges (BF16
# "~28-32 GB", FP8/INT8 "~15-17 GB" over its I2V and T2V files); the T2V bf16 file holds the same
# tensors as Comfy-Org's 28.6 GB wan2.1_t2v_14B_bf16, the 8-bit ones those of distill_fp8/ (15.0 GB).
LIGHTX2V_SINGLE: dict[str, tuple[str, str, float, int]] = {  # key: (file, kind, GB, quality)
    "lightx2v_4step_bf16": ("wan2.1_t2v_14b_lightx2v_4step.safetensors", "bf16", 28.6, 100),
    "lightx2v_4step_fp8": ("wan2.1_t2v_14b_scaled_fp8_e4m3_lightx2v_4step.safetensors", "fp8", 15.0, 96),
    "lightx2v_4step_int8": ("wan2.1_t2v_14b_int8_lightx2v_4step.safetensors", "int8", 15.0, 96),
    "lightx2v_4step_fp8_comfyui": ("wan2.1_t2v_14b_scaled_fp8_e4m3_lightx2v_4step_comfyui.safetensors", "fp8", 15.0, 95),
}


def _single(key: str) -> WeightsChoice:
    name, kind, size_gb, quality = LIGHTX2V_SINGLE[key]
    return WeightsChoice(
        key=key, label=f"LightX2V 4-step {kind.upper()} single file (~{size_gb:g} GB)", kind=kind, tier=None,
        size_bytes=int(size_gb * GB), quality=quality, model_name=name,
        files=(_one(LIGHTX2V_DISTILL_REPO, name, DIFFUSION_MODELS, int(size_gb * GB)),), recommendable=False,
    )


# -- LoRAs: base Wan2.1 T2V-14B + the LightX2V 4-step distill LoRA ----------------------

LORA_FILES: dict[str, ComponentChoice] = {
    # 631 MB: https://huggingface.co/lightx2v/Wan2.1-Distill-Loras/blob/main/wan2.1_t2v_14b_lora_rank64_lightx2v_4step.safetensors
    "lightx2v_rank64": ComponentChoice(
        key="lightx2v_rank64", label="LightX2V 4-step distill LoRA, rank 64 (631 MB)", size_bytes=631 * MB,
        name="wan2.1_t2v_14b_lora_rank64_lightx2v_4step.safetensors",
        files=(_one(LORA_REPO, "wan2.1_t2v_14b_lora_rank64_lightx2v_4step.safetensors", LORAS, 631 * MB),),
    ),
    # Kijai's extraction, path Lightx2v/... (download scripts and workflows fetch it from there; 631 MB
    # in a public model-bundle listing, "0,6 GiB" in another); rank 128: 1,253,192,432 bytes (LFS
    # pointer of a copy "Uploaded ... from Kijai/WanVideo_comfy", sha256 ef33de1a...).
    "kijai_v2_rank64": ComponentChoice(
        key="kijai_v2_rank64", label="Kijai lightx2v T2V v2 LoRA, rank 64 (631 MB)", size_bytes=631 * MB,
        name="lightx2v_T2V_14B_cfg_step_distill_v2_lora_rank64_bf16.safetensors",
        files=(_one(KIJAI_REPO, "Lightx2v/lightx2v_T2V_14B_cfg_step_distill_v2_lora_rank64_bf16.safetensors", LORAS,
                    631 * MB),),
    ),
    "kijai_v2_rank128": ComponentChoice(
        key="kijai_v2_rank128", label="Kijai lightx2v T2V v2 LoRA, rank 128 (1.25 GB)", size_bytes=1_253_192_432,
        name="lightx2v_T2V_14B_cfg_step_distill_v2_lora_rank128_bf16.safetensors",
        files=(_one(KIJAI_REPO, "Lightx2v/lightx2v_T2V_14B_cfg_step_distill_v2_lora_rank128_bf16.safetensors", LORAS,
                    1_253_192_432),),
    ),
}
DEFAULT_LORA = "lightx2v_rank64"

# city96 base tiers with a published size (GB); Q5_K_S and Q8_0 exist but no size was found.
BASE_GGUF_TIERS: dict[str, float] = {
    "Q3_K_S": 6.99, "Q3_K_M": 7.65, "Q4_0": 9.03, "Q4_K_S": 9.22, "Q4_1": 9.73, "Q4_K_M": 10.1, "Q5_0": 10.8,
    "Q5_K_M": 11.3, "Q5_1": 11.5, "Q6_K": 12.5,
}
# Comfy-Org base files: bf16 28.6 GB (listing of a mirror of split_files/diffusion_models), fp8_scaled
# 14.3 GB (the same tensors as wan2.1_t2v_14B_fp8_e4m3fn, 14.3 GB on its blob page, plus one scale per
# weight; "approx_gb: 14.3" in a public model manifest).
COMFY_BASE: dict[str, tuple[str, str, float]] = {
    "bf16": ("wan2.1_t2v_14B_bf16.safetensors", "bf16", 28.6),
    "fp8": ("wan2.1_t2v_14B_fp8_scaled.safetensors", "fp8", 14.3),
}
LORA_QUALITY_COST = 4  # a rank-64 LoRA approximates the distilled weights: rank below the same file distilled


def _with_lora(key: str, label: str, kind: str, tier: str | None, base: FileSpec, quality: int) -> WeightsChoice:
    lora = LORA_FILES[DEFAULT_LORA]
    return WeightsChoice(
        key=key, label=f"{label} + 4-step distill LoRA", kind=kind, tier=tier,
        size_bytes=base.size_bytes + lora.size_bytes, quality=quality - LORA_QUALITY_COST, model_name=base.dest,
        files=(base, *lora.files), lora_name=lora.name, route="base+lora",
    )


def _base_gguf(tier: str) -> WeightsChoice:
    name = f"wan2.1-t2v-14b-{tier}.gguf"
    size_gb = BASE_GGUF_TIERS[tier]
    return _with_lora(f"lora_gguf_{tier}", f"base GGUF {tier} ({size_gb:g} GB)", "gguf", tier,
                      _one(CITY96_REPO, name, DIFFUSION_MODELS, int(size_gb * GB)), GGUF_TIERS[tier][1])


def _comfy_base(kind: str) -> WeightsChoice:
    name, k, size_gb = COMFY_BASE[kind]
    return _with_lora(f"lora_{kind}", f"base {kind.upper()} ({size_gb:g} GB)", k, None,
                      _one(COMFY_REPO, f"split_files/diffusion_models/{name}", DIFFUSION_MODELS, int(size_gb * GB)),
                      100 if kind == "bf16" else 96)


WEIGHTS: dict[str, WeightsChoice] = {
    w.key: w
    for w in [
        _lightx2v_dir("distill_fp8", "LightX2V FP8 (15.0 GB, 40 block files)", "fp8", 96),
        _lightx2v_dir("distill_int8", "LightX2V INT8 (15.0 GB, 40 block files)", "int8", 96),
        WeightsChoice(
            key="lightx2v_bf16", label="LightX2V BF16 (28.6 GB)", kind="bf16", tier=None, size_bytes=int(28.6 * GB),
            quality=100, model_name=f"{LIGHTX2V_DIR}/distill_models/distill_model.safetensors",
            files=(FileSpec(LIGHTX2V_REPO, "distill_models/distill_model.safetensors", DIFFUSION_MODELS,
                            f"{LIGHTX2V_DIR}/distill_models/distill_model.safetensors", size_bytes=int(28.6 * GB)),),
        ),
        *[_gguf(t) for t in GGUF_TIERS],
        *[_single(k) for k in LIGHTX2V_SINGLE],
        *[_base_gguf(t) for t in BASE_GGUF_TIERS],
        *[_comfy_base(k) for k in COMFY_BASE],
    ]
}

TEXT_ENCODERS_TABLE: dict[str, ComponentChoice] = {
    # 6,735,906,897 and 11,366,399,385 bytes: LFS pointers in Comfy-Org commit dfcea77
    "umt5_fp8": ComponentChoice(
        key="umt5_fp8", label="UMT5-XXL FP8 scaled (6.74 GB)", size_bytes=6_735_906_897,
        name="umt5_xxl_fp8_e4m3fn_scaled.safetensors",
        files=(_one(COMFY_REPO, "split_files/text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors", TEXT_ENCODERS,
                    6_735_906_897),),
        quality=97,
    ),
    "umt5_bf16": ComponentChoice(
        key="umt5_bf16", label="UMT5-XXL FP16 (11.4 GB)", size_bytes=11_366_399_385, name="umt5_xxl_fp16.safetensors",
        files=(_one(COMFY_REPO, "split_files/text_encoders/umt5_xxl_fp16.safetensors", TEXT_ENCODERS,
                    11_366_399_385),),
        quality=100,
    ),
}

VAES: dict[str, ComponentChoice] = {
    # 254 MB: https://huggingface.co/Comfy-Org/Wan_2.1_ComfyUI_repackaged/tree/main/split_files/vae
    # (Comfy-Org's bf16 repackage of Wan2.1_VAE.pth, 508 MB fp32)
    "wan_2.1_vae": ComponentChoice(
        key="wan_2.1_vae", label="Wan2.1 VAE (254 MB)", size_bytes=254 * MB, name="wan_2.1_vae.safetensors",
        files=(_one(COMFY_REPO, "split_files/vae/wan_2.1_vae.safetensors", VAE, 254 * MB),),
    ),
}

DEFAULT_VAE = "wan_2.1_vae"


def weights(key: str) -> WeightsChoice:
    try:
        return WEIGHTS[key]
    except KeyError:
        from .errors import SettingsError

        raise SettingsError(
            f"unknown weights choice {key!r}",
            expected="one of " + ", ".join(WEIGHTS),
            fix="pick a weights choice from the list.",
        ) from None


def text_encoder(key: str) -> ComponentChoice:
    return TEXT_ENCODERS_TABLE[key]


def vae(key: str) -> ComponentChoice:
    return VAES[key]


def files_for(*, weights_key: str | None, text_encoder_key: str | None, vae_key: str | None) -> list[FileSpec]:
    """Exactly the files a plan needs, DiT first (the largest, most likely to fail)."""
    out: list[FileSpec] = []
    if weights_key:
        out += weights(weights_key).files
    if text_encoder_key:
        out += text_encoder(text_encoder_key).files
    if vae_key:
        out += vae(vae_key).files
    return out


def download_size(*, weights_key: str | None, text_encoder_key: str | None, vae_key: str | None) -> int:
    total = 0
    if weights_key:
        total += weights(weights_key).size_bytes
    if text_encoder_key:
        total += text_encoder(text_encoder_key).size_bytes
    if vae_key:
        total += vae(vae_key).size_bytes
    return total


def all_files() -> list[tuple[str, FileSpec]]:
    """Every distinct file the catalog can download, with the group it belongs to (README table)."""
    seen: set[tuple[str, str]] = set()
    out: list[tuple[str, FileSpec]] = []
    groups = [("DiT, base model" if w.route == "base+lora" else "DiT, distilled", s)
              for w in WEIGHTS.values() for s in w.files if s.folder == DIFFUSION_MODELS]
    groups += [("LoRA", s) for c in LORA_FILES.values() for s in c.files]
    groups += [("text encoder", s) for c in TEXT_ENCODERS_TABLE.values() for s in c.files]
    groups += [("VAE", s) for c in VAES.values() for s in c.files]
    for group, spec in groups:
        if (spec.repo_id, spec.pattern) not in seen:
            seen.add((spec.repo_id, spec.pattern))
            out.append((group, spec))
    return out


def _gb(n: int) -> str:
    if n >= 10 * GB:
        return f"{n / GB:.1f} GB"
    return f"{n / GB:.2f} GB" if n >= GB else f"{n / MB:.0f} MB"


def markdown_table() -> str:
    """The README's file table, generated from this module (tests/unit/test_catalog.py keeps them equal)."""
    loaded = {s.pattern: w for w in WEIGHTS.values() for s in w.files if s.folder == DIFFUSION_MODELS}
    lines = ["| what | repository | file | ComfyUI folder | download | loaded (t2v) |", "|---|---|---|---|---|---|"]
    for group, spec in all_files():
        files = f"`{spec.pattern}`" + (f" ({spec.count} files)" if spec.is_glob else "")
        w = loaded.get(spec.pattern)
        is_dit = group.startswith("DiT")
        held = _gb(w.load_bytes if w is not None and w.loaded_bytes else spec.size_bytes) if is_dit else "—"
        approx = "~" if w is not None and w.key in LIGHTX2V_SINGLE else ""
        lines.append(f"| {group} | `{spec.repo_id}` | {files} | `{spec.folder}` | {approx}{_gb(spec.size_bytes)} | "
                     f"{approx if held != '—' else ''}{held} |")
    return "\n".join(lines)
