"""Our GGUF files through city96's ComfyUI-GGUF loader: the same tensors, shapes and numbers as ours.

ComfyUI-GGUF is what most Wan GGUF users load with, so a file we write must read
the same there (it recognises the arch, keeps the 5-D patch embedding and the
3-D modulations), and our reader must agree with it on every tensor.
"""

from __future__ import annotations

import importlib

import pytest
import torch

from wan4step.formats.gguf_file import read_gguf, write_gguf
from wan4step.quant.weights import QuantWeight
from wan4step.tiny.dit import tiny_dit_state_dict


@pytest.fixture(scope="module")
def comfy_gguf(comfyui_gguf):
    name = comfyui_gguf.__name__
    return importlib.import_module(name + ".loader"), importlib.import_module(name + ".dequant")


@pytest.mark.integration
@pytest.mark.parametrize("tier", ["Q4_K_M", "Q3_K_S", "Q5_0", "Q8_0", "BF16"])
def test_comfyui_gguf_reads_our_files_like_we_do(comfy_gguf, tmp_path, tier):
    loader, dequant = comfy_gguf
    path = write_gguf(tmp_path / f"tiny-{tier}.gguf", tiny_dit_state_dict(), tier)
    theirs, arch = loader.gguf_sd_loader(str(path), return_arch=True)
    ours = read_gguf(path)
    assert arch == "wan"
    assert set(theirs) == set(ours)
    for k, t in theirs.items():
        w = dequant.dequantize_tensor(t, dtype=torch.float32, dequant_dtype=torch.float32)
        o = ours[k].dequantize(torch.float32) if isinstance(ours[k], QuantWeight) else ours[k].float()
        assert tuple(w.shape) == tuple(o.shape), k
        assert torch.equal(w, o), k
