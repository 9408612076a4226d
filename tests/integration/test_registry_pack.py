"""The Comfy Registry's own tooling accepts the pack, and its zip installs and runs the way ComfyUI Manager installs it.

`comfy node pack` (comfy-cli, comfy_cli/file_utils.py `zip_files`) zips the git-tracked files minus the
`.comfyignore` patterns, so the fixture packs a clone of the committed tree: what `comfy node publish`
would upload. ComfyUI Manager (Comfy-Org/ComfyUI-Manager glob/manager_core.py `cnr_install`) unpacks a
Registry zip into `custom_nodes/<node id>` — the id is `[project].name`, here `comfyui-wan4step` — writes a
`.tracking` list of the unpacked files and pip-installs requirements.txt line by line. ComfyUI then names
the pack after that folder: its templates are listed, and its web files served, under `comfyui-wan4step`.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from wan4step import __version__
from wan4step.comfy_client import output_files
from wan4step_dev.comfy_server import HOW_TO_GET_COMFYUI, ComfyServer, find_comfyui, prepare_base_dir

REPO = Path(__file__).resolve().parents[2]
REGISTRY_ID = re.search(r'^name = "([^"]+)"', (REPO / "pyproject.toml").read_text(), re.M).group(1)  # [project].name
ALL_NODES = {
    "Wan4StepEnvInfo", "Wan4StepModelLoader", "Wan4StepUMT5Loader", "Wan4StepVAELoader", "Wan4StepSampler",
    "Wan4StepSigmas", "Wan4StepBlockSwap", "Wan4StepVRAMAdvisor", "Wan4StepDownload", "Wan4StepTinyModels",
}
# what a user runs: the package, its data, the web extension, the templates, and the files the Registry shows
RUNTIME = re.compile(r"^(__init__\.py|pyproject\.toml|requirements\.txt|README\.md|LICENSE|nodes/[\w/]+\.py"
                     r"|wan4step/[\w/]+\.py|wan4step/data/\w+\.json|web/\w+\.(js|png)"
                     r"|workflows/\w+\.(json|jpg)|workflows/api/\w+\.json)$")


def _comfy_cli() -> str:
    exe = shutil.which("comfy") or str(Path(sys.executable).with_name("comfy"))
    if not Path(exe).exists():
        pytest.skip("comfy-cli is not installed (pip install comfy-cli; requirements-dev.txt has it)")
    return exe


def _requirements(text: str) -> list[str]:
    return [line.split("#")[0].strip() for line in text.splitlines() if line.split("#")[0].strip()]


@pytest.fixture(scope="module")
def packed(tmp_path_factory) -> Path:
    exe = _comfy_cli()
    src = tmp_path_factory.mktemp("clone") / "ComfyUI-Wan4Step"
    subprocess.run(["git", "clone", "-q", str(REPO), str(src)], check=True)
    for cmd in (["node", "validate"], ["node", "pack"]):
        r = subprocess.run([exe, "--skip-prompt", "--no-enable-telemetry", *cmd], cwd=src, capture_output=True, text=True,
                           timeout=300)
        out = r.stdout + r.stderr
        assert r.returncode == 0, out
        assert "Warning" not in out, out  # comfy-cli warns (and drops the field) on a malformed classifier/version
        if cmd[1] == "validate":
            assert "All validation checks passed" in out, out
    return src / "node.zip"


def test_registry_metadata_as_comfy_cli_reads_it():
    """The Registry's own parser (comfy-cli) sees every field: OS/GPU, ComfyUI version, URLs, icon, deps."""
    config_parser = pytest.importorskip("comfy_cli.registry.config_parser")
    cfg = config_parser.extract_node_configuration(str(REPO / "pyproject.toml"))
    p, c = cfg.project, cfg.tool_comfy
    assert p.name == REGISTRY_ID == REGISTRY_ID.lower() and p.version == __version__
    assert p.supported_os == ["OS Independent"] and p.supported_accelerators == ["GPU :: NVIDIA CUDA"]
    assert re.fullmatch(r">=\d+\.\d+\.\d+", p.supported_comfyui_version), p.supported_comfyui_version
    assert p.urls.repository and p.urls.issues and p.urls.documentation
    assert c.publisher_id and c.display_name
    # Icon is the raw URL of a file of this repository: that file exists and is a square PNG
    rel = c.icon.split("/main/", 1)[1]
    icon = (REPO / rel).read_bytes()
    assert c.icon.startswith(p.urls.repository.replace("github.com", "raw.githubusercontent.com") + "/main/")
    assert icon[:8] == b"\x89PNG\r\n\x1a\n" and icon[16:24] == (256).to_bytes(4, "big") * 2
    assert len(icon) < 64_000
    # Manager installs requirements.txt, the Registry lists [project].dependencies: the same list
    assert p.dependencies == _requirements((REPO / "requirements.txt").read_text())


def test_the_icon_is_the_one_its_script_draws(tmp_path):
    r = subprocess.run([sys.executable, str(REPO / "scripts" / "make_icon.py"), "--out", str(tmp_path / "icon.png")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "icon.png").read_bytes() == (REPO / "web" / "icon.png").read_bytes()


def test_zip_holds_only_what_a_user_runs(packed):
    names = [n for n in zipfile.ZipFile(packed).namelist() if not n.endswith("/")]
    stray = [n for n in names if not RUNTIME.match(n)]
    assert stray == [], f"not runtime files: {stray}"
    tracked = subprocess.run(["git", "-C", str(REPO), "ls-files"], capture_output=True, text=True, check=True).stdout.split()
    shipped = [t for t in tracked if RUNTIME.match(t)]
    assert sorted(names) == sorted(shipped)  # ... and all of it, e.g. every template and its thumbnail
    for must in ("__init__.py", "nodes/tiny_models.py", "wan4step/tiny/install.py", "wan4step/data/cards.json",
                 "web/wan4step_advisor.js", "web/icon.png", "workflows/wan4step_t2v_tiny_demo.json"):
        assert must in names, must
    assert not any(n.startswith(("tests/", "scripts/", "docs/", ".ci/", ".venv/", "wan4step_dev/")) for n in names)
    # the dev tooling is tracked, and none of it (nor a module of the old dev-only names) is shipped
    assert any(t.startswith("wan4step_dev/") for t in tracked)
    assert not {"wan4step/comfy_server.py", "wan4step/packaging_alias.py", "wan4step/queue.py",
                "wan4step/tiny/layouts.py", "wan4step/lora/fixtures.py"} & set(names)


def _tree(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts}


def test_manager_style_install_boots_serves_and_runs_the_tiny_demo(packed, tmp_path):
    comfyui = find_comfyui()
    if comfyui is None:
        pytest.skip(HOW_TO_GET_COMFYUI)
    base = prepare_base_dir(tmp_path / "base", link_pack=False)
    target = base / "custom_nodes" / REGISTRY_ID
    with zipfile.ZipFile(packed) as z:
        z.extractall(target)
        (target / ".tracking").write_text("\n".join(z.namelist()))  # as Manager's cnr_install does
    for line in _requirements((target / "requirements.txt").read_text()):  # Manager: one line at a time
        r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", line], capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, f"pip install {line}: {r.stderr[-2000:]}"
    installed = _tree(target)
    server = ComfyServer(comfyui, base)
    client = server.start()
    try:
        info = client.object_info()
        ours = {k for k, v in info.items() if v.get("category") == "Wan4Step"}
        assert ALL_NODES <= ours, ALL_NODES - ours
        for node in ALL_NODES:
            for name, spec in info[node]["input"].get("required", {}).items():
                assert len(spec) > 1 and spec[1].get("tooltip"), f"{node}.{name} has no tooltip"
        # templates: listed under the install folder's name, served byte for byte
        listing = client.get_json("/workflow_templates")
        workflows = sorted(p.stem for p in (target / "workflows").glob("*.json"))
        assert sorted(listing.get(REGISTRY_ID, [])) == workflows, listing
        for stem in workflows:
            served = client.get_bytes(f"/api/workflow_templates/{REGISTRY_ID}/{stem}.json")
            assert json.loads(served) == json.loads((target / "workflows" / f"{stem}.json").read_text())
        # the web extension: announced to the frontend and served under /extensions/<folder>/
        extensions = client.get_json("/extensions")
        for js in sorted((target / "web").glob("*.js")):
            url = f"/extensions/{REGISTRY_ID}/{js.name}"
            assert url in extensions, extensions
            assert client.get_bytes(url) == js.read_bytes()
        # the tiny demo, exactly as shipped: Wan4Step Tiny Models writes its files, the graph renders
        wf = json.loads((target / "workflows" / "api" / "wan4step_t2v_tiny_demo.json").read_text())
        hist = client.run(wf, timeout=600)
        mp4 = [f for f in output_files(hist) if f["filename"].endswith(".mp4")]
        assert len(mp4) == 1
        import av

        with av.open(io.BytesIO(client.view(mp4[0]["filename"], mp4[0]["subfolder"], mp4[0]["type"]))) as c:
            frames = list(c.decode(video=0))
        assert (len(frames), frames[0].width, frames[0].height) == (9, 64, 48)
    finally:
        server.stop()
    log = server.log_path.read_text(errors="replace")
    assert "Unable to parse pyproject.toml" not in log and "IMPORT FAILED" not in log
    for folder in ("diffusion_models", "text_encoders", "vae"):  # into ComfyUI's model folders ...
        assert any((base / "models" / folder / "wan4step_tiny").iterdir()), folder
    assert _tree(target) == installed  # ... and nothing into the pack's own folder
