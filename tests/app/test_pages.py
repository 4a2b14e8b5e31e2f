"""AppTest of every page, each scenario in its own process with a real worker, and torch
never imported in that (Streamlit) process."""

from __future__ import annotations

import json
import re
import textwrap

import pytest

from tests.conftest import run_python

pytestmark = pytest.mark.slow

PRELUDE = textwrap.dedent(
    """
    import json, sys, time
    from streamlit.testing.v1 import AppTest
    from tests.conftest import png_bytes

    PAGES = ["pages/1_Reconstruct.py", "pages/2_Depth_maps.py", "pages/3_Point_cloud.py", "pages/4_Exports.py", "pages/5_Runner.py"]

    def check(at, where):
        assert not at.exception, (where, [e.message for e in at.exception])

    def wait_done(at, timeout=240):
        t0 = time.time()
        while "pending_run" in at.session_state and time.time() - t0 < timeout:
            time.sleep(0.5)
            at.run()
        assert "pending_run" not in at.session_state, "the run did not finish"
        check(at, "after run")

    def keys(widgets):
        return {w.key for w in widgets}

    def has_viewer(at):
        def walk(node):
            yield node
            for child in getattr(node, "children", {}).values():
                yield from walk(child)
        return any("DA3Viewer.mount" in str(getattr(n, "proto", "")) for n in walk(at.main))

    def heavy():
        return sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "depth_anything_3", "torchvision"))

    at = AppTest.from_file("streamlit_app.py", default_timeout=300)
    at.run()
    check(at, "home")
    """
)


def run_scenario(body: str, workspace) -> dict:
    out = run_python(PRELUDE + textwrap.dedent(body), {"DA3_WORKSPACE": str(workspace)})
    return json.loads(out.strip().splitlines()[-1])


def test_every_page_without_a_run(tmp_path):
    report = run_scenario(
        """
        seen = {}
        for page in PAGES:
            at.switch_page(page).run()
            check(at, page)
            seen[page] = {"info": [i.value for i in at.info], "buttons": sorted(k for k in keys(at.button) if k)}
        at.switch_page(PAGES[0]).run()
        widgets = sorted(keys(at.radio) | keys(at.button) | {w.key for w in at.get("file_uploader")})
        print(json.dumps({"seen": seen, "widgets": widgets, "heavy": heavy()}))
        """,
        tmp_path,
    )
    assert report["heavy"] == []
    for page in ("pages/2_Depth_maps.py", "pages/3_Point_cloud.py", "pages/4_Exports.py"):
        assert any("No reconstruction yet" in text for text in report["seen"][page]["info"]), page
    assert "rn_restart" in report["seen"]["pages/5_Runner.py"]["buttons"]
    assert {"rc_source", "model_kind", "rc_run", "rc_files"} <= set(report["widgets"])


def test_upload_run_fills_every_page(workspace):
    report = run_scenario(
        """
        at.switch_page(PAGES[0]).run()
        at.radio(key="model_kind").set_value("Untrained demo weights").run()
        at.number_input(key="rc_res").set_value(140).run()
        at.file_uploader(key="rc_files").set_value([("left.png", png_bytes(1), "image/png"), ("right.png", png_bytes(2), "image/png"),
                                                     ("broken.png", b"not an image", "image/png")]).run()
        check(at, "uploaded")
        rejected = [w.value for w in at.warning]
        at.button(key="rc_run").click().run()
        check(at, "run clicked")
        wait_done(at)
        done = [s.value for s in at.success]
        from da3_core.holder import get_runner
        calls_before = get_runner().status().calls_ok
        pages = {}
        at.switch_page(PAGES[1]).run(); check(at, "depth")
        pages["depth"] = {"charts": len(at.get("plotly_chart")), "metrics": [m.label for m in at.metric], "banner": [w.value[:30] for w in at.warning]}
        at.button(key="dm_next").click().run(); check(at, "depth next")
        pages["depth_after_next"] = at.selectbox(key="dm_view_w").value
        at.switch_page(PAGES[2]).run(); check(at, "cloud")
        pages["cloud"] = {"charts": len(at.get("plotly_chart")), "captions": [c.value for c in at.caption if "points shown" in c.value]}
        at.slider(key="pc_conf_w").set_value(60.0).run(); check(at, "cloud refilter")
        at.toggle(key="pc_cams_w").set_value(False).run(); check(at, "cloud cameras off")
        pages["cloud_refiltered"] = [c.value for c in at.caption if "points shown" in c.value]
        at.button(key="pc_full").click().run(); check(at, "full density")
        pages["viewer_html"] = has_viewer(at)
        at.switch_page(PAGES[3]).run(); check(at, "exports")
        pages["exports"] = sorted(k for k in keys(at.get("download_button")) if k)
        at.switch_page(PAGES[4]).run(); check(at, "runner")
        pages["runner_metrics"] = {m.label: m.value for m in at.metric}
        at.switch_page("streamlit_app.py").run(); check(at, "home with runs")
        calls_after = get_runner().status().calls_ok
        print(json.dumps({"rejected": rejected, "done": done, "pages": pages, "calls": [calls_before, calls_after], "heavy": heavy()}))
        """,
        workspace,
    )
    assert report["heavy"] == []
    assert any("broken.png" in r for r in report["rejected"])
    assert report["done"] and report["done"][0].startswith("Done: 2 view(s)")
    assert report["pages"]["depth"]["charts"] >= 2 and "Min" in report["pages"]["depth"]["metrics"]
    assert report["pages"]["depth"]["banner"][0].startswith("**Untrained demo weights**")
    assert report["pages"]["depth_after_next"] == 1
    assert report["pages"]["cloud"]["charts"] == 1 and report["pages"]["cloud"]["captions"]
    assert report["pages"]["cloud_refiltered"] != report["pages"]["cloud"]["captions"]
    assert report["pages"]["viewer_html"]  # the full-density viewer was embedded
    assert set(report["pages"]["exports"]) >= {"ex_glb", "ex_ply", "ex_npz", "ex_depth_png", "ex_zip"}
    assert report["pages"]["runner_metrics"]["State"] == "idle"
    # Re-filtering, page switches and re-rendering never called the worker.
    assert report["calls"][0] == report["calls"][1]


def test_video_upload_shows_frame_count_then_runs(workspace, tmp_path):
    import imageio_ffmpeg
    import numpy as np

    video = tmp_path / "clip.mp4"
    writer = imageio_ffmpeg.write_frames(str(video), (160, 120), fps=10, macro_block_size=8)
    writer.send(None)
    for i in range(30):  # 3 s at 10 fps
        frame = np.zeros((120, 160, 3), np.uint8)
        frame[:, (i * 5) % 160 :] = (40 * (i % 6), 120, 200)
        writer.send(frame.tobytes())
    writer.close()
    report = run_scenario(
        f"""
        data = open({str(video)!r}, "rb").read()
        at.switch_page(PAGES[0]).run()
        at.radio(key="model_kind").set_value("Untrained demo weights").run()
        at.number_input(key="rc_res").set_value(112).run()
        at.file_uploader(key="rc_files").set_value([("clip.mp4", data, "video/mp4")]).run()
        check(at, "video uploaded")
        at.slider(key="rc_fps").set_value(2.0).run()
        at.number_input(key="rc_cap").set_value(4).run()
        plan = [i.value for i in at.info if "clip.mp4" in i.value]
        at.button(key="rc_run").click().run()
        wait_done(at)
        print(json.dumps({{"plan": plan, "done": [s.value for s in at.success], "heavy": heavy()}}))
        """,
        workspace,
    )
    assert report["heavy"] == []
    assert report["plan"] and "4 frames" in report["plan"][0]
    assert report["done"] and report["done"][0].startswith("Done: 4 view(s)")


def test_offline_hub_explains_and_retries_with_demo_weights(workspace):
    report = run_scenario(
        """
        at.switch_page(PAGES[0]).run()
        at.radio(key="rc_source").set_value("Example scene").run()
        at.radio(key="model_kind").set_value("Hub preset").run()
        at.number_input(key="rc_res").set_value(112).run()
        at.button(key="rc_run").click().run()
        wait_done(at)
        errors = [e.value for e in at.error]
        at.button(key="rc_use_demo").click().run()
        check(at, "retry clicked")
        wait_done(at)
        from da3_core import runs, session
        print(json.dumps({"errors": errors, "done": [s.value for s in at.success], "kind": at.radio(key="model_kind").value, "heavy": heavy()}))
        """,
        workspace,
    )
    assert report["heavy"] == []
    assert report["errors"] and "depth-anything/DA3-SMALL" in report["errors"][0] and "DA3_MODEL_DIR" in report["errors"][0]
    assert report["kind"] == "Untrained demo weights"
    assert report["done"] and report["done"][0].startswith("Done: 4 view(s)")


def test_bad_and_hostile_uploads_are_listed_and_the_good_ones_run(tmp_path):
    """A batch mixing good files, damaged files and hostile names: the good ones run, each bad
    one is listed with a reason naming it, names never become paths, the app keeps working."""
    ws = tmp_path / "ws"
    report = run_scenario(
        f"""
        import io, os
        from pathlib import Path
        from PIL import Image
        from tests.unit import inputs_corpus as corpus
        good = png_bytes(3)
        jpeg = corpus.encode(corpus.noise_rgb(), "JPEG")
        files = [
            ("../../evil.png", good, "image/png"),
            ("/etc/passwd.png", png_bytes(4), "image/png"),
            ("caf\\u00e9 photo 1.png", good, "image/png"),
            ("caf\\u00e9 photo 1.png", png_bytes(5), "image/png"),
            ("empty.jpg", b"", "image/jpeg"),
            ("truncated.jpg", jpeg[: len(jpeg) // 2], "image/jpeg"),
            ("notes.png", b"just some text, not an image", "image/png"),
            ("dot.png", corpus.encode(Image.new("RGB", (1, 1)), "PNG"), "image/png"),
            ("bomb.png", corpus.png_header_only(60000, 60000), "image/png"),
            ("broken.mp4", b"\\x00\\x00\\x00\\x18ftypmp42" + b"garbage" * 100, "video/mp4"),
        ]
        at.query_params["s"] = "../../etc"
        at.switch_page(PAGES[0]).run()
        at.radio(key="model_kind").set_value("Untrained demo weights").run()
        at.number_input(key="rc_res").set_value(112).run()
        at.file_uploader(key="rc_files").set_value(files).run()
        check(at, "bad batch uploaded")
        warnings = [w.value for w in at.warning]
        at.button(key="rc_run").click().run()
        wait_done(at)
        run_warnings = [w.value for w in at.warning]
        sid = at.session_state["sid"]
        root = Path({str(ws)!r})
        written = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and "demo-weights" not in p.parts)
        from da3_core import runs
        metas = runs.list_session_runs(root / "sessions" / sid)
        escaped = [str(p) for p in Path({str(tmp_path)!r}).rglob("evil.png")] + [str(p) for p in root.rglob("passwd*")]
        print(json.dumps({{"warnings": warnings, "run_warnings": run_warnings, "done": [s.value for s in at.success], "sid": sid,
                          "written": written, "names": metas[0].names if metas else [], "escaped": escaped, "heavy": heavy()}}))
        """,
        ws,
    )
    assert report["heavy"] == []
    assert report["sid"] != "../../etc" and len(report["sid"]) == 32
    for name in ("empty.jpg", "truncated.jpg", "notes.png", "dot.png", "bomb.png", "broken.mp4"):
        assert any(name in w for w in report["warnings"] + report["run_warnings"]), name
    assert report["done"] and report["done"][0].startswith("Done: 4 view(s)")
    assert report["names"] == ["evil.png", "passwd.png", "café photo 1.png", "café photo 1 (2).png"]
    assert report["escaped"] == []
    inputs = [w for w in report["written"] if "/input/" in w]
    assert len(inputs) == 4 and all(re.fullmatch(r"sessions/[0-9a-f]{32}/run-\d{8}-\d{6}-[0-9a-f]{6}/input/\d{4}\.jpg", w) for w in inputs), inputs
