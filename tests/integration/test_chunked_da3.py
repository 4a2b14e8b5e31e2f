"""A chunked run on the real DA3 network (untrained DA3-SMALL weights) through the real chunk
task: descriptors from DA3's frame-local backbone layer, every stage to a finished run."""

from __future__ import annotations

import time

import numpy as np
import pytest

from da3_core.chunks import store
from da3_core.config import Settings
from da3_core.contract import ModelSpec
from da3_core.runs import records
from da3_core.runs.service import RunService

pytestmark = pytest.mark.slow

PARAMS = {
    "process_res": 112,
    "process_res_method": "upper_bound_resize",
    "ref_view_strategy": "saddle_balanced",
    "reference_view": None,
    "infer_gs": False,
    "device": "cpu",
}


def test_real_da3_chunked_run_with_loop_closure(module_runner, workspace, tmp_path):
    service = RunService(module_runner, Settings(workspace=workspace))
    try:
        rng = np.random.default_rng(0)
        base = [rng.integers(0, 255, (90, 120, 3), dtype=np.uint8) for _ in range(5)]
        frames = base + base[::-1][1:]  # the path comes back: frames repeat, so loops can be found
        names = [f"f{i}.png" for i in range(len(frames))]
        params = {**PARAMS, "chunking": {"chunk": 3, "overlap": 1, "loop_closure": True}}
        run = service.submit_chunked(
            tmp_path / ("c" * 32), frames, names, "upload", ModelSpec("demo", "da3-small"), params
        )
        deadline = time.monotonic() + 300
        while not run.finished:
            assert time.monotonic() < deadline, run.stage
            run.pump()
            time.sleep(0.05)
        assert run.outcome.ok, run.outcome.message
        meta = records.read_meta(run.run_dir)
        rec = records.load_result(run.run_dir, meta)
        assert rec.n_views == len(frames) and rec.extrinsics.shape == (len(frames), 3, 4)
        assert np.isfinite(np.asarray(rec.depth)).all() and meta.params["chunked"]["alignment"] == "sim3"
        desc = store.chunk_array(run.run_dir, 0, "descriptors")
        assert desc is not None and desc.shape[0] == 3 and np.allclose(np.linalg.norm(desc, axis=1), 1.0, atol=1e-4)
        # The same frame in two chunks has the same descriptor (the layer sees the frame alone).
        d1 = store.chunk_array(run.run_dir, 1, "descriptors")
        ids0, ids1 = store.chunk_meta(run.run_dir, 0)["frame_ids"], store.chunk_meta(run.run_dir, 1)["frame_ids"]
        shared = sorted(set(ids0) & set(ids1))
        for f in shared:
            np.testing.assert_allclose(desc[ids0.index(f)], d1[ids1.index(f)], atol=1e-5)
        assert meta.params["chunked"]["loops_closed"] >= 1  # repeated frames are found again
    finally:
        service.close()
