"""The full-density 3D view: a GLB shown by a bundled three.js viewer inside the page.

Plotly caps the points it can draw smoothly; this shows every point of the filtered
cloud. The viewer script (``static/glb_viewer.js``, built from ``viewer/``) is inlined
into the HTML with the GLB as base64, so it works with no internet and no static route.
"""

from __future__ import annotations

import base64
import functools
import json
from pathlib import Path

VIEWER_JS = Path(__file__).resolve().parents[1] / "static" / "glb_viewer.js"


@functools.lru_cache(maxsize=1)
def viewer_script() -> str:
    """The bundled viewer (three.js, GLTFLoader, OrbitControls), read once."""
    return VIEWER_JS.read_text(encoding="utf-8")


def glb_viewer_html(
    glb: bytes, *, height: int = 640, point_size: float = 2.0, show_cameras: bool = True, background: str = "#0e1117"
) -> str:
    """A self-contained HTML page that renders ``glb`` (for ``components.html``).

    Args:
        glb: A binary glTF (from `da3_core.scene.export.glb_bytes`).
        height: Viewer height in CSS pixels.
        point_size: Point size in screen pixels.
        show_cameras: Show the camera wireframes.
        background: CSS colour behind the scene.

    Returns:
        HTML with the script and the data inlined; no external requests.
    """
    options = json.dumps({"pointSize": float(point_size), "showCameras": bool(show_cameras), "background": background})
    data = base64.b64encode(glb).decode("ascii")
    # "</script" cannot occur in base64 or in our JSON; the bundle is escaped defensively.
    script = viewer_script().replace("</script", "<\\/script")
    return f"""<!doctype html>
<html><head><meta charset="utf-8">
<style>
  html, body {{ margin: 0; padding: 0; background: {background}; overflow: hidden; font: 13px sans-serif; color: #ccd; }}
  #da3-viewer {{ position: relative; width: 100%; height: {int(height)}px; }}
  .da3-status {{ position: absolute; left: 8px; bottom: 6px; pointer-events: none; opacity: .85; }}
  #da3-bar {{ position: absolute; right: 8px; top: 6px; display: flex; gap: 8px; align-items: center; }}
  #da3-bar button, #da3-bar input {{ font: inherit; }}
</style></head>
<body>
<div id="da3-viewer" data-state="loading">
  <div id="da3-bar">
    <label>point size <input id="da3-size" type="range" min="1" max="8" step="0.5" value="{float(point_size)}"></label>
    <label><input id="da3-cams" type="checkbox" {"checked" if show_cameras else ""}> cameras</label>
    <button id="da3-reset" type="button">reset view</button>
  </div>
</div>
<script>{script}</script>
<script>
  (function () {{
    var el = document.getElementById('da3-viewer');
    var viewer = DA3Viewer.mount(el, "{data}", {options});
    if (!viewer) return;
    document.getElementById('da3-size').addEventListener('input', function (e) {{ viewer.setPointSize(parseFloat(e.target.value)); }});
    document.getElementById('da3-cams').addEventListener('change', function (e) {{ viewer.setCamerasVisible(e.target.checked); }});
    document.getElementById('da3-reset').addEventListener('click', function () {{ viewer.resetView(); }});
  }})();
</script>
</body></html>"""
