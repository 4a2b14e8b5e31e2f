"""Comparisons and reference scores (`da3_core.runs.compare`, `da3_core.scene.reference`,
`da3_core.scene.compare_figures`): the truth of a bundled example on DA3's processed grid,
perfect scores against it, the numbers a known perturbation predicts, the on-disk cache, the
errors that name the run, and the child process the page uses."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from da3_core.runs import compare as C
from da3_core.runs import records, workspace
from da3_core.scene import compare_figures as F
from da3_core.scene import metrics as M
from da3_core.scene import reference as R
from da3_core.scene.align import Sim3, transform_views
from tests.unit import synthetic

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
ROOM = EXAMPLES / "room"
NAMES = ["00.jpg", "01.jpg", "02.jpg", "03.jpg"]


# --------------------------------------------------------------------------------------
# DA3's processed grid
# --------------------------------------------------------------------------------------


def test_processed_intrinsics_follow_da3s_input_processor_by_hand():
    k = np.array([[246.0, 0.0, 159.5], [0.0, 246.0, 119.5], [0.0, 0.0, 1.0]])
    # upper_bound_resize 140: 320x240 -> 140x105 -> 140x112 (105 is 7 from 98 and from 112: up wins).
    got, hw = R.processed_intrinsics(k, (320, 240), 140, "upper_bound_resize")
    assert hw == (112, 140)
    np.testing.assert_allclose(got[0], k[0] * 140 / 320)
    np.testing.assert_allclose(got[1], k[1] * 112 / 240)
    # upper_bound_crop 140: 140x105 -> centre crop to 140x98, cy shifted by (105 - 98) // 2 = 3.
    got, hw = R.processed_intrinsics(k, (320, 240), 140, "upper_bound_crop")
    assert hw == (98, 140)
    np.testing.assert_allclose(got[1], [0.0, 246.0 * 105 / 240, 119.5 * 105 / 240 - 3])
    # lower_bound_resize 140: short side 240 -> 140, 320 -> round(186.67) = 187 -> 182.
    assert R.processed_intrinsics(k, (320, 240), 140, "lower_bound_resize")[1] == (140, 182)
    # The app's 504 on the examples: 504x378, both multiples of 14 already.
    assert R.processed_intrinsics(k, (320, 240), 504)[1] == (378, 504)
    with pytest.raises(ValueError, match="process_res_method"):
        R.processed_intrinsics(k, (320, 240), 140, "bicubic")


def test_rendered_truth_is_the_oracles_depth_of_the_example_cameras():
    """The example's own cameras at its native size: the same z-depth as `tests.oracle`'s renderer."""
    from tests import oracle

    meta = R.read_scene(ROOM)
    frames = meta["frames"][:2]
    eyes = np.array([f["camera_center"] for f in frames], dtype=np.float64)
    targets = np.array([f["look_at"] for f in frames], dtype=np.float64)
    scene = oracle._make_examples().SCENES["room"]()
    _, depth_oracle, ext, k = oracle._render(scene, eyes, targets, 320, 240, supersample=1)
    ext_json = np.array([f["extrinsics"] for f in frames])
    np.testing.assert_allclose(ext, ext_json, atol=1e-7)
    depth = R.render_depth("room", ext, np.stack([k, k]), (240, 320))
    np.testing.assert_allclose(depth, depth_oracle, rtol=1e-5)
    assert np.isfinite(depth).all() and depth.min() > 0.5  # a closed room: every pixel sees a wall


def test_example_truth_names_a_frame_it_does_not_have():
    with pytest.raises(ValueError, match=r"frame\(s\) 99\.jpg are not frames of the example room"):
        R.example_truth(ROOM, ["00.jpg", "99.jpg"], (112, 140), 140)


def test_example_truth_on_another_grid_says_how_it_was_matched():
    truth = R.example_truth(ROOM, NAMES[:2], (120, 160), 140)
    assert "scaled per axis" in truth.note and truth.depth.shape == (2, 120, 160)


# --------------------------------------------------------------------------------------
# Runs on disk
# --------------------------------------------------------------------------------------


def _truth_rec(process_res: int = 140, sim: Sim3 | None = None, names: list[str] = NAMES):
    """A finished run of the room example whose outputs are exactly its truth (moved by ``sim``)."""
    _, hw = R.processed_intrinsics(np.eye(3), (320, 240), process_res)
    truth = R.example_truth(ROOM, names, hw, process_res)
    ext, depth = truth.extrinsics, truth.depth
    if sim is not None:
        ext, s = transform_views(ext, sim)
        depth = depth * s
    rec = synthetic.make_rec(depth, extrinsics=ext, intrinsics=truth.intrinsics)
    return dataclasses.replace(rec, names=tuple(names), images=np.zeros((len(names), *hw, 3), np.uint8))


def _write(session_dir: Path, rec, **kw):
    time.sleep(0.01)
    return synthetic.write_finished_run(session_dir, rec, **kw)


@pytest.fixture
def session_dir(tmp_path: Path) -> Path:
    return workspace.new_session(tmp_path)


def _request(session_dir: Path, kind: C.Kind, run_a: Path, run_b: Path | None, pct: float = 2.0, ref: str = ""):
    key = C.cache_key(run_a.name, None if run_b is None else run_b.name, pct, None if kind == "runs" else kind)
    return C.CompareRequest(
        kind, str(run_a), "" if run_b is None else str(run_b), pct, str(C.cache_dir(session_dir) / key), ref
    )


def test_a_run_that_is_the_truth_in_another_world_scores_perfect(session_dir: Path):
    """Scale 1.1, 5 degrees and a shift of the whole run (a gauge change): every score perfect."""
    sim = Sim3(1.1, Rotation.from_euler("y", 5, degrees=True).as_matrix(), np.array([0.3, -0.2, 1.0]))
    run_dir, meta = _write(session_dir, _truth_rec(140, sim), source="example:room", params={"process_res": 140})
    ref = C.reference_for(run_dir, meta, EXAMPLES)
    assert ref is not None and ref.kind == "example" and "Living room" in ref.label
    s = C.compute(_request(session_dir, "example", run_dir, None, ref=ref.path))
    n = s.numbers
    assert set(n) == set(M.DEFINITIONS) and all(s.definitions[k] == M.DEFINITIONS[k] for k in n)
    assert n["abs_rel"] == pytest.approx(0.0, abs=1e-5) and n["delta_1"] == 1.0
    assert n["rot_err_deg"] == pytest.approx(0.0, abs=1e-3) and n["trans_err_deg"] == pytest.approx(0.0, abs=1e-3)
    assert n["auc_3"] == 1.0 and n["auc_30"] == 1.0
    assert n["chamfer"] == pytest.approx(0.0, abs=1e-4) and n["f1"] == 1.0
    assert s.scale == pytest.approx(1 / 1.1, rel=1e-4) and s.unit == "m" and s.notes == ()
    assert s.shared == tuple(NAMES)


def test_a_known_depth_error_gives_the_numbers_theory_predicts(session_dir: Path):
    """View 1 entirely 1.5x too far: the per-view median scale removes it (AbsRel 0, s = 1/1.5).
    A quarter of view 2 at 1.5x: AbsRel and delta as computed by hand from their definitions."""
    rec = _truth_rec(140)
    truth = rec.depth.astype(np.float64)
    depth = rec.depth.copy()
    w = depth.shape[2]
    depth[1] *= 1.5
    depth[2, :, : w // 4] *= 1.5
    run_dir, _ = _write(
        session_dir, dataclasses.replace(rec, depth=depth), source="example:room", params={"process_res": 140}
    )
    s = C.compute(_request(session_dir, "example", run_dir, None, ref=str(ROOM)))
    a, b = truth[2], depth[2].astype(np.float64)
    scale = np.median(a) / np.median(b)
    abs_rel_2 = np.mean(np.abs(scale * b - a) / a)
    ratio = scale * b / a
    delta_2 = np.mean(np.maximum(ratio, 1 / ratio) < 1.25)
    arrays = C.read_arrays(Path(_request(session_dir, "example", run_dir, None, ref=str(ROOM)).out))
    np.testing.assert_allclose(arrays["per_view_abs_rel"], [0, 0, abs_rel_2, 0], atol=1e-6)
    np.testing.assert_allclose(arrays["per_view_scale"][:2], [1.0, 1 / 1.5], rtol=1e-6)
    assert s.numbers["abs_rel"] == pytest.approx(abs_rel_2 / 4, rel=1e-5)
    assert s.numbers["delta_1"] == pytest.approx((3 + delta_2) / 4, rel=1e-6)
    np.testing.assert_allclose(arrays["depth_diff"][2], ratio - 1, atol=1e-5)


def test_two_runs_compared_give_compare_runs_numbers_and_a_cache(session_dir: Path):
    a_dir, ma = _write(session_dir, synthetic.box_scene(3))
    rec = synthetic.box_scene(3)
    b_dir, mb = _write(session_dir, dataclasses.replace(rec, depth=rec.depth * 1.01))
    req = _request(session_dir, "runs", a_dir, b_dir, pct=3.0)
    s = C.compute(req)
    a = M.RunArrays(records.load_result(a_dir).depth, rec.intrinsics, rec.extrinsics, rec.names)
    b = M.RunArrays(rec.depth * 1.01, rec.intrinsics, rec.extrinsics, rec.names)
    valid = np.isfinite(a.depth) & (a.depth > 0)
    direct = M.compare_runs(a, b, f1_threshold=0.03 * float(np.median(a.depth[valid])))
    for k, v in direct.numbers().items():
        assert s.numbers[k] == pytest.approx(v, rel=1e-6, abs=1e-9), k
    assert s.threshold == pytest.approx(direct.cloud.threshold)
    assert (s.run_a, s.run_b, s.kind) == (ma.run_id, mb.run_id, "runs")
    # The cache: a reload reads the same summary and the arrays the page draws.
    again = C.read_cached(Path(req.out))
    assert again == s
    arrays = C.read_arrays(Path(req.out))
    assert arrays["cloud_a"].dtype == np.float32 and arrays["cloud_b"].shape[1] == 3
    assert arrays["depth_diff"].shape == (3, 48, 64)
    assert [r["metric"] for r in s.table()][:2] == ["AbsRel", "δ < 1.25"]
    assert json.loads(Path(req.out).with_suffix(".json").read_text())["key"] == req.key


def test_errors_name_the_runs(session_dir: Path):
    a_dir, ma = _write(session_dir, synthetic.box_scene(2))
    rec = synthetic.box_scene(2)
    b_dir, mb = _write(session_dir, dataclasses.replace(rec, names=("x.png", "y.png")))
    with pytest.raises(ValueError, match=rf"runs {ma.run_id} and {mb.run_id} share no frame"):
        C.compute(_request(session_dir, "runs", a_dir, b_dir))
    records.write_meta(b_dir, dataclasses.replace(mb, status="failed"))
    with pytest.raises(ValueError, match=rf"run {mb.run_id} is failed, not done"):
        C.compute(_request(session_dir, "runs", a_dir, b_dir))
    with pytest.raises(ValueError, match="not a run id"):
        C.cache_key("../x", None, 2.0)
    with pytest.raises(ValueError, match="threshold_pct"):
        C.CompareRequest("runs", "a", "b", 0.0, "out")


def test_cameras_scored_against_reference_cameras(session_dir: Path):
    """Reference = the run's cameras in another world: perfect; then view 1 turned 5 degrees:
    pairs (0, 1) and (1, 2) are 5 degrees off, (0, 2) not (mean 10/3)."""
    rec = synthetic.box_scene(3)
    run_dir, meta = _write(session_dir, rec)
    assert C.reference_for(run_dir, meta, EXAMPLES) is None
    sim = Sim3(2.0, Rotation.from_euler("x", 30, degrees=True).as_matrix(), np.array([1.0, 2.0, 3.0]))
    ext, _ = transform_views(np.asarray(rec.extrinsics, np.float64), sim)
    ext4 = np.tile(np.eye(4), (3, 1, 1))
    ext4[:, :3] = ext
    C.save_reference(run_dir, ext4, rec.intrinsics, list(rec.names), "COLMAP")
    ref = C.reference_for(run_dir, meta, EXAMPLES)
    assert ref is not None and ref.kind == "cameras"
    s = C.compute(_request(session_dir, "cameras", run_dir, None, ref=ref.path))
    assert s.numbers["rot_err_deg"] == pytest.approx(0.0, abs=1e-4) and s.numbers["auc_30"] == 1.0
    assert "no depth" in s.notes[0] and s.reference_label == "the COLMAP cameras"
    q = Rotation.from_euler("z", 5, degrees=True).as_matrix()
    ext4[1, :3, :3] = q @ ext4[1, :3, :3]
    C.save_reference(run_dir, ext4, rec.intrinsics, list(rec.names), "COLMAP")
    s = C.compute(
        dataclasses.replace(_request(session_dir, "cameras", run_dir, None, ref=ref.path), out=str(session_dir / "c2"))
    )
    arrays = C.read_arrays(session_dir / "c2")
    np.testing.assert_allclose(arrays["per_pair_rot_deg"], [5.0, 0.0, 5.0], atol=1e-4)
    assert s.numbers["rot_err_deg"] == pytest.approx(10 / 3, abs=1e-4)


def test_known_cameras_of_a_run_are_a_reference(session_dir: Path):
    rec = synthetic.box_scene(3)
    run_dir, meta = records.start_run(
        session_dir, list(rec.images), list(rec.names), "upload", rec.model, {"process_res": 504},
        cameras=(np.asarray(rec.extrinsics), np.asarray(rec.intrinsics), "JSON"),
    )  # fmt: skip
    meta = records.finish_run(run_dir, meta, rec)
    ref = C.reference_for(run_dir, meta, EXAMPLES)
    assert ref is not None and ref.kind == "cameras" and "known cameras" in ref.label
    s = C.compute(_request(session_dir, "cameras", run_dir, None, ref=ref.path))
    assert s.numbers["auc_3"] == 1.0


def test_an_example_run_with_foreign_frames_has_no_example_reference(session_dir: Path):
    run_dir, meta = _write(session_dir, synthetic.box_scene(2), source="example:room")
    assert C.reference_for(run_dir, meta, EXAMPLES) is None
    run_dir, meta = _write(session_dir, synthetic.box_scene(2), source="example:../../etc")
    assert C.reference_for(run_dir, meta, EXAMPLES) is None


# --------------------------------------------------------------------------------------
# The child process
# --------------------------------------------------------------------------------------


def test_the_comparer_runs_in_a_child_and_keeps_errors(session_dir: Path):
    a_dir, _ = _write(session_dir, synthetic.box_scene(3))
    b_dir, mb = _write(session_dir, synthetic.box_scene(3))
    comparer = C.Comparer()
    try:
        req = _request(session_dir, "runs", a_dir, b_dir)
        job = comparer.submit(req)
        assert comparer.submit(req) is job or not job.pending  # the same key while pending: the same job
        summary = job.future.result(timeout=120)
        assert isinstance(summary, C.CompareSummary) and summary.numbers["f1"] == 1.0
        assert comparer.job(req.out) is job and job.summary() == summary and job.line.startswith("Done")
        assert C.read_cached(Path(req.out)) == summary
        records.write_meta(b_dir, dataclasses.replace(mb, status="cancelled"))
        bad = dataclasses.replace(req, out=str(session_dir / "bad"))
        job = comparer.submit(bad)
        with pytest.raises(ValueError):
            job.future.result(timeout=120)
        assert job.error == f"ValueError: run {mb.run_id} is cancelled, not done: only finished runs can be compared"
        assert job.summary() is None and job.line.startswith("Failed: ValueError")
    finally:
        comparer.close()


# --------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------


def test_overlay_figure_toggles_the_two_clouds():
    a = np.random.default_rng(0).random((100, 3))
    b = a + 0.01
    for show, visible in (("both", [True, True]), ("a", [True, False]), ("b", [False, True])):
        fig = F.overlay_figure(a, b, show=show, labels=("A", "B"))
        assert [t.visible for t in fig.data] == visible
        assert fig.data[0].marker.color == F.COLOR_A and fig.data[1].marker.color == F.COLOR_B
    assert fig.data[0].name == "A (100 points)"
    with pytest.raises(ValueError, match="show"):
        F.overlay_figure(a, b, show="c")  # type: ignore[arg-type]


def test_difference_figure_is_symmetric_around_zero():
    diff = np.full((10, 12), np.nan, np.float32)
    diff[:5] = 0.1
    diff[5:] = -0.05
    fig = F.difference_figure(diff, stride=2)
    heat = fig.data[0]
    assert heat.zmin == -heat.zmax == pytest.approx(-0.1) and heat.dx == 2
    assert F.difference_limit(np.full((2, 2), np.nan)) == 1.0
    assert F.difference_limit(np.zeros((2, 2))) == 1e-3
