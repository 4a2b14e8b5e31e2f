"""The Compare page in headless Chromium: two runs of a bundled example made with two presets
(untrained DA3 Small at process_res 140, DA3 Base at 196), their numbers read off the page, the
overlay toggle, the run scored against the example's ground truth, and a COLMAP folder evaluated
with two presets in one table.

Same server and browser fixtures as `tests/e2e/test_browser.py` (one Streamlit server shared by
tests/e2e/, the real worker running DA3 on CPU; the comparisons run in the run service's child
process). Waits are on visible text and selectors.
"""

from __future__ import annotations

import math
import re

import pytest
from playwright.sync_api import Locator, Page, expect

from tests.e2e.test_browser import (
    MAIN,
    RUN_BUTTON,
    assert_clean,
    choose_demo_preset,
    choose_demo_weights,
    choose_option,
    heading,
    new_page,
    open_url,
    prepare_example_run,
    session_id,
    set_process_res,
    shoot,
    wait_done,
)
from tests.e2e.test_known_cameras import write_colmap_folder

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

COMPARE_TIMEOUT_MS = 180_000
METRICS = [
    "AbsRel",
    "δ < 1.25",
    "rotation error (°)",
    "translation-direction error (°)",
    "AUC@3",
    "AUC@30",
    "camera-centre RMSE (ATE)",
    "Chamfer distance",
    "F1",
]


def table_rows(table: Locator) -> list[list[str]]:
    """The cells of an st.table, row by row (an index column may come first)."""
    return [[c.strip() for c in row.locator("td").all_inner_texts()] for row in table.locator("tbody tr").all()]


def read_numbers(table: Locator) -> dict[str, float]:
    """metric -> value of a numbers table (columns metric, value, definition)."""
    out = {}
    for row in table_rows(table):
        metric, value, definition = row[-3:]
        assert definition, f"{metric} has no definition"
        out[metric] = float(value.replace("∞", "inf"))
    return out


def open_compare(page: Page, base: str, sid: str) -> None:
    open_url(page, f"{base}/Compare?s={sid}")
    expect(heading(page, "Compare")).to_be_visible()


def test_compare_two_presets_and_score_against_the_truth(app_server, browser):
    base, workspace = app_server.url, app_server.workspace
    ctx, page = new_page(browser)
    try:
        prepare_example_run(page, base, "room", "Living room", process_res=140)
        page.locator(RUN_BUTTON).click()
        first = wait_done(page, workspace)
        # Two presets: the second run on untrained DA3 Base weights (built in the worker on first use).
        choose_demo_preset(page, "DA3 Base")
        set_process_res(page, 196)
        page.locator(RUN_BUTTON).click()
        second = wait_done(page, workspace, exclude=(first,))
        sid = session_id(page)

        open_compare(page, base, sid)
        main = page.locator(MAIN)
        expect(main.get_by_text("4 shared frame(s) of 4 in A and 4 in B.")).to_be_visible()
        expect(page.locator('.st-key-cmp_a input[role="combobox"]')).to_have_value(re.compile(r"· res 140 · "))
        page.locator(".st-key-cmp_go button").click()
        tables = page.locator(f'{MAIN} [data-testid="stTable"] table')
        expect(tables.first).to_contain_text("Chamfer distance", timeout=COMPARE_TIMEOUT_MS)
        assert_clean(page, "compare result")
        got = read_numbers(tables.first)
        assert set(METRICS) <= set(got), got
        assert got["AbsRel"] >= 0 and 0 <= got["δ < 1.25"] <= 1
        assert 0 <= got["AUC@3"] <= got["AUC@30"] <= 1 and 0 <= got["F1"] <= 1
        assert 0 <= got["rotation error (°)"] <= 180 and 0 <= got["translation-direction error (°)"] <= 90
        assert math.isfinite(got["Chamfer distance"])
        # The overlay (two colours with a toggle) and the difference map.
        charts = page.locator(f'{MAIN} [data-testid="stPlotlyChart"]')
        expect(charts).to_have_count(2)
        page.locator(".st-key-cmp_show").get_by_text("A only", exact=True).click()
        expect(charts).to_have_count(2)
        assert_clean(page, "overlay toggled")
        shoot(page, "10-compare.png", docs=False)

        # The newest run (196) against the example's ground truth.
        expect(main.get_by_text("Scored against the Living room example's true cameras and depth.")).to_be_visible()
        page.locator(".st-key-cmp_ref_go button").click()
        expect(tables.nth(1)).to_contain_text("Chamfer distance", timeout=COMPARE_TIMEOUT_MS)
        assert_clean(page, "score against the truth")
        truth = read_numbers(tables.nth(1))
        assert set(METRICS) <= set(truth), truth
        assert truth["AbsRel"] >= 0 and 0 <= truth["F1"] <= 1 and 0 <= truth["AUC@30"] <= 1

        # A reload finds both results on disk (no button press).
        page.reload(wait_until="commit")
        expect(tables.nth(1)).to_contain_text("Chamfer distance")
        assert read_numbers(tables.first) == got and read_numbers(tables.nth(1)) == truth
        assert {first, second} <= {p.name for p in (workspace / "sessions" / sid).iterdir()}
        assert len(list((workspace / "sessions" / sid / "compare").glob("*.json"))) == 2
    finally:
        ctx.close()


def test_evaluate_a_colmap_folder_with_two_presets(app_server, browser, tmp_path):
    base, workspace = app_server.url, app_server.workspace
    photos, _ = write_colmap_folder(tmp_path)
    ctx, page = new_page(browser)
    try:
        open_url(page, base + "/Compare")
        expect(heading(page, "Compare")).to_be_visible()
        sid = session_id(page)
        go = page.locator(".st-key-cmp_ev_go button")
        expect(go).to_be_disabled()
        cams_chips = page.locator('.st-key-cmp_ev_cams [data-testid="stFileChip"]')
        imgs_chips = page.locator('.st-key-cmp_ev_imgs [data-testid="stFileChip"]')
        page.locator('.st-key-cmp_ev_cams [data-testid="stFileUploaderDropzone"] input[type="file"]').set_input_files(
            [str(tmp_path / "cameras.txt"), str(tmp_path / "images.txt")]
        )
        expect(cams_chips).to_have_count(2)
        page.locator('.st-key-cmp_ev_imgs [data-testid="stFileUploaderDropzone"] input[type="file"]').set_input_files(
            photos
        )
        expect(imgs_chips).to_have_count(3)
        choose_demo_weights(page)
        # Setting B on another preset (two presets, two process_res values, one table).
        choose_option(page, "cmp_ev_model_b", "DA3 Base")
        for key, value in (("cmp_ev_res_a", 112), ("cmp_ev_res_b", 140)):
            box = page.locator(f".st-key-{key} input")
            box.fill(str(value))
            box.press("Enter")
            expect(box).to_have_value(str(value))
        # A rerun can drop uploads (see test_known_cameras): both lists must still be there.
        expect(cams_chips).to_have_count(2)
        expect(imgs_chips).to_have_count(3)
        expect(go).to_be_enabled()
        go.click()
        table = page.locator(f'{MAIN} [data-testid="stTable"] table').filter(has_text="DA3 Base · process_res 140")
        expect(table).to_be_visible(timeout=2 * COMPARE_TIMEOUT_MS)
        assert_clean(page, "evaluation table")
        header = [h.strip() for h in table.locator("thead th").all_inner_texts() if h.strip()]
        assert header[-4:] == ["metric", "DA3 Small · process_res 112", "DA3 Base · process_res 140", "definition"], (
            header
        )
        rows = {r[-4]: r[-3:-1] for r in table_rows(table)}
        assert set(rows) == {"rotation error (°)", "translation-direction error (°)", "AUC@3", "AUC@30",
                             "camera-centre RMSE (ATE)"}, rows  # fmt: skip
        for values in rows.values():
            assert all(math.isfinite(float(v)) for v in values), rows
        runs = [p for p in (workspace / "sessions" / sid).iterdir() if p.name.startswith("run-")]
        assert len(runs) == 2 and all((p / "reference.npz").is_file() for p in runs)
        shoot(page, "11-evaluate-folder.png", docs=False, scroll_to=table)
    finally:
        ctx.close()
