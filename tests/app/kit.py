"""Helpers for the page tests: they drive the app only through widgets and page text, and
write on-disk runs only through `da3_core.runs.records`."""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

HEAVY = ("torch", "torchvision", "depth_anything_3", "xformers")
PAGES = [
    "pages/1_Reconstruct.py",
    "pages/2_Depth_maps.py",
    "pages/3_Point_cloud.py",
    "pages/4_Exports.py",
    "pages/5_Runner.py",
    "pages/6_Compare.py",
]
# The entry script (st.navigation over the pages) and the Home page it opens on.
ENTRY = "streamlit_app.py"
HOME = "pages/0_Home.py"


def heavy() -> list[str]:
    """Heavy modules (torch, DA3, ...) loaded in this process."""
    return sorted(m for m in sys.modules if m.split(".")[0] in HEAVY)


@contextmanager
def environ(values: dict[str, str]) -> Iterator[None]:
    """``os.environ`` with ``values`` set, restored exactly afterwards."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def check(at, where: str) -> None:
    assert not at.exception, (where, [e.message for e in at.exception])


def keys(widgets) -> set:
    return {w.key for w in widgets}


_ESCAPED = re.compile(r"\\([!-/:-@\[-`{-~])")


def plain(text: str) -> str:
    """Markdown text as the user reads it (the app backslash-escapes user-supplied text)."""
    return _ESCAPED.sub(r"\1", text)


def texts(elements) -> list[str]:
    """The elements' text as the user reads it."""
    return [plain(e.value) for e in elements]


def has_viewer(at) -> bool:
    """The full-density WebGL viewer is embedded in the page."""

    def walk(node):
        yield node
        for child in getattr(node, "children", {}).values():
            yield from walk(child)

    return any("DA3Viewer.mount" in str(getattr(n, "proto", "")) for n in walk(at.main))


DONE = re.compile(r"^Done: (\d+) view\(s\) with .* \(run (run-[0-9]{8}-[0-9]{6}-[0-9a-f]+)\)\.$")


def wait_outcome(at, timeout: float = 240, poll_s: float = 0.3) -> tuple[list[str], list[str]]:
    """Rerun the page until a run's "Done:" banner or an error shows; return (successes, errors)."""
    t0 = time.monotonic()
    while True:
        check(at, "waiting for the run")
        done = [s for s in texts(at.success) if s.startswith("Done:")]
        errors = texts(at.error)
        if done or errors:
            return done, errors
        assert time.monotonic() - t0 < timeout, f"no outcome after {timeout:.0f} s; page says {texts(at.caption)[-3:]}"
        time.sleep(poll_s)
        at.run()


def runner_counts(at) -> dict[str, str]:
    """The Runner page's metrics and its 'calls ok' count, once the worker is idle and has
    reported its device (polls the page)."""
    at.switch_page(PAGES[4]).run()
    t0 = time.monotonic()
    while True:
        check(at, "runner page")
        metrics = {m.label: m.value for m in at.metric}
        if metrics.get("State") == "idle" and metrics.get("Device") not in (None, "…"):
            break
        assert time.monotonic() - t0 < 120, metrics
        time.sleep(0.3)
        at.run()
    text = " ".join(texts(at.markdown))
    found = re.search(r"calls ok: (\d+) · failed: (\d+)", text)
    assert found, text
    return {**metrics, "calls_ok": found.group(1), "calls_failed": found.group(2)}


def run_picker(at):
    """The sidebar's run picker (found by its label: its key names the run it shows)."""
    found = [s for s in at.sidebar.selectbox if s.label == "Run"]
    assert len(found) == 1, [s.label for s in at.sidebar.selectbox]
    return found[0]


def wait_export(at, done_prefix: str, timeout: float = 120, poll_s: float = 0.3) -> tuple[list[str], list[str]]:
    """Rerun the Exports page until an export job's end shows: a success starting with
    ``done_prefix``, an error, or a "was cancelled" note; return (successes, errors)."""
    t0 = time.monotonic()
    while True:
        check(at, "waiting for the export")
        done = [s for s in texts(at.success) if s.startswith(done_prefix)]
        errors = texts(at.error) + [i for i in texts(at.info) if " was cancelled " in i]
        if done or errors:
            return done, errors
        assert time.monotonic() - t0 < timeout, (
            f"no end of the export after {timeout:.0f} s; page says {texts(at.markdown)[-3:]}"
        )
        time.sleep(poll_s)
        at.run()
