"""The UMT5-XXL text encoder: readers for four layouts, a plain-torch encoder, the tokenizer.

`load_text_encoder(path)` is the one-call entry (demo, scripts, tests); the
ComfyUI node builds a `comfy.sd.CLIP` around the same `UMT5Encoder`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from .formats import LAYOUTS, UMT5File, from_canonical, read_umt5, to_canonical
from .model import UMT5_XXL, WAN_TEXT_LEN, UMT5Config, UMT5Encoder, canonical_shapes, config_from_shapes
from .tokenizer import UMT5Tokenizer, clean_text, resolve_tokenizer

__all__ = [
    "LAYOUTS", "UMT5_XXL", "WAN_TEXT_LEN", "TextEncoder", "UMT5Config", "UMT5Encoder", "UMT5File", "UMT5Tokenizer",
    "build_encoder", "canonical_shapes", "clean_text", "config_from_shapes", "from_canonical", "load_text_encoder",
    "file_tokenizer", "read_umt5", "resolve_tokenizer", "to_canonical",
]


def build_encoder(f: UMT5File) -> UMT5Encoder:
    """An encoder holding the file's tensors as they are (no copy, no dtype change)."""
    model = UMT5Encoder(f.config, activation_quant=f.activation_quant)
    model.load_weights(f.state, path=str(f.path))
    return model.eval()


def file_tokenizer(f: UMT5File, folder: str | Path | None = None) -> UMT5Tokenizer:
    return resolve_tokenizer(f.path, folder=folder, embedded=f.spiece_model, gguf_meta=f.gguf_tokenizer,
                             vocab_size=f.config.vocab_size)


@dataclass
class TextEncoder:
    model: UMT5Encoder
    tokenizer: UMT5Tokenizer
    file: UMT5File

    @torch.no_grad()
    def encode(self, prompts: str | Sequence[str], device: torch.device | str = "cpu",
               dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        """(context [B, 512, d_model] with padding zeroed, mask [B, 512]) on `device`."""
        ids, mask = self.tokenizer(prompts)
        ids, mask = ids.to(device), mask.to(device)
        if next(self.model.parameters()).device != torch.device(device):
            self.model.to(device)
        return self.model.encode(ids, mask, dtype=dtype), mask


def load_text_encoder(path: str | Path, tokenizer_dir: str | Path | None = None) -> TextEncoder:
    f = read_umt5(path)
    tok = file_tokenizer(f, tokenizer_dir)
    return TextEncoder(build_encoder(f), tok, f)
