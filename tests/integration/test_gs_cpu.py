"""DA3's Gaussian head runs on CPU (no CUDA-only operation), so `infer_gs` is offered there,
with a rough memory and time estimate, and refused before the worker starts when it cannot fit."""

from __future__ import annotations

import types

import numpy as np
import pytest

from da3_core import resources, ui
from da3_core.contract import Gaussians
from da3_core.presets import PRESETS_BY_NAME

pytestmark = pytest.mark.slow


def test_gs_head_runs_on_cpu_and_its_gaussians_come_back_as_numpy(module_runner):
    out = module_runner.call("tests.gs_tasks:gs_head_on_cpu", 70, 2, duration=300)
    g = out["gaussians"]
    assert out["device"] == "cpu" and isinstance(g, Gaussians)
    n = 2 * 70 * 70  # one Gaussian per pixel and view
    assert g.means.shape == (n, 3) and g.scales.shape == (n, 3) and g.rotations.shape == (n, 4)
    assert g.harmonics.shape[:2] == (n, 3) and g.opacities.shape[0] == n
    assert all(np.isfinite(getattr(g, k)).all() for k in ("means", "scales", "rotations", "harmonics", "opacities"))


def _ctx(device: str):
    return types.SimpleNamespace(device=device)


def _params(infer_gs: bool = True, device: str = "auto", process_res: int = 504) -> ui.RunParams:
    return ui.RunParams(process_res, "upper_bound_resize", "saddle_balanced", None, infer_gs, device)


def test_gaussians_are_offered_on_cpu_with_an_estimate(monkeypatch):
    giant = PRESETS_BY_NAME["da3-giant"]
    assert ui.gs_unavailable_reason(_ctx("cpu"), giant, "auto") is None
    assert "GS head" in ui.gs_unavailable_reason(_ctx("cpu"), PRESETS_BY_NAME["da3-small"], "auto")
    monkeypatch.setattr(resources, "available_memory_mb", lambda: 24_000.0)
    line, fits = ui.gs_cpu_estimate(_ctx("cpu"), giant, _params(), 4)
    assert fits and "DA3 Giant" in line and "GB" in line and " s of inference" in line
    assert ui.gs_cpu_estimate(_ctx("cuda"), giant, _params(), 4) is None  # only CPU runs get the estimate
    assert ui.gs_cpu_estimate(_ctx("cpu"), giant, _params(infer_gs=False), 4) is None


def test_a_gaussian_run_that_cannot_fit_is_refused_with_the_numbers(monkeypatch):
    monkeypatch.setattr(resources, "available_memory_mb", lambda: 2_700.0)  # Community Cloud
    line, fits = ui.gs_cpu_estimate(_ctx("cpu"), PRESETS_BY_NAME["da3-giant"], _params(), 4)
    assert not fits
    assert "2.6 GB is available" in line and "4.3 GB of weights" in line
    assert "fewer frames, a lower process_res, or a GPU" in line


def test_estimates_grow_with_frames_resolution_and_model():
    small, giant = PRESETS_BY_NAME["da3-small"], PRESETS_BY_NAME["da3-giant"]
    a = resources.estimate_cpu_run(small, 4, 504)
    assert abs(a.seconds - 2.56) < 0.3  # the measurement the constants come from
    assert resources.estimate_cpu_run(small, 8, 504).seconds > a.seconds
    assert resources.estimate_cpu_run(small, 4, 1008).peak_mb > a.peak_mb
    assert resources.estimate_cpu_run(giant, 4, 504).weights_mb > 10 * a.weights_mb
    assert resources.available_memory_mb() > 0


def test_the_video_task_refuses_without_cuda_with_the_reason(module_runner):
    from da3_core import tasks
    from da3_core.runner.protocol import TaskError
    from tests.unit import synthetic

    rec = synthetic.with_gaussians(synthetic.box_scene(2))
    with pytest.raises(TaskError) as info:
        tasks.render_gs_video.call(rec, "/tmp/never.mp4", runner=module_runner)
    assert info.value.type_name == "RuntimeError" and "needs a CUDA GPU" in info.value.message
