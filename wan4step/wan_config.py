"""What a Wan DiT is, read from its tensor shapes, and which model a file really holds.

The canonical key space is ComfyUI's `WanModel` state dict without prefix, which
is also the original Wan2.1 release's naming (`blocks.N.self_attn.q.weight`,
`head.modulation`, ...). Every reader maps its file into it.

VACE-merged files (the distilled T2V-14B with Wan2.1 VACE's control addon, e.g.
QuantStack's `Wan2.1_T2V_14B_LightX2V_StepCfgDistill_VACE-<TIER>.gguf`) carry
extra tensors next to the T2V ones, named as ComfyUI's `VaceWanModel` and its
detection read them (comfy/model_detection.py: `vace_patch_embedding.weight` ->
model_type "vace", `vace_in_dim` = its dim 1, `vace_layers` = the count of
`vace_blocks.N.`; comfy/ldm/wan/model.py: each `VaceWanAttentionBlock` is a Wan
block plus `after_proj`, block 0 also `before_proj`, and VACE block j runs after
main block `j * (num_layers // vace_layers)`). The same names are LightX2V's
(lightx2v/models/networks/wan/weights/vace/transformer_weights.py) and the
original release's (diffusers' single-file converter maps `before_proj`/
`after_proj` to `proj_in`/`proj_out`). Wan2.1 VACE-14B has 8 VACE blocks at
main blocks 0, 5, ..., 35 and a 96-channel VACE input (diffusers
transformer_wan_vace.py defaults; scripts/convert_wan_to_diffusers.py "Wan-VACE-14B").
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .errors import FormatError, WrongModelError

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
_VACE_BLOCK_RE = re.compile(r"^vace_blocks\.(\d+)\.")
VACE_PREFIXES = ("vace_patch_embedding.", "vace_blocks.")
# prefixes checkpoints put before the canonical names (keymaps.KNOWN_PREFIXES, repeated to avoid a cycle)
_PREFIXES = ("model.diffusion_model.", "diffusion_model.", "model.", "transformer.")


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


@dataclass(frozen=True)
class VaceConfig:
    """The VACE addon of a VACE-merged DiT: `num_layers` VACE blocks fed by an `in_dim`-channel input."""

    num_layers: int
    in_dim: int = 96

    def host_blocks(self, num_layers: int) -> tuple[int, ...]:
        """The main block after which each VACE block runs (ComfyUI's `vace_layers_mapping`)."""
        return tuple(range(0, num_layers, max(1, num_layers // self.num_layers)))


VACE_14B = VaceConfig(num_layers=8, in_dim=96)


def block_index(key: str) -> int | None:
    m = _BLOCK_RE.match(key)
    return int(m.group(1)) if m else None


def vace_block_index(key: str) -> int | None:
    m = _VACE_BLOCK_RE.match(key)
    return int(m.group(1)) if m else None


def is_vace_key(key: str) -> bool:
    """A tensor of the VACE addon (also behind a checkpoint prefix such as `model.diffusion_model.`)."""
    for p in _PREFIXES:
        if key.startswith(p):
            key = key[len(p):]
            break
    return key.startswith(VACE_PREFIXES)


def _block_shapes(cfg: WanConfig, p: str) -> dict[str, tuple[int, ...]]:
    d, f = cfg.dim, cfg.ffn_dim
    out: dict[str, tuple[int, ...]] = {}
    for lin in BLOCK_LINEARS:
        rows, cols = (f, d) if lin == "ffn.0" else (d, f) if lin == "ffn.2" else (d, d)
        out[f"{p}{lin}.weight"] = (rows, cols)
        out[f"{p}{lin}.bias"] = (rows,)
    for att in ("self_attn", "cross_attn"):
        out[f"{p}{att}.norm_q.weight"] = (d,)
        out[f"{p}{att}.norm_k.weight"] = (d,)
    out[p + "norm3.weight"] = (d,)
    out[p + "norm3.bias"] = (d,)
    out[p + "modulation"] = (1, 6, d)
    return out


def expected_shapes(cfg: WanConfig, vace: VaceConfig | None = None) -> dict[str, tuple[int, ...]]:
    """Every canonical key of a Wan2.1 T2V DiT of this config (plus its VACE addon) -> its torch shape.

    The order is the model's (non-block tensors, then block 0, 1, ...), and stays the same
    for a given config: the tiny fixtures draw their random weights in it.
    """
    d = cfg.dim
    patch = cfg.patch_size
    head_out = cfg.out_dim * patch[0] * patch[1] * patch[2]
    out: dict[str, tuple[int, ...]] = {
        "patch_embedding.weight": (d, cfg.in_dim, *patch),
        "patch_embedding.bias": (d,),
        "text_embedding.0.weight": (d, cfg.text_dim),
        "text_embedding.0.bias": (d,),
        "text_embedding.2.weight": (d, d),
        "text_embedding.2.bias": (d,),
        "time_embedding.0.weight": (d, cfg.freq_dim),
        "time_embedding.0.bias": (d,),
        "time_embedding.2.weight": (d, d),
        "time_embedding.2.bias": (d,),
        "time_projection.1.weight": (6 * d, d),
        "time_projection.1.bias": (6 * d,),
        "head.head.weight": (head_out, d),
        "head.head.bias": (head_out,),
        "head.modulation": (1, 2, d),
    }
    for i in range(cfg.num_layers):
        out.update(_block_shapes(cfg, f"blocks.{i}."))
    if vace is not None:
        out["vace_patch_embedding.weight"] = (d, vace.in_dim, *patch)
        out["vace_patch_embedding.bias"] = (d,)
        for j in range(vace.num_layers):
            p = f"vace_blocks.{j}."
            out.update(_block_shapes(cfg, p))
            if j == 0:
                out[p + "before_proj.weight"] = (d, d)
                out[p + "before_proj.bias"] = (d,)
            out[p + "after_proj.weight"] = (d, d)
            out[p + "after_proj.bias"] = (d,)
    return out


def expected_keys(cfg: WanConfig, vace: VaceConfig | None = None) -> list[str]:
    """Every canonical key of a T2V Wan2.1 DiT of this config (and of its VACE addon, if given)."""
    return list(expected_shapes(cfg, vace))


def missing_blocks(keys, num_layers: int, prefix: str = "blocks.") -> list[int]:
    """Indices below `num_layers` with no `<prefix>N.` tensor at all."""
    rx = _VACE_BLOCK_RE if prefix == "vace_blocks." else _BLOCK_RE
    present = {int(m.group(1)) for k in keys if (m := rx.match(k))}
    return [i for i in range(num_layers) if i not in present]


def describe_blocks(indices: Sequence[int], prefix: str = "blocks.") -> str:
    shown = ", ".join(f"{prefix}{i}" for i in indices[:6])
    return shown + (f" and {len(indices) - 6} more" if len(indices) > 6 else "")


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
    """Read the T2V architecture from shapes and refuse models this pack does not run.

    Tiny models with the real architecture (any dim that is a multiple of 128)
    are accepted on purpose: they are the pack's test fixtures and demo model.
    VACE tensors are ignored here (`detect_vace` reads them); other Wan variants
    (I2V/FLF2V, camera control, Wan2.2 TI2V, T2V-1.3B) are refused by name.
    """
    keys = set(shapes)
    if any(k.startswith(("img_emb.", "control_adapter.", "ref_conv.")) for k in keys) or any(
        ".cross_attn.k_img." in k for k in keys
    ):
        which = "a Wan2.1 I2V/FLF2V model" if any(k.startswith("img_emb.") for k in keys) else "a Wan camera-control model"
        raise WrongModelError(
            f"this is {which}, not the T2V-14B text-to-video model",
            path=path,
            expected="Wan2.1 T2V-14B (StepDistill-CfgDistill) weights, optionally with the VACE addon merged in",
            found=which,
            fix="this pack runs text-to-video (and VACE control); download the T2V-14B file for your tier.",
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
    if (dim, cfg.ffn_dim) == (T2V_14B.dim, T2V_14B.ffn_dim) and layers != T2V_14B.num_layers:
        _wrong_block_count(keys, layers, T2V_14B.num_layers, "blocks.", path)
    return cfg


def _wrong_block_count(keys, found: int, want: int, prefix: str, path: str | None) -> None:
    """A 14B-shaped file whose block count is not the 14B's: a missing tail block or a foreign model."""
    if found > want:
        raise WrongModelError(
            f"{found} {prefix.rstrip('.')} where Wan2.1 {'VACE-' if prefix != 'blocks.' else 'T2V-'}14B has {want}",
            path=path,
            expected=f"{prefix}0 … {prefix}{want - 1}",
            found=f"{prefix}{found - 1}",
            fix="this is another model with 14B-sized blocks; use a Wan2.1 T2V-14B file.",
        )
    raise missing_blocks_error(missing_blocks(keys, want, prefix), want, prefix, path)


def missing_blocks_error(missing: Sequence[int], want: int, prefix: str, path) -> FormatError:
    """The one message for whole blocks absent from a file (shape detection and the loader's check)."""
    return FormatError(
        f"{len(missing)} of {want} blocks are missing: {describe_blocks(missing, prefix)}",
        path=path,
        expected=f"all {want} blocks ({prefix}0 … {prefix}{want - 1}) of a 14B model (dim {T2V_14B.dim})",
        found=f"{want - len(missing)} blocks",
        fix="the file is incomplete (an interrupted download or a broken conversion); download it again.",
    )


def detect_vace(shapes: Mapping[str, Sequence[int]], cfg: WanConfig, path: str | None = None) -> VaceConfig | None:
    """The VACE addon merged into this DiT, or None for a plain T2V file.

    Refuses VACE tensors ComfyUI's `VaceWanModel` could not place: no VACE patch
    embedding, a VACE block count whose spacing over the main blocks does not give
    one host block per VACE block, or (at 14B size) other than the 8 blocks of
    Wan2.1 VACE-14B.
    """
    keys = [k for k in shapes if k.startswith(VACE_PREFIXES)]
    if not keys:
        return None
    if "vace_patch_embedding.weight" not in shapes:
        raise FormatError(
            "the VACE tensors have no vace_patch_embedding.weight",
            path=path,
            expected="vace_patch_embedding.weight (a 5-D conv) next to the vace_blocks.N tensors",
            found=f"{len(keys)} VACE tensors without it",
            fix="the file is incomplete; download it again, or load it with mode 't2v'.",
        )
    pe = tuple(int(s) for s in shapes["vace_patch_embedding.weight"])
    if len(pe) < 2 or pe[0] != cfg.dim:
        raise WrongModelError(
            "the VACE patch embedding does not match the DiT",
            path=path,
            expected=f"[{cfg.dim}, in_dim, 1, 2, 2]",
            found=str(list(pe)),
        )
    idx = [i for k in keys if (i := vace_block_index(k)) is not None]
    n = 1 + max(idx, default=-1)
    if n == 0:
        raise FormatError("the file has a VACE patch embedding but no vace_blocks.N tensors", path=path,
                          fix="the file is incomplete; download it again, or load it with mode 't2v'.")
    if (cfg.dim, cfg.ffn_dim) == (T2V_14B.dim, T2V_14B.ffn_dim) and n != VACE_14B.num_layers:
        _wrong_block_count(keys, n, VACE_14B.num_layers, "vace_blocks.", path)
    vace = VaceConfig(num_layers=n, in_dim=pe[1])
    if len(vace.host_blocks(cfg.num_layers)) != n:
        raise WrongModelError(
            f"{n} VACE blocks cannot be spread over {cfg.num_layers} blocks the way ComfyUI's VACE model does",
            path=path,
            expected=f"a VACE block count that divides the {cfg.num_layers} blocks into equal steps",
            found=f"{n} VACE blocks",
            fix="load the file with mode 't2v' to use it as a plain text-to-video model.",
        )
    return vace
