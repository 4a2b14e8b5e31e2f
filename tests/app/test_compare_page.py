"""AppTest of the Compare page on finished runs written to disk: two runs compared (the numbers
with their definitions, the overlay toggle, the difference maps), found again after a reload
without recomputing, and a bundled example's run scored against its truth. The comparison runs
in the run service's child process; torch never enters this process (`tests/app/conftest.py`)."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np

from da3_core.runs import compare
from da3_core.scene import reference
from tests.app.kit import check, texts
from tests.unit import synthetic

PAGE = "pages/6_Compare.py"
ROOM = Path(__file__).resolve().parents[2] / "examples" / "room"


def open_compare(new_app, sid):
    at = new_app(sid)
    at.run()
    at.switch_page(PAGE).run()
    check(at, "compare page")
    return at


def wait_table(at, n_tables: int, timeout: float = 180):
    """Rerun the page (as its status fragment does) until ``n_tables`` tables show."""
    t0 = time.monotonic()
    while len(at.table) < n_tables:
        check(at, "waiting for the comparison")
        assert not at.error, texts(at.error)
        assert time.monotonic() - t0 < timeout, texts(at.markdown)[-3:]
        time.sleep(0.3)
        at.run()
    return at.table


def numbers(table) -> dict[str, str]:
    df = table.value
    return dict(zip(df["metric"], df["value"]))


def test_compare_without_two_runs_says_how(new_app, app_env):
    sid, _ = app_env.new_session()
    at = open_compare(new_app, sid)
    info = " ".join(texts(at.info))
    assert "Comparing needs two finished runs" in info and "No run of this session has a reference" in info
    assert "cmp_go" not in {b.key for b in at.button}


def test_two_runs_compared_and_found_again_after_a_reload(new_app, app_env):
    sid, session_dir = app_env.new_session()
    rec = synthetic.box_scene(3)
    _, ma = synthetic.write_finished_run(session_dir, rec, params={"process_res": 504})
    time.sleep(0.01)
    _, mb = synthetic.write_finished_run(
        session_dir, dataclasses.replace(rec, depth=rec.depth * 1.02), params={"process_res": 280}
    )
    at = open_compare(new_app, sid)
    assert at.selectbox(key="cmp_a").value == ma.run_id and at.selectbox(key="cmp_b").value == mb.run_id
    assert any("3 shared frame(s)" in c for c in texts(at.caption))
    at.number_input(key="cmp_thr").set_value(5.0).run()
    at.button(key="cmp_go").click().run()
    table = wait_table(at, 1)[0]
    got = numbers(table)
    assert float(got["AbsRel"]) < 1e-5 and got["δ < 1.25"] == "1" and got["AUC@30"] == "1" and got["F1"] == "1"
    definitions = list(table.value["definition"])
    assert all(definitions) and any("Chamfer distance" in d for d in definitions)
    assert any("5 % of the reference's median depth" in c for c in texts(at.caption))
    # The overlay with its toggle, and the difference map of a view.
    assert len(at.get("plotly_chart")) == 2
    at.radio(key="cmp_show").set_value("b").run()
    check(at, "toggle")
    at.selectbox(key="cmp_view").set_value(2).run()
    assert any("median scale s = 0.9804" in c for c in texts(at.caption)), texts(at.caption)
    # On disk in the session folder: a reload (a new browser session on the same ?s=) finds it
    # without a click and without a new job.
    out = compare.cache_dir(session_dir) / compare.cache_key(ma.run_id, mb.run_id, 5.0)
    assert out.with_suffix(".json").is_file() and out.with_suffix(".npz").is_file()
    again = open_compare(new_app, sid)
    again.number_input(key="cmp_thr").set_value(5.0).run()
    assert len(again.table) == 1 and numbers(again.table[0]) == got


def test_an_example_run_scored_against_its_truth(new_app, app_env):
    sid, session_dir = app_env.new_session()
    names = ["00.jpg", "01.jpg", "02.jpg", "03.jpg"]
    _, hw = reference.processed_intrinsics(np.eye(3), (320, 240), 140)
    truth = reference.example_truth(ROOM, names, hw, 140)
    rec = synthetic.make_rec(truth.depth * 0.5, extrinsics=truth.extrinsics.copy(), intrinsics=truth.intrinsics)
    rec.extrinsics[:, :, 3] *= 0.5  # the same scene at half scale: a similarity away from the truth
    rec = dataclasses.replace(rec, names=tuple(names), images=np.zeros((4, *hw, 3), np.uint8))
    synthetic.write_finished_run(session_dir, rec, source="example:room", params={"process_res": 140})
    at = open_compare(new_app, sid)
    assert any("Living room example's true cameras and depth" in c for c in texts(at.caption))
    at.button(key="cmp_ref_go").click().run()
    got = numbers(wait_table(at, 1)[0])
    assert float(got["AbsRel"]) < 1e-5 and got["δ < 1.25"] == "1"
    assert got["AUC@3"] == "1" and got["F1"] == "1" and float(got["Chamfer distance"]) < 1e-4
    assert any("scale 2" in c for c in texts(at.caption)), texts(at.caption)
