"""The in-page 3D Gaussian viewer: the payload (SPZ bytes and cameras) and the HTML page that
inlines Spark's bundled viewer script (``static/splat_viewer.js``), and a run's viewer state
for the Point cloud page.
"""

from __future__ import annotations

import base64
import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from da3_core.app.text import md
from da3_core.contract import Gaussians, Reconstruction
from da3_core.scene import geometry
from da3_core.scene.splat import pack_spz, visible_mask
from da3_core.scene.splat_cameras import frustum_lines, gaussian_cameras, viewer_camera

SPLAT_JS = Path(__file__).resolve().parents[1] / "static" / "splat_viewer.js"


@functools.lru_cache(maxsize=1)
def viewer_script() -> str:
    """The bundled viewer (three.js, Spark, OrbitControls), read once."""
    return SPLAT_JS.read_text(encoding="utf-8")


@dataclass(frozen=True)
class SplatPayload:
    """What the page embeds: the SPZ bytes and the viewer options."""

    spz: bytes
    options: dict
    n_sent: int
    n_total: int


def splat_payload(
    g: Gaussians,
    cameras: geometry.Cameras,
    hw: tuple[int, int],
    *,
    splat_scale: float = 1.0,
    show_cameras: bool = True,
    background: str = "#0e1117",
    mode: str = "orbit",
    camera_size: float = 0.03,
    reference: int | None = None,
) -> SplatPayload:
    """Pack ``g`` and the viewer's options (start camera, frustums, controls).

    Args:
        g: The Gaussians (world frame).
        cameras: Cameras in the Gaussians' frame (`gaussian_cameras`).
        hw: (H, W) processed image size (field of view, frustum shape).
        splat_scale: Initial multiplier of every Gaussian's size.
        show_cameras: Show the camera frustums at first.
        background: Hex colour behind the scene (``#rgb`` or ``#rrggbb``).
        mode: ``"orbit"`` or ``"fly"`` at first.
        camera_size: Frustum depth as a fraction of the scene size (DA3's 0.03).
        reference: Start at this camera instead of the reference camera.
    """
    if mode not in ("orbit", "fly"):
        raise ValueError(f"mode must be 'orbit' or 'fly', got {mode!r}")
    if not re.fullmatch(r"#[0-9a-fA-F]{6}|#[0-9a-fA-F]{3}", background):
        raise ValueError(f"background must be a hex colour such as '#0e1117', got {background!r}")
    keep = visible_mask(g)
    spz = pack_spz(g)
    means = np.asarray(g.means, dtype=np.float64)[keep]
    size = geometry.scene_scale(means) if len(means) else 1.0
    segments, colours = frustum_lines(cameras, hw, camera_size * size)
    options = {
        "count": int(keep.sum()),
        "camera": viewer_camera(cameras, hw, means, reference),
        "frustums": segments,
        "frustumColors": colours,
        "sceneSize": float(size),
        "splatScale": float(splat_scale),
        "showCameras": bool(show_cameras),
        "background": background,
        "mode": mode,
    }
    return SplatPayload(spz, options, int(keep.sum()), int(len(keep)))


def splat_viewer_html(
    g: Gaussians,
    cameras: geometry.Cameras,
    hw: tuple[int, int],
    *,
    height: int = 620,
    splat_scale: float = 1.0,
    show_cameras: bool = True,
    background: str = "#0e1117",
    mode: str = "orbit",
    reference: int | None = None,
) -> str:
    """A self-contained HTML page that renders ``g`` in the browser (for ``st.iframe``).

    Controls inside the page: orbit / fly, splat scale, cameras on/off, reset to the
    reference camera. The page sets ``data-state="ready"`` on ``#da3-splat`` (and logs
    ``DA3_SPLAT_READY <ms>``) once the first frame with the Gaussians is drawn.

    Args: see `splat_payload`; ``height`` is the viewer height in CSS pixels.

    Returns:
        HTML with the script and the data inlined; no external requests.
    """
    payload = splat_payload(
        g,
        cameras,
        hw,
        splat_scale=splat_scale,
        show_cameras=show_cameras,
        background=background,
        mode=mode,
        reference=reference,
    )
    return html_page(payload, height=height)


def html_page(payload: SplatPayload, *, height: int = 620) -> str:
    """The HTML page for a `SplatPayload` (see `splat_viewer_html`)."""
    opts = payload.options
    data = base64.b64encode(payload.spz).decode("ascii")
    options = json.dumps(opts, separators=(",", ":")).replace("</", "<\\/")
    script = viewer_script().replace("</script", "<\\/script")
    background = opts["background"]  # a hex colour (checked in `splat_payload`)
    scale = float(opts["splatScale"])
    fly = opts["mode"] == "fly"
    return f"""<!doctype html>
<html><head><meta charset="utf-8">
<style>
  html, body {{ margin: 0; padding: 0; background: {background}; overflow: hidden; font: 13px sans-serif; color: #ccd; }}
  #da3-splat {{ position: relative; width: 100%; height: {int(height)}px; }}
  #da3-splat canvas {{ display: block; outline: none; }}
  .da3-status {{ position: absolute; left: 8px; bottom: 6px; pointer-events: none; opacity: .85; }}
  #da3-bar {{ position: absolute; right: 8px; top: 6px; display: flex; gap: 10px; align-items: center; background: rgba(14,17,23,.6); padding: 3px 6px; border-radius: 4px; }}
  #da3-bar button, #da3-bar input, #da3-bar select {{ font: inherit; }}
</style></head>
<body>
<div id="da3-splat" data-state="loading">
  <div id="da3-bar">
    <label>mode <select id="da3-mode"><option value="orbit"{"" if fly else " selected"}>orbit</option><option value="fly"{" selected" if fly else ""}>fly (WASD)</option></select></label>
    <label>splat scale <input id="da3-scale" type="range" min="0.1" max="3" step="0.05" value="{scale:g}"></label>
    <label><input id="da3-cams" type="checkbox" {"checked" if opts["showCameras"] else ""}> cameras</label>
    <button id="da3-reset" type="button">reset view</button>
  </div>
</div>
<script>{script}</script>
<script>
  (function () {{
    var el = document.getElementById('da3-splat');
    var viewer = DA3SplatViewer.mount(el, "{data}", {options});
    window.da3SplatViewer = viewer;
    if (!viewer) return;
    document.getElementById('da3-mode').addEventListener('change', function (e) {{ viewer.setMode(e.target.value); }});
    document.getElementById('da3-scale').addEventListener('input', function (e) {{ viewer.setSplatScale(parseFloat(e.target.value)); }});
    document.getElementById('da3-cams').addEventListener('change', function (e) {{ viewer.setCamerasVisible(e.target.checked); }});
    document.getElementById('da3-reset').addEventListener('click', function () {{ viewer.resetView(); }});
  }})();
</script>
</body></html>"""


NO_GAUSSIANS = (
    "3D Gaussian viewer: this run has no Gaussians (they come from presets with a GS head, "
    "DA3 Giant or Nested Giant-Large, run with 'Infer 3D Gaussians')."
)


@dataclass(frozen=True)
class RunViewer:
    """A run's Gaussian viewer, ready for ``st.iframe``.

    Attributes:
        html: The self-contained page.
        n_sent: Gaussians drawn (those that can be seen).
        n_total: Gaussians in the run.
        reference: Index of the view the viewer starts from.
        payload_mb: Size of ``html`` in MB (10^6 bytes): what travels to the browser.
    """

    html: str
    n_sent: int
    n_total: int
    reference: int
    payload_mb: float


def run_viewer(
    rec: Reconstruction, cameras: geometry.Cameras, *, show_cameras: bool = True, height: int = 620
) -> RunViewer:
    """The Gaussian viewer of a run: its Gaussians with its cameras (in the Gaussians' frame).

    Raises:
        ValueError: The run has no Gaussians.
    """
    if rec.gaussians is None:
        raise ValueError(NO_GAUSSIANS)
    payload = splat_payload(rec.gaussians, gaussian_cameras(rec, cameras), rec.hw, show_cameras=show_cameras)
    html = html_page(payload, height=height)
    return RunViewer(
        html, payload.n_sent, payload.n_total, int(payload.options["camera"]["index"]), len(html.encode("utf-8")) / 1e6
    )


def run_viewer_caption(view: RunViewer, names: tuple[str, ...] | list[str]) -> str:
    """One line of Markdown under the viewer: what is drawn, where it starts, how much was sent
    (the view name is escaped)."""
    hidden = view.n_total - view.n_sent
    left_out = f" ({hidden:,} fully transparent or invalid left out)" if hidden else ""
    ref = (
        f"view {view.reference}: {md(names[view.reference])}"
        if 0 <= view.reference < len(names)
        else f"view {view.reference}"
    )
    return (
        f"{view.n_sent:,} of {view.n_total:,} Gaussians{left_out}, drawn by your browser (WebGL2, Spark): nothing renders on the "
        f"server. Starts at the reference camera ({ref}); orbit or fly, splat scale, cameras and reset are in the viewer's bar. "
        f"Page size {view.payload_mb:.1f} MB."
    )
