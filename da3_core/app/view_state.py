"""Widget values that outlive their page (kept per browser session across page visits), and the
point-cloud settings the Point cloud and Exports pages share.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import streamlit as st

from da3_core.contract import Reconstruction


def kept_index(key: str, options: Any) -> int:
    """The widget's ``index``: its kept value's place among ``options`` (0 when not there)."""
    options = list(options)
    value = kept(key, options[0])
    return options.index(value) if value in options else 0


_KEEP = "_kept_values"


def kept(key: str, default: Any) -> Any:
    """A widget's last value, kept across page switches (Streamlit drops widget state of
    pages not shown); pass it as the widget's initial value."""
    return st.session_state.setdefault(_KEEP, {}).get(key, default)


def keep(key: str, value: Any) -> Any:
    st.session_state.setdefault(_KEEP, {})[key] = value
    return value


@dataclass(frozen=True)
class CloudSettings:
    """The point-cloud view settings shared by the Point cloud and Exports pages."""

    filters: Any  # geometry.FilterParams
    fov_deg: float
    show_cameras: bool
    point_size: float


def cloud_settings(rec: Reconstruction, widgets: bool) -> CloudSettings:
    """Draw the point-cloud controls (``widgets``) or just read their kept values."""
    from da3_core.scene import geometry

    defaults = {
        "pc_conf": 10.0,
        "pc_black": False,
        "pc_white": False,
        "pc_sky": True,
        "pc_views": list(range(rec.n_views)),
        "pc_max": 200_000,
        "pc_cams": True,
        "pc_size": 1.5,
        "pc_fov": geometry.DEFAULT_FOV_DEG,
    }
    values = {k: kept(k, v) for k, v in defaults.items()}
    values["pc_views"] = [v for v in values["pc_views"] if v < rec.n_views] or list(range(rec.n_views))
    if widgets:
        c1, c2, c3 = st.columns(3)
        values["pc_conf"] = c1.slider(
            "Confidence filter (percentile dropped)",
            0.0,
            100.0,
            float(values["pc_conf"]),
            1.0,
            key="pc_conf_w",
            disabled=rec.conf is None,
            help="DA3's rule: threshold = min(max(1.05, P_pct), P_90)."
            if rec.conf is not None
            else "This preset predicts no confidence.",
        )
        values["pc_max"] = c2.select_slider(
            "Max points",
            (20_000, 50_000, 100_000, 200_000, 300_000, 500_000),
            value=int(values["pc_max"]),
            key="pc_max_w",
            help="Plotly's cap (seeded, deterministic subsample); the full-density viewer below shows them all.",
        )
        values["pc_size"] = c3.slider("Point size", 0.5, 6.0, float(values["pc_size"]), 0.5, key="pc_size_w")
        c1, c2, c3, c4 = st.columns(4)
        values["pc_black"] = c1.toggle("Drop black background", bool(values["pc_black"]), key="pc_black_w")
        values["pc_white"] = c2.toggle("Drop white background", bool(values["pc_white"]), key="pc_white_w")
        values["pc_sky"] = c3.toggle(
            "Drop sky",
            bool(values["pc_sky"]),
            key="pc_sky_w",
            disabled=rec.sky is None,
            help=None if rec.sky is not None else "This preset predicts no sky.",
        )
        values["pc_cams"] = c4.toggle("Show cameras", bool(values["pc_cams"]), key="pc_cams_w")
        values["pc_views"] = st.multiselect(
            "Views",
            list(range(rec.n_views)),
            values["pc_views"],
            key="pc_views_w",
            format_func=lambda i: f"{i}: {rec.names[i]}",
        )
        if not rec.has_poses:
            values["pc_fov"] = st.slider(
                "Assumed horizontal field of view (degrees)",
                20.0,
                120.0,
                float(values["pc_fov"]),
                1.0,
                key="pc_fov_w",
                help="This preset predicts no cameras: identity poses and this field of view are assumed.",
            )
        for k, v in values.items():
            keep(k, v)
    filters = geometry.FilterParams(
        conf_percentile=float(values["pc_conf"]),
        filter_black_bg=bool(values["pc_black"]),
        filter_white_bg=bool(values["pc_white"]),
        filter_sky=bool(values["pc_sky"]),
        views=tuple(values["pc_views"]) if len(values["pc_views"]) < rec.n_views else None,
        max_points=int(values["pc_max"]),
    )
    return CloudSettings(filters, float(values["pc_fov"]), bool(values["pc_cams"]), float(values["pc_size"]))
