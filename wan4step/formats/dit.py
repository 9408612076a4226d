"""Load a Wan2.1 T2V DiT from any supported file or folder, detected by content.

Returns the canonical state dict (keys as in `wan_config.expected_keys`) whose
quantized tensors stay `QuantWeight`s in their stored encoding.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import FormatError, UnsupportedQuantError, describe_head
from ..quant.weights import FP8, GGUF, INT8, QuantWeight, tensor_nbytes
from ..wan_config import WanConfig, detect_config, expected_keys
from .keymaps import to_canonical
from .pth_file import read_pth
from .safetensors_file import open_safetensors

log = logging.getLogger("wan4step")

# keys a checkpoint may carry that are not weights
_BENIGN_SUFFIXES = (".scale_input", ".input_scale", ".comfy_quant")
_BENIGN_KEYS = {"scaled_fp8"}


@dataclass
class LoadedDiT:
    path: Path
    format: str
    config: WanConfig
    state: dict[str, torch.Tensor | QuantWeight]
    notes: list[str] = field(default_factory=list)

    @property
    def stored_bytes(self) -> int:
        return sum(tensor_nbytes(v) for v in self.state.values())

    def weight_types(self) -> dict[str, int]:
        """How many tensors of each stored type (e.g. {'Q4_K': 200, 'F32': 120})."""
        out: dict[str, int] = {}
        for v in self.state.values():
            name = v.type_name() if isinstance(v, QuantWeight) else str(v.dtype).replace("torch.", "")
            out[name] = out.get(name, 0) + 1
        return out

    def describe(self) -> str:
        types = ", ".join(f"{k}×{n}" for k, n in sorted(self.weight_types().items()))
        return f"{self.config.name} from {self.path.name} [{self.format}; {self.stored_bytes / 1e9:.2f} GB; {types}]"


def sniff(path: Path) -> str:
    """'gguf' | 'safetensors' | 'pth' | 'lightx2v' | 'safetensors-dir', from the bytes, not the name."""
    if path.is_dir():
        from .lightx2v_dir import is_lightx2v_dir

        if is_lightx2v_dir(path):
            return "lightx2v"
        if any(path.glob("*.safetensors")):
            return "safetensors-dir"
        raise FormatError("folder holds no model files", path=path,
                          expected="a LightX2V distill_fp8/ or distill_int8/ folder, or .safetensors shards")
    if not path.is_file():
        raise FormatError("file not found", path=path, fix="check the file name in the loader.")
    with open(path, "rb") as f:
        head = f.read(16)
    if head[:4] == b"GGUF":
        return "gguf"
    if head[:4] == b"PK\x03\x04" or head[:1] == b"\x80":
        return "pth"
    if len(head) >= 9 and head[8:9] == b"{":
        return "safetensors"
    raise FormatError(
        "unknown file type",
        path=path,
        expected="a .gguf, .safetensors or .pth Wan2.1 T2V-14B model (or a LightX2V folder)",
        found=describe_head(head),
    )


def _scaled_weights(sd: dict[str, torch.Tensor], meta: dict, path: Path) -> dict[str, torch.Tensor | QuantWeight]:
    """Fold per-layer scales (ComfyUI fp8_scaled, LightX2V single-file) into QuantWeights."""
    layers_meta = {}
    if "_quantization_metadata" in meta:
        import json

        layers_meta = json.loads(meta["_quantization_metadata"]).get("layers", {})
        for layer, conf in layers_meta.items():
            if conf.get("format") not in ("float8_e4m3fn", None):
                raise UnsupportedQuantError(
                    f"layer '{layer}' uses ComfyUI quant format '{conf.get('format')}'",
                    path=path,
                    expected="bf16/fp16, fp8_e4m3fn (scaled), LightX2V FP8/INT8 or GGUF weights",
                    fix="use the fp8_scaled, LightX2V or a GGUF file of Wan2.1 T2V-14B.",
                )
    out: dict[str, torch.Tensor | QuantWeight] = {}
    for k, v in sd.items():
        if k in _BENIGN_KEYS or k.endswith(_BENIGN_SUFFIXES) or k.endswith((".scale_weight", ".weight_scale")):
            continue
        if not k.endswith(".weight") or v.dtype not in (torch.float8_e4m3fn, torch.int8, torch.float8_e5m2):
            out[k] = v
            continue
        if v.dtype == torch.float8_e5m2:
            out[k] = v.to(torch.bfloat16)  # rare; no kernel path, decode once
            continue
        layer = k[: -len(".weight")]
        scale = sd.get(layer + ".weight_scale", sd.get(layer + ".scale_weight"))
        if scale is None:
            if v.dtype == torch.int8:
                raise FormatError(f"int8 weight '{k}' has no scale", path=path)
            scale = torch.ones(())
        scale = scale.float()
        if scale.numel() == 1:
            scale = scale.reshape(1, 1).expand(v.shape[0], 1).contiguous()
        out[k] = QuantWeight(FP8 if v.dtype == torch.float8_e4m3fn else INT8, v, tuple(v.shape), scale.reshape(-1, 1))
    return out


def _read_any(path: Path, kind: str) -> tuple[dict, str]:
    if kind == "gguf":
        from .gguf_file import read_gguf

        sd = read_gguf(path)
        qtypes = {v.type_name() for v in sd.values() if isinstance(v, QuantWeight) and v.kind == GGUF}
        return sd, "gguf " + "/".join(sorted(qtypes) or ["float"])
    if kind == "lightx2v":
        from .lightx2v_dir import read_lightx2v_dir

        sd = read_lightx2v_dir(path)
        kinds = {v.kind for v in sd.values() if isinstance(v, QuantWeight)}
        return sd, "lightx2v " + "/".join(sorted(kinds) or ["bf16"])
    if kind == "pth":
        return _scaled_weights(read_pth(path), {}, path), "pth"
    files = sorted(path.glob("*.safetensors")) if kind == "safetensors-dir" else [path]
    sd: dict = {}
    meta: dict = {}
    for f in files:
        part, m = open_safetensors(f)
        sd.update(part)
        meta.update(m)
    fmt = "safetensors " + "/".join(sorted({str(v.dtype).replace("torch.", "") for v in sd.values() if v.ndim >= 2}))
    return _scaled_weights(sd, meta, path), fmt


def _shapes(sd: dict) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in sd.items()}


def load_dit(path: str | Path) -> LoadedDiT:
    path = Path(path)
    kind = sniff(path)
    raw, fmt = _read_any(path, kind)
    sd = to_canonical(raw)
    cfg = detect_config(_shapes(sd), str(path))
    want = expected_keys(cfg)
    missing = [k for k in want if k not in sd]
    extra = [k for k in sd if k not in set(want)]
    if missing:
        raise FormatError(
            f"{len(missing)} weights are missing",
            path=path,
            expected=f"all {len(want)} tensors of {cfg.name}",
            found=f"missing {', '.join(missing[:5])}{' …' if len(missing) > 5 else ''}",
            fix="the file is incomplete or of another model; download it again.",
        )
    if extra:
        raise FormatError(
            f"{len(extra)} unexpected tensors",
            path=path,
            expected=f"exactly the tensors of {cfg.name}",
            found=f"unknown {', '.join(extra[:5])}{' …' if len(extra) > 5 else ''}",
            fix="this looks like another model or a merged file; use a plain Wan2.1 T2V-14B file.",
        )
    loaded = LoadedDiT(path, fmt, cfg, sd)
    log.info("wan4step: %s", loaded.describe())
    return loaded
