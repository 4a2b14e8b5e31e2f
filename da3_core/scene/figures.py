"""Plotly figures for the dashboard: point cloud with cameras, depth and confidence maps.

Pure functions returning ``go.Figure``. Large arrays go in as float32 / unsigned numpy
arrays, which plotly 7 serialises as base64 typed arrays ("bdata"), never as lists.

Point colours: Scatter3d takes per-point colours only as strings (slow, large) or as
numbers through a colour scale. `encode_colors` maps each point to a palette index and
`palette_colorscale` builds a scale whose stop i is exactly palette entry i, so with
``cmin=0, cmax=K-1`` index i renders as palette colour i (values land on stops, so
nothing is interpolated).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go

from da3_core.scene.geometry import Cameras, PointCloud, camera_rgb, depth_range, frustum_segments, scene_scale

COLORMAPS: tuple[str, ...] = ("Turbo", "Viridis", "Inferno", "Greys", "Spectral")
"""Colour maps offered for depth and confidence (plotly named colour scales)."""

BACKGROUND = "#111111"
"""Neutral dark background of the 3D view."""

MAX_PALETTE = 8_192
"""Most colours in the point palette (its colour scale is about 35 bytes per entry)."""

MIN_COLOR_BITS = 4
"""Coarsest point-colour quantisation, bits per channel: 4096 bins, worst-case error of
8 levels (of 255) per channel, reached only by clouds with very many distinct colours."""

MAX_SELECT_MARKERS = 40_000
"""Most invisible, selectable markers laid over a depth map for click-to-measure."""

DISPLAY_MAX_SIDE = 640
"""Depth and confidence maps wider or taller than this are shown at an integer stride."""


# --------------------------------------------------------------------------------------
# Colour encoding
# --------------------------------------------------------------------------------------


def encode_colors(
    colors: np.ndarray, max_colors: int = MAX_PALETTE, min_bits: int = MIN_COLOR_BITS
) -> tuple[np.ndarray, np.ndarray]:
    """Map RGB colours to a compact palette of at most ``max_colors`` entries.

    Exact when the colours have at most ``max_colors`` distinct values. Otherwise each
    channel is quantised to the most bits (7 down to ``min_bits``) whose occupied bins fit
    in ``max_colors``, and a bin shows its centre: the error per channel is at most
    ``2 ** (8 - bits) / 2`` levels (8 at 4 bits; smooth photos usually get 5-7 bits).

    Args:
        colors: (M, 3) uint8 RGB.
        max_colors: Largest palette; at least ``2 ** (3 * min_bits)``.
        min_bits: Coarsest quantisation, bits per channel, 1..7.

    Returns:
        (M,) uint16 palette index (uint32 above 65536 entries), and (K, 3) uint8 palette,
        K >= 1 (a single black entry for an empty input).
    """
    if not 1 <= min_bits <= 7 or max_colors < 1 << (3 * min_bits):
        raise ValueError(f"need 1 <= min_bits <= 7 and max_colors >= 2**(3*min_bits), got {min_bits}, {max_colors}")
    colors = np.asarray(colors, dtype=np.uint8).reshape(-1, 3)
    if colors.shape[0] == 0:
        return np.zeros(0, dtype=np.uint16), np.zeros((1, 3), dtype=np.uint8)
    code24 = (colors[:, 0].astype(np.int32) << 16) | (colors[:, 1].astype(np.int32) << 8) | colors[:, 2]
    uniq, inverse = np.unique(code24, return_inverse=True)
    if uniq.size <= max_colors:
        palette = np.stack([uniq >> 16, (uniq >> 8) & 255, uniq & 255], axis=1).astype(np.uint8)
        return inverse.astype(_index_dtype(uniq.size)), palette
    for bits in range(7, min_bits - 1, -1):
        shift = 8 - bits
        q = colors >> shift
        code = (q[:, 0].astype(np.int32) << (2 * bits)) | (q[:, 1].astype(np.int32) << bits) | q[:, 2]
        # A bincount over the code space replaces a sort: O(M + 2**(3*bits)).
        used = np.bincount(code, minlength=1 << (3 * bits)) > 0
        if int(used.sum()) <= max_colors or bits == min_bits:
            break
    remap = np.cumsum(used) - 1
    ucodes = np.flatnonzero(used)
    mask = (1 << bits) - 1
    levels = np.stack([ucodes >> (2 * bits), (ucodes >> bits) & mask, ucodes & mask], axis=1)
    palette = np.minimum(levels * (1 << shift) + (1 << shift) // 2, 255).astype(np.uint8)
    return remap[code].astype(_index_dtype(ucodes.size)), palette


def _index_dtype(k: int) -> type:
    return np.uint16 if k <= 65536 else np.uint32


def palette_colorscale(palette: np.ndarray) -> list[list[Any]]:
    """A plotly colour scale whose stop i is palette entry i; use with ``cmin=0, cmax=K-1``.

    Args:
        palette: (K, 3) uint8 RGB, K >= 1.

    Returns:
        ``[[i / (K - 1), "#rrggbb"], ...]`` (two stops of one colour when K == 1).
    """
    hexes = [f"#{r:02x}{g:02x}{b:02x}" for r, g, b in np.asarray(palette, dtype=np.uint8).tolist()]
    if len(hexes) == 1:
        return [[0.0, hexes[0]], [1.0, hexes[0]]]
    k = len(hexes) - 1
    return [[i / k, c] for i, c in enumerate(hexes)]


# --------------------------------------------------------------------------------------
# 3D point cloud
# --------------------------------------------------------------------------------------


def camera_color(i: int, n: int) -> str:
    """Distinct colour of camera ``i`` of ``n`` (DA3's hue wheel), as ``"#rrggbb"``."""
    return "#{:02x}{:02x}{:02x}".format(*camera_rgb(i, n))


def frustum_traces(
    cameras: Cameras, hw: tuple[int, int], size: float, names: Sequence[str] | None = None
) -> list[go.Scatter3d]:
    """One Scatter3d line trace per camera (DA3's wireframe pyramid).

    Args:
        cameras: The cameras (world-to-camera, OpenCV).
        hw: (H, W) image size in pixels.
        size: Pyramid depth in world units.
        names: Optional view names for the legend.
    """
    segs = frustum_segments(cameras, hw, size)
    traces = []
    for i in range(cameras.n_views):
        # NaN rows break the polyline between segments.
        xyz = np.concatenate([segs[i], np.full((8, 1, 3), np.nan)], axis=1).reshape(-1, 3).astype(np.float32)
        label = f"camera {i}" + (f": {names[i]}" if names is not None and i < len(names) else "")
        traces.append(
            go.Scatter3d(
                x=xyz[:, 0],
                y=xyz[:, 1],
                z=xyz[:, 2],
                mode="lines",
                line=dict(color=camera_color(i, cameras.n_views), width=3),
                name=label,
                hoverinfo="name",
                showlegend=False,
            )
        )
    return traces


def initial_scene_camera(cameras: Cameras | None, distance: float = 1.6) -> dict[str, dict[str, float]]:
    """Plotly ``scene.camera`` looking along the first camera's view direction, upright.

    OpenCV cameras look along +z with +y down, so the view direction is the camera's z
    axis in world coordinates (the third row ``R[2]`` of a rigid ``R``) and "up" on screen
    is ``-R[1]``. With ``aspectmode="data"`` the scene axes are scaled uniformly, so world
    directions can be used as they are.

    Args:
        cameras: The cameras, or None for plotly's default view (y-down world assumed).
        distance: Eye distance from the scene centre, in plotly's normalised units.
    """
    if cameras is None or cameras.n_views == 0:
        fwd, up = np.array([0.0, 0.0, 1.0]), np.array([0.0, -1.0, 0.0])
    else:
        # Columns of R^-1 are the camera axes in world coordinates (rows of R when rigid).
        rot = np.linalg.inv(cameras.extrinsics[0, :, :3]).T
        fwd = rot[2] / (np.linalg.norm(rot[2]) or 1.0)
        up = -rot[1] / (np.linalg.norm(rot[1]) or 1.0)
    eye = -fwd * distance
    return {
        "eye": {"x": float(eye[0]), "y": float(eye[1]), "z": float(eye[2])},
        "up": {"x": float(up[0]), "y": float(up[1]), "z": float(up[2])},
        "center": {"x": 0.0, "y": 0.0, "z": 0.0},
    }


def point_cloud_figure(
    cloud: PointCloud,
    cameras: Cameras | None = None,
    hw: tuple[int, int] | None = None,
    *,
    show_cameras: bool = True,
    view_names: Sequence[str] | None = None,
    point_size: float = 1.5,
    camera_size: float = 0.05,
    hover: bool = False,
    background: str = BACKGROUND,
    height: int = 640,
    uirevision: str | None = "da3-point-cloud",
) -> go.Figure:
    """3D point cloud in true per-point colour, with optional camera frustums.

    Traces: the points (Scatter3d, WebGL), then one line trace per camera when
    ``show_cameras`` and ``cameras`` and ``hw`` are given.

    Args:
        cloud: Filtered, capped points (world frame, ``cloud.unit``).
        cameras: Cameras for frustums and the initial view direction.
        hw: (H, W) image size, needed to draw frustums.
        show_cameras: Draw the camera frustums.
        view_names: Names for the camera legend / hover.
        point_size: Marker size in screen pixels.
        camera_size: Frustum depth as a fraction of the scene size (5..95 percentile box).
        hover: Show x, y, z on hover (off by default: hover on 200k points costs).
        background: Background colour of the scene and the page.
        height: Figure height in pixels.
        uirevision: Kept constant so the user's camera survives reruns; None resets it.
    """
    idx, palette = encode_colors(cloud.colors)
    k = palette.shape[0]
    pts = np.ascontiguousarray(cloud.points, dtype=np.float32)
    unit = cloud.unit
    point_trace: dict[str, Any] = dict(
        type="scatter3d",
        x=pts[:, 0],
        y=pts[:, 1],
        z=pts[:, 2],
        mode="markers",
        name="points",
        showlegend=False,
        marker=dict(
            size=point_size,
            color=idx,
            colorscale=palette_colorscale(palette),
            cmin=0,
            cmax=max(k - 1, 1),
            showscale=False,
            line=dict(width=0),
        ),
    )
    if hover:
        point_trace["hovertemplate"] = f"x %{{x:.3f}}<br>y %{{y:.3f}}<br>z %{{z:.3f}} ({unit})<extra></extra>"
    else:
        point_trace["hoverinfo"] = "skip"

    axis = dict(visible=False, showbackground=False)
    layout = go.Layout(
        height=height,
        margin=dict(l=0, r=0, t=0, b=0),
        paper_bgcolor=background,
        plot_bgcolor=background,
        showlegend=False,
        hovermode="closest" if hover else False,
        uirevision=uirevision,
        scene=dict(
            aspectmode="data",
            bgcolor=background,
            xaxis=axis,
            yaxis=axis,
            zaxis=axis,
            camera=initial_scene_camera(cameras),
            dragmode="orbit",
        ),
    )
    traces: list[Any] = [point_trace]
    if show_cameras and cameras is not None and hw is not None:
        size = camera_size * scene_scale(pts)
        traces.extend(frustum_traces(cameras, hw, size, view_names))
    return _figure(traces, layout)


def _figure(traces: list[Any], layout: go.Layout) -> go.Figure:
    # Plotly's validation walks every colour-scale entry and copies every array: about
    # 0.6 s for 200k points and 4096 colours. The layout and small traces are validated
    # objects already; the point trace is a dict we build and test here.
    try:
        return go.Figure(data=traces, layout=layout, _validate=False)
    except TypeError:  # a plotly without the private switch: slower but correct
        return go.Figure(data=traces, layout=layout)


# --------------------------------------------------------------------------------------
# Depth and confidence maps
# --------------------------------------------------------------------------------------


def display_stride(hw: tuple[int, int], max_side: int = DISPLAY_MAX_SIDE) -> int:
    """Integer stride that brings the longer side of an (H, W) image to <= ``max_side``."""
    return max(1, math.ceil(max(hw) / max(1, max_side)))


def depth_colorbar_title(unit: str) -> str:
    """Colour-bar title: ``"depth (m)"`` for metric depth, ``"depth (relative)"`` otherwise."""
    return "depth (m)" if unit == "m" else "depth (relative)"


def _check_colormap(colormap: str) -> None:
    if colormap not in COLORMAPS:
        raise ValueError(f"colormap must be one of {COLORMAPS}, got {colormap!r}")


def _image_layout(hw: tuple[int, int], height: int | None, title: str | None, uirevision: str | None) -> go.Layout:
    h, w = hw
    return go.Layout(
        title=dict(text=title) if title else None,
        height=height,
        margin=dict(l=0, r=0, t=30 if title else 0, b=0),
        xaxis=dict(range=[-0.5, w - 0.5], constrain="domain", showgrid=False, zeroline=False, title=None),
        # Image rows grow downwards; scaleanchor keeps pixels square.
        yaxis=dict(
            range=[h - 0.5, -0.5], scaleanchor="x", scaleratio=1, constrain="domain", showgrid=False, zeroline=False
        ),
        hovermode="closest",
        clickmode="event+select",
        dragmode="zoom",
        uirevision=uirevision,
        showlegend=False,
    )


def _heatmap(
    values: np.ndarray, stride: int, colormap: str, reverse: bool, zrange: tuple[float, float] | None, bar: str
) -> go.Heatmap:
    z = np.ascontiguousarray(values[::stride, ::stride], dtype=np.float32)
    zmin, zmax = (None, None) if zrange is None else (float(zrange[0]), float(zrange[1]))
    # Strided cells sit on the full-resolution pixel grid: cell (i, j) is pixel (j*s, i*s).
    return go.Heatmap(
        z=z,
        x0=0,
        dx=stride,
        y0=0,
        dy=stride,
        colorscale=colormap,
        reversescale=reverse,
        zmin=zmin,
        zmax=zmax,
        colorbar=dict(title=dict(text=bar, side="right")),
        hoverinfo="skip",
    )


def depth_figure(
    depth: np.ndarray,
    unit: str,
    *,
    colormap: str = "Turbo",
    reverse: bool = False,
    zrange: tuple[float, float] | None = None,
    max_side: int = DISPLAY_MAX_SIDE,
    selectable: bool = True,
    max_markers: int = MAX_SELECT_MARKERS,
    marks: Sequence[tuple[int, int]] = (),
    title: str | None = None,
    height: int | None = None,
    uirevision: str | None = "da3-depth",
) -> go.Figure:
    """Depth map of one view, in image orientation, optionally clickable for measuring.

    Traces, in order: the Heatmap (downsampled by `display_stride` when a side exceeds
    ``max_side``; invalid depth shown as gaps); with ``selectable``, an invisible Scattergl
    of pixel centres on a stride grid (at most ``max_markers``) whose customdata is
    ``[u, v, depth]`` (heatmaps are not selectable in plotly.js); with ``marks``, the
    measured pixels (numbered markers, a line between two).

    Args:
        depth: (H, W) z-depth in ``unit``.
        unit: ``Reconstruction.depth_unit`` (``"m"`` or ``"relative units"``).
        colormap: One of `COLORMAPS`.
        reverse: Reverse the colour map.
        zrange: Colour range; None uses the 2..98 percentiles of valid depth.
        max_side: Longest displayed side before striding.
        selectable: Add the click layer.
        max_markers: Cap of the click layer.
        marks: Up to two measured pixels (u, v).
        title: Optional title.
        height: Figure height in pixels (None: Streamlit's default).
        uirevision: Kept constant so zoom survives reruns.
    """
    _check_colormap(colormap)
    if depth.ndim != 2:
        raise ValueError(f"depth must be (H, W), got {depth.shape}")
    if len(marks) > 2:
        raise ValueError(f"marks takes at most two pixels, got {len(marks)}")
    hw = (int(depth.shape[0]), int(depth.shape[1]))
    shown = np.where(np.isfinite(depth) & (depth > 0), depth, np.nan).astype(np.float32)
    if zrange is None:
        rng = depth_range(depth, unit)
        zrange = None if math.isnan(rng.p_low) else (rng.p_low, rng.p_high)
    stride = display_stride(hw, max_side)
    traces: list[Any] = [_heatmap(shown, stride, colormap, reverse, zrange, depth_colorbar_title(unit))]
    if selectable:
        traces.append(_click_layer(shown, unit, max(stride, _marker_stride(hw, max_markers))))
    if marks:
        traces.append(_marks_trace(shown, marks))
    return _figure(traces, _image_layout(hw, height, title, uirevision))


def _marker_stride(hw: tuple[int, int], max_markers: int) -> int:
    s = max(1, math.ceil(math.sqrt(hw[0] * hw[1] / max(1, max_markers))))
    while math.ceil(hw[0] / s) * math.ceil(hw[1] / s) > max_markers:
        s += 1
    return s


def _click_layer(shown: np.ndarray, unit: str, stride: int) -> dict[str, Any]:
    h, w = shown.shape
    vs, us = np.mgrid[0:h:stride, 0:w:stride]
    us, vs = us.reshape(-1), vs.reshape(-1)
    # A (K, 3) float32 array travels as one typed array; nested lists cost ~0.4 s in
    # plotly for 30k markers. plotly.js may hand each row to the selection event as a
    # Float32Array (JSON {"0": u, "1": v, ...}): `pixels_from_selection` reads both forms,
    # and x, y are the same integer pixel coordinates.
    custom = np.stack([us, vs, shown[vs, us]], axis=1).astype(np.float32)
    return dict(
        type="scattergl",
        x=us.astype(np.float32),
        y=vs.astype(np.float32),
        mode="markers",
        name="pixels",
        customdata=custom,
        # Near-invisible but still hit-tested: plotly selects by position, not by looks.
        marker=dict(size=max(4, stride), opacity=0.01, color="#ffffff"),
        selected=dict(marker=dict(opacity=0.01)),
        unselected=dict(marker=dict(opacity=0.01)),
        hovertemplate=(
            f"u %{{customdata[0]:.0f}}, v %{{customdata[1]:.0f}}<br>depth %{{customdata[2]:.4g}} {unit}<extra></extra>"
        ),
    )


def _marks_trace(shown: np.ndarray, marks: Sequence[tuple[int, int]]) -> go.Scatter:
    h, w = shown.shape
    us = [int(m[0]) for m in marks]
    vs = [int(m[1]) for m in marks]
    custom = [
        [u, v, float(shown[v, u]) if 0 <= u < w and 0 <= v < h and np.isfinite(shown[v, u]) else None]
        for u, v in zip(us, vs)
    ]
    return go.Scatter(
        x=us,
        y=vs,
        mode="markers+lines+text" if len(marks) == 2 else "markers+text",
        name="measurement",
        text=[str(i + 1) for i in range(len(marks))],
        textposition="top center",
        textfont=dict(color="#ffffff", size=14),
        customdata=custom,
        marker=dict(size=12, color="#ff2d55", line=dict(color="#ffffff", width=2)),
        line=dict(color="#ff2d55", width=2),
        # Any selection would otherwise fade the marks like unselected points.
        selected=dict(marker=dict(opacity=1.0)),
        unselected=dict(marker=dict(opacity=1.0), textfont=dict(color="#ffffff")),
        hoverinfo="skip",
    )


def confidence_figure(
    conf: np.ndarray,
    *,
    colormap: str = "Viridis",
    reverse: bool = False,
    zrange: tuple[float, float] | None = None,
    max_side: int = DISPLAY_MAX_SIDE,
    title: str | None = None,
    height: int | None = None,
    uirevision: str | None = "da3-conf",
) -> go.Figure:
    """Confidence map of one view (one Heatmap trace), colour bar titled ``"confidence"``.

    Args:
        conf: (H, W) confidence (DA3: >= 1, higher is better). Mono and metric presets
            have none: the page should say so instead of calling this.
        colormap: One of `COLORMAPS`.
        reverse: Reverse the colour map.
        zrange: Colour range; None uses the 2..98 percentiles of finite values.
        max_side: Longest displayed side before striding.
        title: Optional title.
        height: Figure height in pixels.
        uirevision: Kept constant so zoom survives reruns.
    """
    _check_colormap(colormap)
    if conf is None:
        raise ValueError("conf is None: this preset predicts no confidence; show a note instead of the map")
    if conf.ndim != 2:
        raise ValueError(f"conf must be (H, W), got {conf.shape}")
    hw = (int(conf.shape[0]), int(conf.shape[1]))
    shown = np.where(np.isfinite(conf), conf, np.nan).astype(np.float32)
    if zrange is None:
        finite = shown[np.isfinite(shown)]
        if finite.size:
            lo, hi = np.percentile(finite, [2, 98])
            zrange = (float(lo), float(hi))
    stride = display_stride(hw, max_side)
    heat = _heatmap(shown, stride, colormap, reverse, zrange, "confidence")
    return _figure([heat], _image_layout(hw, height, title, uirevision))


# --------------------------------------------------------------------------------------
# Streamlit selection
# --------------------------------------------------------------------------------------


def pixels_from_selection(selection: Any) -> list[tuple[int, int]]:
    """All selected pixels (u, v) in a Streamlit plotly selection, in the order given.

    Args:
        selection: What ``st.plotly_chart(..., on_select="rerun")`` returns
            (``{"selection": {"points": [...]}}``) or its inner ``"selection"`` mapping.
            Each point's ``customdata[:2]`` is (u, v) (the click layer and the marks carry
            it); points without it fall back to rounded ``x``, ``y``.
    """
    if not isinstance(selection, Mapping):
        return []
    inner = selection.get("selection", selection)
    if not isinstance(inner, Mapping):
        return []
    out: list[tuple[int, int]] = []
    for p in inner.get("points") or []:
        if not isinstance(p, Mapping):
            continue
        cd = p.get("customdata")
        try:
            if isinstance(cd, Mapping):  # a typed-array row serialised by the browser
                cd = [cd.get("0"), cd.get("1")]
            if isinstance(cd, (list, tuple)) and len(cd) >= 2 and cd[0] is not None and cd[1] is not None:
                u, v = cd[0], cd[1]
            else:
                u, v = p.get("x"), p.get("y")
            if u is None or v is None or not (math.isfinite(float(u)) and math.isfinite(float(v))):
                continue
            out.append((int(round(float(u))), int(round(float(v)))))
        except (TypeError, ValueError):
            continue
    return out


def pixel_from_selection(selection: Any) -> tuple[int, int] | None:
    """The first selected pixel (u, v) of a Streamlit plotly selection, or None.

    See `pixels_from_selection` for what ``selection`` may be.
    """
    pixels = pixels_from_selection(selection)
    return pixels[0] if pixels else None
