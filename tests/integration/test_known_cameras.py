"""Known cameras through the real worker (untrained DA3-SMALL demo weights, a real
`da3_core.runner.Runner`): the cameras come back as given, up to DA3's documented alignment;
the dashboard's COLMAP export of a run reads back as known cameras and reproduces them.

Tolerances (stated once; measured values in brackets, Xeon, `pytest -s` prints them): with
``align_to_input_ext_scale`` on (DA3's default) the result's extrinsics are the given ones in
float32: ``max|ours - given| / max|given| <= 1e-6`` [1.5e-8]; its intrinsics are the given K
rescaled by DA3's input processor to the processed size, relative 1e-6 [2.9e-8]. With it
off, DA3 moves the given cameras into its own frame with one similarity: every camera's
rotation differs from the given one by the same rotation, within 1e-4 [5e-8], and the
centres map by one scale + rotation + shift within 1e-4 [4.6e-9]. The COLMAP round trip
stores rotations as quaternions and K at the frames' size: poses within 1e-5 absolute
[1.1e-7], intrinsics 1e-5 relative [8.7e-13]; a run given those cameras returns the first
run's within the same bounds [1e-7, 1.5e-12]. (float32 round-off is ~6e-8.)
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from da3_core.contract import ModelSpec, ReconstructRequest
from da3_core.media import camera_files, camera_match, cameras
from da3_core.runner import Runner
from da3_core.runs import tasks

pytestmark = pytest.mark.slow

N, H, W, RES = 3, 120, 160, 112  # processed size 112 x 84 (upper_bound_resize)


def frames(n: int = N) -> tuple[np.ndarray, ...]:
    out = []
    for i in range(n):
        yy, xx = np.mgrid[0:H, 0:W]
        out.append(
            np.stack([(xx * 2 + 25 * i) % 256, (yy * 3) % 256, (xx * yy // 23 + 40 * i) % 256], -1).astype(np.uint8)
        )
    return tuple(out)


def scene_cameras(n: int = N) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic rig in a world frame of the user's: cameras on an arc around (4, -2, 7),
    12 units away, (n, 4, 4) world-to-camera; K for 160x120 frames."""
    target = np.array([4.0, -2.0, 7.0])
    ext, ixt = [], []
    for i in range(n):
        a = math.radians(-25 + 25 * i)
        centre = target + 12.0 * np.array([math.sin(a), 0.2, -math.cos(a)])
        z = (target - centre) / np.linalg.norm(target - centre)
        x = np.cross([0.0, 1.0, 0.0], z)
        x /= np.linalg.norm(x)
        r = np.stack([x, np.cross(z, x), z])
        e = np.eye(4)
        e[:3, :3], e[:3, 3] = r, -r @ centre
        ext.append(e)
        ixt.append([[140.0 + 5 * i, 0, 80.0 + i], [0, 141.0 + 5 * i, 60.0 - i], [0, 0, 1]])
    return np.array(ext), np.array(ixt)


def da3_rescaled(k: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """K at the processed size, as DA3's input processor scales it (rows by the size ratios)."""
    out = np.array(k, dtype=np.float64)
    out[..., 0, :] *= hw[1] / W
    out[..., 1, :] *= hw[0] / H
    return out


def request(**kw) -> ReconstructRequest:
    return ReconstructRequest(
        frames(), tuple(f"view {i}.png" for i in range(N)), ModelSpec("demo", "da3-small"), process_res=RES, **kw
    )


def rel(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


@pytest.fixture(scope="module")
def cam_runner():
    r = Runner(name="da3-known-cameras", cancel_grace_s=2.0)
    yield r
    r.close()


def test_given_cameras_come_back_as_given(cam_runner, workspace):
    ext, ixt = scene_cameras()
    rec = tasks.reconstruct.call(
        request(extrinsics=ext, intrinsics=ixt, camera_source="JSON"),
        str(workspace / "demo-weights"),
        runner=cam_runner,
    )
    assert rec.hw == (84, 112)
    print(
        f"given cameras back: extrinsics {rel(rec.extrinsics, ext[:, :3]):.2g}, intrinsics {rel(rec.intrinsics, da3_rescaled(ixt, rec.hw)):.2g}"
    )
    assert rel(rec.extrinsics, ext[:, :3]) <= 1e-6
    assert rel(rec.intrinsics, da3_rescaled(ixt, rec.hw)) <= 1e-6
    assert rec.params["cameras"] == "given (JSON)" and rec.params["align_to_input_ext_scale"] is True
    assert rec.is_metric is False and np.isfinite(rec.depth).all() and (rec.depth > 0).all()
    assert cameras.describe(dict(rec.params)) == "given (JSON)"
    # Every view, figure and export works from the result's cameras: the given world frame.
    from da3_core.scene import geometry

    cams = geometry.resolve_cameras(rec, 60.0)
    np.testing.assert_allclose(cams.extrinsics, rec.extrinsics)
    assert not cams.assumed


def test_align_off_moves_the_given_cameras_into_da3s_frame_by_one_similarity(cam_runner, workspace):
    ext, ixt = scene_cameras()
    rec = tasks.reconstruct.call(
        request(
            extrinsics=ext, intrinsics=ixt, camera_source="COLMAP", align_to_input_ext_scale=False, reference_view=2
        ),
        str(workspace / "demo-weights"),
        runner=cam_runner,
    )
    assert rec.params["align_to_input_ext_scale"] is False and "DA3's frame" in cameras.describe(dict(rec.params))
    out = np.concatenate([rec.extrinsics.astype(np.float64), np.tile([[[0, 0, 0, 1.0]]], (N, 1, 1))], axis=1)
    c2w_out, c2w_in = np.linalg.inv(out), np.linalg.inv(ext)
    q = [c2w_out[i, :3, :3] @ c2w_in[i, :3, :3].T for i in range(N)]  # the similarity's rotation, per camera
    assert max(np.abs(q[i] - q[0]).max() for i in range(N)) <= 1e-4
    assert np.abs(q[0] @ q[0].T - np.eye(3)).max() <= 1e-4
    a, b = c2w_in[:, :3, 3], c2w_out[:, :3, 3]
    s = np.linalg.norm(b - b.mean(0)) / np.linalg.norm(a - a.mean(0))
    fitted = s * (a - a.mean(0)) @ q[0].T + b.mean(0)
    print(
        f"align off: rotation spread {max(np.abs(q[i] - q[0]).max() for i in range(N)):.2g}, centre fit {np.abs(fitted - b).max():.2g}"
    )
    assert np.abs(fitted - b).max() <= 1e-4 * max(1.0, np.abs(b).max())
    assert rel(out, ext) > 1e-3  # moved: not the given cameras
    assert rel(rec.intrinsics, da3_rescaled(ixt, rec.hw)) <= 1e-6


def test_colmap_export_reads_back_as_the_same_cameras(cam_runner, workspace, tmp_path):
    """This dashboard's COLMAP export of a run (images named as the frames, K at the frames'
    size), read back as known cameras, gives the run's cameras; a run with them returns them."""
    demo = str(workspace / "demo-weights")
    # Untrained weights predict meaningless intrinsics (fy 6e7 against fx 1215 was seen), which
    # the reader rightly refuses as implausible: the first run takes plausible cameras, so the
    # run's cameras (the given ones) are what the export must carry.
    k_given = np.tile(np.array([[[150.0, 0.0, W / 2], [0.0, 150.0, H / 2], [0.0, 0.0, 1.0]]]), (N, 1, 1))
    ext_given = np.tile(np.eye(4)[None], (N, 1, 1))
    ext_given[:, :3, 3] = [[0.0, 0.0, 0.0], [0.4, 0.0, 0.1], [0.1, 0.3, 0.0]]
    first = tasks.reconstruct.call(
        request(extrinsics=ext_given, intrinsics=k_given, camera_source="JSON"), demo, runner=cam_runner
    )
    paths = []
    for i, img in enumerate(frames()):
        path = tmp_path / "input" / f"{i:04d}.jpg"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(img).save(path, quality=95)
        paths.append(str(path))
    written = tasks.export_colmap.call(first, paths, str(tmp_path / "colmap"), 40.0, runner=cam_runner)
    files = [(Path(p).name, Path(p).read_bytes()) for p in written]
    read = camera_files.read_camera_files(files)
    assert read.source == "COLMAP" and sorted(e.name for e in read.entries) == sorted(first.names)
    match = camera_match.match_cameras(read, list(first.names), [(W, H)] * N)
    known = match.known
    assert known is not None and [r.note for r in match.rows] == [""] * N  # same size: nothing rescaled
    ext = np.concatenate([first.extrinsics, np.tile([[[0, 0, 0, 1.0]]], (N, 1, 1))], axis=1)
    k_frames = np.array(first.intrinsics, np.float64)
    k_frames[:, 0, :] *= W / first.hw[1]
    k_frames[:, 1, :] *= H / first.hw[0]
    print(
        f"COLMAP round trip: poses {np.abs(known.extrinsics - ext).max():.2g}, K {rel(known.intrinsics, k_frames):.2g}"
    )
    assert np.abs(known.extrinsics - ext).max() <= 1e-5
    assert rel(known.intrinsics, k_frames) <= 1e-5
    again = tasks.reconstruct.call(
        request(extrinsics=known.extrinsics, intrinsics=known.intrinsics, camera_source=known.source),
        demo,
        runner=cam_runner,
    )
    print(
        f"re-run with them: poses {np.abs(again.extrinsics - first.extrinsics).max():.2g}, K {rel(again.intrinsics, first.intrinsics):.2g}"
    )
    assert np.abs(again.extrinsics - first.extrinsics).max() <= 1e-5
    assert rel(again.intrinsics, first.intrinsics) <= 1e-5
    assert again.params["cameras"] == "given (COLMAP)"


def test_fewer_than_three_non_collinear_cameras_use_the_stated_fallback(cam_runner, workspace):
    """DA3's own alignment (evo's Umeyama) refuses 2 cameras, collinear centres or one camera
    (stock inference() raises GeometryException); ours falls back as documented in
    `da3_core.worker.reconstruct.align_to_given` and says so in the run's parameters."""
    demo = str(workspace / "demo-weights")
    ext, ixt = scene_cameras()
    two = ReconstructRequest(
        frames(2),
        ("a.png", "b.png"),
        ModelSpec("demo", "da3-small"),
        process_res=RES,
        extrinsics=ext[:2],
        intrinsics=ixt[:2],
        camera_source="JSON",
    )
    rec = tasks.reconstruct.call(two, demo, runner=cam_runner)
    assert rec.params["camera_alignment"].startswith("scale from the camera centres' spread")
    assert rel(rec.extrinsics, ext[:2, :3]) <= 1e-6 and np.isfinite(rec.depth).all() and (rec.depth > 0).all()
    # Collinear centres, align off: the given cameras relative to the first, at DA3's scale.
    line = ext.copy()
    for i in range(N):
        line[i, :3, 3] = -line[i, :3, :3] @ np.array([2.0 * i, 1.0, 5.0])
    rec = tasks.reconstruct.call(
        request(extrinsics=line, intrinsics=ixt, camera_source="JSON", align_to_input_ext_scale=False),
        demo,
        runner=cam_runner,
    )
    relative = line @ np.linalg.inv(line[0])
    np.testing.assert_allclose(rec.extrinsics[:, :, :3], relative[:, :3, :3], atol=1e-5)
    np.testing.assert_allclose(rec.extrinsics[0], np.eye(4)[:3], atol=1e-6)
    assert rec.params["camera_alignment"].startswith("scale from")
    # One camera: nothing to fit a scale to; depth keeps DA3's scale.
    one = ReconstructRequest(
        frames(1),
        ("a.png",),
        ModelSpec("demo", "da3-small"),
        process_res=RES,
        extrinsics=ext[:1],
        intrinsics=ixt[:1],
        camera_source="NPZ",
    )
    rec = tasks.reconstruct.call(one, demo, runner=cam_runner)
    assert rec.params["camera_alignment"].startswith("none: the given cameras share one centre")
    assert rel(rec.extrinsics, ext[:1, :3]) <= 1e-6
