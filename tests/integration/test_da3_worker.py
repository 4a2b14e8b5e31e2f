"""The real DA3 path through the real worker: untrained weights from presets, loaded through
the real ``from_pretrained`` path, tiny inputs (2-3 frames at process_res 112-140)."""

from __future__ import annotations

import json
import sys
import textwrap

import numpy as np
import pytest

from da3_core import tasks
from da3_core.contract import ModelSpec, ModelUnavailableError, ReconstructRequest, Reconstruction, TaskError
from da3_core.gpu import Progress, Runner
from tests.conftest import run_python

pytestmark = pytest.mark.slow


def frames(n: int, h: int = 120, w: int = 160) -> tuple[np.ndarray, ...]:
    out = []
    for i in range(n):
        yy, xx = np.mgrid[0:h, 0:w]
        img = np.stack([(xx + 20 * i) % 256, (yy * 2) % 256, (xx * yy // 37 + 50 * i) % 256], -1)
        out.append(img.astype(np.uint8))
    return tuple(out)


def request(n: int = 2, model: ModelSpec | None = None, **kw) -> ReconstructRequest:
    return ReconstructRequest(
        images=frames(n),
        names=tuple(f"f{i}.png" for i in range(n)),
        model=model or ModelSpec("demo", "da3-small"),
        process_res=kw.pop("process_res", 140),
        **kw,
    )


@pytest.fixture(scope="module")
def da3_runner():
    r = Runner(cancel_grace_s=2.0)
    yield r
    r.close()


def test_reconstruct_small_untrained_through_worker(da3_runner, workspace):
    events = []
    rec = tasks.reconstruct.call(request(2), str(workspace / "demo-weights"), runner=da3_runner, on_event=events.append)
    assert isinstance(rec, Reconstruction)
    n, h, w = rec.depth.shape
    assert n == 2 and max(h, w) == 140 and h % 14 == 0 and w % 14 == 0
    assert rec.depth.dtype == np.float32 and np.isfinite(rec.depth).all()
    assert rec.conf is not None and rec.conf.shape == rec.depth.shape
    assert rec.extrinsics.shape == (2, 3, 4) and rec.intrinsics.shape == (2, 3, 3)
    assert rec.images.shape == (2, h, w, 3) and rec.images.dtype == np.uint8
    assert rec.untrained and rec.preset == "da3-small" and rec.device == "cpu"
    assert rec.is_metric is False and rec.depth_unit == "relative units"
    assert set(rec.timings) >= {"load_model", "preprocess", "inference", "postprocess", "total"}
    stages = [e.stage for e in events if isinstance(e, Progress)]
    assert stages[:4] == ["loading model", "preprocessing", "inference", "post-processing"]
    assert (workspace / "demo-weights" / "da3-small" / "model.safetensors").is_file()
    assert "torch" not in sys.modules


def test_model_loads_once_per_worker(da3_runner, workspace):
    demo = str(workspace / "demo-weights")
    for _ in range(3):
        tasks.reconstruct.call(request(2), demo, runner=da3_runner)
    state = tasks.worker_info.call(runner=da3_runner)
    assert state["model_loads"] == 1
    assert state["models_loaded"] == ["demo:da3-small on cpu"]
    assert state["device"] == "cpu"


def test_reference_view_and_order_kept(da3_runner, workspace):
    demo = str(workspace / "demo-weights")
    base = tasks.reconstruct.call(request(3), demo, runner=da3_runner)
    forced = tasks.reconstruct.call(request(3, reference_view=2), demo, runner=da3_runner)
    assert forced.params["reference_view"] == 2
    # The frames come back in input order whatever view led.
    np.testing.assert_array_equal(forced.images, base.images)
    assert forced.names == base.names


def test_local_folder_loads_through_from_pretrained(da3_runner, workspace):
    folder = workspace / "demo-weights" / "da3-small"
    tasks.build_demo_weights.call("da3-small", str(workspace / "demo-weights"), runner=da3_runner)
    rec = tasks.reconstruct.call(request(2, ModelSpec("local", str(folder))), str(workspace / "demo-weights"), runner=da3_runner)
    assert rec.model.kind == "local" and rec.preset == "da3-small" and not rec.untrained


def test_offline_hub_names_model_and_ways_on(da3_runner, workspace):
    with pytest.raises(ModelUnavailableError) as info:
        tasks.reconstruct.call(request(2, ModelSpec("hub", "depth-anything/DA3-SMALL")), str(workspace / "demo-weights"), runner=da3_runner)
    msg = info.value.message
    assert "depth-anything/DA3-SMALL" in msg and "DA3_MODEL_DIR" in msg and "demo weights" in msg
    assert isinstance(info.value, TaskError)


def test_missing_local_folder_is_clear(da3_runner, workspace, tmp_path):
    with pytest.raises(ModelUnavailableError, match="lacks config.json"):
        tasks.reconstruct.call(request(2, ModelSpec("local", str(tmp_path))), str(workspace / "demo-weights"), runner=da3_runner)


@pytest.mark.parametrize("preset,metric", [("da3mono-large", False), ("da3metric-large", True)])
def test_mono_presets_without_poses_or_conf(da3_runner, workspace, preset, metric):
    rec = tasks.reconstruct.call(
        request(2, ModelSpec("demo", preset), process_res=112), str(workspace / "demo-weights"), runner=da3_runner
    )
    assert rec.preset == preset
    assert rec.is_metric is metric and rec.depth_unit == ("m" if metric else "relative units")
    if metric:  # metres = raw * focal / 300, with the stated assumed field of view
        assert rec.params["metric_assumed_fov_deg"] == 60.0 and rec.params["metric_focal_px"] > 0
    assert rec.extrinsics is None and rec.intrinsics is None and not rec.has_poses
    assert rec.conf is None
    assert rec.sky is not None and rec.sky.dtype == np.bool_
    assert rec.depth.shape[0] == 2


def test_parent_stays_torch_free_through_a_full_run(workspace):
    code = textwrap.dedent(
        """
        import json, sys, numpy as np
        from da3_core import tasks
        from da3_core.contract import ModelSpec, ReconstructRequest
        from da3_core.gpu import Runner
        r = Runner()
        imgs = tuple(np.full((60, 80, 3), 40 * i, np.uint8) for i in range(2))
        rec = tasks.reconstruct.call(ReconstructRequest(imgs, ("a", "b"), ModelSpec("demo", "da3-small"), process_res=112),
                                     sys.argv[1] if len(sys.argv) > 1 else %r, runner=r)
        r.close()
        print(json.dumps({"heavy": sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "depth_anything_3")),
                          "depth": list(rec.depth.shape)}))
        """
        % str(workspace / "demo-weights")
    )
    report = json.loads(run_python(code).strip().splitlines()[-1])
    assert report["heavy"] == [] and report["depth"][0] == 2
