"""Every shipped workflow in ComfyUI's real frontend (headless Chromium via Playwright).

- each UI workflow loads with every node type registered and no "missing node" warning, the
  frontend's own `app.graphToPrompt()` equals our generated API file (the converter's oracle),
  and re-serializing keeps the stored widget values;
- the VRAM Advisor panel answers "Advise now", the estimate badges appear under the sampler;
- the tiny demo is queued from the UI and its mp4 shows up in /history;
- no console errors beyond the frontend's own on a fresh, offline install.

The browser fixture (`browser_env`, tests/integration/conftest.py) is also used by test_browser_person.py,
which acts as a person (drops files, opens templates, clicks with the mouse) and checks the
layout; screenshots go to `out/browser/` (git-ignored).
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import pytest

from tests.integration.browser_kit import click_widget, console_errors

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((REPO / "workflows").glob("*.json"))
LOAD = r"""async (wf) => {
  await app.loadGraphData(wf, true, true, wf.__name);
  await new Promise((r) => setTimeout(r, 300));
  const p = await app.graphToPrompt();
  const isModelFile = (v) => typeof v === 'string' && /\.(safetensors|sft|gguf|pth|pt|ckpt|bin|onnx)$/i.test(v);
  const options = (w) => { const v = w.options?.values; return (typeof v === 'function' ? v() : v) ?? []; };
  const nodes = app.graph.nodes.map((n) => ({
    id: String(n.id), type: n.type, registered: !!LiteGraph.registered_node_types[n.type],
    has_errors: !!n.has_errors, values: n.serialize().widgets_values ?? [],
    missing_models: (n.widgets ?? []).filter((w) => w.type === 'combo' && isModelFile(w.value)
                                             && !options(w).includes(w.value)).map((w) => w.value),
    offered: (n.properties?.models ?? []).map((m) => m.name),
  }));
  return { output: p.output, nodes, text: document.body.innerText };
}"""


def _load(env, path: Path) -> dict:
    wf = json.loads(path.read_text())
    wf["__name"] = path.stem
    return env["page"].evaluate(LOAD, wf)


def problems_in(result: dict) -> list[str]:
    """What a user would see as broken: unregistered (missing) nodes, red nodes, the missing-node warning.

    A loader whose model file is not installed on this test machine is drawn red too; that is the
    frontend's missing-model feature, fine as long as the node's `properties.models` lets the frontend
    offer that very file (name, URL, folder)."""
    out = [f"node {n['id']}: type {n['type']!r} is not installed" for n in result["nodes"] if not n["registered"]]
    for n in result["nodes"]:
        unoffered = [m for m in n["missing_models"] if m not in n["offered"]]
        if unoffered:
            out.append(f"node {n['id']} ({n['type']}) needs {unoffered} but properties.models does not offer it")
        elif n["has_errors"] and not n["missing_models"]:
            out.append(f"node {n['id']} ({n['type']}) is marked as an error")
    if "Missing node" in result["text"]:
        out.append("the frontend shows a 'Missing node' warning")
    return out


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.stem for p in WORKFLOWS])
def test_workflow_loads_clean_and_matches_its_api_twin(browser_env, path):
    result = _load(browser_env, path)
    assert problems_in(result) == []
    api = json.loads((path.parent / "api" / path.name).read_text())
    assert result["output"] == api, "app.graphToPrompt() differs from workflows/api/ (run python -m wan4step_dev.workflow_cli)"
    stored = {str(n["id"]): n.get("widgets_values") or [] for n in json.loads(path.read_text())["nodes"]}
    for n in result["nodes"]:
        assert n["values"] == stored[n["id"]], f"node {n['id']} ({n['type']}) re-saves as {n['values']}"
    browser_env["page"].wait_for_timeout(1500)  # one estimate round trip
    browser_env["shot"](path.stem)


def test_a_missing_node_is_detected(browser_env, tmp_path):
    """The negative control: the checks above do fail on a workflow that needs an uninstalled node."""
    wf = json.loads((REPO / "workflows" / "wan4step_t2v_tiny_demo.json").read_text())
    wf["nodes"][0]["type"] = "Wan4StepNoSuchNode"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(wf))
    result = _load(browser_env, bad)
    found = problems_in(result)
    assert any("Wan4StepNoSuchNode" in p for p in found)
    assert "the frontend shows a 'Missing node' warning" in found
    browser_env["page"].evaluate("() => app.graph.clear()")
    browser_env["page"].keyboard.press("Escape")


def test_advisor_panel_and_estimate_badges(browser_env):
    page = browser_env["page"]
    _load(browser_env, REPO / "workflows" / "wan4step_t2v_8gb_low_vram.json")
    page.wait_for_timeout(500)
    adv = page.evaluate("() => app.graph.nodes.find((n) => n.type === 'Wan4StepVRAMAdvisor').id")
    at = click_widget(page, adv, "Advise now")  # the mouse, where the button is drawn
    assert at["top"] == "canvas", at
    page.wait_for_function("""(id) => (app.graph.getNodeById(id).__wan4stepAdvice?.value ?? '').includes('Weights:')""",
                           arg=adv, timeout=15_000)
    report = page.evaluate("(id) => app.graph.getNodeById(id).__wan4stepAdvice.value", adv)
    assert "Weights:" in report and "Predicted VRAM peak" in report, report
    assert "RTX 4060 8GB" in report  # the node's "plan for" card, not this CPU-only machine
    est = page.evaluate("""async () => {
      const s = app.graph.nodes.find((n) => n.type === 'Wan4StepSampler');
      for (let i = 0; i < 50 && !s.__wan4stepEstimate; i++) await new Promise((r) => setTimeout(r, 100));
      const loader = app.graph.nodes.find((n) => n.type === 'Wan4StepModelLoader');
      return { sampler: s.__wan4stepEstimate, loader: loader.__wan4stepEstimate };
    }""")
    e = est["sampler"]
    assert e and e["known"], e
    shipped = next(n for n in json.loads((REPO / "workflows" / "api" / "wan4step_t2v_8gb_low_vram.json").read_text()).values()
                   if n["class_type"] == "Wan4StepBlockSwap")["inputs"]["blocks_to_swap"]
    assert e["gpu"] == "RTX 4060 8GB" and e["blocks_to_swap"] == shipped and e["step_time_s"] > 0
    assert e["badge"].startswith("RTX 4060 8GB: peak ~") and "s/step" in e["badge"]
    assert e["recommendation"].startswith("Advisor: ")
    # the badge's advisor line plans like the node: same card, same priority ("fit"), same pick
    weights = next(line for line in report.splitlines() if line.startswith("Weights: "))
    assert weights.split("Weights: ")[1].split("  ->")[0] in e["recommendation"]
    assert est["loader"] == e
    # bring the advisor and the sampler into view, then the picture for the docs
    page.evaluate("""() => {
      const c = app.canvas; c.ds.scale = 0.62;
      const adv = app.graph.nodes.find((n) => n.type === 'Wan4StepVRAMAdvisor');
      c.ds.offset = [-adv.pos[0] + 130, -adv.pos[1] + 330]; c.setDirty(true, true);
    }""")
    page.wait_for_timeout(300)
    browser_env["shot"]("advisor_panel_and_estimates")


def test_queue_the_tiny_demo_from_the_ui(browser_env):
    page, server = browser_env["page"], browser_env["server"]
    before = set(server.get_json("/history"))
    _load(browser_env, REPO / "workflows" / "wan4step_t2v_tiny_demo.json")
    page.evaluate("""async () => {
      const size = app.graph.nodes.find((n) => n.type === 'EmptyHunyuanLatentVideo');
      for (const [k, v] of [['width', 32], ['height', 32], ['length', 5]]) size.widgets.find((w) => w.name === k).value = v;
      const p = app.graph.nodes.find((n) => n.type === 'CLIPTextEncode');
      p.widgets[0].value = 'queued from the browser test';
      await app.queuePrompt(0, 1);
    }""")
    entry, deadline = None, time.monotonic() + 300
    while time.monotonic() < deadline:
        new = {k: v for k, v in server.get_json("/history").items() if k not in before}
        done = [v for v in new.values() if v.get("status", {}).get("completed")]
        if done:
            entry = done[0]
            break
        time.sleep(0.5)
    assert entry is not None, "the prompt queued from the UI never finished"
    ran = entry["prompt"][2]
    assert any(n["inputs"].get("text") == "queued from the browser test" for n in ran.values())
    files = [f for out in entry["outputs"].values() for f in out.get("images", []) if f["filename"].endswith(".mp4")]
    assert len(files) == 1
    import av

    data = server.view(files[0]["filename"], files[0]["subfolder"], files[0]["type"])
    with av.open(io.BytesIO(data)) as c:
        frames = list(c.decode(video=0))
    assert (len(frames), frames[0].width, frames[0].height) == (5, 32, 32)
    page.wait_for_timeout(1000)  # the SaveVideo preview
    browser_env["shot"]("tiny_demo_queued_from_ui")


def test_no_console_errors(browser_env):
    """Runs last in this file (test_browser_person.py checks again at its end): everything above
    happened without a console error of ours."""
    assert console_errors(browser_env) == []
