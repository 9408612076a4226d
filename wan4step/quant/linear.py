"""One linear layer for every stored encoding.

`QuantLinear` is the pack's only Linear: ComfyUI builds its own `WanModel` with
it (through `custom_operations`, via the adapter in `nodes/comfy_compat/model.py`),
so the module tree, key names and LoRA keys stay ComfyUI's while the weight stays
in the stored encoding (bf16, FP8, INT8, GGUF).

Its one interface to a host is `weight_transforms` / `bias_transforms`: functions
applied to the decoded weight (bias) at every use, e.g. a LoRA that must not be
baked into quantized bytes. While any is set the layer decodes its weight and runs
a plain matmul; without them it runs the encoding's own kernel.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .weights import FP8, GGUF, INT8, QuantWeight


class QuantLinear(torch.nn.Module):
    """y = x W^T + b with W in any stored encoding.

    Parameters: `weight` (the stored data: bf16/fp16/fp32, float8, int8 or
    ggml bytes), optional `weight_scale` ([out, 1], FP8/INT8) and `bias`.
    `qkind`/`qtype`/`logical_shape` say how to decode `weight`.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device=None, dtype=None) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.weight: torch.nn.Parameter | None = None
        self.weight_scale: torch.nn.Parameter | None = None
        self.bias: torch.nn.Parameter | None = None
        self.qkind: str | None = None
        self.qtype: int | None = None
        self.logical_shape: tuple[int, ...] = (out_features, in_features)
        self.weight_transforms: list = []  # fn(decoded weight) -> weight, applied at each use, in order
        self.bias_transforms: list = []
        self.compute_dtype: torch.dtype | None = None

    # -- loading -------------------------------------------------------------
    def assign_weight(self, w: torch.Tensor | QuantWeight, bias: torch.Tensor | None = None) -> None:
        if isinstance(w, QuantWeight):
            self.qkind, self.qtype, self.logical_shape = w.kind, w.qtype, tuple(w.shape)
            self.weight = torch.nn.Parameter(w.data, requires_grad=False)
            self.weight_scale = (
                torch.nn.Parameter(w.scale, requires_grad=False) if w.scale is not None else None
            )
        else:
            self.qkind, self.qtype, self.logical_shape = None, None, tuple(w.shape)
            self.weight = torch.nn.Parameter(w, requires_grad=False)
            self.weight_scale = None
        self.bias = torch.nn.Parameter(bias, requires_grad=False) if bias is not None else None

    def stored_weight(self) -> torch.Tensor | QuantWeight:
        if self.qkind is None:
            return self.weight
        return QuantWeight(self.qkind, self.weight, self.logical_shape, self.weight_scale, self.qtype)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
        w = state_dict.get(prefix + "weight")
        if w is None:
            missing_keys.append(prefix + "weight")
            return
        scale = state_dict.get(prefix + "weight_scale")
        if scale is not None and not isinstance(w, QuantWeight):
            kind = FP8 if w.dtype == torch.float8_e4m3fn else INT8
            w = QuantWeight(kind, w, tuple(w.shape), scale)
        self.assign_weight(w, state_dict.get(prefix + "bias"))

    def extra_repr(self) -> str:
        enc = self.qkind or (str(self.weight.dtype) if self.weight is not None else "empty")
        if self.qkind == GGUF:
            enc = QuantWeight(GGUF, self.weight, self.logical_shape, None, self.qtype).type_name()
        return f"in_features={self.in_features}, out_features={self.out_features}, weight={enc}"

    # -- compute -------------------------------------------------------------
    def decoded_weight(self, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """The stored weight decoded to `dtype` on `device`, without `weight_transforms`."""
        w = self.stored_weight().to(device, non_blocking=True) if self.weight.device != device else self.stored_weight()
        return w.dequantize(dtype) if isinstance(w, QuantWeight) else w.to(dtype)

    def dequantized_weight(self, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """The weight this layer computes with: decoded, then every `weight_transforms` entry applied."""
        w = self.decoded_weight(dtype, device)
        for f in self.weight_transforms:
            w = f(w)
        return w

    def _bias(self, dtype: torch.dtype, device: torch.device) -> torch.Tensor | None:
        if self.bias is None:
            return None
        b = self.bias.to(device=device, dtype=dtype, non_blocking=True)
        for f in self.bias_transforms:
            b = f(b)
        return b

    def w8a8_kind(self, x: torch.Tensor) -> str | None:
        """FP8/INT8 when this layer would quantize `x` per token itself, so a caller may hand it
        codes made once for several layers (`forward_quantized`) with the same result."""
        if (
            self.qkind in (FP8, INT8)
            and not self.weight_transforms
            and self.weight is not None
            and self.weight.device == x.device
            and (self.compute_dtype is None or self.compute_dtype == x.dtype)
        ):
            return self.qkind
        return None

    def forward_quantized(self, xq: torch.Tensor, sa: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """forward(x) from x's per-token codes `xq` [M, in] and scales `sa` [M, 1]; `like` is x."""
        from .scaled import scaled_matmul

        y = scaled_matmul(xq, sa, self.weight, self.weight_scale, self._bias(like.dtype, xq.device), self.qkind, like.dtype)
        return y.view(*like.shape[:-1], y.shape[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = self.compute_dtype or x.dtype
        if x.dtype != dtype:
            x = x.to(dtype)
        device = x.device
        if self.qkind in (FP8, INT8) and not self.weight_transforms and self.weight.device == device:
            from .scaled import scaled_linear

            return scaled_linear(x, self.weight, self.weight_scale, self._bias(dtype, device), self.qkind)
        if self.qkind == GGUF and not self.weight_transforms and self.weight.device == device:
            from .gguf_matmul import gguf_linear

            return gguf_linear(x, self.weight, self.qtype, self.logical_shape, self._bias(dtype, device))
        return F.linear(x, self.dequantized_weight(dtype, device), self._bias(dtype, device))
