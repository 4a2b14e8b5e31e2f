"""The real model behind the pages: untrained demo weights, tiny frames, process_res 112-140.

One scenario runs the app in a Streamlit process of its own (a fresh interpreter) and proves
torch never enters it through a whole upload → run → pages round. The others run in process
on the session's app runner, so its worker imports torch and loads the model once for all
of them; `tests/app/conftest.py` checks torch never enters this process either.
"""

from __future__ import annotations

import json
import re
import textwrap

import pytest

from tests.app.kit import PAGES, check, texts, wait_outcome
from tests.conftest import png_bytes, run_python

pytestmark = pytest.mark.slow


def test_upload_and_run_in_a_separate_streamlit_process(workspace):
    """Upload → real run → every page, in a fresh Streamlit process that never imports torch."""
    code = textwrap.dedent(
        """
        import json
        from streamlit.testing.v1 import AppTest
        from tests.app.kit import PAGES, check, has_viewer, heavy, keys, texts, wait_outcome
        from tests.conftest import png_bytes

        at = AppTest.from_file("streamlit_app.py", default_timeout=120)
        at.run(); check(at, "home")
        at.switch_page(PAGES[0]).run()
        at.radio(key="model_kind").set_value("Untrained demo weights").run()
        at.number_input(key="rc_res").set_value(140).run()
        at.file_uploader(key="rc_files").set_value([("left.png", png_bytes(1), "image/png"), ("right.png", png_bytes(2), "image/png"),
                                                     ("broken.png", b"not an image", "image/png")]).run()
        check(at, "uploaded")
        rejected = texts(at.warning)
        at.button(key="rc_run").click().run()
        check(at, "run clicked")
        done, errors = wait_outcome(at)
        pages = {}
        at.switch_page(PAGES[1]).run(); check(at, "depth")
        pages["depth"] = {"charts": len(at.get("plotly_chart")), "metrics": [m.label for m in at.metric], "banner": [w[:30] for w in texts(at.warning)]}
        at.switch_page(PAGES[2]).run(); check(at, "cloud")
        pages["cloud"] = {"charts": len(at.get("plotly_chart")), "captions": [c for c in texts(at.caption) if "points shown" in c]}
        at.button(key="pc_full").click().run(); check(at, "full density")
        pages["viewer"] = has_viewer(at)
        at.switch_page(PAGES[3]).run(); check(at, "exports")
        pages["exports"] = sorted(k for k in keys(at.get("download_button")) if k)
        at.switch_page("pages/0_Home.py").run(); check(at, "home with runs")
        pages["home_runs"] = len(at.dataframe[0].value) if at.dataframe else 0
        print(json.dumps({"rejected": rejected, "done": done, "errors": errors, "pages": pages, "heavy": heavy()}))
        """
    )
    report = json.loads(run_python(code, {"DA3_WORKSPACE": str(workspace)}).strip().splitlines()[-1])
    assert report["heavy"] == []  # torch stayed in the worker
    assert report["errors"] == []
    assert any("broken.png" in r for r in report["rejected"])
    assert report["done"] and report["done"][0].startswith("Done: 2 view(s)")
    pages = report["pages"]
    assert pages["depth"]["charts"] >= 2 and "Min" in pages["depth"]["metrics"]
    assert pages["depth"]["banner"][0].startswith("**Untrained demo weights**")
    assert pages["cloud"]["charts"] == 1 and pages["cloud"]["captions"]
    assert pages["viewer"]
    assert set(pages["exports"]) >= {"ex_glb", "ex_ply", "ex_npz", "ex_depth_png", "ex_zip"}
    assert pages["home_runs"] == 1


def test_video_upload_shows_frame_count_then_runs(new_app, tmp_path):
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

    at = new_app()
    at.run()
    at.switch_page(PAGES[0]).run()
    at.radio(key="model_kind").set_value("Untrained demo weights").run()
    at.number_input(key="rc_res").set_value(112).run()
    at.file_uploader(key="rc_files").set_value([("clip.mp4", video.read_bytes(), "video/mp4")]).run()
    check(at, "video uploaded")
    at.slider(key="rc_fps").set_value(2.0).run()
    at.number_input(key="rc_cap").set_value(4).run()
    plan = [i for i in texts(at.info) if "clip.mp4" in i]
    assert plan and "4 frames" in plan[0]
    at.button(key="rc_run").click().run()
    done, errors = wait_outcome(at)
    assert errors == []
    assert done and done[0].startswith("Done: 4 view(s)")


def test_offline_hub_explains_and_retries_with_demo_weights(new_app):
    at = new_app()
    at.run()
    at.switch_page(PAGES[0]).run()
    at.radio(key="rc_source").set_value("Example scene").run()
    at.radio(key="model_kind").set_value("Hub preset").run()
    at.number_input(key="rc_res").set_value(112).run()
    at.button(key="rc_run").click().run()
    done, errors = wait_outcome(at)
    assert done == []
    assert errors and "depth-anything/DA3-SMALL" in errors[0] and "DA3_MODEL_DIR" in errors[0]
    at.button(key="rc_use_demo").click().run()
    check(at, "retry clicked")
    assert at.radio(key="model_kind").value == "Untrained demo weights"
    done, errors = wait_outcome(at)
    assert errors == []
    assert done and done[0].startswith("Done: 4 view(s)")


def test_bad_and_hostile_uploads_are_listed_and_the_good_ones_run(new_app, app_env, tmp_path):
    """A batch mixing good files, damaged files and hostile names: the good ones run, each bad
    one is listed with a reason naming it, names never become paths, the app keeps working."""
    from PIL import Image

    from da3_core.runs import records
    from tests.unit import inputs_corpus as corpus

    root = app_env.workspace

    def files_now() -> set[str]:
        return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and "demo-weights" not in p.parts}

    good = png_bytes(3)
    jpeg = corpus.encode(corpus.noise_rgb(), "JPEG")
    files = [
        ("../../evil.png", good, "image/png"),
        ("/etc/passwd.png", png_bytes(4), "image/png"),
        ("caf\u00e9 photo 1.png", good, "image/png"),
        ("caf\u00e9 photo 1.png", png_bytes(5), "image/png"),
        ("empty.jpg", b"", "image/jpeg"),
        ("truncated.jpg", jpeg[: len(jpeg) // 2], "image/jpeg"),
        ("notes.png", b"just some text, not an image", "image/png"),
        ("dot.png", corpus.encode(Image.new("RGB", (1, 1)), "PNG"), "image/png"),
        ("bomb.png", corpus.png_header_only(60000, 60000), "image/png"),
        ("broken.mp4", b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 100, "video/mp4"),
    ]
    before = files_now()
    at = new_app("../../etc")
    at.run()
    at.switch_page(PAGES[0]).run()
    at.radio(key="model_kind").set_value("Untrained demo weights").run()
    at.number_input(key="rc_res").set_value(112).run()
    at.file_uploader(key="rc_files").set_value(files).run()
    check(at, "bad batch uploaded")
    warnings = texts(at.warning)
    at.button(key="rc_run").click().run()
    done, errors = wait_outcome(at)
    run_warnings = texts(at.warning)
    sid = at.query_params["s"]

    assert sid != "../../etc" and re.fullmatch(r"[0-9a-f]{32}", sid)
    for name in ("empty.jpg", "truncated.jpg", "notes.png", "dot.png", "bomb.png", "broken.mp4"):
        assert any(name in w for w in warnings + run_warnings), name
    assert errors == []
    assert done and done[0].startswith("Done: 4 view(s)")
    metas = records.list_session_runs(root / "sessions" / sid)
    assert metas[0].names == ["evil.png", "passwd.png", "café photo 1.png", "café photo 1 (2).png"]
    escaped = [
        str(p)
        for base in (root, root.parent, tmp_path)
        for p in base.rglob("*")
        if p.name in ("evil.png", "passwd.png", "passwd")
    ]
    assert escaped == []
    written = sorted(files_now() - before)
    assert written and all(w.startswith(f"sessions/{sid}/") for w in written), written
    inputs = [w for w in written if "/input/" in w]
    assert len(inputs) == 4 and all(
        re.fullmatch(r"sessions/[0-9a-f]{32}/run-\d{8}-\d{6}-[0-9a-f]{6}/input/\d{4}\.jpg", w) for w in inputs
    ), inputs
