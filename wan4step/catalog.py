"""Which files each weights choice needs, where they come from and where they go.

One table, so the advisor, the downloader and the UI agree on names. Sizes are the
published file sizes (DESIGN.md, Hugging Face file listings); the downloader always
re-reads the real sizes and hashes from the hub before it trusts anything.

Destinations mirror what the pack's loaders list: files go into ComfyUI's
`diffusion_models`, `text_encoders` and `vae` folders; the LightX2V repository keeps
its own layout under `diffusion_models/<repo name>/` because its FP8/INT8 weights are
a folder of 40 block files plus `non_block.safetensors`, not one file.

Repository file names that could not be confirmed from a listing are resolved at
download time: a `FileSpec.pattern` is matched case-insensitively against the
repository's real file list, so `Wan2.1-T2V-14B-Q4_K_M.gguf` also finds a lower-case
`wan2.1-t2v-14b-Q4_K_M.gguf`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

GB = 1_000_000_000  # file sizes are published in decimal gigabytes

LIGHTX2V_REPO = "lightx2v/Wan2.1-T2V-14B-StepDistill-CfgDistill-Lightx2v"
LIGHTX2V_DIR = "Wan2.1-T2V-14B-StepDistill-CfgDistill-Lightx2v"
GGUF_REPO = "QuantStack/Wan2.1-T2V-14B-GGUF"
COMFY_REPO = "Comfy-Org/Wan_2.1_ComfyUI_repackaged"

NUM_BLOCKS = 40

# ComfyUI model folder keys (folder_paths names) the files land in.
DIFFUSION_MODELS = "diffusion_models"
TEXT_ENCODERS = "text_encoders"
VAE = "vae"


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
    """

    repo_id: str
    pattern: str
    folder: str
    dest: str
    count: int = 1
    revision: str = "main"

    @property
    def is_glob(self) -> bool:
        return any(c in self.pattern for c in "*?[")


@dataclass(frozen=True)
class WeightsChoice:
    """A DiT weights choice the advisor can recommend and the downloader can fetch."""

    key: str  # catalog key, e.g. "lightx2v_fp8", "gguf_Q4_K_M"
    label: str  # what the UI shows
    kind: str  # "fp8" | "int8" | "bf16" | "gguf" (memory-model format)
    tier: str | None  # GGUF tier name ("Q4_K_M"), None otherwise
    size_bytes: int  # published download size of all its files
    quality: int  # 0..100, higher is closer to the BF16 release (ordering only)
    model_name: str  # the loader's `model_name` (relative to diffusion_models)
    files: tuple[FileSpec, ...]
    recommendable: bool = True  # F16 GGUF is listed for completeness but BF16 is smaller


@dataclass(frozen=True)
class ComponentChoice:
    """A text encoder or VAE file."""

    key: str
    label: str
    size_bytes: int
    name: str  # the loader's file name (relative to its folder)
    files: tuple[FileSpec, ...] = field(default_factory=tuple)
    quality: int = 100


def _lightx2v_dir(sub: str, label: str, kind: str, quality: int) -> WeightsChoice:
    dest = f"{LIGHTX2V_DIR}/{sub}"
    # The model loader lists a block folder by its path with a trailing "/".
    return WeightsChoice(
        key=f"lightx2v_{kind}",
        label=label,
        kind=kind,
        tier=None,
        # 40 x ~352 MB blocks (14.1 GB) + non_block.safetensors (0.93 GB)
        size_bytes=int(14.1 * GB + 0.93 * GB),
        quality=quality,
        model_name=dest + "/",
        files=(
            FileSpec(LIGHTX2V_REPO, f"{sub}/block_*.safetensors", DIFFUSION_MODELS, dest, count=NUM_BLOCKS),
            FileSpec(LIGHTX2V_REPO, f"{sub}/non_block.safetensors", DIFFUSION_MODELS, f"{dest}/non_block.safetensors"),
        ),
    )


# QuantStack tiers and their published sizes in GB (DESIGN.md). Quality scores only
# order the tiers (bits per weight and K-quant vs legacy quant); they are not a metric.
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
    "F16": (34.7, 99),
}


def gguf_file_name(tier: str) -> str:
    """QuantStack's naming: `<repo name without -GGUF>-<TIER>.gguf`."""
    return f"Wan2.1-T2V-14B-{tier}.gguf"


def _gguf(tier: str) -> WeightsChoice:
    size_gb, quality = GGUF_TIERS[tier]
    name = gguf_file_name(tier)
    return WeightsChoice(
        key=f"gguf_{tier}",
        label=f"GGUF {tier} ({size_gb:g} GB)",
        kind="gguf",
        tier=tier,
        size_bytes=int(size_gb * GB),
        quality=quality,
        model_name=name,
        files=(FileSpec(GGUF_REPO, name, DIFFUSION_MODELS, name),),
        recommendable=tier != "F16",
    )


WEIGHTS: dict[str, WeightsChoice] = {
    w.key: w
    for w in [
        _lightx2v_dir("distill_fp8", "LightX2V FP8 (15.0 GB, 40 block files)", "fp8", 96),
        _lightx2v_dir("distill_int8", "LightX2V INT8 (15.0 GB, 40 block files)", "int8", 96),
        WeightsChoice(
            key="lightx2v_bf16",
            label="LightX2V BF16 (28.6 GB)",
            kind="bf16",
            tier=None,
            size_bytes=int(28.6 * GB),
            quality=100,
            model_name=f"{LIGHTX2V_DIR}/distill_models/distill_model.safetensors",
            files=(
                FileSpec(
                    LIGHTX2V_REPO,
                    "distill_models/distill_model.safetensors",
                    DIFFUSION_MODELS,
                    f"{LIGHTX2V_DIR}/distill_models/distill_model.safetensors",
                ),
            ),
        ),
        *[_gguf(t) for t in GGUF_TIERS],
    ]
}

TEXT_ENCODERS_TABLE: dict[str, ComponentChoice] = {
    "umt5_fp8": ComponentChoice(
        key="umt5_fp8",
        label="UMT5-XXL FP8 scaled (6.7 GB)",
        size_bytes=int(6.74 * GB),
        name="umt5_xxl_fp8_e4m3fn_scaled.safetensors",
        files=(
            FileSpec(
                COMFY_REPO,
                "split_files/text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors",
                TEXT_ENCODERS,
                "umt5_xxl_fp8_e4m3fn_scaled.safetensors",
            ),
        ),
        quality=97,
    ),
    "umt5_bf16": ComponentChoice(
        key="umt5_bf16",
        label="UMT5-XXL FP16 (11.4 GB)",
        size_bytes=int(11.4 * GB),
        name="umt5_xxl_fp16.safetensors",
        files=(
            FileSpec(
                COMFY_REPO,
                "split_files/text_encoders/umt5_xxl_fp16.safetensors",
                TEXT_ENCODERS,
                "umt5_xxl_fp16.safetensors",
            ),
        ),
        quality=100,
    ),
}

VAES: dict[str, ComponentChoice] = {
    "wan_2.1_vae": ComponentChoice(
        key="wan_2.1_vae",
        # Comfy-Org's bf16 repackage (0.25 GB) of Wan2.1_VAE.pth (0.51 GB fp32)
        label="Wan2.1 VAE (0.25 GB)",
        size_bytes=int(0.254 * GB),
        name="wan_2.1_vae.safetensors",
        files=(FileSpec(COMFY_REPO, "split_files/vae/wan_2.1_vae.safetensors", VAE, "wan_2.1_vae.safetensors"),),
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
