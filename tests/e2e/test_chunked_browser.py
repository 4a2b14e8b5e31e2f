"""A chunked run in headless Chromium, as a new user does it: a 64-frame video, a run in
chunks, a reload while it runs, Cancel, Resume, the aligned frames so far on the Point cloud
page while it runs on, Done, then every result page.

The server has the memory of Streamlit Community Cloud (``DA3_MEMORY_LIMIT_MB=2600``) and
untrained demo weights as its default model (``DA3_MODEL=demo:da3-small``). 64 frames of
160x120 at process_res 252 would fit in one DA3 call there (the page says so: the button
reads "Run reconstruction"), so the run is made chunked the other way a user can: "always in
chunks" under Parameters, chunks of 5. Chunks of 5 at 252 (not 8 at 154, as before) keep the
run going for about 20 s after it is resumed on a quiet machine: the test visits Point cloud
while it runs, and a faster run had ended first. Loop closure is turned off: a panning video
has no loop, and untrained weights would find false ones that cost a minute of loop chunks.

Same helpers as `tests/e2e/test_browser.py`: waits are on visible text and selectors, never
fixed sleeps; screenshots go to ``test-artifacts/screenshots/chunked-*.png``.
"""

from __future__ import annotations

import json
import re
import time

import numpy as np
import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError
from playwright.sync_api import expect

from tests.e2e.conftest import ARTIFACTS, chromium_path
from tests.e2e.server import AppServer
from tests.e2e.test_browser import (
    MAIN,
    PAGE_PATHS,
    RUN_BUTTON,
    SIDEBAR,
    assert_clean,
    choose_option,
    diagnose,
    nav,
    new_page,
    open_url,
    page_ready,
    session_id,
    set_process_res,
    shoot,
    wait_done,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

N_FRAMES, FPS, SIZE, CHUNK, RES = 64, 10, (160, 120), 5, 252
# The chunked run's status line (ChunkedRun.status_line), e.g. "Running chunk 3 of 13 · 13 of 64 frames ready · ETA 40 s · 20 s".
CHUNK_STATUS = re.compile(
    r"^(Running chunk (\d+) of (\d+) · (\d+) of (\d+) frames ready|Queued \(position \d+\) · \d+ frames in \d+ chunks)"
)
FRAMES_READY = re.compile(rf"^Running chunk \d+ of \d+ · [1-9]\d* of {N_FRAMES} frames ready")
ALIGNED_SO_FAR = re.compile(rf"^Run (run-\S+) is still running: [1-9]\d* of {N_FRAMES} frames are aligned so far")
CANCELLED = re.compile(
    r"^Cancelled: run (run-\S+) was stopped \(cancelled by the user; (\d+) of (\d+) chunks are saved"
)


def make_video(path, n: int = N_FRAMES, fps: int = FPS, size: tuple[int, int] = SIZE, step: int = 3) -> None:
    """An MP4 of a camera panning over a blocky texture with colour ramps (``step`` pixels a frame)."""
    import imageio.v2 as imageio

    w, h = size
    rng = np.random.default_rng(7)
    width = w + step * n
    blocks = rng.integers(0, 255, (h // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
    texture = np.kron(blocks, np.ones((8, 8, 1), np.uint8))[:h, :width].astype(np.float32)
    yy, xx = np.mgrid[0:h, 0:width]
    ramps = np.stack([xx * 255.0 / width, yy * 255.0 / h, (xx + yy) % 255], -1)
    texture = (0.6 * texture + 0.4 * ramps).astype(np.uint8)
    with imageio.get_writer(str(path), fps=fps, codec="libx264", quality=8, macro_block_size=8) as writer:
        for i in range(n):
            writer.append_data(np.ascontiguousarray(texture[:, i * step : i * step + w]))


@pytest.fixture(scope="module")
def chunk_server(tmp_path_factory):
    """The real app with a cloud-sized memory limit and demo weights as the default model."""
    chromium_path()
    workspace = tmp_path_factory.mktemp("e2e-chunked-workspace")
    server = AppServer(
        workspace,
        ARTIFACTS / "e2e-chunked-server.log",
        env_extra={"DA3_MEMORY_LIMIT_MB": "2600", "DA3_MODEL": "demo:da3-small"},
    ).start()
    try:
        yield server
    finally:
        survivors = server.stop()
        assert not survivors, f"worker(s) outlived the server: {survivors}\n{server.log_tail()}"


def go(page, base: str, title: str, clicks: list[str]) -> None:
    """`nav`, with the link clicked again when a rerun of the page swallowed the click
    (each extra click is recorded in ``clicks``, for the report)."""
    for _ in range(3):
        try:
            _nav_quick(page, base, title)
            return
        except (AssertionError, PlaywrightTimeoutError):
            clicks.append(title)
    nav(page, base, title)


def _nav_quick(page, base: str, title: str) -> None:
    page.locator(f"{SIDEBAR} a").filter(has_text=re.compile(rf"^\W*{re.escape(title)}\s*$")).first.click(timeout=15_000)
    expect(page).to_have_url(re.compile(rf"^{re.escape(base)}/{PAGE_PATHS[title]}(\?|$)"), timeout=15_000)


def chunk_status(page):
    return page.locator(MAIN).get_by_text(CHUNK_STATUS)


def run_meta(workspace, sid: str, run_id: str) -> dict:
    return json.loads((workspace / "sessions" / sid / run_id / "run.json").read_text())


def test_chunked_video_run_reload_cancel_resume(chunk_server, browser, tmp_path):
    base, workspace = chunk_server.url, chunk_server.workspace
    timings: dict[str, float] = {}
    extra_clicks: list[str] = []
    t0 = time.monotonic()
    video = tmp_path / "pan.mp4"
    make_video(video)

    ctx, page = new_page(browser)
    try:
        open_url(page, base + "/Reconstruct")
        run_button = page.locator(RUN_BUTTON)
        page_ready(page, "Reconstruct", run_button, "Reconstruct")
        sid = session_id(page)
        expect(page.get_by_text("Preset to build untrained weights from")).to_be_visible()  # DA3_MODEL=demo:da3-small

        # The video through the real uploader; the frame cap raised so that all 64 frames are taken.
        page.locator('.st-key-rc_files [data-testid="stFileUploaderDropzone"] input[type="file"]').set_input_files(
            str(video)
        )
        expect(
            page.get_by_text(re.compile(r"^pan\.mp4: 6\.4 s, 160x120 at 10\.00 fps — will make 32 frames"))
        ).to_be_visible()
        cap = page.locator(".st-key-rc_cap input")
        cap.fill(str(N_FRAMES))
        cap.press("Enter")
        expect(
            page.get_by_text(
                re.compile(rf"^pan\.mp4: .* will make {N_FRAMES} frames \(every frame of {N_FRAMES} at 10 fps\)$")
            )
        ).to_be_visible()
        set_process_res(page, RES)
        # 64 small frames at 252 fit in one call under 2.6 GB: the guard would not chunk them by itself.
        expect(
            page.get_by_text(
                re.compile(
                    rf"^Estimate: DA3 Small, {N_FRAMES} frame\(s\) at {RES}: about .* \(.* available: DA3_MEMORY_LIMIT_MB=2600\)"
                )
            )
        ).to_be_visible()
        expect(run_button).to_have_text("Run reconstruction")
        # So: "always in chunks", chunks of CHUNK, no loop closure.
        choose_option(page, "rc_chunk_mode", "always in chunks")
        size = page.locator(".st-key-rc_chunk input")
        size.fill(str(CHUNK))
        size.press("Enter")
        expect(size).to_have_value(str(CHUNK))
        page.locator(".st-key-rc_loops").get_by_text("Loop closure", exact=True).click()
        expect(
            page.locator('.st-key-rc_loops input[role="switch"], .st-key-rc_loops input[type="checkbox"]')
        ).not_to_be_checked()
        plan = page.get_by_text(
            re.compile(
                rf"^Chunked run: {N_FRAMES} frames as (\d+) chunk\(s\) of {CHUNK} overlapping by (\d+) .*"
                rf"Why: chunks of {CHUNK} as set under Parameters"
            )
        )
        expect(plan).to_be_visible()
        n_chunks = int(re.search(r"as (\d+) chunk", plan.inner_text()).group(1))
        expect(run_button).to_have_text(f"Run in {n_chunks} chunk(s)")
        expect(run_button).to_be_enabled()
        assert_clean(page, "Reconstruct before the run")
        timings["setup"] = time.monotonic() - t0

        # Run: the status names the chunk.
        t_run = time.monotonic()
        run_button.click()
        expect(chunk_status(page)).to_be_visible()
        expect(page.locator(MAIN).get_by_text(re.compile(rf"^Running chunk \d+ of {n_chunks} · "))).to_be_visible()
        shoot(page, "chunked-01-running.png", docs=False, full=False)

        # A reload while it runs finds it again.
        page.reload(wait_until="commit")
        expect(page.locator(MAIN).get_by_text(re.compile(rf"^Running chunk \d+ of {n_chunks} · "))).to_be_visible()
        assert session_id(page) == sid
        assert_clean(page, "Reconstruct after a reload mid-run")

        # Cancel as soon as the first chunk is aligned, while chunks are left (here, on the page
        # that shows the run: a visit elsewhere first let a fast run finish before the click).
        expect(page.locator(MAIN).get_by_text(FRAMES_READY)).to_be_visible(timeout=180_000)
        timings["first frames"] = time.monotonic() - t_run
        status = chunk_status(page)
        m = CHUNK_STATUS.match(status.inner_text())
        assert m and m.group(2) and int(m.group(2)) < n_chunks, (
            f"too late to cancel: {status.inner_text()}\n{diagnose(page, workspace)}"
        )
        # By role: Streamlit draws a button that has a tooltip twice (the second copy is hidden).
        page.locator(".st-key-rc_cancel").get_by_role("button", name="Cancel run").click()
        cancelled = page.locator(MAIN).get_by_text(CANCELLED)
        expect(cancelled).to_be_visible()
        cm = CANCELLED.match(cancelled.inner_text())
        run_id = cm.group(1)
        assert int(cm.group(3)) == n_chunks and 1 <= int(cm.group(2)) < n_chunks, cm.group(0)
        resume = page.locator(f".st-key-rc_resume_{run_id}").get_by_role("button", name="Resume")
        expect(resume).to_be_visible()
        meta = run_meta(workspace, sid, run_id)
        assert meta["status"] == "cancelled" and "Resume" in meta["error"], meta
        assert_clean(page, "Reconstruct after Cancel")
        shoot(page, "chunked-03-cancelled.png", docs=False, full=False)
        timings["until cancel"] = time.monotonic() - t_run

        # Resume: it runs on from the saved chunks. While it runs, Point cloud shows the frames
        # so far. The page is left as soon as it says so: its 3D figure, drawn again as each
        # chunk lands, is the heaviest thing the browser does here and would slow the run it watches.
        t_resume = time.monotonic()
        resume.click()
        expect(page.locator(MAIN).get_by_text(FRAMES_READY)).to_be_visible()
        go(page, base, "Point cloud", extra_clicks)
        so_far = page.locator(MAIN).get_by_text(ALIGNED_SO_FAR)
        page_ready(page, "Point cloud", so_far, "Point cloud mid-run")
        assert ALIGNED_SO_FAR.match(so_far.first.inner_text()).group(1) == run_id
        assert run_meta(workspace, sid, run_id)["status"] == "pending"
        shoot(page, "chunked-02-point-cloud-so-far.png", docs=False, full=False)

        # Back to Reconstruct: the resumed run to Done.
        go(page, base, "Reconstruct", extra_clicks)
        expect(chunk_status(page).or_(page.get_by_text(re.compile(r"^Done: "))).first).to_be_visible()
        done_id = wait_done(page, workspace)
        timings["resumed run"] = time.monotonic() - t_resume
        assert done_id == run_id
        banner = page.get_by_text(re.compile(r"^Done: "))
        expect(banner).to_contain_text(f"{N_FRAMES} view(s) with ")
        expect(banner).to_contain_text(
            re.compile(rf", {n_chunks} chunks of {CHUNK} \(overlap \d+\), alignment \w+, 0 loop\(s\) closed")
        )
        meta = run_meta(workspace, sid, run_id)
        chunked = meta["params"]["chunked"]
        assert meta["status"] == "done" and meta["source"] == "video" and len(meta["names"]) == N_FRAMES, meta
        assert chunked["chunks"] == n_chunks and chunked["resumed_from"] >= int(cm.group(2)), chunked
        assert chunked["computed_here"] == n_chunks - chunked["resumed_from"], chunked  # no saved chunk computed again
        assert (workspace / "sessions" / sid / run_id / "exports" / "depth_video.mp4").is_file()
        shoot(page, "chunked-04-done.png", docs=False, scroll_to=banner)

        # The finished run on every result page.
        go(page, base, "Depth maps", extra_clicks)
        page_ready(page, "Depth maps", page.locator(f".st-key-dm_fig_{run_id}_0 .js-plotly-plot"), "Depth maps")
        expect(page.locator(".st-key-dm_view_w input")).to_have_value(re.compile(rf"^View 1 of {N_FRAMES}: "))
        expect(page.get_by_text(ALIGNED_SO_FAR)).to_have_count(0)
        shoot(page, "chunked-05-depth-maps.png", docs=False)
        go(page, base, "Point cloud", extra_clicks)
        page_ready(page, "Point cloud", page.locator('[data-testid="stPlotlyChart"] .js-plotly-plot'), "Point cloud")
        expect(page.get_by_text(re.compile(r"^[\d,]+ points shown of [\d,]+ that pass the filters"))).to_be_visible()
        expect(page.locator(MAIN).get_by_text(re.compile(rf"^Run .* · {re.escape(run_id)}"))).to_be_visible()
        shoot(page, "chunked-06-point-cloud.png", docs=False)
        go(page, base, "Exports", extra_clicks)
        page_ready(page, "Exports", page.locator(".st-key-ex_depth_video button"), "Exports")
        expect(page.locator(".st-key-ex_depth_video button")).to_have_text("Download depth_video.mp4")
        # The viewport at the depth video: the whole page lists every file of the run folder (hundreds of chunk files).
        shoot(page, "chunked-07-exports.png", docs=False, full=False, scroll_to=page.locator(".st-key-ex_depth_video"))
    finally:
        ctx.close()
    timings["total"] = time.monotonic() - t0
    print(
        "chunked flow timings (s):", {k: round(v, 1) for k, v in timings.items()}, "links clicked again:", extra_clicks
    )
