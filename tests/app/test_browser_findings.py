"""What a browser check of the live app found on the Reconstruct page (headless Chromium, a
new user), each pinned in-process on the real app; no model runs here.

1. Thumbnail captions and "+ N more" rendered Markdown (names must read as typed).
2. The page forgot its uploads, source and process_res after a visit to another page; the
   model choice was lost on reload unless a run had started.
3. An out-of-range process_res left Run on (the run used the last valid value).
4. The run guard advised a process_res it then refused.
6. Mixed portrait and landscape frames were centre-cropped by DA3 with no word before the run.
8. A damaged .mp4 was called "not an image format".
"""

from __future__ import annotations

import json

import psutil

from tests.app.kit import PAGES, check, plain, texts
from tests.conftest import png_bytes


def image_captions(at) -> list[str]:
    """The captions of the page's ``st.image`` thumbnails, as sent to the browser (Markdown source)."""
    out: list[str] = []

    def walk(node) -> None:
        proto = getattr(node, "proto", None)
        if getattr(node, "type", None) in ("image", "imgs") and hasattr(proto, "imgs"):
            out.extend(img.caption for img in proto.imgs)
        for child in getattr(node, "children", {}).values():
            walk(child)

    walk(at.main)
    return out


def open_reconstruct(new_app, sid: str | None = None):
    at = new_app(sid)
    at.switch_page(PAGES[0]).run()
    check(at, "reconstruct")
    return at


# -- 1. names are literal ---------------------------------------------------------------


def test_thumbnail_captions_and_the_more_line_are_not_markdown(new_app):
    at = open_reconstruct(new_app)
    hostile = ["**bold**.png", "$x^2$.png", "[link](https:evil.example).png", ":red[alarm].png"]
    uploads = [(n, png_bytes(i), "image/png") for i, n in enumerate(hostile)]
    uploads += [(f"p{i:02d}.png", png_bytes(10 + i, (48, 36)), "image/png") for i in range(10)]
    at.file_uploader(key="rc_files").set_value(uploads).run()
    check(at, "uploaded")
    captions = image_captions(at)
    assert len(captions) == 12
    # Every Markdown construct escaped in the source; the user reads the name as typed.
    assert captions[:4] == [
        "\\*\\*bold\\*\\*\\.png",
        "\\$x\\^2\\$\\.png",
        "\\[link\\]\\(https\\:evil\\.example\\)\\.png",
        "\\:red\\[alarm\\]\\.png",
    ], captions[:4]
    assert [plain(c) for c in captions[:4]] == hostile
    more = [c.value for c in at.caption if plain(c.value).endswith(" more")]
    assert more == ["\\+ 2 more"], more  # "+ 2 more" would render as a bullet


# -- 2. inputs kept per session ---------------------------------------------------------


def test_uploads_source_and_parameters_survive_a_visit_to_another_page(new_app):
    at = open_reconstruct(new_app)
    photos = [(f"p{i}.png", png_bytes(i), "image/png") for i in (1, 2)]
    at.file_uploader(key="rc_files").set_value(photos).run()
    at.number_input(key="rc_res").set_value(336).run()
    at.selectbox(key="rc_method").set_value("lower_bound_resize").run()
    at.toggle(key="rc_ray").set_value(True).run()
    at.selectbox(key="rc_ref").set_value(1).run()
    check(at, "set up")
    assert len(image_captions(at)) == 2

    for page in (PAGES[4], PAGES[1]):  # away, and back
        at.switch_page(page).run()
        check(at, page)
        at.switch_page(PAGES[0]).run()
        check(at, "back")
        assert at.radio(key="rc_source").value.startswith("Upload")
        assert at.number_input(key="rc_res").value == 336
        assert at.selectbox(key="rc_method").value == "lower_bound_resize"
        assert at.toggle(key="rc_ray").value is True
        assert at.selectbox(key="rc_ref").value == 1
        assert [plain(c) for c in image_captions(at)] == ["p1.png", "p2.png"]  # the uploads are still the frames
        kept = [c for c in texts(at.caption) if "kept from before" in c]
        assert kept and kept[0].startswith("2 file(s) kept from before: p1.png, p2.png"), texts(at.caption)
        assert not at.button(key="rc_run").disabled

    # A file added to the kept ones joins them; Clear forgets the kept ones only.
    at.file_uploader(key="rc_files").set_value([("p3.png", png_bytes(3), "image/png")]).run()
    assert [plain(c) for c in image_captions(at)] == ["p1.png", "p2.png", "p3.png"]
    at.button(key="rc_clear_kept").click().run()
    check(at, "cleared")
    assert [plain(c) for c in image_captions(at)] == ["p3.png"]
    assert not [c for c in texts(at.caption) if "kept from before" in c]


def test_the_example_source_survives_a_visit_to_another_page(new_app):
    at = open_reconstruct(new_app)
    at.radio(key="rc_source").set_value("Example scene").run()
    examples = at.selectbox(key="rc_example").options
    assert len(examples) > 1
    at.selectbox(key="rc_example").select_index(len(examples) - 1).run()
    chosen = at.selectbox(key="rc_example").value
    assert chosen != at.selectbox(key="rc_example").options[0]
    at.switch_page(PAGES[3]).run()
    at.switch_page(PAGES[0]).run()
    check(at, "back")
    assert at.radio(key="rc_source").value == "Example scene"
    assert at.selectbox(key="rc_example").value == chosen


def test_the_model_choice_is_kept_across_pages_and_saved_for_a_reload(new_app, app_env):
    sid, folder = app_env.new_session()
    at = open_reconstruct(new_app, sid)
    assert not (folder / "prefs.json").exists()  # a visit writes nothing
    at.radio(key="model_kind").set_value("Untrained demo weights").run()
    at.selectbox(key="model_demo").set_value("da3-base").run()
    check(at, "model chosen")
    assert (
        json.loads((folder / "prefs.json").read_text())["model"]["model_demo"] == "da3-base"
    )  # saved on change, no run
    at.switch_page(PAGES[2]).run()
    at.switch_page(PAGES[0]).run()
    assert (
        at.radio(key="model_kind").value == "Untrained demo weights"
        and at.selectbox(key="model_demo").value == "da3-base"
    )
    reloaded = open_reconstruct(new_app, sid)  # a reload: a new browser session on the same address
    assert reloaded.radio(key="model_kind").value == "Untrained demo weights"
    assert reloaded.selectbox(key="model_demo").value == "da3-base"


# -- 3. out-of-range parameters ----------------------------------------------------------


def test_an_out_of_range_process_res_turns_run_off_and_says_why(new_app):
    at = open_reconstruct(new_app)
    at.radio(key="rc_source").set_value("Example scene").run()
    assert not at.button(key="rc_run").disabled
    for bad in (5000, 10):
        at.number_input(key="rc_res").set_value(bad).run()
        check(at, str(bad))
        assert at.number_input(key="rc_res").value == bad  # the field keeps what was typed
        assert at.button(key="rc_run").disabled
        said = [e for e in texts(at.error) if f"process_res {bad} is out of range: allowed 14 to 2016." in e]
        assert len(said) == 2, texts(at.error)  # under the field and by the Run button
        assert any(e.startswith("Run is off until this is fixed under Parameters: process_res") for e in said)
    at.number_input(key="rc_res").set_value(504).run()
    assert not at.button(key="rc_run").disabled and not at.error


def test_out_of_range_chunk_size_also_turns_run_off(new_app):
    at = open_reconstruct(new_app)
    at.radio(key="rc_source").set_value("Example scene").run()
    at.number_input(key="rc_chunk").set_value(5000).run()
    assert at.button(key="rc_run").disabled
    assert any("Chunk size 5000 is out of range: allowed 0 to 1000." in e for e in texts(at.error)), texts(at.error)


# -- 4. the guard's advice passes the guard ----------------------------------------------


def test_the_advised_process_res_is_then_accepted(new_app, app_env, monkeypatch):
    """A memory limit that refuses 1008 but not much less: the page's advice, applied, passes."""
    import dataclasses

    from da3_core.app import holder
    from da3_core.presets import PRESETS_BY_NAME
    from da3_core.runs import guard

    at = open_reconstruct(new_app)
    photos = [(f"p{i}.png", png_bytes(i, (640, 480)), "image/png") for i in range(3)]
    at.file_uploader(key="rc_files").set_value(photos).run()
    at.selectbox(key="rc_chunk_mode").set_value("never").run()
    at.number_input(key="rc_res").set_value(1008).run()
    sizes, plenty = [(640, 480)] * 3, guard.Available(1e9, "test")
    high, low = (
        guard.estimate(PRESETS_BY_NAME["da3-small"], sizes, r, "cpu", plenty, 1e9).memory_mb for r in (1008, 504)
    )
    service = holder.get_holder().runs
    limit = psutil.Process().memory_info().rss / 2**20 + (high + low) / 2
    monkeypatch.setattr(service, "settings", dataclasses.replace(service.settings, memory_limit_mb=limit))
    at.run()
    check(at, "refused")
    refusal = [e for e in texts(at.error) if e.startswith("This run would be refused: ")]
    assert refusal and at.button(key="rc_run").disabled, texts(at.error)
    way = refusal[0].split("a lower process_res: ")[1]
    res = int(way.split()[0])
    at.number_input(key="rc_res").set_value(res).run()
    check(at, "advice applied")
    assert not [e for e in texts(at.error) if e.startswith("This run would be refused: ")], texts(at.error)
    assert not at.button(key="rc_run").disabled


# -- 6. DA3's centre crop, said before the run -------------------------------------------


def test_mixed_portrait_and_landscape_frames_are_said_to_be_cropped(new_app):
    at = open_reconstruct(new_app)
    same = [(f"l{i}.png", png_bytes(i, (160, 120)), "image/png") for i in range(2)]
    at.file_uploader(key="rc_files").set_value(same).run()
    assert not [i for i in texts(at.info) if "centre-crops" in i]
    at.file_uploader(key="rc_files").set_value(same + [("portrait.png", png_bytes(5, (120, 160)), "image/png")]).run()
    check(at, "mixed")
    said = [i for i in texts(at.info) if "centre-crops every frame to" in i]
    assert said and "(2 landscape, 1 portrait; at process_res 504 they become " in said[0], texts(at.info)
    assert "crops every frame to 378x378" in said[0]


# -- 8. a damaged video is a video -------------------------------------------------------


def test_a_damaged_mp4_is_said_to_be_a_video_that_could_not_be_read(new_app):
    at = open_reconstruct(new_app)
    at.file_uploader(key="rc_files").set_value(
        [("holiday.mp4", b"\x00\x01garbage" * 300, "video/mp4"), ("ok.png", png_bytes(1), "image/png")]
    ).run()
    check(at, "damaged video")
    warnings = texts(at.warning)
    assert len(warnings) == 1 and warnings[0].startswith("holiday.mp4: the video cannot be read"), warnings
    assert "not an image" not in warnings[0]
