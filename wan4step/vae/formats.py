"""Wan2.1 VAE files: readers, layout detection, key maps, and clear errors for the wrong file.

Layouts (all three hold the same 127M weights; keys verified against the model):
- original: the release's `Wan2.1_VAE.pth` (float32, `torch.save` of a plain state dict), keys
  like `decoder.middle.0.residual.0.gamma`, `decoder.upsamples.12.residual.6.weight`, `conv2.weight`.
- Comfy-Org `wan_2.1_vae.safetensors` (split_files/vae of Wan_2.1_ComfyUI_repackaged): the same
  original keys in a safetensors container (half precision). ComfyUI's `comfy/sd.py` VAE class
  detects the Wan2.1 VAE by `decoder.middle.0.residual.0.gamma` (reads `dim` from
  `decoder.head.0.gamma`) and only converts SD-style diffusers layouts, so its loader needs no
  renaming: the Comfy-Org file is the original layout. This module treats both alike.
- diffusers `AutoencoderKLWan` (`vae/diffusion_pytorch_model.safetensors` of the -Diffusers
  repos): renamed modules (`decoder.up_blocks.3.resnets.2.conv2.weight`, `post_quant_conv`).
  Read through `diffusers_to_original`; also the test oracle's layout.

`.pth` files are read with `torch.load(weights_only=True)`: a file that needs to run pickled
code is refused, never executed.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import FormatError, WrongModelError, describe_head
from ..formats.pth_file import read_pth
from .model import VAEConfig, WanVAE, WanVAEModel

GET_IT = (
    "use the Wan2.1 VAE: Wan2.1_VAE.pth (Wan-AI/Wan2.1-T2V-14B or lightx2v/Wan2.1-T2V-14B-StepDistill-"
    "CfgDistill-Lightx2v, 508 MB) or wan_2.1_vae.safetensors (Comfy-Org/Wan_2.1_ComfyUI_repackaged, "
    "split_files/vae, 254 MB), in ComfyUI/models/vae"
)
ORIGINAL_MARK = "decoder.middle.0.residual.0.gamma"
DIFFUSERS_MARK = "decoder.mid_block.resnets.0.norm1.gamma"
PREFIXES = ("vae.", "first_stage_model.", "model.")


# -- key maps (original <-> diffusers AutoencoderKLWan) ----------------------------------------
_RES_TO_DIFF = {"residual.0.": "norm1.", "residual.2.": "conv1.", "residual.3.": "norm2.", "residual.6.": "conv2.",
                "shortcut.": "conv_shortcut."}
_RES_TO_ORIG = {v: k for k, v in _RES_TO_DIFF.items()}


def _rename_leaf(rest: str, table: dict[str, str]) -> str:
    for a, b in table.items():
        if rest.startswith(a):
            return b + rest[len(a) :]
    return rest  # attention (norm, to_qkv, proj) and resample (resample.1, time_conv) keep their names


# top-level renames, one table for both directions
_FIXED_TO_DIFF = {"conv1.": "quant_conv.", "conv2.": "post_quant_conv.", "encoder.conv1.": "encoder.conv_in.",
                  "decoder.conv1.": "decoder.conv_in.", "encoder.head.0.": "encoder.norm_out.",
                  "encoder.head.2.": "encoder.conv_out.", "decoder.head.0.": "decoder.norm_out.",
                  "decoder.head.2.": "decoder.conv_out."}
_FIXED_FROM_DIFF = {b: a for a, b in _FIXED_TO_DIFF.items()}


def original_key_to_diffusers(key: str, num_res_blocks: int = 2) -> str:
    """One original (= ComfyUI) VAE key -> diffusers' AutoencoderKLWan key. KeyError if unknown."""
    for a, b in _FIXED_TO_DIFF.items():
        if key.startswith(a) and key.count(".") == a.count("."):
            return b + key[len(a) :]
    m = re.fullmatch(r"(encoder|decoder)\.middle\.([012])\.(.+)", key)
    if m:
        side, i, rest = m.groups()
        if i == "1":
            return f"{side}.mid_block.attentions.0.{rest}"
        return f"{side}.mid_block.resnets.{int(i) // 2}.{_rename_leaf(rest, _RES_TO_DIFF)}"
    m = re.fullmatch(r"encoder\.downsamples\.(\d+)\.(.+)", key)
    if m:
        return f"encoder.down_blocks.{m.group(1)}.{_rename_leaf(m.group(2), _RES_TO_DIFF)}"
    m = re.fullmatch(r"decoder\.upsamples\.(\d+)\.(.+)", key)
    if m:
        k, rest = int(m.group(1)), m.group(2)
        stage, j = divmod(k, num_res_blocks + 2)  # stages: (r+1) residual blocks + 1 upsample
        if j <= num_res_blocks:
            return f"decoder.up_blocks.{stage}.resnets.{j}.{_rename_leaf(rest, _RES_TO_DIFF)}"
        return f"decoder.up_blocks.{stage}.upsamplers.0.{rest}"
    raise KeyError(key)


def diffusers_key_to_original(key: str, num_res_blocks: int = 2) -> str:
    """One diffusers AutoencoderKLWan key -> the original (= ComfyUI) key. KeyError if unknown."""
    for a, b in _FIXED_FROM_DIFF.items():
        if key.startswith(a) and key.count(".") == a.count("."):
            return b + key[len(a) :]
    m = re.fullmatch(r"(encoder|decoder)\.mid_block\.(attentions|resnets)\.(\d)\.(.+)", key)
    if m:
        side, kind, i, rest = m.groups()
        if kind == "attentions":
            return f"{side}.middle.1.{rest}"
        return f"{side}.middle.{2 * int(i)}.{_rename_leaf(rest, _RES_TO_ORIG)}"
    m = re.fullmatch(r"encoder\.down_blocks\.(\d+)\.(.+)", key)
    if m:
        return f"encoder.downsamples.{m.group(1)}.{_rename_leaf(m.group(2), _RES_TO_ORIG)}"
    m = re.fullmatch(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key)
    if m:
        stage, j, rest = int(m.group(1)), int(m.group(2)), m.group(3)
        return f"decoder.upsamples.{stage * (num_res_blocks + 2) + j}.{_rename_leaf(rest, _RES_TO_ORIG)}"
    m = re.fullmatch(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.(.+)", key)
    if m:
        return f"decoder.upsamples.{int(m.group(1)) * (num_res_blocks + 2) + num_res_blocks + 1}.{m.group(2)}"
    raise KeyError(key)


def original_to_diffusers(sd: dict[str, torch.Tensor], num_res_blocks: int = 2) -> dict[str, torch.Tensor]:
    return {original_key_to_diffusers(k, num_res_blocks): v for k, v in sd.items()}


def diffusers_to_original(sd: dict[str, torch.Tensor], num_res_blocks: int = 2) -> dict[str, torch.Tensor]:
    return {diffusers_key_to_original(k, num_res_blocks): v for k, v in sd.items()}


# -- containers ------------------------------------------------------------------------------------
def _head_of(path: str | Path) -> str:
    with open(path, "rb") as f:
        return describe_head(f.read(16))


def sniff_container(path: str | Path) -> str:
    """'safetensors' | 'torch' | 'gguf' | 'unknown', from the first bytes, not the file name."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(16)
    if head[:4] == b"PK\x03\x04" or head[:2] == b"\x80\x02":  # torch zip / legacy pickle
        return "torch"
    if head[:4] == b"GGUF":
        return "gguf"
    if len(head) >= 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < size:
        return "safetensors"
    return "unknown"


def _read_torch(path: Path) -> dict:
    return read_pth(path, GET_IT)


def _read_safetensors(path: Path) -> dict:
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except Exception as e:  # safetensors raises its own SafetensorError (not importable portably)
        msg = str(e)
        problem = "the file is truncated or corrupt (an interrupted download?)"
        if "HeaderTooLarge" in msg or "InvalidHeader" in msg:
            problem = "the file is not a valid safetensors file"
        raise FormatError(problem, path=path, expected="a complete safetensors file",
                          found=f"{type(e).__name__}: {msg[:200]}", fix=f"download it again; {GET_IT}") from None


def _tensors(obj) -> dict[str, torch.Tensor]:
    """A torch checkpoint's state dict: unwrap {'state_dict': ...} / {'model': ...} / one-key dicts."""
    for _ in range(3):
        if not isinstance(obj, dict):
            break
        if any(isinstance(v, torch.Tensor) for v in obj.values()):
            break
        inner = obj.get("state_dict", obj.get("model", obj.get("vae")))
        if inner is None and len(obj) == 1:
            inner = next(iter(obj.values()))
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, dict):
        return {}
    return {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}


# -- identification -------------------------------------------------------------------------------
@dataclass
class VAEFile:
    """A Wan2.1 VAE read from disk: the state dict in original keys plus what the file was."""

    path: str
    state_dict: dict[str, torch.Tensor]
    config: VAEConfig
    layout: str  # "original" | "diffusers"
    container: str  # "torch" | "safetensors"
    dtype: torch.dtype  # the stored (most common) dtype


def _strip_prefix(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if ORIGINAL_MARK in sd or DIFFUSERS_MARK in sd:
        return sd
    for p in PREFIXES:
        sub = {k[len(p) :]: v for k, v in sd.items() if k.startswith(p)}
        if ORIGINAL_MARK in sub or DIFFUSERS_MARK in sub:
            return sub
    return sd


def _what_else(sd: dict[str, torch.Tensor]) -> str | None:
    """Name the model a non-Wan2.1-VAE file holds, when it is a known one."""
    keys = set(sd)

    def has(*names):
        return any(any(k == n or k.endswith("." + n) for k in keys) for n in names)

    def shape(name):  # exact key (no prefix: _strip_prefix ran)
        return tuple(sd[name].shape) if name in sd else None

    z_dim = (shape("conv2.weight") or shape("post_quant_conv.weight") or (16,))[0]
    if "decoder.upsamples.0.upsamples.0.residual.2.weight" in keys or z_dim == 48:
        return ("the Wan2.2 VAE (48 latent channels, 16x spatial compression; it belongs to Wan2.2 TI2V-5B). "
                "Wan2.1 T2V-14B (and Wan2.2 A14B) use the Wan2.1 VAE with 16 channels")
    if has("head.modulation", "blocks.0.self_attn.q.weight", "patch_embedding.weight"):
        return "a Wan diffusion model (DiT), not a VAE: it goes in ComfyUI/models/diffusion_models"
    if has("encoder.block.0.layer.0.SelfAttention.q.weight", "shared.weight"):
        return "a T5/UMT5 text encoder, not a VAE: it goes in ComfyUI/models/text_encoders"
    if has("decoder.22.bias") or ("decoder.1.weight" in keys and "encoder.0.weight" in keys):
        return "a TAE preview VAE (taew2_1 / lighttaew2_1), a lossy stand-in; ComfyUI's own VAE loader takes it"
    if has("decoder.conv_in.conv.weight", "decoder.unpatcher3d.wavelets"):
        return "a different video VAE (HunyuanVideo / CogVideoX / Cosmos family)"
    conv_in = shape("decoder.conv_in.weight")
    if conv_in is not None and len(conv_in) == 4:
        z = conv_in[1]
        kind = {4: "a Stable Diffusion 1.x/2.x/SDXL image VAE (4 latent channels)",
                16: "an SD3 / Flux image VAE (16 latent channels, but 2-D: no time axis)"}
        return kind.get(z, f"an image VAE with {z} latent channels")
    if z_dim != 16:
        return f"a Wan-architecture VAE with {z_dim} latent channels (not 16)"
    return None


def _config_from(sd: dict[str, torch.Tensor], path) -> VAEConfig:
    try:
        dim = sd["decoder.head.0.gamma"].shape[0]
        z_dim = sd["conv2.weight"].shape[0]
        img = sd["encoder.conv1.weight"].shape[1]
        out = sd["decoder.head.2.weight"].shape[0]
    except KeyError as e:
        raise FormatError("the Wan2.1 VAE is incomplete", path=path, expected=f"tensor {e.args[0]}",
                          found=f"{len(sd)} tensors without it", fix=f"download it again; {GET_IT}") from None
    if z_dim != 16 or img != 3 or out != 3:
        raise WrongModelError("this is not the Wan2.1 T2V VAE", path=path, expected="16 latent channels, RGB in/out",
                              found=f"{z_dim} latent channels, {img} input / {out} output channels", fix=GET_IT)
    return VAEConfig(dim=dim, z_dim=z_dim, image_channels=img)


def _validate(sd: dict[str, torch.Tensor], cfg: VAEConfig, path) -> None:
    with torch.device("meta"):
        want = {k: tuple(v.shape) for k, v in WanVAEModel(cfg).state_dict().items()}
    missing = [k for k in want if k not in sd]
    extra = [k for k in sd if k not in want]
    bad = [f"{k} {tuple(sd[k].shape)} (expected {want[k]})" for k in want if k in sd and tuple(sd[k].shape) != want[k]]
    if missing or bad:
        found = []
        if missing:
            found.append(f"{len(missing)} missing tensors, first: {', '.join(missing[:4])}")
        if bad:
            found.append(f"wrong shapes: {'; '.join(bad[:3])}")
        if extra:
            found.append(f"{len(extra)} unexpected tensors, first: {', '.join(extra[:3])}")
        raise FormatError("the file does not hold a complete Wan2.1 VAE", path=path,
                          expected=f"{len(want)} tensors of the Wan2.1 VAE (dim {cfg.dim})", found="; ".join(found),
                          fix=f"download it again; {GET_IT}")


def read_vae_state_dict(path: str | Path) -> VAEFile:
    """Read a Wan2.1 VAE file (any supported layout/container) -> state dict in original keys."""
    path = Path(path)
    if not path.is_file():
        raise FormatError("no such file", path=path, fix=GET_IT)
    if path.stat().st_size < 16:
        raise FormatError("the file is empty or truncated", path=path, found=f"{path.stat().st_size} bytes",
                          fix=f"download it again; {GET_IT}")
    container = sniff_container(path)
    if container == "torch":
        sd = _tensors(_read_torch(path))
    elif container == "safetensors":
        sd = _read_safetensors(path)
    elif container == "gguf":
        raise FormatError("GGUF VAEs are not supported", path=path, expected=".pth or .safetensors", found="GGUF",
                          fix=GET_IT)
    else:
        raise FormatError("unknown file format", path=path, expected="a torch .pth or a .safetensors file",
                          found=_head_of(path), fix=GET_IT)
    sd = _strip_prefix(sd)
    other = _what_else(sd)
    if other is not None:
        raise WrongModelError(f"this is {other}", path=path, expected="the Wan2.1 VAE (16 latent channels)",
                              fix=GET_IT)
    if ORIGINAL_MARK in sd:
        layout = "original"
    elif DIFFUSERS_MARK in sd:
        layout = "diffusers"
        try:
            sd = diffusers_to_original(sd)
        except KeyError as e:
            raise FormatError("unknown tensor in a diffusers-layout Wan VAE", path=path, found=str(e.args[0]),
                              fix=GET_IT) from None
    else:
        raise FormatError("not a Wan2.1 VAE", path=path, expected=f"tensors such as {ORIGINAL_MARK}",
                          found=f"{len(sd)} tensors" + (f", e.g. {', '.join(sorted(sd)[:3])}" if sd else ""),
                          fix=GET_IT)
    cfg = _config_from(sd, path)
    _validate(sd, cfg, path)
    dtype = Counter(v.dtype for v in sd.values()).most_common(1)[0][0]
    return VAEFile(str(path), sd, cfg, layout, container, dtype)


def build_vae(file: VAEFile, dtype: torch.dtype | None = None, device: torch.device | str = "cpu") -> WanVAE:
    """A WanVAE holding file's weights in `dtype` (default: as stored) on `device`."""
    with torch.device("meta"):
        model = WanVAE(file.config)
    want = set(model.state_dict())
    sd = {k: v.to(device=device, dtype=dtype or v.dtype) for k, v in file.state_dict.items() if k in want}
    model.load_state_dict(sd, strict=True, assign=True)
    model.requires_grad_(False)
    return model.eval()


def load_vae(path: str | Path, dtype: torch.dtype | None = None, device: torch.device | str = "cpu") -> WanVAE:
    """Read and build: the one call a script needs."""
    return build_vae(read_vae_state_dict(path), dtype=dtype, device=device)
