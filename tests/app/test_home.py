"""AppTest of the home page, in its own process: a real two-image run through the real worker,
and torch never imported in that (Streamlit) process."""

from __future__ import annotations

import json
import textwrap

import pytest

from tests.conftest import run_python

pytestmark = pytest.mark.slow


def test_home_two_images_to_depth_maps_without_torch_in_parent(workspace):
    code = textwrap.dedent(
        """
        import json, sys
        from streamlit.testing.v1 import AppTest
        from tests.conftest import png_bytes

        at = AppTest.from_file("streamlit_app.py", default_timeout=300)
        at.run()
        assert not at.exception, at.exception
        at.toggle(key="home_demo").set_value(True).run()
        at.file_uploader(key="home_files").set_value([("a.png", png_bytes(1), "image/png"), ("b.png", png_bytes(2), "image/png")])
        at.run()
        at.button(key="home_run").click().run()
        assert not at.exception, at.exception
        assert not at.error, [e.value for e in at.error]
        rec = at.session_state["home_rec"]
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "depth_anything_3", "torchvision"))
        print(json.dumps({"shape": list(rec.depth.shape), "untrained": rec.untrained, "heavy": heavy,
                          "images": len(at.get("imgs")), "warnings": [w.value for w in at.warning]}))
        """
    )
    out = run_python(code, {"DA3_WORKSPACE": str(workspace)})
    report = json.loads(out.strip().splitlines()[-1])
    assert report["heavy"] == []
    assert report["shape"][0] == 2
    assert report["untrained"] is True
    assert any("Untrained demo weights" in w for w in report["warnings"])
