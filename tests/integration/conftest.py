"""The browser of the browser tests (one per test file): Debian's Chromium driven by Playwright, headless, at the
reference window of 1600x1000, on the session's real ComfyUI (tests/conftest.py: comfy_server).

Needs Debian's `chromium` (installed with apt-get when missing and possible) and the `playwright`
package; otherwise every browser test is skipped with one loud reason (`playwright install`
cannot download browsers here, so the system browser is used). Screenshots are kept under
`out/browser/` (git-ignored), named per workflow and per way of opening it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from wan4step_dev.fixtures.tiny_models import write_tiny_models

REPO = Path(__file__).resolve().parents[2]
SHOTS = REPO / "out" / "browser"
WINDOW = {"width": 1600, "height": 1000}
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
CANDIDATES = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]


def _chromium() -> str:
    for c in [os.environ.get("WAN4STEP_CHROMIUM", ""), *CANDIDATES]:
        if c and Path(c).is_file():
            return c
    apt = shutil.which("apt-get")
    if apt and hasattr(os, "geteuid") and os.geteuid() == 0:
        print("\n!!! chromium missing: running `apt-get install -y chromium` for the browser test !!!", flush=True)
        try:
            subprocess.run([apt, "install", "-y", "chromium"], check=False, capture_output=True, timeout=900,
                           env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
        except (OSError, subprocess.TimeoutExpired):
            pass
        for c in CANDIDATES:
            if Path(c).is_file():
                return c
    pytest.skip("!!! BROWSER TEST SKIPPED: no chromium (Debian: `apt-get install -y chromium`, or set "
                "WAN4STEP_CHROMIUM to a Chrome/Chromium binary) !!!")


@pytest.fixture(scope="module")  # per test file: Playwright's sync API holds an event loop while it runs,
def browser_env(comfy_server, tmp_path_factory):  # so later files can still asyncio.run()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("!!! BROWSER TEST SKIPPED: `pip install playwright` (requirements-dev.txt) !!!")
    exe = _chromium()
    write_tiny_models(comfy_server.base_dir / "models")
    shots = tmp_path_factory.mktemp("screenshots")
    SHOTS.mkdir(parents=True, exist_ok=True)
    pw = sync_playwright().start()
    browser = pw.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
    page = browser.new_page(viewport=WINDOW)
    console: list[tuple[str, str, str]] = []
    page.on("console", lambda m: console.append((m.type, m.text, m.location.get("url", ""))))
    page.on("pageerror", lambda e: console.append(("pageerror", str(e), "")))
    responses: list[tuple[int, str]] = []
    page.on("response", lambda r: responses.append((r.status, r.url)))
    page.goto(comfy_server.base_url)
    page.wait_for_function("() => window.app?.graph?.nodes && window.LiteGraph?.registered_node_types?.Wan4StepSampler",
                           timeout=90_000)

    def shot(name: str) -> Path:
        path = shots / f"{name}.png"
        page.screenshot(path=str(path))
        shutil.copy(path, SHOTS / path.name)
        return path

    yield dict(page=page, console=console, server=comfy_server, shot=shot, responses=responses, shots_dir=SHOTS)
    browser.close()
    pw.stop()
