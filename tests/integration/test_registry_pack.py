"""The Comfy Registry's own tooling accepts the pack, and its zip installs the way ComfyUI Manager installs it."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from wan4step.comfy_server import HOW_TO_GET_COMFYUI, ComfyServer, find_comfyui, prepare_base_dir

REPO = Path(__file__).resolve().parents[2]
ALL_NODES = {
    "Wan4StepEnvInfo", "Wan4StepModelLoader", "Wan4StepUMT5Loader", "Wan4StepVAELoader", "Wan4StepSampler",
    "Wan4StepSigmas", "Wan4StepBlockSwap", "Wan4StepVRAMAdvisor", "Wan4StepDownload",
}


def _comfy_cli() -> str:
    exe = shutil.which("comfy") or str(Path(sys.executable).with_name("comfy"))
    if not Path(exe).exists():
        pytest.skip("comfy-cli is not installed (pip install comfy-cli; scripts/setup.sh does)")
    return exe


@pytest.fixture(scope="module")
def packed(tmp_path_factory) -> Path:
    exe = _comfy_cli()
    src = tmp_path_factory.mktemp("clone") / "ComfyUI-Wan4Step"
    subprocess.run(["git", "clone", "-q", str(REPO), str(src)], check=True)
    for cmd in (["node", "validate"], ["node", "pack"]):
        r = subprocess.run([exe, "--skip-prompt", "--no-enable-telemetry", *cmd], cwd=src, capture_output=True, text=True,
                           timeout=300)
        assert r.returncode == 0, r.stdout + r.stderr
        if cmd[1] == "validate":
            assert "All validation checks passed" in r.stdout + r.stderr, r.stdout + r.stderr
    return src / "node.zip"


def test_zip_contents(packed):
    names = zipfile.ZipFile(packed).namelist()
    for must in ("__init__.py", "pyproject.toml", "requirements.txt", "nodes/sampler.py", "wan4step/schedule.py",
                 "wan4step/data/cards.json", "web/wan4step_advisor.js"):
        assert must in names, must
    assert not any(n.startswith((".venv/", ".git/", ".carry/", ".whl/")) for n in names)


def test_manager_style_install_boots_with_every_node(packed, tmp_path):
    comfyui = find_comfyui()
    if comfyui is None:
        pytest.skip(HOW_TO_GET_COMFYUI)
    base = prepare_base_dir(tmp_path / "base", link_pack=False)
    target = base / "custom_nodes" / "ComfyUI-Wan4Step"
    zipfile.ZipFile(packed).extractall(target)
    # ComfyUI Manager pip-installs requirements.txt one line at a time
    for line in (target / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", line], capture_output=True, text=True, timeout=600)
            assert r.returncode == 0, f"pip install {line}: {r.stderr[-2000:]}"
    server = ComfyServer(comfyui, base)
    client = server.start()
    try:
        info = client.object_info()
        ours = {k for k, v in info.items() if v.get("category") == "Wan4Step"}
        assert ALL_NODES <= ours, ALL_NODES - ours
        for node in ALL_NODES:
            inputs = info[node]["input"].get("required", {})
            for name, spec in inputs.items():
                assert len(spec) > 1 and spec[1].get("tooltip"), f"{node}.{name} has no tooltip"
    finally:
        server.stop()
