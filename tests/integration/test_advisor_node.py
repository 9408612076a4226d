"""Wan4Step VRAM Advisor and Wan4Step Download inside a real ComfyUI.

In process (`comfy`/`pack`): the nodes run and return values that fit the inputs they wire
into; the download node fetches from a fake hub on 127.0.0.1 into ComfyUI's folders.
Headless server (`comfy_server`): both nodes are registered with tooltips, the advisor
runs through /prompt and its web route answers without running a graph.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from wan4step import catalog

GiB = 1024**3
HERE = Path(__file__).resolve().parent


def _fake_hub_module():
    # ComfyUI ships its own top-level `tests` package, so load the fake hub by path.
    spec = importlib.util.spec_from_file_location("wan4step_fake_hub", HERE.parent / "unit" / "test_hub.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _advise(pack, **kw):
    inputs = dict(width=832, height=480, frames=81, priority="speed", gpu="auto (detected)", vram_gb=0.0,
                  free_vram_gb=0.0, compute_capability="auto", ram_gb=0.0, disk_gb=0.0, attention="auto")
    inputs.update(kw)
    return pack.nodes.advisor.Wan4StepVRAMAdvisor.execute(**inputs)


def _schema_input(node_cls, name):
    for inp in node_cls.define_schema().inputs:
        if inp.id == name:
            return inp
    return None


def test_advisor_node_outputs_wire_into_the_pack_nodes(comfy, pack):
    out = _advise(pack, gpu="RTX 3090", ram_gb=64.0)
    report, model_name, te_name, te_device, vae_name, k, prefetch, tiled, attention, plan = out.result
    assert "RTX 3090" in report and "INT8" in report and out.ui["text"] == [report]
    assert model_name == catalog.WEIGHTS["lightx2v_int8"].model_name
    assert te_name == catalog.TEXT_ENCODERS_TABLE["umt5_fp8"].name and vae_name == "wan_2.1_vae.safetensors"
    assert te_device in ("gpu", "gpu_then_free", "cpu") and tiled in ("on", "off") and attention == "8bit"  # what auto runs on sm86
    assert isinstance(k, int) and 0 <= k <= 40 and isinstance(prefetch, int)
    assert plan == {"weights": "lightx2v_int8", "text_encoder": "umt5_fp8", "vae": "wan_2.1_vae", "fits": True}
    # the values are legal inputs of the nodes they wire into (where those nodes exist yet)
    swap = getattr(getattr(pack.nodes, "block_swap", None), "Wan4StepBlockSwap", None)
    if swap is not None:
        inp = _schema_input(swap, "blocks_to_swap")
        assert inp is not None and inp.min <= k <= inp.max
    for mod in vars(pack.nodes).values():
        node = getattr(mod, "Wan4StepUMT5Loader", None)
        if node is not None and _schema_input(node, "device") is not None:
            assert te_device in _schema_input(node, "device").options
        loader = getattr(mod, "Wan4StepModelLoader", None)
        if loader is not None and _schema_input(loader, "attention") is not None:
            assert attention in _schema_input(loader, "attention").options
        vae = getattr(mod, "Wan4StepVAELoader", None)
        if vae is not None and _schema_input(vae, "tiling") is not None:
            assert tiled in _schema_input(vae, "tiling").options


def test_advisor_node_on_this_machine_and_with_overrides(comfy, pack):
    detected = _advise(pack).result[0]  # the test machine: CPU-only ComfyUI (--cpu) or a real GPU
    assert detected.strip() and ("No CUDA GPU found" in detected or "GiB" in detected)
    small = _advise(pack, gpu="RTX 4060 8GB", ram_gb=16.0, width=832, height=480, frames=81).result
    assert small[5] >= 30 and small[3] != "gpu"
    too_big = _advise(pack, gpu="RTX 4060 8GB", ram_gb=32.0, width=1280, height=720, frames=81).result
    assert "does not fit" in too_big[0] and too_big[9]["fits"] is False


def test_download_node_fetches_the_advisors_files_into_comfyui_folders(comfy, pack, tmp_path, monkeypatch):
    import folder_paths
    from huggingface_hub import constants

    fh = _fake_hub_module()
    hub = fh.FakeHub()
    try:
        hub.add(catalog.GGUF_REPO, {catalog.gguf_file_name("Q5_K_M"): fh._data("q5", 4096)})
        hub.add(catalog.COMFY_REPO, {
            "split_files/text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors": fh._data("te", 2048),
            "split_files/vae/wan_2.1_vae.safetensors": fh._data("vae", 1024),
        })
        monkeypatch.setattr(constants, "ENDPOINT", hub.url)
        for key in ("diffusion_models", "text_encoders", "vae"):
            d = tmp_path / key
            d.mkdir()
            exts = set(folder_paths.folder_names_and_paths[key][1]) | {".gguf"}  # as the GGUF loaders register
            monkeypatch.setitem(folder_paths.folder_names_and_paths, key, ([str(d)], exts))
        plan = {"weights": "gguf_Q5_K_M", "text_encoder": "umt5_fp8", "vae": "wan_2.1_vae", "fits": True}
        node = pack.nodes.download.Wan4StepDownload
        out = node.execute(weights="none", text_encoder="none", vae="none", plan=plan)
        model_name, te_name, vae_name, report, lora_name = out.result
        assert model_name == catalog.gguf_file_name("Q5_K_M") and "3 downloaded" in report and lora_name == "none"
        assert (tmp_path / "diffusion_models" / model_name).read_bytes() == fh._data("q5", 4096)
        assert model_name in folder_paths.get_filename_list("diffusion_models")
        assert te_name in folder_paths.get_filename_list("text_encoders")
        assert vae_name in folder_paths.get_filename_list("vae")
        hub.log.clear()
        again = node.execute(weights="gguf_Q5_K_M", text_encoder="umt5_fp8", vae="wan_2.1_vae").result[3]
        assert "0 downloaded" in again and hub.gets() == []
        # a LightX2V block folder: its model_name is what the pack's model loader lists
        blocks = {f"distill_int8/block_{i}.safetensors": fh._data(f"i{i}", 64) for i in range(40)}
        hub.add(catalog.LIGHTX2V_REPO, blocks | {"distill_int8/non_block.safetensors": fh._data("nb", 64)})
        folder = node.execute(weights="lightx2v_int8", text_encoder="none", vae="none").result[0]
        listed = pack.nodes.model_files.list_models(("diffusion_models", "unet"), folder_marker="non_block.safetensors")
        assert folder == catalog.WEIGHTS["lightx2v_int8"].model_name and folder in listed and model_name in listed
    finally:
        hub.close()


def test_download_node_base_plus_lora_and_the_diffusion_models_folder(comfy, pack, tmp_path, monkeypatch):
    """A base + distill LoRA choice fetches both files (the LoRA into `loras`, named on the lora_name
    output); new DiT files go to models/diffusion_models, not ComfyUI's first (legacy) path models/unet,
    and a file already in models/unet is not fetched again."""
    import folder_paths
    from huggingface_hub import constants

    fh = _fake_hub_module()
    hub = fh.FakeHub()
    try:
        w = catalog.WEIGHTS["lora_gguf_Q4_K_M"]
        base, lora = w.files
        hub.add(base.repo_id, {base.pattern: fh._data("base", 2048)})
        hub.add(lora.repo_id, {lora.pattern: fh._data("lora", 512)})
        fp8 = catalog.WEIGHTS["lora_fp8"].files[0]
        hub.add(fp8.repo_id, {fp8.pattern: fh._data("fp8", 1024)})
        monkeypatch.setattr(constants, "ENDPOINT", hub.url)
        unet, dm, loras = tmp_path / "unet", tmp_path / "diffusion_models", tmp_path / "loras"
        for d in (unet, dm, loras):
            d.mkdir()
        exts = set(folder_paths.folder_names_and_paths["diffusion_models"][1]) | {".gguf"}
        monkeypatch.setitem(folder_paths.folder_names_and_paths, "diffusion_models", ([str(unet), str(dm)], exts))
        monkeypatch.setitem(folder_paths.folder_names_and_paths, "loras",
                            ([str(loras)], folder_paths.folder_names_and_paths["loras"][1]))
        node = pack.nodes.download.Wan4StepDownload
        model_name, _, _, report, lora_name = node.execute(weights="lora_gguf_Q4_K_M", text_encoder="none",
                                                           vae="none").result
        assert model_name == "wan2.1-t2v-14b-Q4_K_M.gguf" and lora_name == lora.dest and "2 downloaded" in report
        assert (dm / model_name).is_file() and not (unet / model_name).exists()
        assert (loras / lora_name).read_bytes() == fh._data("lora", 512)
        assert model_name in folder_paths.get_filename_list("diffusion_models")
        # a file that an earlier version put into models/unet is found there
        (unet / fp8.dest).write_bytes(fh._data("fp8", 1024))
        hub.log.clear()
        again = node.execute(weights="lora_fp8", text_encoder="none", vae="none").result
        assert "0 downloaded" in again[3] and not (dm / fp8.dest).exists()
        assert not [g for g in hub.gets() if fp8.pattern in g[0]]
    finally:
        hub.close()


def test_download_node_reports_a_gated_repo(comfy, pack, tmp_path, monkeypatch):
    import folder_paths
    from huggingface_hub import constants

    from wan4step.errors import DownloadError

    fh = _fake_hub_module()
    hub = fh.FakeHub()
    try:
        hub.add(catalog.COMFY_REPO, {"split_files/vae/wan_2.1_vae.safetensors": b"v" * 10}, gated=True)
        monkeypatch.setattr(constants, "ENDPOINT", hub.url)
        exts = folder_paths.folder_names_and_paths["vae"][1]
        monkeypatch.setitem(folder_paths.folder_names_and_paths, "vae", ([str(tmp_path)], exts))
        with pytest.raises(DownloadError, match="gated"):
            pack.nodes.download.Wan4StepDownload.execute(weights="none", text_encoder="none", vae="wan_2.1_vae")
    finally:
        hub.close()


# ---------------------------------------------------------------------------------------
# through the headless server
# ---------------------------------------------------------------------------------------
def test_nodes_are_registered_with_tooltips(comfy_server):
    info = comfy_server.object_info()
    for node_id, name in [("Wan4StepVRAMAdvisor", "Wan4Step VRAM Advisor"), ("Wan4StepDownload", "Wan4Step Download")]:
        node = info[node_id]
        assert node["display_name"] == name and node["category"] == "Wan4Step"
        for group in ("required", "optional"):
            for inp, spec in node["input"].get(group, {}).items():
                assert spec[1].get("tooltip"), (node_id, inp)
        assert all(node["output_tooltips"]), node_id
    adv = info["Wan4StepVRAMAdvisor"]
    assert adv["output"][:9] == ["STRING", "COMBO", "COMBO", "COMBO", "COMBO", "INT", "INT", "COMBO", "COMBO"]
    assert adv["output"][9] == info["Wan4StepDownload"]["input"]["optional"]["plan"][0] == "WAN4STEP_PLAN"


def test_advisor_runs_through_prompt_and_its_route(comfy_server):
    prompt = {"1": {"class_type": "Wan4StepVRAMAdvisor", "inputs": {
        "width": 832, "height": 480, "frames": 81, "priority": "speed", "gpu": "RTX 4090", "vram_gb": 0.0,
        "free_vram_gb": 0.0, "compute_capability": "auto", "ram_gb": 64.0, "disk_gb": 0.0, "attention": "auto"}}}
    hist = comfy_server.run(prompt, timeout=60)
    text = hist["outputs"]["1"]["text"][0]
    assert text.startswith("RTX 4090") and "LightX2V FP8" in text
    answer = comfy_server.post_json("/wan4step/advisor", {"gpu": "RTX 5070", "ram_gb": 32, "frames": 81})
    assert answer["recommendation"]["kind"] == "fp8" and answer["recommendation"]["blocks_to_swap"] > 0
    assert answer["report"].startswith("RTX 5070")
    plan = answer["memory_plan"]  # what web/wan4step_advisor.js draws on the node
    assert {p["key"]: p["vram_bytes"] for p in plan["phases"]} == answer["recommendation"]["phase_peaks"]
    assert [p["label"] for p in plan["phases"]] == ["Text encode", "Sampling", "VAE decode"]
    assert plan["gpu"] == "RTX 5070" and plan["vram_total_bytes"] > plan["usable_vram_bytes"] > 0
    assert plan["ram_peak_bytes"] == answer["recommendation"]["peak_ram_bytes"]
    assert hist["outputs"]["1"]["memory_plan"][0]["gpu"] == "RTX 4090"  # after a run, the node redraws it
