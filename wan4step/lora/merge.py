"""Merge a LoRA into a loaded DiT once, in the file's own encoding, so a step costs what it did.

ComfyUI applies a LoRA to a quantized weight at every use (ComfyUI-GGUF: decode, add the patch,
matmul, for every linear of every step; this pack's MODEL does the same through
`QuantLinear.weight_transforms`, which also takes FP8/INT8 off their W8A8 kernels). Merging at load instead
gives a state dict of the same format as a distilled file: same bytes per block, same kernels.

Per weight, on the merge device (the GPU when there is one), one weight at a time, block by
block (so the extra memory is one decoded weight, and RAM never holds two copies of the model):

- float (bf16/fp16/fp32): w32 + delta, rounded once to the stored dtype. The delta is
  ComfyUI's: `(strength * alpha / rank) * (up @ down)` in float32, or `strength * diff`
  (`comfy/weight_adapter/lora.py`, `comfy/lora.py`), added to the float32 weight and rounded
  to the weight's dtype (`comfy.float.stochastic_rounding` is a plain cast for bf16/fp16/fp32)
  — so on the same device the merged weight equals core's LoRA-patched weight bit for bit.
- FP8 / INT8 (LightX2V rows, ComfyUI fp8_scaled): decoded row-wise, delta added, rounded to
  bf16 and re-quantized per output channel with LightX2V's own rule (`quant/scaled.py`
  `quantize_rowwise`, which reproduces its converter bit for bit): the numbers LightX2V's
  `lora_merger.py` (bf16 output) followed by `converter.py` would give. A per-tensor
  fp8_scaled weight comes back per-channel (finer, same bytes + one fp32 per row).
- GGUF: decoded bit-exactly (`quant/gguf_dequant.py`), delta added, re-encoded as the same
  ggml type (`gguf_torch.encode`, the algorithms of `quant/gguf_encode.py` on the device), or as
  Q8_0 when asked (twice the bytes of Q4_K, half the re-quantization error).

Weights the LoRA does not touch stay as they are (memory-mapped, not copied).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field

import torch

from ..errors import SettingsError
from ..quant.weights import FP8, GGUF, INT8, QuantWeight
from ..wan_config import block_index
from .keys import LoraFile, LoraTarget

log = logging.getLogger("wan4step")

GGUF_TARGETS = ("same", "Q8_0")
ProgressFn = Callable[[int, int, str], None]  # (done, total, what)


@dataclass
class MergeReport:
    lora: str
    strength: float
    device: str
    merged: int = 0
    encodings: dict[str, int] = field(default_factory=dict)  # "bf16 -> bf16": n, "Q4_K -> Q4_K": n
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        enc = ", ".join(f"{k} ×{n}" for k, n in sorted(self.encodings.items()))
        text = (f"merged {self.lora} at strength {self.strength:g} into {self.merged} weights "
                f"({enc}) on {self.device} in {self.seconds:.1f} s")
        return text + "".join(f"; {n}" for n in self.notes)


def default_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def lora_delta(t: LoraTarget, strength: float, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """The float32 difference the LoRA adds to weight `t.key` (ComfyUI's formula, see module doc).

    A full difference on the same weight wins over a low-rank pair, as in ComfyUI's `load_lora`.
    """
    if t.diff is not None:
        return strength * t.diff.to(device=device, dtype=torch.float32).reshape(shape)
    up = t.up.to(device=device, dtype=torch.float32)
    down = t.down.to(device=device, dtype=torch.float32)
    return ((strength * t.scale) * torch.mm(up.flatten(1), down.flatten(1))).reshape(shape)


def _name(w: torch.Tensor | QuantWeight) -> str:
    return w.type_name() if isinstance(w, QuantWeight) else str(w.dtype).replace("torch.", "")


def merge_weight(w: torch.Tensor | QuantWeight, delta: torch.Tensor, gguf_target: str = "same"
                 ) -> torch.Tensor | QuantWeight:
    """`w` + `delta` (float32, on the merge device) in w's own encoding, back on w's device."""
    home = w.device
    dev = delta.device
    if not isinstance(w, QuantWeight):
        return (w.to(device=dev, dtype=torch.float32) + delta).to(w.dtype).to(home)
    if w.kind in (FP8, INT8):
        from ..quant.scaled import dequantize_rowwise, quantize_rowwise

        dense = dequantize_rowwise(w.data.to(dev), w.scale.to(dev), torch.float32).reshape(w.shape) + delta
        q, scale = quantize_rowwise(dense.to(torch.bfloat16).reshape(w.shape[0], -1), w.kind)
        scale = scale.to(w.scale.dtype if w.scale is not None else torch.float32)
        return QuantWeight(w.kind, q.reshape(w.data.shape).to(home), w.shape, scale.to(home))
    if w.kind == GGUF:
        from gguf import GGMLQuantizationType

        from ..quant.gguf_dequant import dequantize
        from .gguf_torch import encode

        qtype = int(w.qtype) if gguf_target == "same" else int(GGMLQuantizationType[gguf_target])
        dense = dequantize(w.data.to(dev), w.qtype, w.shape, torch.float32) + delta
        raw = encode(dense.reshape(-1, w.shape[-1]), qtype)
        return QuantWeight(GGUF, raw.to(home), w.shape, qtype=qtype)
    raise SettingsError(f"cannot merge a LoRA into a {w.kind} weight", expected="float, FP8, INT8 or GGUF weights")


def _groups(keys: list[str]) -> list[tuple[str, list[str]]]:
    """Targets grouped per block (non-block weights first), in model order."""
    by: dict[int, list[str]] = {}
    for k in keys:
        i = block_index(k)
        by.setdefault(-1 if i is None else i, []).append(k)
    return [("non-block weights" if i < 0 else f"block {i}", sorted(by[i])) for i in sorted(by)]


def merge_lora(
    state: MutableMapping[str, torch.Tensor | QuantWeight],
    lora: LoraFile,
    strength: float = 1.0,
    *,
    device: torch.device | str | None = None,
    gguf_target: str = "same",
    progress: ProgressFn | None = None,
) -> MergeReport:
    """Add `lora` (scaled by `strength`) into `state` in place, weight by weight, block by block.

    `state` is a canonical DiT state dict (`formats.load_dit(...).state`); its entries for the
    LoRA's targets are replaced by merged weights of the same encoding (GGUF: `gguf_target`).
    """
    if gguf_target not in GGUF_TARGETS:
        raise SettingsError(f"unknown GGUF re-encoding target {gguf_target!r}", expected=" / ".join(GGUF_TARGETS))
    dev = torch.device(device) if device is not None else default_device()
    name = lora.path.name if lora.path else "LoRA"
    report = MergeReport(name, float(strength), str(dev))
    if strength == 0:
        report.notes.append("strength 0: nothing merged")
        return report
    missing = [k for k in lora.targets if k not in state]
    if missing:
        raise SettingsError(
            f"the model has no weights named {', '.join(missing[:3])}",
            expected="a LoRA for the loaded model", fix="check that the LoRA is for Wan2.1 T2V-14B.",
        )
    t0 = time.perf_counter()
    groups = _groups(list(lora.targets))
    with torch.no_grad():
        for n, (label, keys) in enumerate(groups):
            for key in keys:
                w = state[key]
                shape = tuple(w.shape)
                delta = lora_delta(lora.targets[key], float(strength), shape, dev)
                merged = merge_weight(w, delta, gguf_target)
                enc = f"{_name(w)} -> {_name(merged)}"
                report.encodings[enc] = report.encodings.get(enc, 0) + 1
                state[key] = merged
                report.merged += 1
                del delta, w
            if progress:
                progress(n + 1, len(groups), f"merging {name}: {label}")
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    report.seconds = time.perf_counter() - t0
    mods = sum(k.endswith("modulation") for k in lora.targets)
    if mods:
        report.notes.append(f"{mods} modulation differences (diff_m) applied as LightX2V does; "
                            "ComfyUI's LoraLoaderModelOnly skips them")
    log.info("wan4step: %s", report.summary())
    return report


def merge_into(loaded, lora_path, strength: float = 1.0, *, device=None, gguf_target: str = "same",
               progress: ProgressFn | None = None) -> MergeReport:
    """Read the LoRA at `lora_path` for `loaded`'s architecture and merge it into `loaded.state`.

    `loaded` is a `formats.LoadedDiT`; its notes and format string record the merge.
    """
    from .keys import read_lora

    lora = read_lora(lora_path, loaded.config)
    report = merge_lora(loaded.state, lora, strength, device=device, gguf_target=gguf_target, progress=progress)
    loaded.notes.append(report.summary())
    loaded.format += f" + LoRA {lora.describe()}"
    return report
