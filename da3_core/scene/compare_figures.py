"""Plotly figures of a comparison: two clouds overlaid in two colours, and a per-view depth
difference map. Pure functions (no Streamlit); arrays go in as float32, capped upstream
(`da3_core.runs.compare.OVERLAY_POINTS` per cloud), in the style of `da3_core.scene.figures`."""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import plotly.graph_objects as go

from da3_core.scene.figures import BACKGROUND

COLOR_A = "#4C9BE8"  # blue: the reference (run A, or the truth)
COLOR_B = "#F28E2B"  # orange: the run scored (B, aligned into A's world)
Show = Literal["both", "a", "b"]


def overlay_figure(
    cloud_a: np.ndarray,
    cloud_b: np.ndarray,
    *,
    show: Show = "both",
    labels: tuple[str, str] = ("A", "B"),
    point_size: float = 1.5,
    height: int = 600,
    uirevision: str | None = "da3-compare",
) -> go.Figure:
    """Two point clouds in one world, A in blue and B in orange, with a legend.

    Args:
        cloud_a, cloud_b: (N, 3) and (M, 3) points, B already aligned into A's world.
        show: ``"both"``, ``"a"`` or ``"b"`` (the page's toggle).
        labels: Legend names of A and B.
        point_size: Marker size in screen pixels.
        height: Figure height in pixels.
        uirevision: Kept constant so the user's camera survives reruns and toggles.
    """
    if show not in ("both", "a", "b"):
        raise ValueError(f"show must be 'both', 'a' or 'b', got {show!r}")
    traces: list[Any] = []
    for which, pts, color, label in (("a", cloud_a, COLOR_A, labels[0]), ("b", cloud_b, COLOR_B, labels[1])):
        p = np.ascontiguousarray(np.asarray(pts, dtype=np.float32).reshape(-1, 3))
        traces.append(
            dict(
                type="scatter3d",
                x=p[:, 0],
                y=p[:, 1],
                z=p[:, 2],
                mode="markers",
                name=f"{label} ({len(p):,} points)",
                visible=show in ("both", which),
                marker=dict(size=point_size, color=color, line=dict(width=0)),
                hoverinfo="skip",
            )
        )
    axis = dict(visible=False, showbackground=False)
    layout = go.Layout(
        height=height,
        margin=dict(l=0, r=0, t=0, b=0),
        paper_bgcolor=BACKGROUND,
        plot_bgcolor=BACKGROUND,
        showlegend=True,
        legend=dict(font=dict(color="#e8e8e8"), x=0.01, y=0.99, bgcolor="rgba(0,0,0,0.3)"),
        hovermode=False,
        uirevision=uirevision,
        # OpenCV world axes (y down): look from behind the cameras, y pointing down the screen.
        scene=dict(
            aspectmode="data",
            bgcolor=BACKGROUND,
            xaxis=axis,
            yaxis=axis,
            zaxis=axis,
            camera=dict(up=dict(x=0, y=-1, z=0), eye=dict(x=0, y=-0.3, z=-1.8)),
            dragmode="orbit",
        ),
    )
    try:
        return go.Figure(data=traces, layout=layout, _validate=False)
    except TypeError:  # a plotly without the private switch
        return go.Figure(data=traces, layout=layout)


def difference_limit(diff: np.ndarray, percentile: float = 98.0, cap: float = 1.0) -> float:
    """Symmetric colour range of a relative difference map: the ``percentile`` of |diff| over
    finite pixels, at most ``cap``, at least 1e-3 (an all-zero map still draws)."""
    finite = np.abs(diff[np.isfinite(diff)])
    if finite.size == 0:
        return cap
    return float(min(cap, max(1e-3, np.percentile(finite, percentile))))


def difference_figure(
    diff: np.ndarray,
    *,
    stride: int = 1,
    limit: float | None = None,
    title: str | None = None,
    height: int | None = 420,
) -> go.Figure:
    """A relative depth-difference map ``(s d_B - d_A) / d_A`` as a diverging heat map
    (blue: B nearer, red: B farther, white: equal; grey: no depth in one of them).

    Args:
        diff: (h, w) float32, NaN where not comparable (as stored: every ``stride``-th pixel).
        stride: The pixel stride ``diff`` was stored at (for pixel coordinates on hover).
        limit: Colour range ±limit; None: `difference_limit`.
        title: Figure title.
        height: Figure height in pixels.
    """
    z = np.ascontiguousarray(diff, dtype=np.float32)
    lim = difference_limit(z) if limit is None else float(limit)
    if not (math.isfinite(lim) and lim > 0):
        raise ValueError(f"limit must be finite and > 0, got {limit}")
    h, w = z.shape
    heat = go.Heatmap(
        z=z,
        x0=0,
        dx=stride,
        y0=0,
        dy=stride,
        colorscale="RdBu",
        reversescale=True,
        zmin=-lim,
        zmax=lim,
        zmid=0.0,
        colorbar=dict(title=dict(text="relative difference", side="right"), tickformat=".0%"),
        hovertemplate="u %{x} v %{y}: %{z:.1%}<extra></extra>",
    )
    layout = go.Layout(
        title=dict(text=title) if title else None,
        height=height,
        margin=dict(l=0, r=0, t=30 if title else 0, b=0),
        xaxis=dict(range=[-0.5, w * stride - 0.5], constrain="domain", showgrid=False, zeroline=False),
        yaxis=dict(
            range=[h * stride - 0.5, -0.5],
            scaleanchor="x",
            scaleratio=1,
            constrain="domain",
            showgrid=False,
            zeroline=False,
        ),
        plot_bgcolor="#808080",
        showlegend=False,
    )
    return go.Figure(data=[heat], layout=layout)


__all__ = ["COLOR_A", "COLOR_B", "difference_figure", "difference_limit", "overlay_figure"]
