"""DA3's Gaussian head runs on CPU (no CUDA-only operation), so `infer_gs` is offered there,
and the run guard (`da3_core.runs.guard`) refuses before the worker starts what cannot fit."""

from __future__ import annotations

import types

import numpy as np
import pytest

from da3_core.app import run_form
from da3_core.contract import Gaussians
from da3_core.presets import PRESETS_BY_NAME
from da3_core.runs import guard

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


def test_gaussians_are_offered_on_cpu():
    giant = PRESETS_BY_NAME["da3-giant"]
    assert run_form.gs_unavailable_reason(_ctx("cpu"), giant, "auto") is None
    assert "GS head" in run_form.gs_unavailable_reason(_ctx("cpu"), PRESETS_BY_NAME["da3-small"], "auto")


def test_a_giant_run_that_cannot_fit_is_refused_with_the_numbers():
    """DA3-GIANT on a CPU host of Community Cloud's size: the guard refuses it before the
    worker starts, naming the memory it needs and what is available."""
    giant = PRESETS_BY_NAME["da3-giant"]
    cloud = guard.Available(2_600.0, "DA3_MEMORY_LIMIT_MB=2700")
    est = guard.estimate(giant, [(640, 480)] * 4, 504, "cpu", cloud, 160.0)
    assert not est.fits_memory and est.worker_mb > 4_000  # 4.6 GB of float32 weights alone
    text = guard.memory_problem(est, guard.ways_on(est, [(640, 480)] * 4, "upper_bound_resize", lambda n: 120 + 10 * n))
    assert "2.5 GB is available (DA3_MEMORY_LIMIT_MB=2700)" in text and "DA3 Giant" in text
    assert "a smaller preset: DA3 " in text and "a GPU server" in text


def test_the_video_task_refuses_without_cuda_with_the_reason(module_runner):
    from da3_core.runner.protocol import TaskError
    from da3_core.runs import tasks
    from tests.unit import synthetic

    rec = synthetic.with_gaussians(synthetic.box_scene(2))
    with pytest.raises(TaskError) as info:
        tasks.render_gs_video.call(rec, "/tmp/never.mp4", runner=module_runner)
    assert info.value.type_name == "RuntimeError" and "needs a CUDA GPU" in info.value.message
