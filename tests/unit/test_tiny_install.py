"""The Tiny Models node's writer: only inside the model folders, atomic, idempotent, never over a user's file,
and with nothing but the pack's runtime requirements (what a Manager install has)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from wan4step.errors import FormatError
from wan4step.tiny import bundle, install
from wan4step_dev.fixtures.tiny_models import write_tiny_models

REPO = Path(__file__).resolve().parents[2]


def _roots(base: Path) -> dict[str, Path]:
    return {k: base / k for k in install.FOLDERS}


def _files(base: Path) -> dict[str, str]:
    return {p.relative_to(base).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(base.rglob("*")) if p.is_file()}


def test_writes_the_loader_names_then_finds_them_in_place(tmp_path):
    first = install.install_tiny_models(_roots(tmp_path))
    assert first.names == {"diffusion_models": bundle.DIT_GGUF, "text_encoders": bundle.UMT5, "vae": bundle.VAE}
    assert len(first.written) == 3 and not first.present
    for key, name in first.names.items():
        assert (tmp_path / key / name).is_file()
    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    again = install.install_tiny_models(_roots(tmp_path))
    assert again.written == [] and len(again.present) == 3
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()} == stamps  # nothing rewritten
    assert not any(p.name.startswith((".staging-", ".manifest-")) for p in tmp_path.rglob("*"))
    assert all(p.stat().st_mode & 0o044 == 0o044 for p in tmp_path.rglob("*") if p.is_file())  # readable by others


def test_same_bytes_as_the_fixture_writer_so_a_prepared_folder_is_reused(tmp_path):
    fixture = tmp_path / "fixture"
    write_tiny_models(fixture)
    before = _files(fixture)
    for fmt in ("gguf_Q4_K_M", "lightx2v_int8", "gguf_vace_Q8_0"):
        done = install.install_tiny_models(_roots(fixture), fmt)
        assert done.written == [], fmt
        ours = install.install_tiny_models(_roots(tmp_path / "ours"), fmt)
        assert ours.written
    mine = _files(tmp_path / "ours")
    assert {k: v for k, v in mine.items() if "manifest" not in k} == {k: before[k] for k in mine if "manifest" not in k}
    assert {k: v for k, v in _files(fixture).items() if "manifest" not in k} == before


def test_a_users_file_of_the_same_name_is_never_overwritten_and_nothing_is_written(tmp_path):
    theirs = tmp_path / "vae" / bundle.VAE
    theirs.parent.mkdir(parents=True)
    theirs.write_bytes(b"the user's own VAE")
    with pytest.raises(FormatError) as err:
        install.install_tiny_models(_roots(tmp_path))
    assert str(theirs) in str(err.value) and "did not write" in str(err.value)
    assert theirs.read_bytes() == b"the user's own VAE"
    assert not (tmp_path / "diffusion_models" / bundle.DIT_GGUF).exists()  # all or nothing
    assert not (tmp_path / "text_encoders" / bundle.UMT5).exists()
    assert not any(p.name.startswith(".staging-") for p in tmp_path.rglob("*"))


def test_a_symlink_in_place_of_a_file_is_refused(tmp_path):
    elsewhere = tmp_path / "elsewhere.bin"
    elsewhere.write_bytes(b"x")
    link = tmp_path / "text_encoders" / bundle.UMT5
    link.parent.mkdir(parents=True)
    link.symlink_to(elsewhere)
    with pytest.raises(FormatError):
        install.install_tiny_models(_roots(tmp_path))
    assert link.is_symlink() and elsewhere.read_bytes() == b"x"


def test_a_wan4step_tiny_folder_linked_outside_the_model_folder_is_refused(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    models = tmp_path / "models"
    (models / "vae").mkdir(parents=True)
    (models / "vae" / install.SUBDIR).symlink_to(outside, target_is_directory=True)
    with pytest.raises(FormatError, match="outside the model folder"):
        install.install_tiny_models(_roots(models))
    assert list(outside.iterdir()) == []


def test_files_it_wrote_itself_may_be_replaced_when_a_target_is_regenerated(tmp_path):
    """A block folder with one file missing is regenerated; a sibling holding bytes this writer recorded
    (an older tiny set) is refreshed, because the manifest says it is the writer's own."""
    install.install_tiny_models(_roots(tmp_path), "lightx2v_fp8")
    folder = tmp_path / "diffusion_models" / bundle.DIT_FP8
    good = (folder / "block_0.safetensors").read_bytes()
    (folder / "block_1.safetensors").unlink()
    (folder / "block_0.safetensors").write_bytes(b"an older tiny block")
    manifest = install._read_manifest(tmp_path / "diffusion_models")
    manifest[bundle.DIT_FP8 + "block_0.safetensors"] = hashlib.sha256(b"an older tiny block").hexdigest()
    install._write_manifest(tmp_path / "diffusion_models", manifest)
    done = install.install_tiny_models(_roots(tmp_path), "lightx2v_fp8")
    assert sorted(done.written) == [f"diffusion_models/{bundle.DIT_FP8}block_{i}.safetensors" for i in (0, 1)]
    assert (folder / "block_0.safetensors").read_bytes() == good


def test_a_failure_while_generating_leaves_no_file_behind(tmp_path, monkeypatch):
    def boom(path):
        Path(path).write_bytes(b"half a file")
        raise RuntimeError("disk full")

    monkeypatch.setattr(install, "_write_vae", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        install.install_tiny_models(_roots(tmp_path))
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []  # no target, no staging, no manifest


def test_only_runtime_requirements_are_needed(tmp_path):
    """What Manager installs (requirements.txt) plus ComfyUI's torch: dev and optional packages are blocked."""
    dev = [line.split("#")[0].split("=")[0].split(">")[0].split("<")[0].strip()
           for line in (REPO / "requirements-dev.txt").read_text().splitlines()]
    blocked = sorted({d.replace("-", "_").lower() for d in dev if d} | {"triton", "sageattention", "flash_attn"})
    code = (
        "import sys\n"
        f"for m in {blocked!r}: sys.modules[m] = None  # import raises ImportError\n"
        f"sys.path.append({str(REPO)!r})\n"
        "from wan4step.tiny.install import install_tiny_models\n"
        f"r = install_tiny_models({{k: {str(tmp_path)!r} + '/' + k for k in ('diffusion_models', 'text_encoders', 'vae')}}, 'lightx2v_fp8')\n"
        "print(len(r.written))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, PYTHONPATH=""))
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == "7"  # 5 block-folder files + UMT5 + VAE
