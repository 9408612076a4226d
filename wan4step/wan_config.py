"""What a Wan DiT is, read from its tensor shapes, and which model a file really holds.

The canonical key space is ComfyUI's `WanModel` state dict without prefix, which
is also the original Wan2.1 release's naming (`blocks.N.self_attn.q.weight`,
`head.modulation`, ...). Every reader maps its file into it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .errors import WrongModelError

HEAD_DIM = 128  # fixed by Wan (and by ComfyUI's detection: num_heads = dim // 128)

# The ten linears of a block, in execution order; the quantized formats
# (LightX2V FP8/INT8, GGUF) quantize exactly these.
BLOCK_LINEARS: tuple[str, ...] = (
    "self_attn.q",
    "self_attn.k",
    "self_attn.v",
    "self_attn.o",
    "cross_attn.q",
    "cross_attn.k",
    "cross_attn.v",
    "cross_attn.o",
    "ffn.0",
    "ffn.2",
)

_BLOCK_RE = re.compile(r"^blocks\.(\d+)\.")


@dataclass(frozen=True)
class WanConfig:
    dim: int
    ffn_dim: int
    num_layers: int
    in_dim: int = 16
    out_dim: int = 16
    text_dim: int = 4096
    freq_dim: int = 256
    patch_size: tuple[int, int, int] = (1, 2, 2)
    eps: float = 1e-6

    @property
    def num_heads(self) -> int:
        return self.dim // HEAD_DIM

    @property
    def name(self) -> str:
        if self == T2V_14B:
            return "Wan2.1 T2V-14B"
        return f"Wan2.1-architecture T2V (dim {self.dim}, {self.num_layers} blocks)"

    def block_param_count(self) -> int:
        d, f = self.dim, self.ffn_dim
        linears = 8 * (d * d + d) + (d * f + f) + (f * d + d)
        norms = 4 * d + 2 * d  # q/k RMSNorms (self + cross) + norm3 weight/bias
        return linears + norms + 6 * d


T2V_14B = WanConfig(dim=5120, ffn_dim=13824, num_layers=40)
T2V_1_3B = WanConfig(dim=1536, ffn_dim=8960, num_layers=30)


def block_index(key: str) -> int | None:
    m = _BLOCK_RE.match(key)
    return int(m.group(1)) if m else None


def expected_keys(cfg: WanConfig) -> list[str]:
    """Every canonical key of a T2V Wan2.1 DiT of this config."""
    keys = [
        "patch_embedding.weight",
        "patch_embedding.bias",
        "text_embedding.0.weight",
        "text_embedding.0.bias",
        "text_embedding.2.weight",
        "text_embedding.2.bias",
        "time_embedding.0.weight",
        "time_embedding.0.bias",
        "time_embedding.2.weight",
        "time_embedding.2.bias",
        "time_projection.1.weight",
        "time_projection.1.bias",
        "head.head.weight",
        "head.head.bias",
        "head.modulation",
    ]
    for i in range(cfg.num_layers):
        p = f"blocks.{i}."
        for lin in BLOCK_LINEARS:
            keys += [p + lin + ".weight", p + lin + ".bias"]
        for att in ("self_attn", "cross_attn"):
            keys += [f"{p}{att}.norm_q.weight", f"{p}{att}.norm_k.weight"]
        keys += [p + "norm3.weight", p + "norm3.bias", p + "modulation"]
    return keys


def _shape(shapes: Mapping[str, Sequence[int]], key: str, path: str | None) -> tuple[int, ...]:
    if key not in shapes:
        raise WrongModelError(
            "this is not a Wan2.1 diffusion model",
            path=path,
            expected=f"a Wan DiT state dict with '{key}'",
            found=f"{len(shapes)} tensors, e.g. {', '.join(sorted(shapes)[:4])}",
            fix="pick a Wan2.1 T2V-14B file (GGUF, LightX2V distill_fp8/ or distill_int8/, or bf16 safetensors) in the loader.",
        )
    return tuple(int(s) for s in shapes[key])


def detect_config(shapes: Mapping[str, Sequence[int]], path: str | None = None) -> WanConfig:
    """Read the architecture from shapes and refuse models this pack does not run.

    Tiny models with the real architecture (any dim that is a multiple of 128)
    are accepted on purpose: they are the pack's test fixtures and demo model.
    """
    keys = set(shapes)
    if any(k.startswith(("img_emb.", "vace_", "control_adapter.", "ref_conv.")) for k in keys) or any(
        ".cross_attn.k_img." in k for k in keys
    ):
        which = "a Wan2.1 I2V/FLF2V model" if any(k.startswith("img_emb.") for k in keys) else "a Wan VACE/camera-control model"
        raise WrongModelError(
            f"this is {which}, not the T2V-14B text-to-video model",
            path=path,
            expected="Wan2.1 T2V-14B (StepDistill-CfgDistill) weights",
            found=which,
            fix="this pack runs text-to-video only; download the T2V-14B file for your tier.",
        )
    pe = _shape(shapes, "patch_embedding.weight", path)
    dim, in_dim = pe[0], pe[1]
    te = _shape(shapes, "text_embedding.0.weight", path)
    tm = _shape(shapes, "time_embedding.0.weight", path)
    hd = _shape(shapes, "head.head.weight", path)
    ffn = _shape(shapes, "blocks.0.ffn.0.weight", path)
    layers = 1 + max((block_index(k) or 0) for k in keys if k.startswith("blocks."))
    patch = tuple(pe[2:5]) if len(pe) == 5 else (1, 2, 2)
    out_dim = hd[0] // (patch[0] * patch[1] * patch[2])
    cfg = WanConfig(
        dim=dim,
        ffn_dim=ffn[0],
        num_layers=layers,
        in_dim=in_dim,
        out_dim=out_dim,
        text_dim=te[1],
        freq_dim=tm[1],
        patch_size=patch,  # type: ignore[arg-type]
    )
    if in_dim == 48 or out_dim == 48:
        raise WrongModelError(
            "this is Wan2.2 TI2V-5B (48-channel latent), not Wan2.1 T2V-14B",
            path=path,
            fix="use the Wan2.1 T2V-14B file; Wan2.2 uses a different VAE and is not supported by this pack.",
        )
    if in_dim != 16:
        raise WrongModelError(
            f"this model takes {in_dim} input channels, so it is an image-to-video or control model",
            path=path,
            expected="16 input channels (text-to-video)",
            fix="use the Wan2.1 T2V-14B file.",
        )
    if (dim, layers) == (T2V_1_3B.dim, T2V_1_3B.num_layers):
        raise WrongModelError(
            "this is Wan2.1 T2V-1.3B; the 4-step distilled recipe this pack runs is for T2V-14B",
            path=path,
            expected="T2V-14B (dim 5120, 40 blocks)",
            found="dim 1536, 30 blocks",
            fix="download a Wan2.1 T2V-14B tier (the advisor names one for your GPU).",
        )
    if dim % 128 or cfg.text_dim != 4096:
        raise WrongModelError(
            "unexpected Wan DiT shapes",
            path=path,
            expected="dim a multiple of 128 and a 4096-wide text embedding",
            found=f"dim {dim}, text_dim {cfg.text_dim}",
        )
    return cfg
