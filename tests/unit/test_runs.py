"""Runs on disk: inputs saved before the run, results read back exactly, failures kept."""

from __future__ import annotations

import json

import numpy as np
import pytest

from da3_core.contract import Gaussians, ModelSpec
from da3_core.runs import records, workspace
from tests.unit import synthetic


def test_run_round_trip(tmp_path):
    rec = synthetic.box_scene()
    session = workspace.new_session(tmp_path)
    run_dir, meta = records.start_run(session, list(rec.images), rec.names, "upload", rec.model, {"process_res": 504})
    assert meta.status == "pending" and len(meta.input_files) == rec.n_views
    assert all((run_dir / f).is_file() for f in meta.input_files)
    assert json.loads((run_dir / "run.json").read_text())["status"] == "pending"
    done = records.finish_run(run_dir, meta, rec)
    back = records.load_result(run_dir)
    np.testing.assert_array_equal(back.depth, rec.depth)
    np.testing.assert_array_equal(back.images, rec.images)
    for name in ("conf", "extrinsics", "intrinsics", "sky"):
        a, b = getattr(rec, name), getattr(back, name)
        assert (a is None and b is None) or np.array_equal(a, b)
    assert back.names == rec.names and back.model == rec.model and back.preset == rec.preset
    assert done.status == "done" and records.read_meta(run_dir) == done
    assert [m.run_id for m in records.list_session_runs(session)] == [run_dir.name]


def test_gaussians_survive_the_round_trip(tmp_path):
    rec = synthetic.box_scene()
    g = Gaussians(
        *(
            np.random.default_rng(i).random(s).astype(np.float32)
            for i, s in enumerate([(5, 3), (5, 3), (5, 4), (5, 3, 1), (5,)])
        )
    )
    rec = type(rec)(**{**rec.__dict__, "gaussians": g})
    run_dir, meta = records.start_run(
        workspace.new_session(tmp_path), list(rec.images), rec.names, "upload", rec.model, {}
    )
    records.finish_run(run_dir, meta, rec)
    back = records.load_result(run_dir)
    np.testing.assert_array_equal(back.gaussians.harmonics, g.harmonics)


def test_failed_run_keeps_inputs_and_message(tmp_path):
    rec = synthetic.box_scene()
    session = workspace.new_session(tmp_path)
    run_dir, meta = records.start_run(
        session, list(rec.images), rec.names, "video", ModelSpec("hub", "depth-anything/DA3-SMALL"), {}
    )
    failed = records.fail_run(run_dir, meta, "ModelUnavailableError: no hub")
    assert records.read_meta(run_dir).error == "ModelUnavailableError: no hub" and failed.status == "failed"
    assert len(records.input_paths(run_dir, failed)) == rec.n_views
    with pytest.raises(FileNotFoundError):
        records.load_result(run_dir)
    assert "failed" in failed.label()
