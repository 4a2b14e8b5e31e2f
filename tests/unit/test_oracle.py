"""The ground-truth oracle (`tests.oracle`, `tests.oracle_tasks`) that stands in for DA3 in
chunked-run tests: its truth, its per-chunk Sim(3), determinism, descriptors, the worker."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from da3_core.contract import ChunkRequest, ChunkResult, ReconstructRequest
from da3_core.runner import Progress
from da3_core.scene.geometry import unproject_depth
from tests import oracle as oracle_module
from tests.oracle import (
    OracleOptions,
    camera_path,
    chunk_request,
    chunk_truth,
    frame_name,
    frames,
    image_descriptor,
    load_gt,
    make_oracle,
    oracle_model,
    simulate_chunk,
)
from tests.oracle_tasks import oracle_chunk

N = 64
EXACT = OracleOptions(depth_noise=0.0, outliers=0.0)


@pytest.fixture(scope="module")
def loop(tmp_path_factory):
    """A 64-frame loop (default options), rendered once for the module."""
    return make_oracle(tmp_path_factory.mktemp("oracle") / "loop", n_frames=N, path="loop")


@pytest.fixture(scope="module")
def exact(loop, tmp_path_factory):
    """The same renders without depth noise or outliers (a copy: only oracle.json changes)."""
    folder = tmp_path_factory.mktemp("oracle") / "exact"
    shutil.copytree(loop, folder)
    return make_oracle(folder, n_frames=N, path="loop", options=EXACT)


def _with_options(src, dst, options):
    shutil.copytree(src, dst)
    return make_oracle(dst, n_frames=N, path="loop", options=options)


def _points(depth, k, ext):
    return unproject_depth(depth, k, ext).astype(np.float64)


def _max_rel_err(folder, result, truth_key="view_sim3"):
    """Largest |chunk point - Sim3(GT point)| / |Sim3(GT point) - view's camera centre|."""
    gt = load_gt(folder)
    truth = chunk_truth(folder, result.frame_ids)
    rec, worst = result.rec, 0.0
    for k, i in enumerate(result.frame_ids):
        hit = np.isfinite(gt["depth"][i])
        world = _points(gt["depth"][i], gt["intrinsics"][i], gt["extrinsics"][i])[hit]
        sim = truth[truth_key][k] if truth_key == "view_sim3" else truth["sim3"]
        want = world @ sim[:3, :3].T + sim[:3, 3]
        got = _points(rec.depth[k], rec.intrinsics[k], rec.extrinsics[k])[hit]
        ext = rec.extrinsics[k].astype(np.float64)
        centre = -ext[:, :3].T @ ext[:, 3]
        worst = max(worst, float((np.linalg.norm(got - want, axis=1) / np.linalg.norm(want - centre, axis=1)).max()))
    return worst


def test_make_oracle_writes_the_truth_and_reuses_its_renders(loop, tmp_path, monkeypatch):
    gt = load_gt(loop)
    meta = json.loads((loop / "oracle.json").read_text())
    h, w = 48, 64
    assert gt["depth"].shape == (N, h, w) and gt["depth"].dtype == np.float32
    assert gt["extrinsics"].shape == (N, 3, 4) and gt["extrinsics"].dtype == np.float64
    assert gt["intrinsics"].shape == (N, 3, 3) and gt["intrinsics"].dtype == np.float64
    assert meta["path"] == "loop" and meta["n_frames"] == N and (meta["width"], meta["height"]) == (w, h)
    assert meta["options"] == OracleOptions().to_json() and gt["options"] == OracleOptions()
    imgs = frames(loop)
    assert len(imgs) == N and all(im.shape == (h, w, 3) and im.dtype == np.uint8 for im in imgs)
    assert sorted(p.name for p in (loop / "frames").iterdir()) == [frame_name(i) for i in range(N)]
    rot = gt["extrinsics"][:, :, :3]
    assert np.allclose(rot @ rot.transpose(0, 2, 1), np.eye(3), atol=1e-12)
    finite = np.isfinite(gt["depth"])
    assert finite.mean() > 0.9 and (gt["depth"][finite] > 0).all()
    assert np.allclose(gt["centers"], -np.einsum("nji,nj->ni", rot, gt["extrinsics"][:, :, 3]))
    # GT depth is z-depth at integer pixels: view 0's points, seen from view 1, land where
    # view 1's own depth puts them (up to the rounding of pixel positions).
    world = _points(gt["depth"][0], gt["intrinsics"][0], gt["extrinsics"][0])[finite[0]]
    cam = world @ gt["extrinsics"][1, :, :3].T + gt["extrinsics"][1, :, 3]
    uvw = cam @ gt["intrinsics"][1].T
    u, v = np.rint(uvw[:, 0] / uvw[:, 2]).astype(int), np.rint(uvw[:, 1] / uvw[:, 2]).astype(int)
    inside = (u >= 0) & (u < w) & (v >= 0) & (v < h)
    assert inside.mean() > 0.5
    rel = np.abs(gt["depth"][1][v[inside], u[inside]] / cam[inside, 2] - 1.0)
    assert np.median(rel) < 0.01

    # Same arguments again: nothing is rendered; other options: only oracle.json changes.
    stamp = (loop / "gt.npz").stat().st_mtime_ns, (loop / "frames" / "0000.png").stat().st_mtime_ns

    def no_render(*args, **kwargs):
        raise AssertionError("the renders were not reused")

    monkeypatch.setattr(oracle_module, "_render", no_render)  # was: a 0.5 s wall-clock bound
    assert make_oracle(loop, n_frames=N, path="loop") == loop
    assert ((loop / "gt.npz").stat().st_mtime_ns, (loop / "frames" / "0000.png").stat().st_mtime_ns) == stamp
    copy = _with_options(loop, tmp_path / "other", OracleOptions(seed=3))
    assert load_gt(copy)["options"].seed == 3
    assert np.array_equal(load_gt(copy)["depth"], gt["depth"], equal_nan=True)
    assert (loop / "gt.npz").stat().st_mtime_ns == stamp[0]
    assert oracle_model(loop).kind == "local" and oracle_model(loop).ref == str(loop.resolve())


def test_paths_loop_comes_back_and_line_never_does():
    eyes, _ = camera_path("courtyard", "loop", 100)
    # The last 10 % pass over the start again: frame i stands where frame i - 0.9 (n - 1) stood.
    for i in range(90, 100):
        assert np.linalg.norm(eyes[i] - eyes[int(round(i - 89.1))]) < 0.25
    assert np.linalg.norm(eyes[50] - eyes[0]) > 5.0
    line, _ = camera_path("courtyard", "line", 100)
    gaps = np.linalg.norm(line[:, None] - line[None], axis=-1)
    far_apart = np.abs(np.arange(100)[:, None] - np.arange(100)[None]) > 10
    assert gaps[far_apart].min() > 1.0


@pytest.mark.parametrize("drift", [(0.0, 0.0), (4.0, 0.03)])
def test_chunk_depth_unprojects_to_the_chunks_sim3_of_the_gt_points(exact, tmp_path, drift):
    drifting = OracleOptions(depth_noise=0.0, outliers=0.0, drift_deg=drift[0], drift_scale=drift[1])
    folder = exact if drift == (0.0, 0.0) else _with_options(exact, tmp_path / "drift", drifting)
    ids = range(20, 36)
    result = simulate_chunk(chunk_request(folder, ids, chunk=2))
    rec = result.rec
    assert result.frame_ids == tuple(ids) and result.chunk == 2 and rec.n_views == 16
    assert _max_rel_err(folder, result) < 1e-5
    truth = chunk_truth(folder, ids)
    lo, hi = OracleOptions().scale_range
    assert lo <= truth["scale"] <= hi and rec.params["oracle_scale"] == truth["scale"]
    assert np.array_equal(np.array(rec.params["oracle_sim3"]), truth["sim3"])
    assert np.array_equal(truth["view_sim3"][0], truth["sim3"])
    # DA3-like: the chunk's first camera sits near the chunk world's origin, looking along +z.
    r0 = rec.extrinsics[0, :, :3].astype(np.float64)
    assert np.degrees(np.arccos(np.clip((np.trace(r0) - 1) / 2, -1, 1))) < 3.5
    assert np.linalg.norm(-r0.T @ rec.extrinsics[0, :, 3]) < 0.06 * truth["scale"]
    if drift == (0.0, 0.0):
        assert np.allclose(truth["view_sim3"], truth["sim3"])
    else:
        # Without the drift terms the last view is clearly off; with them it is exact.
        assert _max_rel_err(folder, result, truth_key="sim3") > 0.01
        last = truth["view_sim3"][-1]
        assert np.isclose(np.cbrt(np.linalg.det(last[:3, :3])), truth["scale"] * (1 + drift[1]))
        rel = last[:3, :3] @ np.linalg.inv(truth["sim3"][:3, :3])
        turn = np.degrees(np.arccos(np.clip((np.trace(rel) / np.cbrt(np.linalg.det(rel)) - 1) / 2, -1, 1)))
        assert np.isclose(turn, drift[0], atol=1e-6)


def test_same_chunk_is_bit_identical_and_other_chunks_differ(loop):
    ids = range(8, 24)
    a = simulate_chunk(chunk_request(loop, ids, chunk=1))
    b = simulate_chunk(chunk_request(loop, ids, chunk=1))
    for name in ("depth", "conf", "extrinsics", "intrinsics", "images", "sky"):
        x, y = getattr(a.rec, name), getattr(b.rec, name)
        assert (x is None and y is None) or (x.dtype == y.dtype and np.array_equal(x, y)), name
    assert np.array_equal(a.descriptors, b.descriptors)
    assert a.rec.params == b.rec.params and a.rec.names == b.rec.names
    # Seeded by the frame ids (not the chunk index): a loop-closure chunk (-1) over the same
    # frames is the same; other frames give another transform and other noise.
    c = simulate_chunk(chunk_request(loop, ids, chunk=-1))
    assert np.array_equal(c.rec.depth, a.rec.depth) and c.chunk == -1
    d = simulate_chunk(chunk_request(loop, range(16, 32), chunk=2))
    assert d.rec.params["oracle_scale"] != a.rec.params["oracle_scale"]
    assert not np.allclose(np.array(d.rec.params["oracle_sim3"]), np.array(a.rec.params["oracle_sim3"]))
    assert chunk_truth(loop, range(8, 25))["scale"] != a.rec.params["oracle_scale"]  # one frame more


def test_noise_confidence_outliers_and_result_fields(loop):
    ids = list(range(30, 46))
    result = simulate_chunk(chunk_request(loop, ids, chunk=0, process_res=140))
    rec, gt = result.rec, load_gt(loop)
    truth = chunk_truth(loop, ids)
    hit = np.isfinite(gt["depth"][ids])
    ratio = rec.depth[hit] / (gt["depth"][ids][hit] * truth["scale"]) - 1.0
    conf = rec.conf[hit]
    outlier = np.abs(ratio) > 0.2
    assert 0.01 < outlier.mean() < 0.03  # about 2 % garbage pixels ...
    assert (conf[outlier] == 1.0).all()  # ... all with the lowest confidence
    assert abs(ratio[~outlier].std() - 0.01) < 0.001 and abs(ratio[~outlier].mean()) < 0.001
    assert (rec.conf >= 1.0).all() and rec.conf.max() <= 5.0 and np.median(conf) > 2.5
    assert rec.depth.dtype == rec.conf.dtype == rec.extrinsics.dtype == rec.intrinsics.dtype == np.float32
    assert np.isfinite(rec.depth).all() and (rec.depth > 0).all()
    if not hit.all():  # sky above the courtyard walls: flagged, finite, lowest confidence
        assert rec.sky is not None and np.array_equal(rec.sky, ~hit) and (rec.conf[~hit] == 1.0).all()
    assert rec.images.dtype == np.uint8 and np.array_equal(rec.images, np.stack(frames(loop, ids)))
    assert rec.names == tuple(frame_name(i) for i in ids) and rec.model == oracle_model(loop)
    assert rec.preset == "oracle" and rec.device == "cpu" and "inference" in rec.timings
    assert rec.params["process_res"] == 140 and not rec.is_metric
    d = result.descriptors
    assert d.shape[0] == 16 and d.dtype == np.float32 and np.allclose(np.linalg.norm(d, axis=1), 1.0, atol=1e-5)
    none = simulate_chunk(chunk_request(loop, ids, chunk=0, descriptors=False))
    assert none.descriptors is None


def test_revisited_frames_have_similar_descriptors_distant_places_do_not(loop):
    d = image_descriptor(frames(loop))
    cos = d @ d.T
    angle = np.arange(N) / (N - 1) / 0.9 * 360.0  # where on the circle each frame stands
    apart = np.abs((angle[:, None] - angle[None, :] + 180.0) % 360.0 - 180.0)
    revisits = [(i, int(round(i - 0.9 * (N - 1)))) for i in range(int(0.9 * (N - 1)) + 1, N)]
    assert len(revisits) >= 6 and all(apart[i, j] < 3.0 and abs(i - j) > 50 for i, j in revisits)
    same_place = np.array([cos[i, j] for i, j in revisits])
    far = cos[apart > 45.0]
    assert same_place.min() > 0.9
    assert far.max() < same_place.min() - 0.1 and np.median(far) < 0.5
    # The descriptor sees only the image: the same picture gives the same descriptor.
    assert np.array_equal(image_descriptor([frames(loop, [5])[0]]), d[5:6])


def test_oracle_chunk_crosses_the_process_boundary(loop, module_runner, tmp_path):
    request = chunk_request(loop, range(40, 52), chunk=3, process_res=112)
    job = oracle_chunk.submit(request, str(tmp_path / "demo"), 0, "auto", runner=module_runner)
    events = list(job.events())
    result = job.result(60)
    assert isinstance(result, ChunkResult) and result.chunk == 3 and result.frame_ids == tuple(range(40, 52))
    assert any(isinstance(e, Progress) and e.stage.startswith("oracle") for e in events)
    here = simulate_chunk(request)
    for name in ("depth", "conf", "extrinsics", "intrinsics", "images"):
        assert np.array_equal(getattr(result.rec, name), getattr(here.rec, name)), name
    assert np.array_equal(result.descriptors, here.descriptors)
    assert result.rec.params["oracle_sim3"] == here.rec.params["oracle_sim3"]

    # Frames that are not the saved ones: a clear ValueError naming the frame.
    imgs = list(request.request.images)
    imgs[2] = imgs[2][::-1].copy()
    bad = ChunkRequest(
        ReconstructRequest(images=imgs, names=request.request.names, model=request.request.model),
        chunk=3,
        frame_ids=request.frame_ids,
    )
    with pytest.raises(ValueError, match=r"image 2 \(0042\.png\) does not match saved frame 42"):
        oracle_chunk.submit(bad, str(tmp_path / "demo"), 0, "auto", runner=module_runner).result(60)


def test_mismatched_images_and_unknown_frames_raise_clear_errors(loop):
    request = chunk_request(loop, [3, 4, 5], chunk=0)
    shifted = ChunkRequest(request.request, chunk=0, frame_ids=(20, 21, 22))  # images of 3..5 said to be 20..22
    with pytest.raises(ValueError, match=r"image 0 \(0003\.png\) does not match saved frame 20 \(0020\.png\)"):
        simulate_chunk(shifted)
    # A JPEG round trip (runs keep their frames as JPEG q95) is still the saved frame.
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(request.request.images[1]).save(buf, format="JPEG", quality=95)
    jpeg = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    assert not np.array_equal(jpeg, request.request.images[1])
    images = (request.request.images[0], jpeg, request.request.images[2])
    again = ChunkRequest(
        ReconstructRequest(images=images, names=request.request.names, model=request.request.model),
        chunk=0,
        frame_ids=(3, 4, 5),
    )
    assert np.array_equal(simulate_chunk(again).rec.depth, simulate_chunk(request).rec.depth)
    beyond = ChunkRequest(request.request, chunk=0, frame_ids=(N, N + 1, N + 2))
    with pytest.raises(ValueError, match=f"frame id {N} is outside 0..{N - 1}"):
        simulate_chunk(beyond)
    with pytest.raises(ValueError, match="outside"):
        chunk_request(loop, [N], chunk=0)
