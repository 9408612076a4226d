"""A shared ComfyUI server survives bad input and faults (issue 17), through a real headless server.

Every case below sends one bad graph, route body or fault to a real ComfyUI running this pack,
states the message it expects, and checks the server still answers /system_stats. Cases come
in groups; after each group one good job (the tiny model at 32x32x5, a fresh seed so it really
runs) must render its video. The graphs are the tiny demo workflow (workflows/api), patched the
way an API client would; untrusted strings reach the loaders the way ComfyUI lets them through
unchecked: on a link from core's If/Else switch (ComfySwitchNode), fed by a Text primitive.

Server B (this module's own, sharing A's models) serves the downloader cases (pointed at a fake
hub on 127.0.0.1 with HF_TOKEN set) and is SIGKILLed in the middle of a `python -m wan4step.api_queue`
batch at the end.
"""

from __future__ import annotations

import asyncio
import copy
import importlib.util
import io
import json
import math
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from wan4step.comfy_client import ComfyAPIError, output_files
from wan4step.tiny import bundle
from wan4step_dev.comfy_server import ComfyServer, interrupt_during, prepare_base_dir
from wan4step_dev.fixtures.tiny_models import write_tiny_models

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
TINY_API = REPO / "workflows" / "api" / "wan4step_t2v_tiny_demo.json"
SMALL = dict(width=32, height=32, length=5)
SECRET = "hf_secret_token_must_not_leave_this_machine"


# --------------------------------------------------------------------------------------
# fixtures and helpers
# --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def srv(comfy_server):
    """Server A with the tiny models, plus what an operator (or a mistake) put in the folders."""
    models = comfy_server.base_dir / "models"
    write_tiny_models(models)
    dm = models / "diffusion_models"
    base = comfy_server.base_dir
    made = []
    shared = base / "operator_shared"  # outside the models tree, linked in by the operator
    shared.mkdir(exist_ok=True)
    shutil.copyfile(dm / bundle.DIT_BF16, shared / "shared_tiny_bf16.safetensors")
    (dm / "operator_shared").symlink_to(shared, target_is_directory=True)
    junk = dm / "wan4step_safety"
    junk.mkdir(exist_ok=True)
    (junk / "passwd.safetensors").write_text("root:x:0:0:root:/root:/bin/bash\nsecret_line_in_file\n")
    (junk / "truncated.gguf").write_bytes(b"GGUF\x03\x00\x00\x00")
    (base / "outside_link").symlink_to(dm / "wan4step_tiny", target_is_directory=True)
    made += [dm / "operator_shared", junk, shared, base / "outside_link"]
    yield comfy_server
    for p in made:
        if p.is_symlink() or p.is_file():
            p.unlink()
        elif p.is_dir():
            shutil.rmtree(p)


def _wf(seed: int | None = None, **size) -> dict:
    wf = json.loads(TINY_API.read_text())
    wf["4"]["inputs"].update(SMALL)
    wf["4"]["inputs"].update(size)
    wf["5"]["inputs"]["seed"] = seed if seed is not None else uuid.uuid4().int % 10**9
    return wf


def _linked(wf: dict, node: str, field: str, value) -> dict:
    """`value` reaches node.field on a link: Text primitive -> If/Else switch -> the loader."""
    wf["190"] = {"class_type": "PrimitiveString", "inputs": {"value": value}}
    wf["191"] = {"class_type": "ComfySwitchNode", "inputs": {"switch": True, "on_true": ["190", 0],
                                                             "on_false": ["190", 0]}}
    wf[node]["inputs"][field] = ["191", 0]
    return wf


def _alive(server) -> None:
    stats = server.get_json("/system_stats")
    assert "system" in stats and "devices" in stats


def _frames(data: bytes) -> tuple[int, int, int]:
    import av

    with av.open(io.BytesIO(data)) as c:
        frames = list(c.decode(video=0))
        return len(frames), frames[0].width, frames[0].height


def _good_job(server, wf: dict | None = None, expect=(5, 32, 32)) -> None:
    hist = server.run(wf or _wf(), timeout=300)
    files = [f for f in output_files(hist) if f["filename"].endswith(".mp4")]
    assert len(files) == 1
    assert _frames(server.view(files[0]["filename"], files[0]["subfolder"], files[0]["type"])) == expect


def _refused(server, wf: dict, *expected: str, echoed: str = "") -> str:
    """Run a graph that must fail; the error names `expected`, never a server path or file content
    (beyond `echoed`: the refused value itself, quoted back)."""
    with pytest.raises(ComfyAPIError) as err:
        server.run(wf, timeout=120)
    text = str(err.value)
    for e in expected:
        assert e in text, text
    base = str(server.base_dir)
    rest = text.replace(echoed, "") if echoed else text
    assert base not in rest and os.path.realpath(base) not in rest, text
    assert "root:x:0:0" not in text and "secret_line_in_file" not in text, text
    _alive(server)
    return text


def _post(server, path: str, body: bytes | str, content_type="application/json") -> tuple[int, dict]:
    data = body.encode() if isinstance(body, str) else body
    req = urllib.request.Request(server.base_url + path, data=data, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            return e.code, json.loads(raw)
        except ValueError:
            return e.code, {"raw": raw.decode(errors="replace")}


# --------------------------------------------------------------------------------------
# group 1: model files stay inside the model folders (Model Loader)
# --------------------------------------------------------------------------------------
DIT_CASES = [
    # (id, value reaching model_name on a link, expected text)
    ("traversal", "../../../outside/x.safetensors", "model_name '../../../outside/x.safetensors' was refused: "
                                                     "it contains '..'"),
    ("traversal-inside", f"wan4step_tiny/../{bundle.DIT_BF16}", "it contains '..'"),
    ("backslash-traversal", "..\\..\\outside\\x.gguf", "it contains '..'"),
    ("etc-passwd", "/etc/passwd", "model_name '/etc/passwd' was refused: it is an absolute path"),
    ("etc-shadow", "/etc/shadow", "it is an absolute path"),
    ("proc-environ", "/proc/self/environ", "it is an absolute path"),
    ("link-outside-the-folder", f"../outside_link/{Path(bundle.DIT_BF16).name}", "it contains '..'"),
    ("missing", "no_such_model.gguf", "model_name 'no_such_model.gguf' was not found"),
    ("nul", "wan4step_tiny\0.gguf", "NUL character"),
]


@pytest.mark.parametrize("case, value, expected", DIT_CASES, ids=[c[0] for c in DIT_CASES])
def test_model_name_on_a_link_is_contained(srv, case, value, expected):
    _refused(srv, _linked(_wf(), "1", "model_name", value), expected)


def test_model_name_as_an_absolute_path_to_a_real_model_is_refused(srv):
    real = srv.base_dir / "models" / "diffusion_models" / bundle.DIT_BF16  # loaded and rendered before the fix
    _refused(srv, _linked(_wf(), "1", "model_name", str(real)), "it is an absolute path", echoed=repr(str(real)))


def test_model_name_typed_outside_the_list_is_comfyuis_validation_error(srv):
    wf = _wf()
    wf["1"]["inputs"]["model_name"] = "/etc/passwd"
    _refused(srv, wf, "Value not in list", "model_name: '/etc/passwd'")


def test_a_non_model_file_is_described_not_quoted(srv):
    text = _refused(srv, _linked(_wf(), "1", "model_name", "wan4step_safety/passwd.safetensors"),
                    "diffusion_models/wan4step_safety/passwd.safetensors: unknown file type", "Found: a text file")
    assert "first bytes" not in text


def test_a_broken_file_is_named_relative_to_its_folder(srv):
    _refused(srv, _linked(_wf(), "1", "model_name", "wan4step_safety/truncated.gguf"),
             "diffusion_models/wan4step_safety/truncated.gguf")


def test_operator_symlink_is_honoured_and_a_good_job_follows(srv):
    """The group's good job loads through the operator's link (models/diffusion_models/operator_shared)."""
    wf = _linked(_wf(), "1", "model_name", "operator_shared/shared_tiny_bf16.safetensors")
    _good_job(srv, wf)
    _good_job(srv)


# --------------------------------------------------------------------------------------
# group 2: UMT5 Loader (file and tokenizer folder) and VAE Loader
# --------------------------------------------------------------------------------------
TE_CASES = [
    ("te-traversal", "2", "text_encoder_name", "../../../etc/passwd", "text_encoder_name '../../../etc/passwd' "
                                                                     "was refused: it contains '..'"),
    ("te-absolute", "2", "text_encoder_name", "/etc/hostname", "it is an absolute path"),
    ("tokenizer-home", "2", "tokenizer", str(Path.home()), "it is an absolute path"),
    ("tokenizer-up", "2", "tokenizer", "../..", "tokenizer '../..' was refused: it contains '..'"),
    ("tokenizer-not-a-tokenizer-folder", "2", "tokenizer", "wan4step_tiny", "tokenizer 'wan4step_tiny' was not found"),
    ("lora-traversal", "1", "lora_name", "../../../etc/passwd", "lora_name '../../../etc/passwd' was refused"),
    ("lora-absolute", "1", "lora_name", "/etc/passwd", "it is an absolute path"),
    ("vae-traversal", "6", "vae_name", "../../../../etc/passwd", "vae_name '../../../../etc/passwd' was refused"),
    ("vae-absolute", "6", "vae_name", "/etc/passwd", "it is an absolute path"),
]


@pytest.mark.parametrize("case, node, field, value, expected", TE_CASES, ids=[c[0] for c in TE_CASES])
def test_text_encoder_tokenizer_and_vae_values_are_contained(srv, case, node, field, value, expected):
    _refused(srv, _linked(_wf(), node, field, value), expected)


def test_vae_as_absolute_path_to_the_real_vae_is_refused_then_a_good_job(srv):
    real = srv.base_dir / "models" / "vae" / bundle.VAE
    _refused(srv, _linked(_wf(), "6", "vae_name", str(real)), "it is an absolute path", echoed=repr(str(real)))
    _good_job(srv)


# --------------------------------------------------------------------------------------
# group 3: no silent changes of what was asked (sampler)
# --------------------------------------------------------------------------------------
def test_frames_10_is_refused_naming_4n_plus_1(srv):
    _refused(srv, _wf(length=10), "frames 10 is not 4n+1 (nearest valid: 9 or 13)")


def test_width_60_is_reported_as_typed(srv):
    text = _refused(srv, _wf(width=60), "width 60 is not divisible by 16 (nearest valid: 48 or 64)")
    assert "56" not in text


def test_non_numeric_step_list_names_the_field(srv):
    wf = _wf()
    wf["5"]["inputs"]["step_list"] = "1000, fast, 250"
    _refused(srv, wf, "step_list: 'fast' is not a whole number")


def test_nan_shift_is_refused(srv):
    wf = _wf()
    wf["5"]["inputs"]["shift"] = math.nan  # JSON NaN: ComfyUI's min/max checks let it through
    _refused(srv, wf, "shift nan is not a finite number")


def test_negative_seed_on_a_link_is_refused(srv):
    wf = _wf()
    wf["192"] = {"class_type": "PrimitiveInt", "inputs": {"value": -1}}
    wf["5"]["inputs"]["seed"] = ["192", 0]
    _refused(srv, wf, "seed -1 is outside 0..18446744073709551615")


def test_the_largest_seed_renders(srv):
    """The node's own maximum (2^64-1) used to fail: 'Overflow when unpacking long long'."""
    _good_job(srv, _wf(seed=2**64 - 1))
    _good_job(srv)


# --------------------------------------------------------------------------------------
# group 4: web routes
# --------------------------------------------------------------------------------------
ROUTE_CASES = [
    ("advisor-malformed", "/wan4step/advisor", "{not json", "body", "body: not valid JSON"),
    ("advisor-list", "/wan4step/advisor", "[1, 2]", "body", "body: expected a JSON object, got a list"),
    ("advisor-width-text", "/wan4step/advisor", '{"width": "832"}', "width", "width: expected a number, got text"),
    ("advisor-nan", "/wan4step/advisor", '{"vram_gb": NaN}', "vram_gb", "vram_gb: nan is not a finite number"),
    ("advisor-1e309", "/wan4step/advisor", '{"ram_gb": 1e309}', "ram_gb", "ram_gb: inf is not a finite number"),
    ("advisor-negative-vram", "/wan4step/advisor", '{"vram_gb": -8}', "vram_gb", "vram_gb: -8.0 is out of range"),
    ("advisor-unknown-gpu", "/wan4step/advisor", '{"gpu": "RTX 9999 Ti"}', "gpu",
     "gpu: unknown GPU 'RTX 9999 Ti': it is not in the card table"),
    ("advisor-huge-frames", "/wan4step/advisor", '{"frames": 100000000}', "frames", "frames: 100000000 is out of range"),
    ("estimate-swap-999", "/wan4step/estimate", '{"blocks_to_swap": 999}', "blocks_to_swap",
     "blocks_to_swap: 999 is out of range"),
    ("estimate-prefetch-neg", "/wan4step/estimate", '{"prefetch": -5}', "prefetch", "prefetch: -5 is out of range"),
    ("estimate-inf-width", "/wan4step/estimate", '{"width": Infinity}', "width", "width: inf is not a finite number"),
    ("estimate-list", "/wan4step/estimate", "[]", "body", "body: expected a JSON object"),
    ("estimate-bad-choice", "/wan4step/estimate", '{"te_device": "tpu"}', "te_device", "te_device: 'tpu' is not one"),
]


@pytest.mark.parametrize("case, path, body, field, expected", ROUTE_CASES, ids=[c[0] for c in ROUTE_CASES])
def test_bad_route_bodies_get_400_naming_the_field(srv, case, path, body, field, expected):
    status, answer = _post(srv, path, body)
    assert status == 400, (status, answer)
    assert answer["field"] == field and expected in answer["error"], answer
    _alive(srv)


def test_an_oversized_body_gets_413(srv):
    status, answer = _post(srv, "/wan4step/advisor", json.dumps({"gpu": "x" * 200_000}))
    assert status == 413 and answer["field"] == "body"
    _alive(srv)


def test_good_route_bodies_still_answer(srv):
    status, answer = _post(srv, "/wan4step/advisor", json.dumps({"gpu": "RTX 4090", "ram_gb": 64, "frames": 81}))
    assert status == 200 and answer["report"].startswith("RTX 4090")
    status, answer = _post(srv, "/wan4step/estimate", json.dumps(
        {"model_name": "lightx2v/distill_fp8/", "width": 832, "height": 480, "frames": 81, "blocks_to_swap": -1,
         "prefetch": 2, "gpu": "RTX 4060 8GB", "ram_gb": 32}))
    assert status == 200 and answer["known"] and "RTX 4060" in answer["badge"], answer


def test_500_concurrent_advisor_calls_do_not_stall_the_server(srv):
    """Before: the advice ran on ComfyUI's event loop and /system_stats waited for the flood."""
    import aiohttp

    async def main():
        body = {"gpu": "RTX 4090", "ram_gb": 64}
        lat: list[float] = []
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                         timeout=aiohttp.ClientTimeout(total=300)) as s:
            async def call():
                async with s.post(srv.base_url + "/wan4step/advisor", json=body) as r:
                    await r.read()
                    return r.status

            async def stats(stop):
                while not stop.is_set():
                    t0 = time.perf_counter()
                    async with s.get(srv.base_url + "/system_stats") as r:
                        await r.read()
                    lat.append(time.perf_counter() - t0)
                    await asyncio.sleep(0.01)

            stop = asyncio.Event()
            poll = asyncio.create_task(stats(stop))
            await asyncio.sleep(0.05)
            codes = await asyncio.gather(*(call() for _ in range(500)))
            stop.set()
            await poll
        return codes, lat

    codes, lat = asyncio.run(main())
    print(f"500 advisor calls: /system_stats max {max(lat) * 1000:.0f} ms over {len(lat)} samples")
    assert codes.count(200) == 500
    assert len(lat) >= 5 and max(lat) < 2.0, lat
    _alive(srv)
    _good_job(srv)


# --------------------------------------------------------------------------------------
# group 5: faults inside a server (folders, interrupts, Block Swap from disk)
# --------------------------------------------------------------------------------------
def _loader_names(server) -> list[str]:
    info = server.get_json("/object_info/Wan4StepModelLoader")["Wan4StepModelLoader"]
    spec = info["input"]["required"]["model_name"]
    return spec[1]["options"] if isinstance(spec[0], str) else spec[0]


def test_a_symlink_loop_in_a_model_folder_does_not_hang_or_repeat(srv):
    loop = srv.base_dir / "models" / "diffusion_models" / "wan4step_safety" / "loop"
    loop.symlink_to("..", target_is_directory=True)  # ../ is diffusion_models: a loop
    try:
        t0 = time.perf_counter()
        names = _loader_names(srv)
        took = time.perf_counter() - t0
        assert bundle.DIT_BF16 in names and not any("loop/" in n for n in names), [n for n in names if "loop" in n]
        assert took < 10, took
    finally:
        loop.unlink()
    _alive(srv)


def test_folder_listing_sees_a_new_and_a_removed_file(srv):
    new = srv.base_dir / "models" / "diffusion_models" / "wan4step_safety" / "appeared.gguf"
    assert "wan4step_safety/appeared.gguf" not in _loader_names(srv)
    new.write_bytes(b"GGUF")
    try:
        assert "wan4step_safety/appeared.gguf" in _loader_names(srv)
    finally:
        new.unlink()
    assert "wan4step_safety/appeared.gguf" not in _loader_names(srv)
    _alive(srv)


def _interrupt_during(server, wf: dict, node: str, delay: float) -> float:
    """Queue `wf`, send /interrupt `delay` s after `node` starts, return seconds until it stopped."""
    r = asyncio.run(interrupt_during(server.base_url, wf, node, delay))
    assert r["result"] == "execution_interrupted", r
    return r["interrupt_to_stop_s"]


def test_interrupt_stops_a_vae_decode_and_comfyuis_own_block_path(srv):
    """/interrupt lands within a layer of the VAE decode (measured on 2 cores: 16.6 s before, when
    only finished frame chunks checked it; 0.1-1.6 s after) and within a block when the loader's
    fast_forward is off. The bounds leave room for a loaded machine."""
    wf = _wf(width=256, height=256, length=33)
    took = _interrupt_during(srv, wf, "7", delay=0.5)
    print(f"interrupt during the VAE decode: stopped after {took:.2f} s")
    assert took < 5.0
    wf = _wf(width=256, height=256, length=33)
    wf["1"]["inputs"]["fast_forward"] = False
    took = _interrupt_during(srv, wf, "5", delay=0.3)
    print(f"interrupt during sampling (ComfyUI's block path): stopped after {took:.2f} s")
    assert took < 3.0
    _alive(srv)
    _good_job(srv)


def test_block_swap_from_disk_runs_under_comfyuis_executor(srv):
    """source=disk failed with 'Inplace update to inference tensor outside InferenceMode'."""
    wf = _wf()
    wf["101"] = {"class_type": "Wan4StepBlockSwap", "inputs": {
        "model": ["1", 0], "blocks_to_swap": 2, "prefetch": 1, "pin_memory": True, "source": "disk",
        "offload_embeddings": False}}
    wf["5"]["inputs"]["model"] = ["101", 0]
    _good_job(srv, wf)
    assert "Wan4Step Block Swap: " in srv.server.log_tail(200)
    bad = copy.deepcopy(wf)
    bad["101"]["inputs"]["blocks_to_swap"] = 999
    bad["5"]["inputs"]["seed"] += 1
    _refused(srv, bad, "Value 999 bigger than max of 40")
    linked = copy.deepcopy(bad)  # on a link ComfyUI does not check the range; the node refuses, not clamps
    linked["193"] = {"class_type": "PrimitiveInt", "inputs": {"value": -5}}
    linked["101"]["inputs"].update(blocks_to_swap=2, prefetch=["193", 0])
    _refused(srv, linked, "prefetch -5 is outside 1..8")
    _good_job(srv)


# --------------------------------------------------------------------------------------
# group 6: server B: the downloader against a fake hub, then a SIGKILL mid-batch
# --------------------------------------------------------------------------------------
def _fake_hub_module():
    spec = importlib.util.spec_from_file_location("wan4step_fake_hub_safety", HERE.parent / "unit" / "test_hub.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def fake_hub():
    from wan4step import catalog

    mod = _fake_hub_module()
    hub = mod.FakeHub()
    hub.add(catalog.COMFY_REPO, {"split_files/vae/wan_2.1_vae.safetensors": mod._data("vae", 4096)})
    yield hub
    hub.close()


@pytest.fixture(scope="module")
def server_b(srv, fake_hub, tmp_path_factory):
    comfyui = srv.server.comfyui
    base = tmp_path_factory.mktemp("comfy_safety_b")
    (base / "models").symlink_to(srv.base_dir / "models", target_is_directory=True)
    prepare_base_dir(base, [p for p in [comfyui / "custom_nodes" / "ComfyUI-GGUF"] if p.is_dir()])
    server = ComfyServer(comfyui, base, env={"OMP_NUM_THREADS": "1", "HF_ENDPOINT": fake_hub.url,
                                             "HF_TOKEN": SECRET, "HF_HUB_OFFLINE": "0",
                                             "WAN4STEP_MAX_TOKENS": "100"})
    client = server.start()
    client.server = server
    client.base_dir = base
    yield client
    server.stop()
    vae = srv.base_dir / "models" / "vae"
    (vae / "wan_2.1_vae.safetensors").unlink(missing_ok=True)
    shutil.rmtree(vae / ".wan4step_download", ignore_errors=True)


def _download(server) -> str:
    prompt = {"1": {"class_type": "Wan4StepDownload",
                    "inputs": {"weights": "none", "text_encoder": "none", "vae": "wan_2.1_vae"}}}
    hist = server.run(prompt, timeout=120)
    return hist["outputs"]["1"]["text"][0]


def test_download_sees_a_file_that_went_missing_and_never_sends_the_token(srv, server_b, fake_hub):
    target = srv.base_dir / "models" / "vae" / "wan_2.1_vae.safetensors"
    target.unlink(missing_ok=True)
    assert _download(server_b).startswith("1 file(s): 1 downloaded")
    assert target.stat().st_size == 4096
    target.unlink()
    # before: the change check gave the same fingerprint as the first run (the file was missing
    # then too), so ComfyUI handed back the cached "1 downloaded" report and the file stayed missing
    assert _download(server_b).startswith("1 file(s): 1 downloaded")
    assert target.stat().st_size == 4096
    assert _download(server_b).startswith("1 file(s): ")  # present: cached or "already present"
    assert fake_hub.auth and not any(fake_hub.auth), "the token was sent to a plain-http mirror"
    _alive(server_b)


def test_the_operators_job_size_cap_refuses_a_big_job(server_b):
    """B runs with WAN4STEP_MAX_TOKENS=100: 256x256x33 is 9 x 16 x 16 = 2,304 tokens."""
    _refused(server_b, _wf(width=256, height=256, length=33),
             "this job (256x256, 33 frames) is 2,304 video tokens; this server accepts at most 100 per job")
    _good_job(server_b)  # 32x32x5: 8 tokens


def test_server_sigkilled_mid_batch_loses_no_job(srv, server_b, tmp_path):
    """`python -m wan4step.api_queue` over A and B; B is SIGKILLed once it has finished a job."""
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(f"a kingfisher diving, take {i}" for i in range(8)) + "\n")
    out = tmp_path / "out"
    before = len(server_b.get_json("/history"))
    cli = subprocess.Popen(
        [sys.executable, "-m", "wan4step.api_queue", str(TINY_API), "--batch", str(prompts), "--seed", "900",
         "--width", "32", "--height", "32", "--frames", "5", "--out", str(out),
         "--server", srv.base_url, server_b.base_url],
        cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)), stdout=subprocess.PIPE,
        stderr=open(tmp_path / "cli.log", "w"), text=True)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and cli.poll() is None:
            if len(server_b.get_json("/history")) > before:
                break
            time.sleep(0.2)
        assert cli.poll() is None, "the batch ended before B finished a job"
        server_b.server.proc.kill()  # SIGKILL: no goodbye, its in-flight jobs vanish with it
        cli.communicate(timeout=240)  # a lost job used to keep the batch (and the CLI) waiting forever
    finally:
        if cli.poll() is None:
            cli.kill()
    stderr = (tmp_path / "cli.log").read_text()
    assert cli.returncode == 0, stderr
    assert f"servers lost: {server_b.base_url}" in stderr, stderr
    report = json.loads((out / "queue_report.json").read_text())
    assert len(report) == 8 and all(j["status"] == "done" for j in report)
    assert {j["server"] for j in report if j["attempts"] > 1} <= {srv.base_url}
    files = sorted(out.glob("*.mp4"))
    assert len(files) == 8 and all(_frames(f.read_bytes()) == (5, 32, 32) for f in files)
    _alive(srv)
    _good_job(srv)
