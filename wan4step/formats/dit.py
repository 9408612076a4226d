"""Load a Wan2.1 T2V DiT (optionally with its VACE addon) from any supported file or folder.

Returns the canonical state dict (keys as in `wan_config.expected_keys`) whose
quantized tensors stay `QuantWeight`s in their stored encoding.

Modes (`MODES`):
- "t2v": the plain text-to-video model. In a VACE-merged file the VACE tensors
  are skipped inside the readers, before any tensor object exists for them: no
  bytes read, no RAM, no decode. Their stored size is reported in
  `LoadedDiT.skipped_bytes`.
- "vace": the T2V tensors plus the VACE addon, for ComfyUI's VACE model.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import FormatError, WrongModelError, describe_head
from ..quant.weights import GGUF, QuantWeight, tensor_nbytes
from ..wan_config import (
    VaceConfig,
    WanConfig,
    detect_config,
    detect_vace,
    expected_shapes,
    is_vace_key,
    missing_blocks,
    missing_blocks_error,
)
from .keymaps import to_canonical
from .pth_file import read_pth
from .safetensors_file import open_safetensors
from .scaled import check_comfy_metadata, fold_scales

log = logging.getLogger("wan4step")

MODES = ("t2v", "vace")


@dataclass
class LoadedDiT:
    path: Path
    format: str
    config: WanConfig
    state: dict[str, torch.Tensor | QuantWeight]
    notes: list[str] = field(default_factory=list)
    mode: str = "t2v"
    vace: VaceConfig | None = None  # the VACE addon in `state` (mode "vace")
    skipped_bytes: int = 0  # stored bytes of the file's tensors that were not loaded (VACE in mode "t2v")

    @property
    def stored_bytes(self) -> int:
        """Bytes of the tensors actually loaded (what RAM, the bus and VRAM carry)."""
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
        what = self.config.name + (f" + VACE ({self.vace.num_layers} blocks)" if self.vace else "")
        skipped = f"; VACE addon not loaded ({self.skipped_bytes / 1e9:.2f} GB)" if self.skipped_bytes else ""
        return f"{what} from {self.path.name} [{self.format}; {self.stored_bytes / 1e9:.2f} GB; {types}{skipped}]"


def sniff(path: Path) -> str:
    """'gguf' | 'safetensors' | 'pth' | 'lightx2v' | 'safetensors-dir', from the bytes, not the name."""
    if path.is_dir():
        from .lightx2v_dir import is_lightx2v_dir

        if is_lightx2v_dir(path):
            return "lightx2v"
        if any(path.glob("*.safetensors")):
            return "safetensors-dir"
        raise FormatError("folder holds no model files", path=path,
                          expected="a LightX2V distill_fp8/ or distill_int8/ (or *_split/) folder, or .safetensors shards")
    if not path.is_file():
        raise FormatError("file not found", path=path, fix="check the file name in the loader.")
    if path.stat().st_size == 0:
        raise FormatError("the file is empty (0 bytes)", path=path,
                          fix="the download did not complete; delete the file and download it again.")
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


def _read_any(path: Path, kind: str, keep, skipped: dict[str, int]) -> tuple[dict, str]:
    if kind == "gguf":
        from .gguf_file import read_gguf

        sd = read_gguf(path, keep=keep, skipped=skipped)
        qtypes = {v.type_name() for v in sd.values() if isinstance(v, QuantWeight) and v.kind == GGUF}
        return sd, "gguf " + "/".join(sorted(qtypes) or ["float"])
    if kind == "lightx2v":
        from .lightx2v_dir import read_lightx2v_dir

        sd = read_lightx2v_dir(path, keep=keep, skipped=skipped)
        kinds = {v.kind for v in sd.values() if isinstance(v, QuantWeight)}
        return sd, "lightx2v " + "/".join(sorted(kinds) or ["bf16"])
    if kind == "pth":
        raw = read_pth(path)
        sd = {}
        for k, v in raw.items():
            if keep is None or keep(k):
                sd[k] = v
            else:
                skipped[k] = tensor_nbytes(v)
        return fold_scales(sd, path), "pth"
    files = sorted(path.glob("*.safetensors")) if kind == "safetensors-dir" else [path]
    sd: dict = {}
    meta: dict = {}
    for f in files:
        part, m = open_safetensors(f, keep=keep, skipped=skipped)
        sd.update(part)
        meta.update(m)
    check_comfy_metadata(meta, path)
    fmt = "safetensors " + "/".join(sorted({str(v.dtype).replace("torch.", "") for v in sd.values() if v.ndim >= 2}))
    return fold_scales(sd, path), fmt


def _shapes(sd: dict) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in sd.items()}


def _check_blocks(sd: dict, cfg: WanConfig, vace: VaceConfig | None, path: Path) -> None:
    """Whole missing blocks, named as blocks (a gap the highest index cannot reveal)."""
    for prefix, n in (("blocks.", cfg.num_layers), ("vace_blocks.", vace.num_layers if vace else 0)):
        gone = missing_blocks(sd, n, prefix)
        if gone:
            raise missing_blocks_error(gone, n, prefix, path)


def _check_keys(sd: dict, want: dict[str, tuple[int, ...]], cfg: WanConfig, path: Path) -> None:
    missing = [k for k in want if k not in sd]
    extra = [k for k in sd if k not in want]
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
    wrong = [(k, tuple(v.shape)) for k, v in sd.items() if tuple(v.shape) != want[k]]
    if wrong:
        k, got = wrong[0]
        raise FormatError(
            f"tensor '{k}' has the wrong shape{f' (and {len(wrong) - 1} more)' if len(wrong) > 1 else ''}",
            path=path,
            expected=f"{list(want[k])} for {cfg.name} (dim {cfg.dim}, ffn {cfg.ffn_dim})",
            found=str(list(got)),
            fix="the file is damaged or mixes two models; download it again.",
        )


def load_dit(path: str | Path, mode: str = "t2v") -> LoadedDiT:
    """Read `path` (file or folder, format from its content) in `mode` ("t2v" or "vace").

    Raises FormatError (unreadable, incomplete, missing blocks, inconsistent shapes),
    WrongModelError (another model; mode "vace" on a file without VACE tensors),
    UnsupportedQuantError, OutOfMemoryError (the OS refused to map the file).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    path = Path(path)
    kind = sniff(path)
    skipped: dict[str, int] = {}
    keep = None if mode == "vace" else (lambda name: not is_vace_key(name))
    raw, fmt = _read_any(path, kind, keep, skipped)
    sd = to_canonical(raw)
    shapes = _shapes(sd)
    cfg = detect_config(shapes, str(path))
    vace = detect_vace(shapes, cfg, str(path))
    if mode == "vace" and vace is None:
        raise WrongModelError(
            "mode 'vace' needs a VACE-merged model, and this file has no VACE tensors",
            path=path,
            expected="vace_patch_embedding.* and vace_blocks.N.* tensors (e.g. QuantStack's "
                     "Wan2.1_T2V_14B_LightX2V_StepCfgDistill_VACE-<TIER>.gguf)",
            found=f"a plain {cfg.name}",
            fix="set the loader's mode to 't2v', or pick a VACE-merged file.",
        )
    _check_blocks(sd, cfg, vace, path)
    _check_keys(sd, expected_shapes(cfg, vace), cfg, path)
    loaded = LoadedDiT(path, fmt, cfg, sd, mode=mode, vace=vace, skipped_bytes=sum(skipped.values()))
    if skipped:
        loaded.notes.append(f"{len(skipped)} VACE tensors ({loaded.skipped_bytes / 1e9:.2f} GB) not loaded in mode t2v")
    log.info("wan4step: %s", loaded.describe())
    return loaded
