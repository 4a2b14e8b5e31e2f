"""Timings of the geometry, figure and export paths the pages call on every rerun.

Run: ``.venv/bin/python benchmarks/bench_geometry.py``. Goals: figure_200k_s <= 0.3,
figure_200k_mb <= 6, refilter_1m_s <= 0.5. Each number is the median of a few repeats.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import plotly.io as pio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from da3_core.contract import ModelSpec, Reconstruction  # noqa: E402 - run as a script: the repo root joins sys.path first
from da3_core.scene import (
    export,
    figures,
    geometry,  # noqa: E402 - run as a script: the repo root joins sys.path first
)

GOALS = {"figure_200k_s": 0.3, "figure_200k_mb": 6.0, "refilter_1m_s": 0.5}


def synthetic_rec(n_views: int = 4, h: int = 500, w: int = 500, seed: int = 0) -> Reconstruction:
    """n_views x h x w pixels (1M by default) of a wavy surface with photo-like colours."""
    rng = np.random.default_rng(seed)
    vs, us = np.mgrid[0:h, 0:w].astype(np.float32)
    depth = np.empty((n_views, h, w), dtype=np.float32)
    images = np.empty((n_views, h, w, 3), dtype=np.uint8)
    ext = np.zeros((n_views, 3, 4), dtype=np.float32)
    for i in range(n_views):
        depth[i] = 2.0 + 0.3 * np.sin(us / 37.0 + i) + 0.2 * np.cos(vs / 23.0)
        img = np.stack([us / w * 255, vs / h * 255, (us + vs) / (w + h) * 255], axis=-1)
        images[i] = np.clip(img + rng.normal(0, 12, img.shape), 0, 255).astype(np.uint8)
        a = np.radians(8.0 * i)
        ext[i, :, :3] = [[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]]
        ext[i, :, 3] = [-0.2 * i, 0, 0]
    k = np.array([[w * 0.8, 0, w / 2], [0, w * 0.8, h / 2], [0, 0, 1]], dtype=np.float32)
    sky = np.zeros((n_views, h, w), dtype=bool)
    sky[:, : h // 10] = True
    return Reconstruction(
        depth=depth,
        conf=(1.0 + rng.random((n_views, h, w)) * 5).astype(np.float32),
        extrinsics=ext,
        intrinsics=np.repeat(k[None], n_views, axis=0),
        images=images,
        sky=sky,
        is_metric=False,
        scale_factor=None,
        gaussians=None,
        names=tuple(f"view_{i}" for i in range(n_views)),
        model=ModelSpec(kind="demo", ref="da3-small"),
        preset="da3-small",
        device="cpu",
    )


def _median(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def run(repeats: int = 5) -> dict[str, float]:
    """Time the hot paths on a synthetic 1M-pixel reconstruction.

    Returns:
        ``unproject_1m_s`` (once per reconstruction), ``refilter_1m_cold_s`` (first
        filter with a new seed: draws its permutation), ``refilter_1m_s`` (all filters
        plus the cap at 1M, given the cached unprojection), ``refilter_1m_cap200k_s``,
        ``figure_200k_s`` (build + ``plotly.io.to_json``), ``figure_200k_mb``,
        ``depth_figure_s`` and ``depth_figure_mb`` (one 500 x 500 view),
        ``glb_1m_s`` (GLB bytes of ~1M points), ``ply_1m_s``.
    """
    rec = synthetic_rec()
    cams = geometry.resolve_cameras(rec)
    out: dict[str, float] = {}
    out["unproject_1m_s"], world = _median(lambda: geometry.unproject_all(rec, cams), max(1, repeats // 2))
    all_on = dict(conf_percentile=20.0, filter_black_bg=True, filter_white_bg=True, filter_sky=True, views=(0, 1, 2, 3))
    p_1m = geometry.FilterParams(**all_on, max_points=1_000_000, seed=0)
    p_200k = geometry.FilterParams(**all_on, max_points=200_000, seed=0)
    # First use of a seed draws its permutation of all pixels once; later reruns reuse it.
    t0 = time.perf_counter()
    geometry.apply_filters(world, p_200k)
    out["refilter_1m_cold_s"] = time.perf_counter() - t0
    out["refilter_1m_s"], cloud_1m = _median(lambda: geometry.apply_filters(world, p_1m), repeats)
    out["refilter_1m_cap200k_s"], cloud = _median(lambda: geometry.apply_filters(world, p_200k), repeats)
    assert len(cloud) == 200_000, len(cloud)

    def fig_json() -> str:
        fig = figures.point_cloud_figure(cloud, cams, rec.hw)
        return pio.to_json(fig)

    out["figure_200k_s"], js = _median(fig_json, repeats)
    out["figure_200k_mb"] = len(js.encode()) / 1e6

    def depth_json() -> str:
        return pio.to_json(figures.depth_figure(rec.depth[0], rec.depth_unit))

    out["depth_figure_s"], djs = _median(depth_json, repeats)
    out["depth_figure_mb"] = len(djs.encode()) / 1e6
    keep_all = geometry.FilterParams(conf_percentile=0.0, conf_floor=0.0, filter_sky=False, max_points=None)
    full = geometry.apply_filters(world, keep_all)
    out["glb_points"] = float(len(full))
    out["glb_1m_s"], _ = _median(lambda: export.glb_bytes(full, cams, rec.hw), max(1, repeats // 2))
    out["ply_1m_s"], _ = _median(lambda: export.ply_bytes(full), max(1, repeats // 2))
    out["refilter_1m_points"] = float(len(cloud_1m))
    return out


if __name__ == "__main__":
    results = run()
    print(f"{'metric':<24}{'value':>12}{'goal':>10}")
    for key, value in results.items():
        goal = GOALS.get(key)
        mark = "" if goal is None else ("  ok" if value <= goal else "  OVER")
        print(f"{key:<24}{value:>12.4f}{'' if goal is None else f'{goal:>10.2f}'}{mark}")
