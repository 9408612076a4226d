"""Each real published DiT layout through the pack and through ComfyUI's own loaders, same file, same output.

Fixtures: `wan4step_dev.fixtures.layouts` (LightX2V converter outputs) and
`formats.gguf_file.write_gguf` (city96 GGUF). Oracles: core's UNETLoader where core
reads the layout (bf16, and the `--comfyui_mode` scaled fp8 with its per-tensor
scale), ComfyUI-GGUF's UnetLoaderGGUF for GGUF; for LightX2V's own fp8/int8
conventions (which core does not read) the float model, within the format's error,
and the single file and its `*_split/` folder against each other, bit for bit.
"""

from __future__ import annotations

import pytest
import safetensors.torch
import torch

from wan4step.formats import load_dit
from wan4step.formats.gguf_file import FIX_5D_FILE, write_gguf
from wan4step.quant.weights import QuantWeight
from wan4step.tiny.dit import tiny_dit_state_dict
from wan4step_dev.fixtures.layouts import LIGHTX2V_T2V_FILES, write_lightx2v_single, write_lightx2v_split

X_SHAPE = (1, 16, 3, 8, 12)


@pytest.fixture(scope="module")
def inputs():
    g = torch.Generator().manual_seed(11)
    return torch.randn(X_SHAPE, generator=g), torch.tensor([750.0]), torch.randn(1, 24, 4096, generator=g) * 0.5


@pytest.fixture(scope="module")
def folder(comfy, tmp_path_factory):
    d = tmp_path_factory.mktemp("real_layouts")
    sd = tiny_dit_state_dict()
    for kind, name in LIGHTX2V_T2V_FILES.items():
        write_lightx2v_single(d / name, sd, kind)
        write_lightx2v_split(d / name.replace(".safetensors", "_split"), sd, kind)
    safetensors.torch.save_file(sd, str(d / "f32.safetensors"))
    write_gguf(d / "wan2.1-t2v-tiny-Q4_K_M.gguf", sd, "Q4_K_M")
    (d / "raw").mkdir()
    write_gguf(d / "raw" / "wan2.1-t2v-tiny-Q8_0.gguf", sd, "Q8_0", five_d="sidecar")
    comfy.folder_paths.add_model_folder_path("diffusion_models", str(d))
    comfy.folder_paths.add_model_folder_path("unet", str(d))
    return d


def _forward(mp, x, t, ctx):
    opts = mp.model_options.get("transformer_options", {})
    with torch.no_grad():
        return mp.model.diffusion_model(x.to(torch.float32), t, ctx, transformer_options=dict(opts)).float()


def _ours(pack, path, dtype=torch.float32):
    return pack.nodes.comfy_compat.model.build_model(load_dit(path), dtype)


def rel(a, b):
    return ((a - b).norm() / b.norm()).item()


def _weight_only(mp):
    """Make every 8-bit linear decode its weight and multiply in float (core's scaled-fp8 math:
    `full_precision_matrix_mult`), instead of the pack's W8A8 (activations quantized per token)."""
    from wan4step.quant.linear import QuantLinear

    for m in mp.model.diffusion_model.modules():
        if isinstance(m, QuantLinear) and m.qkind is not None:
            m.weight_function = [lambda w: w]
    return mp


@pytest.mark.parametrize("kind", ["bf16", "fp8_comfyui"])
def test_core_unet_loader_and_the_pack_agree(comfy, pack, folder, inputs, kind):
    import nodes as comfy_nodes
    from wan4step.quant.linear import QuantLinear

    name = LIGHTX2V_T2V_FILES[kind]
    core = comfy_nodes.UNETLoader().load_unet(name, "default")[0]
    dtype = core.model.manual_cast_dtype or core.model.get_dtype()
    assert dtype == torch.float32  # --cpu: both compute in float32, so only the decode could differ
    ours = _ours(pack, folder / name, dtype)
    x, t, ctx = inputs
    want = _forward(core, x, t, ctx)
    if kind == "fp8_comfyui":
        # W8A8-ready: codes + per-row scales (the one per-tensor value repeated) in the pack's linear,
        # decoding to exactly core's weight
        core_lin = dict(core.model.diffusion_model.named_modules())
        n = 0
        for name_, m in ours.model.diffusion_model.named_modules():
            if isinstance(m, QuantLinear) and m.qkind is not None:
                assert m.qkind == "fp8" and m.weight.dtype == torch.float8_e4m3fn and m.weight_scale.shape[1] == 1
                theirs = core_lin[name_].weight
                theirs = theirs.dequantize() if hasattr(theirs, "dequantize") else theirs
                assert torch.equal(m.stored_weight().dequantize(torch.float32), theirs.float()), name_
                n += 1
        assert n == 20
        w8a8 = _forward(ours, x, t, ctx)
        assert 0 < rel(w8a8, want) < 0.03  # the per-token activation quantization, as vs the float model
        ours = _weight_only(ours)
    got = _forward(ours, x, t, ctx)
    assert rel(got, want) < 1e-5, rel(got, want)


# errors vs the float32 model on these tiny weights are ~0.015 (fp8) / 0.004 (int8), see test_dit_oracle
@pytest.mark.parametrize("kind,tol", [("fp8", 0.03), ("int8", 0.01), ("fp8_comfyui", 0.03), ("bf16", 0.01)])
def test_lightx2v_files_and_split_folders(comfy, pack, folder, inputs, kind, tol):
    name = LIGHTX2V_T2V_FILES[kind]
    x, t, ctx = inputs
    ref = _forward(_ours(pack, folder / "f32.safetensors"), x, t, ctx)
    single = _ours(pack, folder / name)
    split = _ours(pack, folder / name.replace(".safetensors", "_split"))
    if kind != "bf16":
        q = single.model.diffusion_model.blocks[0].ffn[0]
        assert q.qkind == kind.split("_")[0] and q.weight_scale.shape == (512, 1)
    got = _forward(single, x, t, ctx)
    assert 0 < rel(got, ref) < tol, (kind, rel(got, ref))
    assert torch.equal(_forward(split, x, t, ctx), got)


def test_comfyui_gguf_and_the_pack_agree_on_a_city96_gguf(comfy, pack, comfyui_gguf, folder, inputs):
    name = "wan2.1-t2v-tiny-Q4_K_M.gguf"
    theirs = comfyui_gguf.nodes.UnetLoaderGGUF().load_unet(name)[0]
    ours = _ours(pack, folder / name)
    x, t, ctx = inputs
    want = _forward(theirs, x, t, ctx)
    got = _forward(ours, x, t, ctx)
    assert rel(got, want) < 2e-3, rel(got, want)  # same bytes; ComfyUI-GGUF decodes in fp16 arithmetic


def test_gguf_without_its_5d_tensor_reads_the_convert_fix_file(comfy, pack, folder, inputs):
    path = folder / "raw" / "wan2.1-t2v-tiny-Q8_0.gguf"
    import gguf

    assert "patch_embedding.weight" not in {t.name for t in gguf.GGUFReader(path).tensors}
    loaded = load_dit(path)
    pe = loaded.state["patch_embedding.weight"]
    assert not isinstance(pe, QuantWeight) and pe.shape == (256, 16, 1, 2, 2)
    x, t, ctx = inputs
    inline = folder / "inline-Q8_0.gguf"
    write_gguf(inline, tiny_dit_state_dict(), "Q8_0")
    assert torch.equal(_forward(_ours(pack, path), x, t, ctx), _forward(_ours(pack, inline), x, t, ctx))
    (folder / "raw" / FIX_5D_FILE).rename(folder / "raw" / "elsewhere.safetensors")
    try:
        with pytest.raises(Exception, match=f"no patch_embedding.weight.*{FIX_5D_FILE}") as e:
            load_dit(path)
        assert "fix_5d_tensors.py" not in str(e.value)
    finally:
        (folder / "raw" / "elsewhere.safetensors").rename(folder / "raw" / FIX_5D_FILE)
