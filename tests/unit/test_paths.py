"""wan4step.paths: names stay inside model folders; listings survive symlink loops and are cached."""

from __future__ import annotations

import os
import threading
import time

import pytest

from wan4step import paths
from wan4step.errors import SettingsError, describe_head, with_paths


@pytest.fixture
def tree(tmp_path):
    """models/diffusion_models with a file, a subfolder, an operator's link to a shared folder
    outside, and secrets next to the models folder."""
    base = tmp_path / "models" / "diffusion_models"
    (base / "sub").mkdir(parents=True)
    (base / "a.gguf").write_bytes(b"GGUF")
    (base / "sub" / "b.safetensors").write_bytes(b"x")
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "c.gguf").write_bytes(b"GGUF")
    (base / "shared").symlink_to(shared, target_is_directory=True)
    (tmp_path / "secret.gguf").write_bytes(b"secret")
    return base


@pytest.mark.parametrize("name, why", [
    ("../secret.gguf", "'..'"),
    ("../../secret.gguf", "'..'"),
    ("sub/../../secret.gguf", "'..'"),
    ("/etc/passwd", "absolute"),
    ("\\etc\\passwd", "absolute"),
    ("C:\\Windows\\win.ini", "absolute"),
    ("C:secret.gguf", "absolute"),
    ("a\0.gguf", "NUL"),
    ("", "empty"),
    ("./", "empty"),
])
def test_names_that_could_leave_the_folder_are_refused(name, why):
    with pytest.raises(SettingsError, match=why) as err:
        paths.name_parts(name, "model_name")
    assert "model_name" in str(err.value)


def test_relative_names_are_normalized():
    assert paths.name_parts("sub/./b.safetensors") == ("sub", "b.safetensors")
    assert paths.name_parts("distill_fp8/") == ("distill_fp8",)
    assert paths.name_parts("sub\\b.safetensors") == ("sub", "b.safetensors")


def test_find_in_honours_the_operators_link_and_finds_files(tree):
    f = paths.find_in(tree, ("shared", "c.gguf"))
    assert f is not None and f.path == (tree.parent.parent / "shared" / "c.gguf").resolve()
    assert paths.find_in(tree, ("sub", "b.safetensors")).name == "sub/b.safetensors"
    assert paths.find_in(tree, ("sub",)).is_dir
    assert paths.find_in(tree, ("nope.gguf",)) is None


def test_a_link_inside_that_resolves_outside_is_honoured_only_through_the_link(tree, tmp_path):
    # the operator's link is the only way out; the same target by any other name is not reachable
    assert paths.find_in(tree, ("shared", "c.gguf")) is not None
    dangling = tree / "dangling.gguf"
    dangling.symlink_to(tmp_path / "missing.gguf")
    assert paths.find_in(tree, ("dangling.gguf",)) is None
    loop = tree / "loop.gguf"
    loop.symlink_to(loop)
    assert paths.find_in(tree, ("loop.gguf",)) is None


def test_scan_lists_files_markers_and_links(tree):
    marker = tree / "wan" / "distill_fp8"
    marker.mkdir(parents=True)
    (marker / "non_block.safetensors").write_bytes(b"x")
    (marker / "block_0.safetensors").write_bytes(b"x")
    r = paths.scan(tree, (".gguf", ".safetensors"), folder_marker="non_block.safetensors")
    assert r.names == ["a.gguf", "shared/c.gguf", "sub/b.safetensors", "wan/distill_fp8/"]
    assert not r.truncated


def _scan_with_timeout(base, seconds=20.0):
    box = {}
    t = threading.Thread(target=lambda: box.setdefault("r", paths.scan(base, (".gguf",))), daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), "the scan did not finish: a symlink loop was followed"
    return box["r"]


def test_symlink_loops_do_not_hang_or_repeat(tree):
    (tree / "loop1").symlink_to(".", target_is_directory=True)
    (tree / "loop2").symlink_to(".", target_is_directory=True)  # os.walk(followlinks=True): 2^40 paths
    (tree / "sub" / "up").symlink_to("..", target_is_directory=True)
    t0 = time.monotonic()
    r = _scan_with_timeout(tree)
    assert time.monotonic() - t0 < 5
    assert r.names == ["a.gguf", "shared/c.gguf"]


def test_depth_and_folder_caps_stop_a_huge_tree(tmp_path):
    d = tmp_path / "m"
    cur = d
    for i in range(30):
        cur = cur / f"d{i}"
    cur.mkdir(parents=True)
    (cur / "deep.gguf").write_bytes(b"x")
    r = paths.scan(d, (".gguf",), max_depth=10)
    assert r.names == [] and r.truncated
    r = paths.scan(d, (".gguf",), max_dirs=5)
    assert r.truncated


def test_listing_is_cached_and_sees_changes(tree):
    lst = paths.Listing()
    first = lst.names([tree], (".gguf",))
    assert lst.names([tree], (".gguf",)) == first and lst.scans == 1
    time.sleep(0.01)
    (tree / "sub" / "new.gguf").write_bytes(b"x")  # the sub folder's mtime changes
    assert "sub/new.gguf" in lst.names([tree], (".gguf",)) and lst.scans == 2
    os.unlink(tree / "sub" / "new.gguf")
    assert "sub/new.gguf" not in lst.names([tree], (".gguf",)) and lst.scans == 3
    # a folder that appears later is picked up
    extra = tree.parent / "unet"
    assert lst.names([tree, extra], (".gguf",)) == first
    extra.mkdir()
    (extra / "u.gguf").write_bytes(b"x")
    assert "u.gguf" in lst.names([tree, extra], (".gguf",))


@pytest.mark.parametrize("head, words", [
    (b"root:x:0:0:root:/root:/bin/bash\n", "a text file"),
    (b"<!DOCTYPE html><html>", "HTML"),
    (b"version https://git-lfs.github.com/spec/v1", "git LFS pointer"),
    (b"\x7fELF\x02\x01\x01\x00", "unknown format"),
    (b"", "empty"),
])
def test_describe_head_never_quotes_content(head, words):
    text = describe_head(head)
    assert words in text
    assert "root" not in text and "ELF" not in text and "DOCTYPE" not in text


def test_with_paths_rewrites_every_field_and_keeps_the_class():
    from wan4step.errors import FormatError

    e = FormatError("bad /srv/m/x.gguf header", path="/srv/m/x.gguf", found="/srv/m/x.gguf.part too", fix="see /srv/m")
    r = with_paths(e, {"/srv/m/x.gguf": "diffusion_models/x.gguf", "/srv/m": "diffusion_models"})
    assert type(r) is FormatError
    assert "/srv" not in str(r) and str(r).startswith("diffusion_models/x.gguf: bad diffusion_models/x.gguf header")
