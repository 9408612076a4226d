"""A weight kept in its stored encoding until the moment it is used.

Loaders return `QuantWeight` for every quantized tensor so that RAM, the
PCIe bus and the block streamer only ever carry the stored bytes (Q4_K is a
quarter of bf16); `dequantize` or the fused matmuls turn it into numbers on the
device that computes with it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

# kinds
FP8 = "fp8"  # float8_e4m3fn weight, per-output-channel scale (LightX2V W8A8)
INT8 = "int8"  # int8 weight, per-output-channel scale (LightX2V W8A8)
GGUF = "gguf"  # ggml block encoding, raw bytes (QuantStack / city96)


@dataclass
class QuantWeight:
    """Stored encoding + what is needed to decode it.

    data:  fp8 -> float8_e4m3fn [out, in]; int8 -> int8 [out, in];
           gguf -> uint8 [rows, bytes_per_row] (rows = prod(shape[:-1])).
    shape: the logical (torch) shape of the decoded weight, e.g. [out, in].
    scale: fp8/int8 only: [out, 1], multiply the row by it to decode.
    qtype: gguf only: a `gguf.GGMLQuantizationType` value.
    """

    kind: str
    data: torch.Tensor
    shape: tuple[int, ...]
    scale: torch.Tensor | None = None
    qtype: int | None = None

    @property
    def nbytes(self) -> int:
        n = self.data.numel() * self.data.element_size()
        if self.scale is not None:
            n += self.scale.numel() * self.scale.element_size()
        return n

    @property
    def device(self) -> torch.device:
        return self.data.device

    def to(self, device: torch.device | str, non_blocking: bool = False) -> QuantWeight:
        scale = self.scale.to(device, non_blocking=non_blocking) if self.scale is not None else None
        return replace(self, data=self.data.to(device, non_blocking=non_blocking), scale=scale)

    def type_name(self) -> str:
        if self.kind == GGUF:
            import gguf

            return gguf.GGMLQuantizationType(self.qtype).name
        return self.kind.upper()

    def dequantize(self, dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
        """Decode on the device the data lives on."""
        if self.kind == GGUF:
            from .gguf_matmul import dequantize_on_device  # Triton decoders on CUDA, torch elsewhere

            return dequantize_on_device(self.data, self.qtype, self.shape, dtype)
        from .scaled import dequantize_rowwise

        return dequantize_rowwise(self.data, self.scale, dtype).reshape(self.shape)


def tensor_nbytes(t: torch.Tensor | QuantWeight) -> int:
    if isinstance(t, QuantWeight):
        return t.nbytes
    return t.numel() * t.element_size()
