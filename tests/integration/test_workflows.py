"""The shipped workflows: one per user path, API twins in sync, valid in a real ComfyUI, served as templates."""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path

import pytest

from wan4step import catalog
from wan4step.comfy_client import ComfyAPIError
from wan4step.workflow_convert import to_api
from wan4step_dev.comfy_server import PACK_DIR_NAME
from wan4step_dev.workflow_cli import api_path_for, convert_files

REPO = Path(__file__).resolve().parents[2]
UI = sorted((REPO / "workflows").glob("*.json"))
# one workflow per user path; which files and settings each ships is the advisor's answer for its planned
# machine (tests/unit/test_one_answer.py), so here only the paths themselves are named
PATHS = {
    "wan4step_t2v_gguf": "Wan4StepModelLoader",
    "wan4step_t2v_lightx2v_fp8": "Wan4StepModelLoader",
    "wan4step_t2v_lightx2v_int8_rtx30": "Wan4StepModelLoader",
    "wan4step_t2v_comfyui_gguf_interop": "UnetLoaderGGUF",
    "wan4step_t2v_8gb_low_vram": "Wan4StepModelLoader",
    "wan4step_t2v_720p": "Wan4StepModelLoader",
    "wan4step_t2v_tiny_demo": "Wan4StepModelLoader",
}
MODEL_INPUTS = {"model_name", "unet_name", "text_encoder_name", "vae_name"}


def _ui(name: str) -> dict:
    return json.loads((REPO / "workflows" / f"{name}.json").read_text())


def _api(name: str) -> dict:
    return json.loads((REPO / "workflows" / "api" / f"{name}.json").read_text())


def _catalog_entries() -> dict[str, dict]:
    """Every single-file download the catalog knows, as a properties.models entry."""
    specs = [s for w in catalog.WEIGHTS.values() for s in w.files if not s.is_glob]
    specs += [s for c in [*catalog.TEXT_ENCODERS_TABLE.values(), *catalog.VAES.values()] for s in c.files]
    return {s.dest: {"name": s.dest, "url": f"https://huggingface.co/{s.repo_id}/resolve/{s.revision}/{s.pattern}?download=true",
                     "directory": s.folder} for s in specs}


def test_one_workflow_per_user_path_and_nothing_else():
    assert {p.stem for p in UI} == set(PATHS)
    assert {p.stem for p in (REPO / "workflows" / "api").glob("*.json")} == set(PATHS)


@pytest.mark.parametrize("name", sorted(PATHS))
def test_models_properties_urls_and_notes_agree_with_the_catalog(name):
    wf = _ui(name)
    known = _catalog_entries()
    widgets = {n["id"]: n.get("widgets_values") or [] for n in wf["nodes"]}
    notes = " ".join(str(v) for n in wf["nodes"] if n["type"] in ("Note", "MarkdownNote") for v in n["widgets_values"])
    assert notes, f"{name} has no Note node"
    for node in wf["nodes"]:
        for entry in node.get("properties", {}).get("models", []):
            assert entry == known[entry["name"]], f"{name}: node {node['id']} {entry} differs from the catalog"
            assert entry["name"] in widgets[node["id"]], f"{name}: node {node['id']} does not select {entry['name']}"
            assert entry["name"] in notes
    api = _api(name)
    loaders = [n for n in api.values() if n["class_type"] in ("Wan4StepModelLoader", "UnetLoaderGGUF")]
    assert len(loaders) == 1 and loaders[0]["class_type"] == PATHS[name]
    if name == "wan4step_t2v_tiny_demo":
        return
    stored = [n["widgets_values"][0] for n in wf["nodes"] if n["type"] == PATHS[name]]
    (w,) = [c for c in catalog.WEIGHTS.values() if c.model_name == stored[0]]
    te = next(n for n in api.values() if n["class_type"] == "Wan4StepUMT5Loader")
    vae = next(n for n in api.values() if n["class_type"] == "Wan4StepVAELoader")
    for d in (n for n in api.values() if n["class_type"] == "Wan4StepDownload"):
        # wired in: it chooses what the loaders get, and the loaders' own stored values agree
        assert d["inputs"]["weights"] == w.key
        assert loaders[0]["inputs"]["model_name"][0] == te["inputs"]["text_encoder_name"][0] == vae["inputs"]["vae_name"][0]
    if w.kind == "gguf":
        assert w.files[0].dest in notes and f"https://huggingface.co/{w.files[0].repo_id}" in notes
    else:
        assert f"{catalog.LIGHTX2V_DIR}/{w.model_name.rstrip('/').rsplit('/', 1)[-1]}/" in notes
    assert catalog.vae(catalog.DEFAULT_VAE).name in notes
    assert any(c.name in notes for c in catalog.TEXT_ENCODERS_TABLE.values())


@pytest.mark.parametrize("name", sorted(PATHS))
def test_recipe_and_video_output(name):
    api = _api(name)
    sampler = next(n for n in api.values() if n["class_type"] == "Wan4StepSampler")["inputs"]
    assert (sampler["steps"], sampler["shift"], sampler["cfg"]) == (4, 5.0, 1.0)
    video = [n for n in api.values() if n["class_type"] == "CreateVideo"]
    save = [n for n in api.values() if n["class_type"] == "SaveVideo"]
    assert len(video) == 1 and video[0]["inputs"]["fps"] == 16.0
    assert len(save) == 1 and save[0]["inputs"]["format"] == "mp4"
    vid_id = next(k for k, n in api.items() if n["class_type"] == "CreateVideo")
    assert save[0]["inputs"]["video"] == [vid_id, 0]
    latent = next(n for n in api.values() if n["class_type"] == "EmptyHunyuanLatentVideo")["inputs"]
    assert latent["width"] % 16 == 0 and latent["height"] % 16 == 0 and latent["length"] % 4 == 1


def test_paths_settings():
    hd = {n["class_type"]: n["inputs"] for n in _api("wan4step_t2v_720p").values()}
    assert (hd["EmptyHunyuanLatentVideo"]["width"], hd["EmptyHunyuanLatentVideo"]["height"]) == (1280, 720)
    interop = _api("wan4step_t2v_comfyui_gguf_interop")
    chain = {n["class_type"]: (k, n["inputs"]) for k, n in interop.items()}
    assert chain["Wan4StepBlockSwap"][1]["model"] == [chain["UnetLoaderGGUF"][0], 0]
    assert chain["Wan4StepSampler"][1]["model"] == [chain["Wan4StepBlockSwap"][0], 0]
    tiny = {n["class_type"]: (k, n["inputs"]) for k, n in _api("wan4step_t2v_tiny_demo").items()}
    node = tiny["Wan4StepTinyModels"][0]
    assert [tiny[t][1][i] for t, i in [("Wan4StepModelLoader", "model_name"), ("Wan4StepUMT5Loader", "text_encoder_name"),
                                       ("Wan4StepVAELoader", "vae_name")]] == [[node, 0], [node, 1], [node, 2]]


# ---- against a real ComfyUI ---------------------------------------------------------------
@pytest.fixture(scope="module")
def object_info(comfy_server):
    return comfy_server.object_info()


def test_api_twins_are_generated_from_the_ui_files(object_info):
    assert convert_files(UI, object_info, check=True) == []
    for ui in UI:  # and the converter's strict check finds every UI widget value a home
        assert to_api(json.loads(ui.read_text()), object_info) == json.loads(api_path_for(ui).read_text())


def _as_if_downloaded(api: dict) -> dict:
    """The graph once the files are there: Download links replaced by its names; no Download/Advisor nodes
    (they are output nodes and would run: this test must never touch the network)."""
    api = copy.deepcopy(api)
    names = {}
    for nid, n in list(api.items()):
        if n["class_type"] == "Wan4StepDownload":
            i = n["inputs"]
            names[nid] = [catalog.weights(i["weights"]).model_name, catalog.text_encoder(i["text_encoder"]).name,
                          catalog.vae(i["vae"]).name]
        if n["class_type"] in ("Wan4StepDownload", "Wan4StepVRAMAdvisor"):
            del api[nid]
    for n in api.values():
        for k, v in n["inputs"].items():
            if isinstance(v, list) and v and v[0] in names:
                n["inputs"][k] = names[v[0]][v[1]]
    return api


@pytest.mark.parametrize("name", sorted(set(PATHS) - {"wan4step_t2v_tiny_demo"}))
def test_comfyui_accepts_the_graph_except_for_weights_not_installed(comfy_server, name):
    """ComfyUI's own validation: the only complaints are the model files this test machine lacks."""
    api = _as_if_downloaded(_api(name))
    with pytest.raises(ComfyAPIError) as err:
        comfy_server.queue_prompt(api)
    node_errors = err.value.details["node_errors"]
    assert node_errors, err.value
    for nid, info in node_errors.items():
        for e in info["errors"]:
            assert e["type"] == "value_not_in_list", f"node {nid}: {e}"
            assert e["extra_info"]["input_name"] in MODEL_INPUTS, f"node {nid}: {e}"
            assert e["extra_info"]["received_value"] == api[nid]["inputs"][e["extra_info"]["input_name"]]
    complained = {api[nid]["class_type"] for nid in node_errors}
    assert complained >= {"Wan4StepUMT5Loader", "Wan4StepVAELoader"}


def test_workflows_are_listed_and_served_as_custom_node_templates(comfy_server):
    """ComfyUI serves `<pack>/workflows/*.json` (app/custom_node_manager.py) to the template browser."""
    listing = comfy_server.get_json("/workflow_templates")
    assert sorted(listing.get(PACK_DIR_NAME, [])) == sorted(PATHS), listing
    for ui in UI:
        served = json.loads(comfy_server.get_bytes(f"/api/workflow_templates/{PACK_DIR_NAME}/{ui.name}"))
        assert served == json.loads(ui.read_text())
        # the browser asks for <name>.jpg next to each template (scripts/make_template_thumbnails.py)
        thumb = comfy_server.get_bytes(f"/api/workflow_templates/{PACK_DIR_NAME}/{ui.stem}.jpg")
        assert thumb[:3] == b"\xff\xd8\xff" and thumb == ui.with_suffix(".jpg").read_bytes()


def test_the_registry_zip_ships_the_workflows():
    """`comfy node pack` drops what .comfyignore matches (gitwildmatch, comfy-cli file_utils.py): never a template."""
    pathspec = pytest.importorskip("pathspec")
    lines = [line.strip() for line in (REPO / ".comfyignore").read_text().splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    with warnings.catch_warnings():  # the pattern style comfy-cli uses, deprecated by newer pathspec releases
        warnings.simplefilter("ignore", DeprecationWarning)
        spec = pathspec.PathSpec.from_lines("gitwildmatch", lines)
        shipped = [p.relative_to(REPO).as_posix() for p in [*UI, *(REPO / "workflows").glob("*.jpg"),
                                                            *(REPO / "workflows" / "api").glob("*.json")]]
        assert shipped and [p for p in shipped if spec.match_file(p)] == []
        assert spec.match_file("tests/integration/test_workflows.py") and spec.match_file("scripts/build_workflows.py")
