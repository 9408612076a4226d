"""One answer per card: README's tables, every workflow's baked settings and the advisor agree.

Each workflow records the machine it was planned for (extra.wan4step.planned_for); these tests
re-run `wan4step.advisor` on that machine, and on every README row, and compare each widget and
cell with the answer. The mapping from the answer to widgets is stated here again, on purpose,
rather than imported from scripts/build_workflows.py. After changing the advisor, the memory
model or the catalog: `python scripts/build_workflows.py` and commit the diff.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest

from wan4step import cards, catalog
from wan4step.advisor import Machine, Request, recommend, with_overrides

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text()
UI = {p.stem: json.loads(p.read_text()) for p in sorted((REPO / "workflows").glob("*.json"))}
TINY = "wan4step_t2v_tiny_demo"
PLANNED = sorted(set(UI) - {TINY})


def _builder():
    spec = importlib.util.spec_from_file_location("build_workflows_under_test", REPO / "scripts" / "build_workflows.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def _advise(gpu: str, ram_gb: float, disk_gb: float, width: int, height: int, frames: int, priority: str = "speed",
            weights_format: str = "any"):
    machine = with_overrides(Machine(None, 0, 0, None, 0, 0), gpu=gpu, ram_gb=ram_gb, disk_gb=disk_gb)
    formats = () if weights_format == "any" else (weights_format,)
    return recommend(machine, Request(width, height, frames, priority, formats=formats))


def _plan(name: str) -> dict:
    return UI[name]["extra"]["wan4step"]["planned_for"]


def _api(name: str) -> dict:
    return json.loads((REPO / "workflows" / "api" / f"{name}.json").read_text())


def _note(name: str) -> str:
    return " ".join(str(v) for n in UI[name]["nodes"] if n["type"] in ("Note", "MarkdownNote") for v in n["widgets_values"])


def _resolve(api: dict, value):
    """A linked model-name input: what the Download node's output slot will be."""
    if not isinstance(value, list):
        return value
    src = api[value[0]]
    assert src["class_type"] == "Wan4StepDownload", src
    i = src["inputs"]
    return [catalog.weights(i["weights"]).model_name, catalog.text_encoder(i["text_encoder"]).name,
            catalog.vae(i["vae"]).name][value[1]]


# ---- workflows ------------------------------------------------------------------------------
def test_every_workflow_but_the_tiny_demo_names_its_machine():
    assert PLANNED, "no workflows found"
    for name in PLANNED:
        plan = _plan(name)
        assert cards.by_name(plan["gpu"]) is not None, f"{name} is planned for an unknown card {plan['gpu']!r}"
        assert plan["ram_gb"] > 0 and plan["disk_gb"] > 0
    assert "wan4step" not in UI[TINY]["extra"]  # the tiny demo runs anywhere


@pytest.mark.parametrize("name", PLANNED)
def test_baked_settings_are_the_advisors_answer(name):
    p = _plan(name)
    rec = _advise(p["gpu"], p["ram_gb"], p["disk_gb"], p["width"], p["height"], p["frames"], p["priority"],
                  p["weights_format"])
    assert rec.fits, rec.reason
    api = _api(name)
    by = {}
    for n in api.values():
        by.setdefault(n["class_type"], []).append(n["inputs"])
    for dl in by.get("Wan4StepDownload", []):
        assert dl == {"weights": rec.weights_key, "text_encoder": rec.text_encoder_key, "vae": rec.vae_key}
    loaders = by.get("Wan4StepModelLoader", []) + by.get("UnetLoaderGGUF", [])
    assert len(loaders) == 1
    assert _resolve(api, loaders[0].get("model_name", loaders[0].get("unet_name"))) == rec.model_name
    (swap,) = by["Wan4StepBlockSwap"]
    assert (swap["blocks_to_swap"], swap["prefetch"]) == (rec.blocks_to_swap, rec.prefetch)
    assert swap["source"] == ("disk" if rec.placement == "disk" else "ram")
    (te,) = by["Wan4StepUMT5Loader"]
    assert te["device"] == rec.text_encoder_device
    assert _resolve(api, te["text_encoder_name"]) == rec.text_encoder_name
    (vae,) = by["Wan4StepVAELoader"]
    assert vae["tiling"] == ("on" if rec.vae_tiled else "off")
    assert _resolve(api, vae["vae_name"]) == rec.vae_name
    (latent,) = by["EmptyHunyuanLatentVideo"]
    assert (latent["width"], latent["height"], latent["length"]) == (p["width"], p["height"], p["frames"])
    # the UI file's own stored values (what the canvas shows before the Download node runs) agree too
    stored = {n["type"]: n.get("widgets_values") or [] for n in UI[name]["nodes"]}
    for typ, want in [("Wan4StepModelLoader", rec.model_name), ("UnetLoaderGGUF", rec.model_name),
                      ("Wan4StepUMT5Loader", rec.text_encoder_name), ("Wan4StepVAELoader", rec.vae_name)]:
        if typ in stored:
            assert want in stored[typ], f"{name}: {typ} stores {stored[typ]}, the advisor says {want}"


@pytest.mark.parametrize("name", PLANNED)
def test_the_canvas_advisor_plans_for_the_same_machine(name):
    """Pressing "Advise now" on the shipped workflow gives the settings it ships with."""
    p = _plan(name)
    advisors = [n["inputs"] for n in _api(name).values() if n["class_type"] == "Wan4StepVRAMAdvisor"]
    for a in advisors:
        assert (a["gpu"], a["ram_gb"], a["disk_gb"]) == (p["gpu"], p["ram_gb"], p["disk_gb"])
        assert (a["width"], a["height"], a["frames"], a["priority"]) == (p["width"], p["height"], p["frames"], p["priority"])
        assert a["weights_format"] == p["weights_format"]
        assert a["vram_gb"] == a["free_vram_gb"] == 0 and a["compute_capability"] == a["attention"] == "auto"


@pytest.mark.parametrize("name", PLANNED)
def test_the_note_says_which_machine_and_what_it_gets(name):
    p = _plan(name)
    rec = _advise(p["gpu"], p["ram_gb"], p["disk_gb"], p["width"], p["height"], p["frames"], p["priority"],
                  p["weights_format"])
    note = _note(name)
    assert f"**Planned for** an {p['gpu']} (" in note and f"{p['ram_gb']} GB RAM" in note
    assert f"{p['width']}×{p['height']}×{p['frames']}" in note and f"priority *{p['priority']}*" in note
    assert rec.weights_label in note and f"`{rec.text_encoder_device}`" in note
    assert (f"streams {rec.blocks_to_swap} of 40 blocks" if rec.blocks_to_swap else "all 40 blocks stay on the GPU") in note
    assert ("in tiles" if rec.vae_tiled else "untiled") in note


def test_the_tiny_demo_note_tells_where_the_files_go():
    note = _note(TINY)
    assert "Wan4Step Tiny Models" in note and "models/diffusion_models/wan4step_tiny/" in note
    assert "python -c" not in note  # no command that writes into the pack's own folder
    api = _api(TINY)
    (tiny_id,) = [k for k, n in api.items() if n["class_type"] == "Wan4StepTinyModels"]
    for n in api.values():
        for key in ("model_name", "text_encoder_name", "vae_name"):
            if key in n["inputs"]:
                assert n["inputs"][key][0] == tiny_id  # every loader gets its file from the node


# ---- README ---------------------------------------------------------------------------------
def test_readme_tables_are_the_generated_ones():
    b = _builder()
    for tag, render in b.GENERATED.items():
        assert b.readme_section(README, tag) == render(), f"README's {tag} is stale: run scripts/build_workflows.py"


_CELL = re.compile(r"^(?P<w>.+?), swap (?P<k>\d+)(?P<disk> from disk)?, TE `(?P<te>\w+)`, VAE (?P<vae>tiled|untiled)$")


def _card_rows() -> tuple[list[tuple[int, int, int]], list[list[str]]]:
    section = README.split("## Which files for which card", 1)[1].split("\n## ", 1)[0]
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in section.splitlines()
            if line.startswith("| ")]
    header, body = rows[0], rows[1:]
    sizes = [tuple(int(x) for x in h.split("×")) for h in header[3:]]
    return sizes, body


def test_readme_card_table_cells_are_the_advisors_answer():
    sizes, body = _card_rows()
    assert sizes == [(832, 480, 81), (1280, 720, 81)]
    disk = int(re.search(r"(\d+) GB free disk", README.split("## Which files for which card", 1)[1]).group(1))
    consumer = {c.name for c in cards.load_cards() if c.consumer}
    assert {row[0] for row in body} == consumer  # every consumer card of the table has a row
    for card, vram, ram, *cells in body:
        assert vram == f"{round(cards.by_name(card).vram_bytes / 2**30)} GB"
        for (w, h, f), cell in zip(sizes, cells, strict=True):
            rec = _advise(card, float(ram.removesuffix(" GB")), disk, w, h, f)
            if not rec.fits:
                assert cell.startswith("does not fit"), (card, ram, cell)
                continue
            m = _CELL.match(cell)
            assert m, f"{card} {ram}: cannot read {cell!r}"
            assert m["w"] == rec.weights_label.split(" (")[0], (card, ram, cell, rec.weights_label)
            assert int(m["k"]) == rec.blocks_to_swap and bool(m["disk"]) == (rec.placement == "disk"), (card, ram, cell)
            assert m["te"] == rec.text_encoder_device and (m["vae"] == "tiled") == rec.vae_tiled, (card, ram, cell)


def test_readme_workflow_table_names_each_workflows_machine():
    section = README.split("<!-- BEGIN workflow-table", 1)[1].split("<!-- END workflow-table", 1)[0]
    rows = {line.split("|")[1].strip().strip("`"): line for line in section.splitlines() if line.startswith("| `")}
    assert set(rows) == set(UI)
    for name in PLANNED:
        p = _plan(name)
        assert f"| {p['gpu']}, {p['ram_gb']} GB RAM, {p['width']}×{p['height']}×{p['frames']}, {p['priority']}" in rows[name]
