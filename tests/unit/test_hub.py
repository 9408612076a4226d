"""wan4step.hub against a fake Hugging Face Hub served on 127.0.0.1.

The fake implements the three endpoints huggingface_hub calls for our downloads:
`GET /api/models/<repo>/revision/<rev>?blobs=true` (the listing with sizes, LFS sha256
and git blob ids), and `HEAD`/`GET /<repo>/resolve/<rev>/<path>` (with byte ranges).
Errors use the Hub's `X-Error-Code` headers (GatedRepo, RepoNotFound, EntryNotFound),
so huggingface_hub raises its real exception classes. No network is used.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlparse

import pytest

from wan4step import catalog, hub
from wan4step.catalog import FileSpec
from wan4step.errors import DownloadError

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _data(name: str, size: int) -> bytes:
    seed = hashlib.sha256(name.encode()).digest()
    return (seed * (size // len(seed) + 1))[:size]


class FakeHub:
    def __init__(self) -> None:
        self.repos: dict[str, dict] = {}  # repo -> {"files": {path: bytes}, "lfs": set, "gated": bool}
        self.corrupt: set[tuple[str, str]] = set()
        self.oversize: dict[tuple[str, str], int] = {}  # (repo, path) -> extra bytes sent past the listed size
        self.auth: list[str | None] = []  # the Authorization header of every request
        self.log: list[tuple[str, str, str | None]] = []  # (method, path, Range header)
        handler = self._handler()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    def add(self, repo: str, files: dict[str, bytes], lfs: set[str] | None = None, gated: bool = False,
            hashes: bool = True) -> None:
        """hashes=False: a listing with sizes only (no LFS sha256, no git blob id), like some mirrors."""
        self.repos[repo] = {"files": dict(files), "lfs": set(files) if lfs is None else lfs, "gated": gated,
                            "hashes": hashes}

    def gets(self) -> list[tuple[str, str | None]]:
        return [(p, r) for m, p, r in self.log if m == "GET" and "/resolve/" in p]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _handler(hub_self):  # noqa: N805 - closure over the FakeHub
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _error(self, status: int, code: str) -> None:
                body = json.dumps({"error": code}).encode()
                self.send_response(status)
                self.send_header("X-Error-Code", code)
                self.send_header("X-Error-Message", code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _json(self, obj) -> None:
                body = json.dumps(obj).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_HEAD(self):  # noqa: N802
                self._serve()

            def do_GET(self):  # noqa: N802
                self._serve()

            def _serve(self):
                url = urlparse(self.path)
                path = unquote(url.path)
                hub_self.log.append((self.command, path, self.headers.get("Range")))
                hub_self.auth.append(self.headers.get("Authorization"))
                m = re.fullmatch(r"/api/models/([^/]+/[^/]+)(?:/revision/([^/]+))?", path)
                if m:
                    repo = hub_self.repos.get(m.group(1))
                    if repo is None:
                        return self._error(404, "RepoNotFound")
                    siblings = []
                    for name, data in repo["files"].items():
                        s = {"rfilename": name, "size": len(data)}
                        if repo["hashes"]:
                            s["blobId"] = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
                        if name in repo["lfs"] and repo["hashes"]:
                            s["lfs"] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data),
                                        "pointerSize": 134}
                        siblings.append(s)
                    return self._json({"id": m.group(1), "modelId": m.group(1), "sha": COMMIT,
                                       "siblings": siblings, "private": False, "gated": repo["gated"]})
                m = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
                if not m:
                    return self._error(404, "RepoNotFound")
                repo = hub_self.repos.get(m.group(1))
                if repo is None:
                    return self._error(404, "RepoNotFound")
                if repo["gated"]:
                    return self._error(403, "GatedRepo")
                name = m.group(3)
                if name not in repo["files"]:
                    return self._error(404, "EntryNotFound")
                data = repo["files"][name]
                lfs = name in repo["lfs"]
                etag = hashlib.sha256(data).hexdigest() if lfs else hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
                if (m.group(1), name) in hub_self.corrupt:
                    data = bytes(b ^ 0xFF for b in data)
                data = data + b"\0" * hub_self.oversize.get((m.group(1), name), 0)
                start = 0
                rng = self.headers.get("Range")
                if rng and self.command == "GET":
                    start = int(re.match(r"bytes=(\d+)-", rng).group(1))
                body = data[start:]
                self.send_response(206 if start else 200)
                self.send_header("X-Repo-Commit", COMMIT)
                self.send_header("ETag", f'"{etag}"')
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Length", str(len(body)))
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.end_headers()
                if self.command == "GET":
                    try:
                        self.wfile.write(body)
                    except (BrokenPipeError, ConnectionResetError):
                        pass

        return Handler


@pytest.fixture
def fake_hub():
    h = FakeHub()
    yield h
    h.close()


@pytest.fixture
def folders(tmp_path):
    d = {k: tmp_path / "models" / k for k in ("diffusion_models", "text_encoders", "vae")}
    for p in d.values():
        p.mkdir(parents=True)
    return d


REPO = "acme/Wan-test"
SPECS = [
    FileSpec(REPO, "distill_fp8/block_*.safetensors", "diffusion_models", "Wan-test/distill_fp8", count=3),
    FileSpec(REPO, "distill_fp8/config.json", "diffusion_models", "Wan-test/distill_fp8/config.json"),
    FileSpec(REPO, "split_files/vae/vae.safetensors", "vae", "vae.safetensors"),
]


def _repo_files() -> dict[str, bytes]:
    files = {f"distill_fp8/block_{i}.safetensors": _data(f"b{i}", 3000 + i) for i in range(3)}
    files["distill_fp8/config.json"] = b'{"dim": 128}'
    files["split_files/vae/vae.safetensors"] = _data("vae", 5000)
    files["distill_int8/block_0.safetensors"] = _data("int8", 4000)  # must not be downloaded
    return files


def _add_test_repo(fake_hub: FakeHub) -> dict[str, bytes]:
    files = _repo_files()
    fake_hub.add(REPO, files, lfs={n for n in files if not n.endswith(".json")})
    return files


def test_downloads_exactly_the_files_into_their_folders(fake_hub, folders):
    files = _add_test_repo(fake_hub)
    seen = []
    report = hub.download(SPECS, folders, endpoint=fake_hub.url, token=False, progress=lambda d, t, m: seen.append((d, t)))
    assert sorted(r.status for r in report.results) == ["downloaded"] * 5
    for i in range(3):
        p = folders["diffusion_models"] / "Wan-test" / "distill_fp8" / f"block_{i}.safetensors"
        assert p.read_bytes() == files[f"distill_fp8/block_{i}.safetensors"]
    assert (folders["vae"] / "vae.safetensors").read_bytes() == files["split_files/vae/vae.safetensors"]
    assert (folders["diffusion_models"] / "Wan-test/distill_fp8/config.json").read_bytes() == b'{"dim": 128}'
    fetched = {p.split("/resolve/")[1].split("/", 1)[1] for p, _ in fake_hub.gets()}
    assert "distill_int8/block_0.safetensors" not in fetched and len(fetched) == 5
    total = sum(len(files[r.remote.path]) for r in report.results)
    assert seen[-1] == (total, total)
    assert all(b[0] <= b[1] for b in seen) and max(d for d, _ in seen) == total
    # nothing left in the staging folder but huggingface_hub's bookkeeping
    assert list((folders["vae"] / hub.STAGING_DIR).glob("*.part")) == []


def test_skips_files_already_present_and_verified(fake_hub, folders):
    _add_test_repo(fake_hub)
    hub.download(SPECS, folders, endpoint=fake_hub.url, token=False)
    fake_hub.log.clear()
    report = hub.download(SPECS, folders, endpoint=fake_hub.url, token=False)
    assert [r.status for r in report.results] == ["present"] * 5
    assert fake_hub.gets() == []  # only the listing was asked for


def test_a_file_placed_by_hand_is_hashed_once_and_a_wrong_one_replaced(fake_hub, folders):
    files = _add_test_repo(fake_hub)
    good = folders["vae"] / "vae.safetensors"
    good.write_bytes(files["split_files/vae/vae.safetensors"])
    bad = folders["diffusion_models"] / "Wan-test/distill_fp8/block_0.safetensors"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"\0" * len(files["distill_fp8/block_0.safetensors"]))  # right size, wrong bytes
    report = hub.download(SPECS, folders, endpoint=fake_hub.url, token=False)
    status = {r.remote.dest: r.status for r in report.results}
    assert status["vae.safetensors"] == "present"
    assert status["Wan-test/distill_fp8/block_0.safetensors"] == "downloaded"
    assert bad.read_bytes() == files["distill_fp8/block_0.safetensors"]


class _Cancel(Exception):
    pass


def test_an_interrupted_download_resumes(fake_hub, folders, monkeypatch):
    monkeypatch.setattr(hub, "DOWNLOAD_CHUNK", 256 * 1024)
    big = _data("big", 3 * 1024 * 1024)
    fake_hub.add(REPO, {"big.gguf": big})
    spec = [FileSpec(REPO, "big.gguf", "diffusion_models", "big.gguf")]

    def cancel_midway(done, total, what):
        if done >= 1024 * 1024:
            raise _Cancel  # what ComfyUI's interrupt does inside the progress callback

    with pytest.raises(_Cancel):
        hub.download(spec, folders, endpoint=fake_hub.url, token=False, progress=cancel_midway)
    assert not (folders["diffusion_models"] / "big.gguf").exists()
    fake_hub.log.clear()
    report = hub.download(spec, folders, endpoint=fake_hub.url, token=False)
    assert report.results[0].status == "downloaded"
    assert (folders["diffusion_models"] / "big.gguf").read_bytes() == big
    ranges = [r for _, r in fake_hub.gets()]
    assert ranges and ranges[0] is not None and int(ranges[0].split("=")[1].rstrip("-")) >= 1024 * 1024


def test_checksum_mismatch_is_refused_and_cleaned_up(fake_hub, folders):
    files = _add_test_repo(fake_hub)
    fake_hub.corrupt.add((REPO, "split_files/vae/vae.safetensors"))
    with pytest.raises(DownloadError, match="checksum mismatch") as err:
        hub.download(SPECS[2:], folders, endpoint=fake_hub.url, token=False)
    assert "split_files/vae/vae.safetensors" in str(err.value) and "run again" in str(err.value)
    assert not (folders["vae"] / "vae.safetensors").exists()
    assert not list((folders["vae"] / hub.STAGING_DIR).glob("*.part"))
    fake_hub.corrupt.clear()
    hub.download(SPECS[2:], folders, endpoint=fake_hub.url, token=False)
    assert (folders["vae"] / "vae.safetensors").read_bytes() == files["split_files/vae/vae.safetensors"]


def _closed_port_url() -> str:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"  # nothing listens there once the socket is closed


def test_offline_with_missing_files_says_so(folders):
    with pytest.raises(DownloadError, match="cannot be reached|cannot reach") as err:
        hub.download(SPECS, folders, endpoint=_closed_port_url(), token=False)
    assert "HF_ENDPOINT" in str(err.value)


def test_offline_with_everything_present_is_fine(fake_hub, folders):
    _add_test_repo(fake_hub)
    hub.download(SPECS, folders, endpoint=fake_hub.url, token=False)
    report = hub.download(SPECS, folders, endpoint=_closed_port_url(), token=False)
    assert report.offline and [r.status for r in report.results] == ["present"] * 5


def test_gated_repository_names_the_fix(fake_hub, folders):
    fake_hub.add(REPO, _repo_files(), gated=True)
    with pytest.raises(DownloadError, match="gated") as err:
        hub.download(SPECS[2:], folders, endpoint=fake_hub.url, token=False)
    msg = str(err.value)
    assert "accept" in msg and "HF_TOKEN" in msg and REPO in msg


def test_missing_file_and_missing_repo(fake_hub, folders):
    _add_test_repo(fake_hub)
    spec = [FileSpec(REPO, "Wan-test-Q9_K.gguf", "diffusion_models", "x.gguf")]
    with pytest.raises(DownloadError, match="does not hold the expected file"):
        hub.download(spec, folders, endpoint=fake_hub.url, token=False)
    with pytest.raises(DownloadError, match="expected=|Expected: 4 file"):
        hub.download([FileSpec(REPO, "distill_fp8/block_*.safetensors", "diffusion_models", "d", count=4)],
                     folders, endpoint=fake_hub.url, token=False)
    with pytest.raises(DownloadError, match="not found"):
        hub.download([FileSpec("acme/nope", "a.gguf", "diffusion_models", "a.gguf")], folders,
                     endpoint=fake_hub.url, token=False)


def test_catalog_plan_fetches_only_its_files_with_case_insensitive_names(fake_hub, folders):
    """The real catalog entries against fake repos laid out like the real ones (tiny files)."""
    lx = {f"distill_fp8/block_{i}.safetensors": _data(f"f{i}", 100) for i in range(40)}
    lx |= {f"distill_int8/block_{i}.safetensors": _data(f"i{i}", 100) for i in range(40)}
    lx |= {"distill_fp8/non_block.safetensors": _data("nb", 200), "distill_int8/non_block.safetensors": b"x",
           "distill_fp8/models_t5_umt5-xxl-enc-fp8.pth": b"te", "config.json": b"{}"}
    fake_hub.add(catalog.LIGHTX2V_REPO, lx)
    # a name that differs from the catalog's only in case still matches
    fake_hub.add(catalog.GGUF_REPO, {"wan2.1_t2v_14b_lightx2v_stepcfgdistill_vace-Q4_K_M.gguf": _data("q4", 300),
                                     "Wan2.1_T2V_14B_LightX2V_StepCfgDistill_VACE-Q8_0.gguf": _data("q8", 300)})
    fake_hub.add(catalog.COMFY_REPO, {
        "split_files/text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors": _data("te8", 100),
        "split_files/text_encoders/umt5_xxl_fp16.safetensors": _data("te16", 100),
        "split_files/vae/wan_2.1_vae.safetensors": _data("vae", 100),
    })
    specs = catalog.files_for(weights_key="lightx2v_fp8", text_encoder_key="umt5_fp8", vae_key="wan_2.1_vae")
    report = hub.download(specs, folders, endpoint=fake_hub.url, token=False)
    assert len(report.downloaded) == 43
    fp8_dir = folders["diffusion_models"] / catalog.WEIGHTS["lightx2v_fp8"].model_name
    assert sorted(p.name for p in fp8_dir.iterdir()) == sorted(
        [f"block_{i}.safetensors" for i in range(40)] + ["non_block.safetensors"])
    assert (folders["text_encoders"] / "umt5_xxl_fp8_e4m3fn_scaled.safetensors").is_file()
    assert (folders["vae"] / "wan_2.1_vae.safetensors").is_file()
    fetched = {p.split("/resolve/")[1].split("/", 1)[1] for p, _ in fake_hub.gets()}
    assert not any("int8" in f or f.endswith(".pth") or "fp16" in f for f in fetched)
    # a GGUF tier: the lower-case name on the hub lands under the catalog's name
    report = hub.download(catalog.files_for(weights_key="gguf_Q4_K_M", text_encoder_key=None, vae_key=None),
                          folders, endpoint=fake_hub.url, token=False)
    assert [r.remote.path for r in report.results] == ["wan2.1_t2v_14b_lightx2v_stepcfgdistill_vace-Q4_K_M.gguf"]
    assert (folders["diffusion_models"] / catalog.WEIGHTS["gguf_Q4_K_M"].model_name).is_file()



# --------------------------------------------------------------------------------------
# shared-server safety (issue 17)
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("url, sends", [
    ("https://huggingface.co", True), ("https://cdn-lfs.huggingface.co/x", True), ("https://hf.co/a", True),
    ("http://huggingface.co", False), ("https://huggingface.co.evil.example", False),
    ("https://mirror.example.com", False), ("http://127.0.0.1:8080", False), ("https://evilhuggingface.co", False),
])
def test_only_hugging_face_https_hosts_get_the_token(url, sends):
    assert hub.sends_token(url) is sends


def test_a_mirror_endpoint_never_sees_the_token(fake_hub, folders, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_secret_do_not_send")
    _add_test_repo(fake_hub)
    hub.download(SPECS, folders, endpoint=fake_hub.url)  # token=None: huggingface_hub would use HF_TOKEN
    hub.download(SPECS, folders, endpoint=fake_hub.url, token="hf_explicit_secret")
    assert fake_hub.auth and not any(fake_hub.auth), set(fake_hub.auth)


def test_a_listing_without_sha256_is_reported_unverified(fake_hub, folders):
    fake_hub.add(REPO, _repo_files(), hashes=False)
    report = hub.download(SPECS[2:], folders, endpoint=fake_hub.url, token=False)
    assert [r.status for r in report.results] == ["downloaded"]
    assert report.results[0].checked_by == "size only" and report.unverified == report.results
    assert "1 unverified: the listing gives no sha256 (vae.safetensors; checked by size only)" in report.summary()
    again = hub.download(SPECS[2:], folders, endpoint=fake_hub.url, token=False)
    assert "1 unverified" in again.summary()
    # with hashes the same download is verified
    fake_hub.add(REPO, _repo_files())
    (folders["vae"] / "vae.safetensors").unlink()
    report = hub.download(SPECS[2:], folders, endpoint=fake_hub.url, token=False)
    assert report.results[0].checked_by == "sha256" and "unverified" not in report.summary()


def test_a_server_sending_more_than_listed_gets_the_wrong_size_error(fake_hub, folders):
    _add_test_repo(fake_hub)
    fake_hub.oversize[(REPO, "split_files/vae/vae.safetensors")] = 10_000
    with pytest.raises(DownloadError, match="wrong size") as err:
        hub.download(SPECS[2:], folders, endpoint=fake_hub.url, token=False)
    assert "Expected: 5000 bytes" in str(err.value) and "more than 5000 bytes" in str(err.value)
    assert not list((folders["vae"] / hub.STAGING_DIR).glob("*.part"))
    assert not (folders["vae"] / "vae.safetensors").exists()


def test_a_destination_outside_the_folder_is_refused(fake_hub, folders):
    _add_test_repo(fake_hub)
    bad = [FileSpec(REPO, "split_files/vae/vae.safetensors", "vae", "../../escaped.safetensors")]
    with pytest.raises(DownloadError, match="outside the model folder"):
        hub.download(bad, folders, endpoint=fake_hub.url, token=False)
    assert not (folders["vae"].parent.parent / "escaped.safetensors").exists()
