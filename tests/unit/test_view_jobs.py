"""The mesh and feature-map export jobs of the run service (kinds ``mesh`` and ``features``),
like the COLMAP/3DGS ones (`test_export_jobs.py`): queued on the real worker, estimated,
cancellable, written atomically into the run's exports/ with their ``.job.json`` so a
reload (or a new server) finds them.

The mesh job runs the real task (numpy, scikit-image, trimesh: light enough on a 2-view
48x64 scene); the feature job runs a stand-in (`tests.view_tasks`) that returns float16
`FeatureMaps` through the contract, which the parent writes as the NPZ.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import pytest
import trimesh

from da3_core.config import Settings
from da3_core.runs.service import RunService
from da3_core.scene import features
from tests.run_service_tasks import fake_reconstruct
from tests.unit import synthetic
from tests.view_tasks import fake_export_features


@pytest.fixture
def service(module_runner, tmp_path):
    return RunService(
        module_runner,
        Settings(workspace=tmp_path / "ws"),
        task=fake_reconstruct,
        export_tasks={"features": fake_export_features},
    )


def finished_run(tmp_path: Path, first: str = "a", n: int = 2, session: str = "a" * 32):
    rec = synthetic.box_scene(n)
    rec = dataclasses.replace(rec, names=(first,) + tuple(f"v{i}" for i in range(1, n)))
    run_dir, _ = synthetic.write_finished_run(tmp_path / "ws" / "sessions" / session, rec)
    return run_dir, rec


def wait_finished(ej, timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    while not ej.finished:
        assert time.monotonic() < deadline, f"timed out waiting for the {ej.title}"
        time.sleep(0.05)
    return ej.outcome


def record(run_dir: Path, kind: str) -> dict:
    return json.loads((run_dir / "exports" / f".{kind}.job.json").read_text())


def test_the_mesh_job_writes_every_format_in_the_worker_and_a_new_server_finds_it(service, tmp_path):
    run_dir, rec = finished_run(tmp_path, n=3)
    est = service.export_estimate(run_dir, "mesh", rec, conf_percentile=0.0)
    assert "TSDF grid of at most 24,000,000 voxels" in est.note() and est.budget_s > 120
    ej = service.submit_export(run_dir, "mesh", rec, conf_percentile=0.0)
    assert record(run_dir, "mesh")["status"] == "pending"
    outcome = wait_finished(ej)
    assert outcome.ok, outcome
    status = service.export_status(run_dir, "mesh")
    assert status.files == ("mesh/fused.glb", "mesh/fused.ply", "mesh/fused.obj", "mesh/views.glb", "mesh/tsdf.json")
    info = status.info
    assert info["fused_faces"] > 100 and info["view_faces"] > 100 and info["peak_rss_mb"] > 0
    assert info["tsdf"]["trunc"] == pytest.approx(5 * info["tsdf"]["voxel_size"])
    folder = run_dir / "exports" / "mesh"
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".") and not p.name.endswith(".job.json")]
    ply = trimesh.load(folder / "fused.ply", process=False)
    assert len(ply.faces) == info["fused_faces"]
    # The fused surface lies on the box the depth came from (world frame as is in PLY).
    assert synthetic.on_box_surface(np.asarray(ply.vertices), tol=2 * info["tsdf"]["voxel_size"]).mean() > 0.95
    views = trimesh.load(folder / "views.glb")
    assert sorted(views.geometry) == ["view_000", "view_001", "view_002"]
    assert json.loads((folder / "tsdf.json").read_text())["fused_faces"] == info["fused_faces"]
    # Another server process: the record says done, with the same files and figures.
    fresh = RunService(service.runner, service.settings)
    again = fresh.export_status(run_dir, "mesh")
    assert again.ok and again.files == status.files and again.info["fused_faces"] == info["fused_faces"]
    assert record(run_dir, "mesh")["options"] == {"conf_percentile": 0.0}


def test_a_mesh_job_with_nothing_to_mesh_fails_with_a_reason_and_cancel_works(service, tmp_path):
    run_dir, rec = finished_run(tmp_path)
    empty = dataclasses.replace(rec, depth=np.full_like(rec.depth, np.nan))
    outcome = wait_finished(service.submit_export(run_dir, "mesh", empty))
    assert outcome.status == "failed" and "no pixel passes the filters" in outcome.message
    assert not (run_dir / "exports" / "mesh").exists()
    # Cancelled while queued behind another job: nothing written, record says cancelled.
    other_dir, other = finished_run(tmp_path, session="b" * 32, n=3)
    first = service.submit_export(other_dir, "mesh", other, conf_percentile=0.0)
    queued = service.submit_export(run_dir, "mesh", rec)
    assert service.cancel_export(run_dir, "mesh")
    assert wait_finished(queued).status == "cancelled"
    assert record(run_dir, "mesh")["status"] == "cancelled" and not (run_dir / "exports" / "mesh").exists()
    assert wait_finished(first).ok


def test_feature_maps_cross_as_float16_and_the_parent_writes_the_npz(service, tmp_path):
    run_dir, rec = finished_run(tmp_path, n=3)
    est = service.export_estimate(run_dir, "features", rec, layers=[11, 5])
    assert "2 layer(s) of float16 features" in est.note()
    ej = service.submit_export(run_dir, "features", rec, layers=[11, 5])
    assert wait_finished(ej).ok, ej.outcome
    status = service.export_status(run_dir, "features")
    assert status.files == ("features.npz",)
    assert status.info["layers"] == [5, 11] and status.info["views"] == 3 and status.info["preset"] == "da3-small"
    fm = features.read_features_npz(str(run_dir / "exports" / "features.npz"))
    assert fm.layers == (5, 11) and fm.names == rec.names and fm.layer(5).dtype == np.float16
    # The stand-in built them from the saved frames (JPEG copies), in input order.
    assert fm.layer(11).shape[:3] == (3, rec.hw[0] // 14, rec.hw[1] // 14)
    np.testing.assert_allclose(
        fm.layer(11)[..., 3:].astype(np.float32), 11 * fm.layer(11)[..., :3].astype(np.float32), rtol=2e-3
    )
    assert record(run_dir, "features")["options"] == {"layers": [11, 5]}


def test_feature_requests_name_the_run_when_they_cannot_be_made(service, tmp_path):
    run_dir, rec = finished_run(tmp_path)
    with pytest.raises(
        ValueError, match=rf"feature maps of run {run_dir.name}: layers \[12\]: da3-small has backbone layers 0..11"
    ):
        service.submit_export(run_dir, "features", rec, layers=[12])
    with pytest.raises(ValueError, match=rf"feature maps of run {run_dir.name}: choose at least one"):
        service.submit_export(run_dir, "features", rec, layers=[])
    assert not (run_dir / "exports" / ".features.job.json").exists()  # refused before anything was written
    fail_dir, fail = finished_run(tmp_path, first="fail", session="c" * 32)
    outcome = wait_finished(service.submit_export(fail_dir, "features", fail, layers=[3]))
    assert outcome.status == "failed" and f"the fake feature task refuses run {fail_dir.name}" in outcome.message
    assert not (fail_dir / "exports" / "features.npz").exists()
