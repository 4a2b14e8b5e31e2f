"""Depth maps: one view at a time, depth and confidence, normals, feature maps, colour maps, and
measuring by clicking."""

from __future__ import annotations

import streamlit as st

from da3_core.app import ui, view_state, views
from da3_core.scene import features, figures, geometry

ctx = ui.page_setup("Depth maps", "🗺️")
st.title("Depth maps")
run_dir, meta, rec = ui.require_active_run(ctx)

n = rec.n_views
ss = st.session_state
if ss.get("dm_view_w") not in range(n):
    # First visit, back from another page (Streamlit dropped the widget), or a run with fewer views.
    ss["dm_view_w"] = min(int(view_state.kept("dm_view", 0)), n - 1)


def step(delta: int) -> None:
    # Set the selector itself, so what it shows and what is drawn never disagree.
    ss["dm_view_w"] = (int(ss["dm_view_w"]) + delta) % n


c_prev, c_view, c_next, c_map, c_rev = st.columns([1, 3.5, 1, 2, 2.5], vertical_alignment="center")
c_prev.button("◀ Prev", key="dm_prev", on_click=step, args=(-1,), disabled=n < 2, width="stretch")
view = c_view.selectbox(
    "View",
    list(range(n)),
    key="dm_view_w",
    format_func=lambda i: f"View {i + 1} of {n}: {rec.names[i]}",
    label_visibility="collapsed",
)
view_state.keep("dm_view", view)
c_next.button("Next ▶", key="dm_next", on_click=step, args=(1,), disabled=n < 2, width="stretch")
cmap = c_map.selectbox(
    "Colour map",
    figures.COLORMAPS,
    index=figures.COLORMAPS.index(view_state.kept("dm_cmap", "Turbo")),
    key="dm_cmap_w",
    label_visibility="collapsed",
)
view_state.keep("dm_cmap", cmap)
reverse = c_rev.toggle("Reverse colours", view_state.kept("dm_rev", False), key="dm_rev_w")
view_state.keep("dm_rev", reverse)
beside_options = (
    ["Confidence", "Normals", "Feature map"] if rec.conf is not None else ["Input", "Normals", "Feature map"]
)
beside = (
    st.segmented_control(
        "Beside depth",
        beside_options,
        default=beside_options[view_state.kept_index("dm_beside", beside_options)],
        key="dm_beside_w",
        help="Normals: per-pixel surface normals from the depth and the intrinsics, colour-coded (x right = red, "
        "y up = green, towards you = blue), black where undefined (depth edges, holes). Feature map: DA3's backbone "
        "features of one layer as PCA colours (made on the Exports page).",
    )
    or beside_options[0]
)
view_state.keep("dm_beside", beside)

depth = rec.depth[view]
rng = geometry.depth_range(depth, rec.depth_unit)
unit = rec.depth_unit
st.caption(
    f"Depth of this view, in {unit}" + (" (metric preset)" if rec.is_metric else " (scale is arbitrary: not metres)")
)
m = st.columns(5)
m[0].metric("Min", f"{rng.min:.4g}")
m[1].metric(f"P{rng.percentiles[0]:g}", f"{rng.p_low:.4g}")
m[2].metric(f"P{rng.percentiles[1]:g}", f"{rng.p_high:.4g}")
m[3].metric("Max", f"{rng.max:.4g}")
m[4].metric("Valid pixels", f"{rng.n_valid / max(rng.n_total, 1):.0%}")

# Measuring: clicks on the depth map, two points per measurement, kept per run and view.
marks_all: dict = st.session_state.setdefault("dm_marks", {})
marks: list[tuple[int, int]] = marks_all.setdefault((meta.run_id, view), [])
left, right = st.columns([3, 2] if rec.conf is not None or beside != "Input" else [1, 0.0001])
with left:
    st.caption("Click two points on the depth map to measure their depths and 3D distance.")
    fig = figures.depth_figure(depth, unit, colormap=cmap, reverse=reverse, marks=tuple(marks), title=f"Depth ({unit})")
    event = st.plotly_chart(
        fig, on_select="rerun", selection_mode="points", key=f"dm_fig_{meta.run_id}_{view}", width="stretch"
    )
    pixel = figures.pixel_from_selection(event)
    last_key = (meta.run_id, view, "last")
    if pixel is not None and marks_all.get(last_key) != pixel:
        marks_all[last_key] = pixel
        marks[:] = [pixel] if len(marks) >= 2 else marks + [pixel]
        st.rerun()
if beside == "Normals":
    with right, st.container(key="dm_normals"):
        nv = views.view_normals(meta.run_id, rec, view, float(view_state.kept("pc_fov", geometry.DEFAULT_FOV_DEG)))
        st.image(nv.rgb, width="stretch")
        st.caption(
            f"Normals: {nv.valid_fraction:.0%} of pixels"
            + (" (intrinsics assumed: this preset predicts none)" if nv.assumed_intrinsics else "")
            + ". Red = x right, green = y up, blue = towards you; black = none (depth edges, holes). "
            "16-bit PNGs of every view on the Exports page."
        )
        st.image(rec.images[view], caption=f"Input as processed ({rec.hw[1]}x{rec.hw[0]})", width="stretch")
elif beside == "Feature map":
    with right, st.container(key="dm_features"):
        saved = views.feature_maps(run_dir)
        if saved is None:
            st.info("No feature maps for this run yet: make them on the Exports page (DA3's backbone layers).")
            ui.link("exports", "Exports: feature maps")
        else:
            layer = st.selectbox(
                "Layer",
                saved.layers,
                index=len(saved.layers) - 1,
                key="dm_feat_layer",
                format_func=lambda k: f"layer {k}",
            )
            pca = views.feature_pca(meta.run_id, run_dir, int(layer))
            if pca is not None and view < len(pca[0]):
                st.image(features.upsample(pca[0][view], pca[1]), width="stretch")
                st.caption(
                    f"Layer {layer} of {saved.preset}: {pca[0].shape[1]}x{pca[0].shape[2]} cells, 3 principal components "
                    "(fitted over all views, DA3's visualisation) as RGB."
                )
        st.image(rec.images[view], caption=f"Input as processed ({rec.hw[1]}x{rec.hw[0]})", width="stretch")
elif rec.conf is not None:
    with right:
        st.plotly_chart(
            figures.confidence_figure(rec.conf[view], title="Confidence"),
            key=f"dm_conf_{meta.run_id}_{view}",
            width="stretch",
        )
        st.image(rec.images[view], caption=f"Input as processed ({rec.hw[1]}x{rec.hw[0]})", width="stretch")
else:
    st.image(rec.images[view], caption=f"Input as processed ({rec.hw[1]}x{rec.hw[0]})", width=360)

if marks:
    fov = float(view_state.kept("pc_fov", geometry.DEFAULT_FOV_DEG))
    cameras = geometry.resolve_cameras(rec, fov_deg=fov)  # cameras only: no need to unproject every pixel
    if len(marks) == 1:
        try:
            d, p = geometry.pixel_to_world(rec, cameras, view, marks[0])
            st.info(f"Point A at pixel {marks[0]}: depth {d:.4g} {unit}. Click a second point.")
        except geometry.MeasureError as exc:
            st.warning(str(exc))
    else:
        try:
            result = geometry.measure(rec, cameras, view, marks[0], marks[1])
            st.success(result.describe())
        except geometry.MeasureError as exc:
            st.warning(str(exc))
    if not rec.has_poses:
        st.caption(
            f"This preset predicts no cameras: distances use an assumed {fov:.0f}° field of view (set on the Point cloud page)."
        )
    if st.button("Clear points", key="dm_clear"):
        marks.clear()
        marks_all.pop((meta.run_id, view, "last"), None)
        st.rerun()
