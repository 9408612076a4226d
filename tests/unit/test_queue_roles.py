"""The queue client's patching by node role, batch files and seeds (no ComfyUI; the runs are in
tests/integration/test_queue.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from wan4step import catalog
from wan4step.api_queue import Patch, WorkflowRoleError, apply_patch, find_roles, make_jobs, read_batch

REPO = Path(__file__).resolve().parents[2]


def _api(name: str) -> dict:
    return json.loads((REPO / "workflows" / "api" / f"{name}.json").read_text())


def core_graph() -> dict:
    """KSampler behind ModelSamplingSD3 + a LoRA, ids nothing like the pack's workflows."""
    return {
        "70": {"class_type": "UNETLoader", "inputs": {"unet_name": "wan.safetensors", "weight_dtype": "default"}},
        "71": {"class_type": "LoraLoaderModelOnly", "inputs": {"model": ["70", 0], "lora_name": "x", "strength_model": 1}},
        "72": {"class_type": "ModelSamplingSD3", "inputs": {"model": ["71", 0], "shift": 5.0}},
        "80": {"class_type": "CLIPLoader", "inputs": {"clip_name": "umt5.safetensors", "type": "wan"}},
        "81": {"class_type": "CLIPTextEncode", "inputs": {"text": "pos", "clip": ["80", 0]}},
        "82": {"class_type": "CLIPTextEncode", "inputs": {"text": "neg", "clip": ["80", 0]}},
        "83": {"class_type": "ConditioningZeroOut", "inputs": {"conditioning": ["82", 0]}},
        "90": {"class_type": "EmptyHunyuanLatentVideo", "inputs": {"width": 832, "height": 480, "length": 81, "batch_size": 1}},
        "99": {"class_type": "KSampler", "inputs": {"model": ["72", 0], "positive": ["81", 0], "negative": ["83", 0],
                                                    "latent_image": ["90", 0], "seed": 1, "steps": 4, "cfg": 1.0}},
    }


def test_roles_are_found_by_following_links_not_ids():
    r = find_roles(core_graph())
    assert (r.sampler, r.positive, r.negative, r.latent, r.loader, r.loader_input) == ("99", "81", "82", "90", "70", "unet_name")
    api = apply_patch(core_graph(), Patch(prompt="a", negative="b", seed=9, width=480, height=832, frames=33, steps=4))
    assert api["81"]["inputs"]["text"] == "a" and api["82"]["inputs"]["text"] == "b"
    assert api["99"]["inputs"]["seed"] == 9
    assert [api["90"]["inputs"][k] for k in ("width", "height", "length")] == [480, 832, 33]
    assert core_graph()["81"]["inputs"]["text"] == "pos"  # the original is not modified


def test_pack_workflows_roles_and_model_patch_through_the_download_node():
    api = _api("wan4step_t2v_gguf")
    r = find_roles(api)
    assert api[r.loader]["class_type"] == "Wan4StepModelLoader" and r.negative is None
    patched = apply_patch(api, Patch(model="gguf_Q6_K"))
    dl = next(n for n in patched.values() if n["class_type"] == "Wan4StepDownload")
    assert dl["inputs"]["weights"] == "gguf_Q6_K"  # the Download node fetches it and feeds the loader
    patched = apply_patch(api, Patch(model="my/own.gguf"))
    assert patched[r.loader]["inputs"]["model_name"] == "my/own.gguf"  # a file name replaces the link
    interop = _api("wan4step_t2v_comfyui_gguf_interop")
    ri = find_roles(interop)
    assert interop[ri.loader]["class_type"] == "UnetLoaderGGUF"
    assert apply_patch(interop, Patch(model="gguf_Q8_0"))[ri.loader]["inputs"]["unet_name"] == \
        catalog.weights("gguf_Q8_0").model_name


def test_patch_errors_say_what_is_missing_or_wired():
    api = core_graph()
    api["90"]["inputs"]["width"] = ["81", 0]
    with pytest.raises(WorkflowRoleError, match="input 'width' of node 90 .* is wired to node 81"):
        apply_patch(api, Patch(width=512))
    api = core_graph()
    del api["90"]
    api["99"]["inputs"]["latent_image"] = ["83", 0]
    with pytest.raises(WorkflowRoleError, match="no empty latent"):
        apply_patch(api, Patch(frames=33))
    with pytest.raises(WorkflowRoleError, match="frames 30 is not 4n\\+1 \\(nearest: 29 or 33\\)"):
        apply_patch(core_graph(), Patch(frames=30))
    two = core_graph()
    two["100"] = dict(two["99"])
    with pytest.raises(WorkflowRoleError, match="2 samplers"):
        find_roles(two)


def test_batch_file_and_seeds(tmp_path):
    f = tmp_path / "p.txt"
    f.write_text("# comment\n\nfirst prompt\n" + json.dumps({"prompt": "second", "seed": 5, "frames": 33}) + "\nthird\n")
    batch = read_batch(f)
    assert batch == [{"prompt": "first prompt"}, {"prompt": "second", "seed": 5, "frames": 33}, {"prompt": "third"}]
    jobs = make_jobs(core_graph(), Patch(seed=100), batch)
    assert [j.prompt["99"]["inputs"]["seed"] for j in jobs] == [100, 5, 102]
    assert jobs[1].prompt["90"]["inputs"]["length"] == 33 and jobs[0].prompt["90"]["inputs"]["length"] == 81
    assert [j.name for j in jobs] == ["000_first_prompt_100", "001_second_5", "002_third_102"]
    single = make_jobs(core_graph(), Patch(), None)
    assert len(single) == 1 and single[0].prompt["99"]["inputs"]["seed"] == 1 and single[0].name == "pos_1"
    f.write_text('{"prompt": "x", "sede": 1}\n')
    with pytest.raises(SystemExit, match="unknown keys \\['sede'\\]"):
        read_batch(f)
