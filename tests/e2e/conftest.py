"""Fixtures for the browser tests: one real Streamlit server for the package's modules that
use `app_server` (started once, stopped after the last test in tests/e2e/), headless Chromium.

The browser is Debian's Chromium (``/usr/bin/chromium``), not Playwright's own download;
when it is missing the tests fail with a message saying how to install it (never a skip).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.e2e.server import ROOT, AppServer

ARTIFACTS = ROOT / "test-artifacts"
SCREENSHOTS = ARTIFACTS / "screenshots"
DOCS_SCREENSHOTS = ROOT / "docs" / "screenshots"

# WebGL without a GPU: Chromium's SwiftShader through ANGLE. Newer Chromium refuses the
# software fallback for WebGL unless --enable-unsafe-swiftshader is given.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
]


def chromium_path() -> str:
    """The system Chromium; a clear failure (not a skip) when there is none."""
    for candidate in (os.environ.get("DA3_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium")):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    pytest.fail(
        "The browser tests need Debian's Chromium at /usr/bin/chromium (or DA3_CHROMIUM=<path>): "
        "install it with `apt-get install -y chromium` (.ci/run does this). Playwright's own "
        "browser download is not used.",
        pytrace=False,
    )


@pytest.fixture(scope="package")
def app_server(tmp_path_factory):
    """The real app on a free port with its own workspace; on teardown no worker may survive it.

    Shared by the modules of tests/e2e/ (each test works in sessions of its own), so the
    server starts once and its worker imports torch and loads the model once; stopped after
    the package's last test. Modules that need other settings start their own `AppServer`.
    """
    chromium_path()  # fail before starting anything when there is no browser
    workspace = tmp_path_factory.mktemp("e2e-workspace")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    server = AppServer(workspace, ARTIFACTS / "e2e-server.log").start()
    try:
        yield server
    finally:
        had_children = [p.pid for p in server.children()]
        survivors = server.stop()
        assert not survivors, (
            f"child process(es) of the Streamlit server outlived it by 5 s (worker not stopped): {survivors}; "
            f"children before stopping: {had_children}\n{server.log_tail()}"
        )


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Headless system Chromium driven by Playwright, shared by a module's tests."""
    executable = chromium_path()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, timeout=60_000)
        try:
            yield b
        finally:
            b.close()
