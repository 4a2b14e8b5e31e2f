"""Point cloud: Plotly 3D with live filters (no re-inference), a full-density GLB viewer, and the
3D Gaussian viewer when the run has Gaussians (drawn by the browser: works on CPU-only servers)."""

from __future__ import annotations

import time

import streamlit as st

from da3_core.app import session, splat_view, ui, view_state, viewer
from da3_core.scene import export, figures, geometry

ctx = ui.page_setup("Point cloud", "☁️")
st.title("Point cloud")
run_dir, meta, rec = ui.require_active_run(ctx)

cs = view_state.cloud_settings(rec, widgets=True)
t0 = time.perf_counter()
cameras, world = session.world_points(meta.run_id, rec, cs.fov_deg)
cloud = geometry.apply_filters(world, cs.filters)
fig = figures.point_cloud_figure(
    cloud,
    cameras,
    world.shape[1:],
    show_cameras=cs.show_cameras,
    view_names=list(rec.names),
    point_size=cs.point_size,
    uirevision=meta.run_id,
)
elapsed = time.perf_counter() - t0
stride = geometry.pixel_stride(rec)
stride_note = f" · every {stride}th pixel of each view (a long run: bounded memory)" if stride > 1 else ""
st.plotly_chart(fig, key="pc_fig", width="stretch", config={"displaylogo": False})
threshold = f" · confidence threshold {cloud.conf_threshold:.3g}" if cloud.conf_threshold is not None else ""
assumed = f" · assumed cameras ({cs.fov_deg:.0f}° field of view)" if cameras.assumed else ""
st.caption(
    f"{len(cloud.points):,} points shown of {cloud.n_candidates:,} that pass the filters{threshold}{assumed} · "
    f"units: {rec.depth_unit}{stride_note} · filtered and drawn in {elapsed * 1000:.0f} ms (no model call)"
)

st.subheader("Full density")
VIEWERS = ("Points", "3D Gaussians")
if rec.gaussians is not None:
    choice = st.radio(
        "Viewer",
        VIEWERS,
        horizontal=True,
        key="pc_viewer",
        help="Points: every point that passes the filters. 3D Gaussians: DA3's Gaussians, drawn by your browser.",
    )
else:
    choice = VIEWERS[0]
    st.caption(splat_view.NO_GAUSSIANS)

if choice == VIEWERS[1]:
    key = (meta.run_id, cs.fov_deg, cs.show_cameras)
    if st.session_state.get("pc_splat_key") != key or st.session_state.get("pc_splat") is None:
        with st.spinner("Packing the Gaussians…"):
            st.session_state["pc_splat"] = splat_view.run_viewer(rec, cameras, show_cameras=cs.show_cameras, height=620)
        st.session_state["pc_splat_key"] = key
    view = st.session_state["pc_splat"]
    st.caption(splat_view.run_viewer_caption(view, rec.names))
    st.iframe(view.html, height=640)
else:
    full_filters = geometry.FilterParams(**{**cs.filters.__dict__, "max_points": None})
    n_full = int(geometry.filter_mask(world, full_filters)[0].sum())
    st.caption(
        f"Every point that passes the filters ({n_full:,}), in a WebGL viewer shipped with the app (works offline)."
    )
    key = (meta.run_id, full_filters, cs.fov_deg, cs.show_cameras)
    if (
        st.button(f"Show all {n_full:,} points", key="pc_full", disabled=n_full == 0)
        or st.session_state.get("pc_full_key") == key
    ):
        cache = st.session_state.get("pc_full_html")
        if st.session_state.get("pc_full_key") != key or cache is None:
            with st.spinner("Building the GLB…"):
                full = geometry.apply_filters(world, full_filters)
                glb = export.glb_bytes(full, cameras, world.shape[1:], show_cameras=cs.show_cameras)
                cache = viewer.glb_viewer_html(
                    glb, height=620, point_size=max(1.0, cs.point_size), show_cameras=cs.show_cameras
                )
            st.session_state["pc_full_key"] = key
            st.session_state["pc_full_html"] = cache
        st.iframe(cache, height=640)
