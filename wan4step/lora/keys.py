"""LoRA files for Wan2.1 T2V-14B: every published key convention -> one list of weight deltas.

Conventions met in the files users download (each cited where its layout is stated):

- LightX2V (`lightx2v/Wan2.1-Distill-Loras`, `lightx2v/Wan2.1-T2V-14B-StepDistill-CfgDistill-Lightx2v`
  `loras/`): written by LightX2V's `tools/extract/lora_extractor.py` (ModelTC/LightX2V at c0b3601,
  functions `_decompose_to_lora` / `_generate_lora_diff_key`): `diffusion_model.<layer>.lora_up.weight`
  [out, r] + `.lora_down.weight` [r, in] for 2-D weights of >= 1M parameters, no `alpha` (scale 1);
  full differences for everything else: `<layer>.diff` (weights: norms, small linears, the 5-D patch
  embedding), `<layer>.diff_b` (biases), `blocks.N.diff_m` / `head.diff_m` (modulation). bf16 by
  default (`--output-dtype bf16`). LightX2V's own loader (`lightx2v/utils/lora_loader.py`,
  `extract_lora_diffs`) adds `diff_m` to `<prefix>.modulation`; ComfyUI 0.33's `comfy/lora.py`
  has no mapping for it and logs "lora key not loaded: diffusion_model.blocks.0.diff_m"
  (Comfy-Org/ComfyUI issue #8922, kijai/ComfyUI-WanVideoWrapper issue #807).
- Kijai (`Kijai/WanVideo_comfy` `Lightx2v/lightx2v_T2V_14B_cfg_step_distill_v2_lora_rank*_bf16`):
  the same `diffusion_model.` prefix with `lora_down`/`lora_up`, `diff_b` for biases and `.diff`
  for the q/k norms, no `alpha` — the key list ComfyUI prints for his LightX2V LoRAs on a model
  without those layers (kijai/ComfyUI-WanVideoWrapper issues #1862, #940; Comfy-Org/ComfyUI #10222:
  `...cross_attn.k_img.diff_b`, `...k_img.lora_down.weight`, `...norm_k_img.diff`).
- PEFT / diffusers-v2 naming used by trainers (diffusion-pipe, ai-toolkit): `<layer>.lora_A.weight`
  (down) + `<layer>.lora_B.weight` (up), sometimes `<layer>.alpha` (tdrussell/diffusion-pipe #114,
  ostris/ai-toolkit #349 logs; ComfyUI `comfy/weight_adapter/lora.py` reads `lora_B` as up).
- kohya-style flattened names `lora_unet_blocks_0_self_attn_q.lora_up.weight` (ComfyUI
  `model_lora_keys_unet` maps `lora_unet_<key with . -> _>`).

The delta a low-rank pair adds is `strength * (alpha / rank) * up @ down` (alpha absent: 1), a
difference adds `strength * diff` — `comfy/weight_adapter/lora.py` `LoRAAdapter.calculate_weight`
and `comfy/lora.py` `calculate_weight` ("diff"), LightX2V `LoRALoader.apply_lora`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import FormatError, UnsupportedQuantError, WrongModelError
from ..wan_config import WanConfig, expected_keys

# (up suffix, down suffix) of the low-rank pairs, most common first
_PAIRS: tuple[tuple[str, str], ...] = (
    (".lora_up.weight", ".lora_down.weight"),
    (".lora_B.weight", ".lora_A.weight"),
    (".lora.up.weight", ".lora.down.weight"),
)
# full differences: suffix -> what it replaces on the module path
_DIFFS: tuple[tuple[str, str], ...] = ((".diff_b", ".bias"), (".diff_m", ".modulation"), (".diff", ".weight"))
_PREFIXES = ("diffusion_model.", "model.diffusion_model.", "base_model.model.")
_KOHYA = "lora_unet_"
_UNSUPPORTED = (".dora_scale", ".lora_mid.weight", ".hada_w1_a", ".lokr_w1", ".oft_blocks", ".w_norm", ".set_weight")
# I2V / FLF2V / VACE layers: their LoRAs are for another Wan model
_OTHER_MODEL = re.compile(r"\.(k_img|v_img|norm_k_img)\b|^img_emb\.|^vace_|^ref_conv|^control_adapter")


@dataclass
class LoraTarget:
    """What a LoRA adds to one weight of the canonical state dict."""

    key: str  # canonical key: "blocks.0.self_attn.q.weight", "blocks.0.self_attn.q.bias", "blocks.0.modulation"
    up: torch.Tensor | None = None  # [out, rank]
    down: torch.Tensor | None = None  # [rank, in]
    alpha: float | None = None
    diff: torch.Tensor | None = None  # same number of elements as the weight
    source: list[str] = field(default_factory=list)  # the file's own key names

    @property
    def rank(self) -> int:
        return int(self.down.shape[0]) if self.down is not None else 0

    @property
    def scale(self) -> float:
        """alpha / rank, or 1 without alpha (LightX2V and Kijai files carry none)."""
        return self.alpha / self.rank if self.alpha is not None and self.rank else 1.0

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.up, self.down, self.diff) if t is not None)


@dataclass
class LoraFile:
    path: Path | None
    convention: str  # "lightx2v" | "kijai" | "lora_A/lora_B" | "kohya" | "mixed"
    targets: dict[str, LoraTarget]
    metadata: dict = field(default_factory=dict)

    @property
    def rank(self) -> int:
        ranks = {t.rank for t in self.targets.values() if t.rank}
        return max(ranks) if ranks else 0

    def describe(self) -> str:
        low = sum(t.up is not None for t in self.targets.values())
        diff = sum(t.diff is not None for t in self.targets.values())
        name = self.path.name if self.path else "LoRA"
        return f"{name} [{self.convention}; rank {self.rank}; {low} low-rank + {diff} full differences]"


def _strip(key: str) -> str:
    for p in _PREFIXES:
        if key.startswith(p):
            return key[len(p):]
    return key


def _split(key: str) -> tuple[str, str] | None:
    """(module path, role) for one file key; role in up/down/alpha/.bias/.weight/.modulation."""
    for up, down in _PAIRS:
        if key.endswith(up):
            return key[: -len(up)], "up"
        if key.endswith(down):
            return key[: -len(down)], "down"
    if key.endswith(".alpha"):
        return key[: -len(".alpha")], "alpha"
    for suffix, param in _DIFFS:
        if key.endswith(suffix):
            return key[: -len(suffix)], param
    return None


def _kohya_map(cfg: WanConfig) -> dict[str, str]:
    """'lora_unet_blocks_0_self_attn_q' -> 'blocks.0.self_attn.q' for every module of the model."""
    mods = {k.rsplit(".", 1)[0] for k in expected_keys(cfg)}
    return {_KOHYA + m.replace(".", "_"): m for m in mods}


def _convention(keys: list[str]) -> str:
    prefixed = all(k.startswith("diffusion_model.") for k in keys)
    has_ab = any(k.endswith((".lora_A.weight", ".lora_B.weight")) for k in keys)
    has_updown = any(k.endswith((".lora_up.weight", ".lora_down.weight")) for k in keys)
    if any(k.startswith(_KOHYA) for k in keys):
        return "kohya"
    if has_ab and not has_updown:
        return "lora_A/lora_B"
    if has_updown and not has_ab and prefixed:
        # LightX2V's extractor writes modulation differences; Kijai's files have none
        return "lightx2v" if any(k.endswith(".diff_m") for k in keys) else "kijai"
    return "mixed"


def parse_lora(sd: Mapping[str, torch.Tensor], cfg: WanConfig, path: str | Path | None = None,
               metadata: dict | None = None) -> LoraFile:
    """Group a LoRA state dict into per-weight targets of a `cfg` model, checking names and shapes.

    Raises WrongModelError for a LoRA of another Wan model (I2V/VACE layers, other widths),
    UnsupportedQuantError for DoRA/LoCon/LoHa/LoKr keys, FormatError for half pairs and keys of
    no known convention.
    """
    path = Path(path) if path is not None else None
    want = {k: None for k in expected_keys(cfg)}
    kohya = _kohya_map(cfg) if any(k.startswith(_KOHYA) for k in sd) else {}
    targets: dict[str, LoraTarget] = {}
    unknown: list[str] = []
    other: list[str] = []
    for key, t in sd.items():
        if key.endswith(_UNSUPPORTED):
            raise UnsupportedQuantError(
                f"LoRA key '{key}' is a DoRA/LoCon/LoHa/LoKr/OFT part, which the merge does not implement",
                path=path, expected="a plain LoRA (lora_up/lora_down, lora_A/lora_B) with optional diff/diff_b/diff_m",
                fix="apply this LoRA with ComfyUI's LoraLoaderModelOnly instead of merging it at load.",
            )
        parts = _split(key)
        if parts is None:
            unknown.append(key)
            continue
        module, role = parts
        module = kohya.get(module, _strip(module))
        if _OTHER_MODEL.search(module):
            other.append(key)
            continue
        # `blocks.N.diff_m` -> `blocks.N.modulation`, `x.diff_b` -> `x.bias`, pairs and `x.diff` -> `x.weight`
        target_key = module + (".weight" if role in ("up", "down", "alpha") else role)
        if target_key not in want:
            unknown.append(key)
            continue
        tgt = targets.setdefault(target_key, LoraTarget(target_key))
        tgt.source.append(key)
        if role == "up":
            tgt.up = t
        elif role == "down":
            tgt.down = t
        elif role == "alpha":
            tgt.alpha = float(t.float().item())
        else:
            tgt.diff = t
    if other:
        raise WrongModelError(
            "this LoRA is for another Wan2.1 model (image-to-video or VACE layers)",
            path=path, expected="a LoRA for Wan2.1 T2V-14B (e.g. wan2.1_t2v_14b_lora_rank64_lightx2v_4step)",
            found=", ".join(other[:3]) + (" …" if len(other) > 3 else ""),
            fix="use the T2V distill LoRA: lightx2v/Wan2.1-Distill-Loras wan2.1_t2v_14b_lora_rank64_lightx2v_4step."
                "safetensors or Kijai's lightx2v_T2V_14B_cfg_step_distill_v2_lora_rank*_bf16.safetensors.",
        )
    if unknown:
        raise FormatError(
            f"{len(unknown)} LoRA keys match no weight of {cfg.name}",
            path=path, expected="keys like diffusion_model.blocks.0.self_attn.q.lora_up.weight / .lora_A.weight / .diff_b",
            found=", ".join(unknown[:4]) + (" …" if len(unknown) > 4 else ""),
            fix="check that the LoRA is for Wan2.1 T2V-14B; diffusers-named LoRAs (attn1.to_q) are not supported here, "
                "use ComfyUI's LoraLoaderModelOnly for them.",
        )
    for tgt in targets.values():
        _check_target(tgt, cfg, path)
    if not targets:
        raise FormatError("the file holds no LoRA weights", path=path,
                          expected="lora_up/lora_down (or lora_A/lora_B) pairs or diff tensors")
    return LoraFile(path, _convention(list(sd)), targets, dict(metadata or {}))


def _SHAPES(cfg: WanConfig) -> dict[str, tuple[int, ...]]:  # noqa: N802 - a cached table, named like one
    cached = _shape_cache.get(cfg)
    if cached is None:
        cached = _shape_cache[cfg] = expected_shapes(cfg)
    return cached


_shape_cache: dict[WanConfig, dict[str, tuple[int, ...]]] = {}


def expected_shapes(cfg: WanConfig) -> dict[str, tuple[int, ...]]:
    """The torch shape of every canonical key (ComfyUI's WanModel layout; modulation [1, 6, dim])."""
    d, f = cfg.dim, cfg.ffn_dim
    out_ch = cfg.out_dim * cfg.patch_size[0] * cfg.patch_size[1] * cfg.patch_size[2]
    fixed = {
        "patch_embedding.weight": (d, cfg.in_dim, *cfg.patch_size), "patch_embedding.bias": (d,),
        "text_embedding.0.weight": (d, cfg.text_dim), "text_embedding.0.bias": (d,),
        "text_embedding.2.weight": (d, d), "text_embedding.2.bias": (d,),
        "time_embedding.0.weight": (d, cfg.freq_dim), "time_embedding.0.bias": (d,),
        "time_embedding.2.weight": (d, d), "time_embedding.2.bias": (d,),
        "time_projection.1.weight": (6 * d, d), "time_projection.1.bias": (6 * d,),
        "head.head.weight": (out_ch, d), "head.head.bias": (out_ch,), "head.modulation": (1, 2, d),
    }
    out = {}
    for key in expected_keys(cfg):
        if key in fixed:
            out[key] = fixed[key]
        elif key.endswith("modulation"):
            out[key] = (1, 6, d)
        elif key.endswith(("norm_q.weight", "norm_k.weight", "norm3.weight", "norm3.bias")):
            out[key] = (d,)
        elif ".ffn.0." in key:
            out[key] = (f, d) if key.endswith("weight") else (f,)
        elif ".ffn.2." in key:
            out[key] = (d, f) if key.endswith("weight") else (d,)
        else:
            out[key] = (d, d) if key.endswith("weight") else (d,)
    return out


def _check_target(tgt: LoraTarget, cfg: WanConfig, path: Path | None) -> None:
    shape = _SHAPES(cfg)[tgt.key]
    numel = 1
    for s in shape:
        numel *= s
    name = tgt.source[0] if tgt.source else tgt.key
    if (tgt.up is None) != (tgt.down is None):
        raise FormatError(f"LoRA layer '{name}' has only one half of its low-rank pair", path=path,
                          expected="both up (lora_up / lora_B) and down (lora_down / lora_A)",
                          fix="the file is damaged or incomplete; download it again.")
    if tgt.up is not None:
        rows = shape[0]
        cols = numel // rows
        ok = (tgt.up.dim() == 2 and tgt.down.dim() == 2 and tgt.up.shape[0] == rows
              and tgt.down.shape[1] == cols and tgt.up.shape[1] == tgt.down.shape[0])
        if not ok:
            raise WrongModelError(
                f"LoRA layer '{name}' does not fit {cfg.name}",
                path=path, expected=f"up [{rows}, r] and down [r, {cols}] for {tgt.key} {list(shape)}",
                found=f"up {list(tgt.up.shape)}, down {list(tgt.down.shape)}",
                fix="this LoRA is for another model size (Wan2.1 1.3B, Wan2.2 5B?); use a T2V-14B LoRA.",
            )
    if tgt.diff is not None and tgt.diff.numel() != numel:
        raise WrongModelError(
            f"LoRA difference '{name}' does not fit {cfg.name}", path=path,
            expected=f"{numel} values for {tgt.key} {list(shape)}", found=f"{list(tgt.diff.shape)}",
            fix="this LoRA is for another model size; use a T2V-14B LoRA.",
        )


def read_lora(path: str | Path, cfg: WanConfig) -> LoraFile:
    """A LoRA .safetensors file (memory-mapped) as targets of a `cfg` model."""
    from ..formats.safetensors_file import open_safetensors

    path = Path(path)
    if not path.is_file():
        raise FormatError("LoRA file not found", path=path, fix="put the LoRA into ComfyUI/models/loras/ and refresh.")
    sd, meta = open_safetensors(path)
    return parse_lora(sd, cfg, path, meta)
