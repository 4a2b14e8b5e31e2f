"""Timings of the compare / evaluate core: run comparison, TSDF mesh, normals (issue 18).

Run: ``.venv/bin/python -m benchmarks.bench_evaluate`` (or ``make bench``). Each time is the
median of a few repeats. Scenes are analytic (a box room with a ball and a cube, ray-cast in
closed form), so nothing is downloaded or rendered slowly.

* ``compare_32_views_s``: `metrics.compare_runs` of two 32-view runs at 504 x 378 (the truth
  against a perturbed copy: 1 % depth noise, camera jitter, another world and scale): every
  number (depth, cameras, clouds at 200k points each, the difference maps). Figures are
  excluded: they are drawn by the page from these numbers and maps.
* ``compare_32_views_page_s``: the same two runs as the Compare page does it: saved as run
  folders, then one `da3_core.runs.compare.Comparer` request (the child process reads both
  runs from disk, scores them, writes the cached summary, the difference maps and the overlay
  clouds, and sends the summary back); a warm child, the median of a few requests.
  ``compare_child_cold_s``: the first such request, which spawns the child and imports
  numpy and scipy there. No goals: they show what the child process and the disk add.
* ``tsdf_16_views_504_s``: `mesh.fuse_tsdf` of 16 views at 504 x 378, with vertex colours.
* ``tsdf_16_views_504_peak_mb``: the peak resident memory (``resource.getrusage`` ``ru_maxrss``,
  whole process, so Python, numpy, scipy and scikit-image count too) of a fresh spawned child
  process that builds the views and fuses them once.
* ``normals_1mpx_s``: `normals.normals_from_depth` of one 1000 x 1000 depth map.
"""

from __future__ import annotations

import multiprocessing as mp
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from da3_core.scene import mesh, metrics, normals  # noqa: E402 - run as a script: the repo root joins sys.path first
from da3_core.scene.align import Sim3, transform_views  # noqa: E402 - run as a script: the repo root joins sys.path first

GOALS = {
    "compare_32_views_s": 2.0,
    "tsdf_16_views_504_s": 15.0,
    "tsdf_16_views_504_peak_mb": 1200.0,
    "normals_1mpx_s": 0.1,
}

ROOM_HALF = np.array([3.0, 1.5, 3.0])
"""The room is the box |x| <= 3, |y| <= 1.5, |z| <= 3 (y down, OpenCV-like world)."""
BALL = (np.array([0.3, 0.6, 0.4]), 0.8)
CUBE = (np.array([-1.2, 0.9, -0.8]), 0.6)
"""Centre and half size of an axis-aligned cube standing on the floor (y = 1.5)."""


def _look_at(eye: np.ndarray, target: np.ndarray) -> np.ndarray:
    """(3, 4) world-to-camera, OpenCV axes (z towards the target, y roughly down = +y world)."""
    z = target - eye
    z /= np.linalg.norm(z)
    x = np.cross(np.array([0.0, 1.0, 0.0]), z)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    r = np.stack([x, y, z])
    return np.concatenate([r, (-r @ eye)[:, None]], axis=1)


def render_scene(n_views: int, h: int = 378, w: int = 504, radius: float = 1.9) -> dict[str, np.ndarray]:
    """Exact z-depth, colours and cameras of ``n_views`` views on a circle inside the room.

    Returns ``depth`` (N, H, W) float32, ``images`` (N, H, W, 3) uint8, ``extrinsics``
    (N, 3, 4) float64 world-to-camera, ``intrinsics`` (N, 3, 3) float64 (60 degrees across).
    Every pixel hits something (a closed room).
    """
    f = (w / 2) / np.tan(np.radians(30))
    k = np.array([[f, 0, w / 2], [0, f, h / 2], [0, 0, 1.0]])
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    rays_cam = np.stack([(u - k[0, 2]) / f, (v - k[1, 2]) / f, np.ones_like(u)], axis=-1).reshape(-1, 3)
    depth = np.empty((n_views, h, w), dtype=np.float32)
    images = np.empty((n_views, h, w, 3), dtype=np.uint8)
    exts = np.empty((n_views, 3, 4))
    for i in range(n_views):
        a = 2 * np.pi * i / n_views
        eye = np.array([radius * np.sin(a), -0.2 + 0.2 * np.cos(3 * a), -radius * np.cos(a)])
        target = np.array([0.3 * np.cos(a), 0.5, 0.3 * np.sin(a)])
        ext = _look_at(eye, target)
        exts[i] = ext
        dirs = rays_cam @ ext[:, :3]  # world directions with camera-z component 1: t is the z-depth
        # Room walls from inside: the exit distance of the box.
        with np.errstate(divide="ignore", invalid="ignore"):
            t_wall = np.where(dirs > 0, (ROOM_HALF - eye) / dirs, (-ROOM_HALF - eye) / dirs)
        t = np.min(np.where(np.isfinite(t_wall) & (t_wall > 0), t_wall, np.inf), axis=1)
        colour = np.full((len(t), 3), 200.0)
        axis = np.argmin(np.where(np.isfinite(t_wall) & (t_wall > 0), t_wall, np.inf), axis=1)
        colour[axis == 0] = (180, 120, 90)
        colour[axis == 2] = (90, 130, 180)
        # Ball.
        c, r = BALL
        oc = eye - c
        b = dirs @ oc
        aa = np.sum(dirs * dirs, axis=1)
        disc = b * b - aa * (oc @ oc - r * r)
        t_ball = np.where(disc > 0, (-b - np.sqrt(np.maximum(disc, 0))) / aa, np.inf)
        hit = (t_ball > 0) & (t_ball < t)
        t = np.where(hit, t_ball, t)
        colour[hit] = (220, 200, 60)
        # Cube (slab method).
        c, hs = CUBE
        with np.errstate(divide="ignore", invalid="ignore"):
            t1 = (c - hs - eye) / dirs
            t2 = (c + hs - eye) / dirs
        t_near = np.max(np.minimum(t1, t2), axis=1)
        t_far = np.min(np.maximum(t1, t2), axis=1)
        hit = (t_near <= t_far) & (t_near > 0) & (t_near < t)
        t = np.where(hit, t_near, t)
        colour[hit] = (60, 170, 90)
        pts = eye + t[:, None] * dirs
        checker = ((np.floor(pts[:, 0] * 2) + np.floor(pts[:, 1] * 2) + np.floor(pts[:, 2] * 2)) % 2) * 30
        depth[i] = t.reshape(h, w)
        images[i] = np.clip(colour - checker[:, None], 0, 255).reshape(h, w, 3).astype(np.uint8)
    return {"depth": depth, "images": images, "extrinsics": exts, "intrinsics": np.repeat(k[None], n_views, axis=0)}


def perturbed(scene: dict[str, np.ndarray], seed: int = 0) -> dict[str, np.ndarray]:
    """The scene as a run would give it: 1 % depth noise, 1 degree / 2 cm camera jitter, then
    another world (rotated 20 degrees, shifted) and scale (1.3)."""
    from scipy.spatial.transform import Rotation

    rng = np.random.default_rng(seed)
    ext = scene["extrinsics"].copy()
    for i in range(1, len(ext)):
        d = Rotation.from_rotvec(rng.normal(0, np.radians(1.0), 3)).as_matrix()
        ext[i, :, :3] = d @ ext[i, :, :3]
        ext[i, :, 3] = d @ ext[i, :, 3] + rng.normal(0, 0.02, 3)
    sim = Sim3(1.3, Rotation.from_euler("y", 20, degrees=True).as_matrix(), np.array([0.5, 0.0, -1.0]))
    ext, s = transform_views(ext, sim)
    noise = (1 + 0.01 * rng.standard_normal(scene["depth"].shape)).astype(np.float32)
    return {**scene, "depth": scene["depth"] * noise * np.float32(s), "extrinsics": ext}


def _median(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def _run_arrays(scene: dict[str, np.ndarray]) -> metrics.RunArrays:
    n = len(scene["depth"])
    return metrics.RunArrays(
        scene["depth"], scene["intrinsics"], scene["extrinsics"], tuple(f"{i:04d}" for i in range(n))
    )


def _tsdf_child(queue: mp.Queue) -> None:  # type: ignore[type-arg] - mp.Queue is not subscriptable at run time
    scene = render_scene(16)
    t0 = time.perf_counter()
    fused = mesh.fuse_tsdf(scene["depth"], scene["intrinsics"], scene["extrinsics"], scene["images"])
    seconds = time.perf_counter() - t0
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kilobytes on Linux
    queue.put({"peak_mb": peak_kb / 1024.0, "seconds": seconds, "faces": fused.mesh.n_faces})


def tsdf_peak_mb() -> float:
    """Peak RSS (MB) of a fresh spawned child that renders 16 views and fuses them once."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_tsdf_child, args=(queue,))
    proc.start()
    out = queue.get(timeout=600)
    proc.join(60)
    return float(out["peak_mb"])


def _write_run(session_dir: Path, scene: dict[str, np.ndarray]) -> Path:
    """Save a scene as a finished run folder, as the app does after a run."""
    from da3_core.contract import ModelSpec, Reconstruction
    from da3_core.runs import records

    n = len(scene["depth"])
    names = [f"{i:04d}.jpg" for i in range(n)]
    rec = Reconstruction(
        depth=scene["depth"],
        conf=None,
        extrinsics=scene["extrinsics"].astype(np.float32),
        intrinsics=scene["intrinsics"].astype(np.float32),
        images=scene["images"],
        sky=None,
        is_metric=False,
        scale_factor=None,
        gaussians=None,
        names=tuple(names),
        model=ModelSpec(kind="demo", ref="da3-small"),
        preset="da3-small",
        device="cpu",
    )
    params = {"process_res": 504, "process_res_method": "upper_bound_resize"}
    run_dir, meta = records.start_run(session_dir, list(scene["images"]), names, "upload", rec.model, params)
    records.finish_run(run_dir, meta, rec)
    return run_dir


def compare_page_times(a: dict[str, np.ndarray], b: dict[str, np.ndarray], repeats: int) -> dict[str, float]:
    """``compare_child_cold_s`` and ``compare_32_views_page_s`` (see the module doc)."""
    import tempfile

    from da3_core.runs import compare, workspace

    with tempfile.TemporaryDirectory() as tmp:
        session_dir = workspace.new_session(tmp)
        dir_a = _write_run(session_dir, a)
        time.sleep(1.01)  # run folders are named by the second
        dir_b = _write_run(session_dir, b)
        comparer = compare.Comparer()
        count = iter(range(1_000_000))

        def once() -> compare.CompareSummary:
            out = compare.cache_dir(session_dir) / f"bench-{next(count)}"
            request = compare.CompareRequest("runs", str(dir_a), str(dir_b), 2.0, str(out))
            return comparer.submit(request).future.result(timeout=600)

        try:
            cold, _ = _median(once, 1)
            warm, summary = _median(once, repeats)
        finally:
            comparer.close()
        assert isinstance(summary, compare.CompareSummary) and "chamfer" in summary.numbers
    return {"compare_child_cold_s": cold, "compare_32_views_page_s": warm}


def run(repeats: int = 3) -> dict[str, float]:
    """Returns ``compare_32_views_s``, ``tsdf_16_views_504_s``, ``tsdf_16_views_504_peak_mb``,
    ``normals_1mpx_s`` (the goals), plus ``tsdf_16_views_504_faces`` and ``tsdf_voxel_size``."""
    out: dict[str, float] = {}
    truth32 = render_scene(32)
    a, b = _run_arrays(truth32), _run_arrays(perturbed(truth32))
    metrics.compare_runs(a, b)  # warm-up (imports, first allocations)
    out["compare_32_views_s"], cmp = _median(lambda: metrics.compare_runs(a, b), repeats)
    assert isinstance(cmp, metrics.Comparison) and cmp.pose is not None
    out.update(compare_page_times(truth32, perturbed(truth32), repeats))
    del truth32

    scene16 = render_scene(16)
    args = (scene16["depth"], scene16["intrinsics"], scene16["extrinsics"], scene16["images"])
    out["tsdf_16_views_504_s"], fused = _median(lambda: mesh.fuse_tsdf(*args), max(1, repeats - 1))
    assert isinstance(fused, mesh.FusedMesh)
    out["tsdf_16_views_504_faces"] = float(fused.mesh.n_faces)
    out["tsdf_voxel_size"] = fused.params.voxel_size
    out["tsdf_16_views_504_peak_mb"] = tsdf_peak_mb()

    d = 2.0 + 0.3 * np.sin(np.arange(1000, dtype=np.float32) / 37.0)[None, :] + np.zeros((1000, 1), np.float32)
    d[300:600, 400:700] = 1.2  # an object with depth edges
    k = np.array([[800.0, 0, 500], [0, 800.0, 500], [0, 0, 1]])
    normals.normals_from_depth(d, k)
    out["normals_1mpx_s"], _ = _median(lambda: normals.normals_from_depth(d, k), 7)
    return out


if __name__ == "__main__":
    results = run()
    print(f"{'metric':<28}{'value':>12}{'goal':>10}")
    for key, value in results.items():
        goal = GOALS.get(key)
        mark = "" if goal is None else ("  ok" if value <= goal else "  OVER")
        print(f"{key:<28}{value:>12.4f}{'' if goal is None else f'{goal:>10.2f}'}{mark}")
