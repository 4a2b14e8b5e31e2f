"""The real DA3 path through the real worker: untrained weights from presets, loaded through
the real ``from_pretrained`` path, tiny inputs (2-3 frames at process_res 112-140)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from da3_core.contract import ModelSpec, ModelUnavailableError, Reconstruction, ReconstructRequest
from da3_core.runner import Progress, Runner
from da3_core.runner.protocol import TaskCancelledError, TaskError
from da3_core.runs import tasks

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


def worker_cpu_s(pid: int) -> float:
    """CPU seconds (user + system, all threads) the process has used, from /proc."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_cancel_stops_the_forward_pass_and_keeps_the_worker(da3_runner, workspace):
    """A cancel during inference stops DA3's forward pass at the next network block (a check
    before every transformer block and head convolution): the caller gets TaskCancelledError
    well within the runner's 2 s grace, the worker survives and keeps its model."""
    demo = str(workspace / "demo-weights")
    tasks.reconstruct.call(request(2), demo, runner=da3_runner)  # the model is loaded
    loads = tasks.worker_info.call(runner=da3_runner)["model_loads"]
    pid = da3_runner.worker_pid
    # 4 frames at 504: several seconds of forward pass on a CPU (about 4 s on 2 cores).
    big = ReconstructRequest(
        frames(4, 480, 640), tuple(f"f{i}.png" for i in range(4)), ModelSpec("demo", "da3-small"), process_res=504
    )
    job = tasks.reconstruct.submit(big, demo, runner=da3_runner)
    deadline = time.monotonic() + 120
    while not any(isinstance(e, Progress) and e.stage == "inference" for e in job.poll_events()):
        assert not job.done(), "the run ended before its inference started"
        assert time.monotonic() < deadline, "inference never started"
        time.sleep(0.01)
    # Inside the forward pass now: wait for the worker to spend half a CPU-second past the
    # "inference" event (CPU time, not wall time: a loaded machine only makes this wait longer).
    start = worker_cpu_s(pid)
    while worker_cpu_s(pid) - start < 0.5:
        assert not job.done(), "the run ended before the cancel"
        assert time.monotonic() < deadline, "the forward pass never used the CPU"
        time.sleep(0.01)
    cancelled_at = time.monotonic()
    job.cancel()
    with pytest.raises(TaskCancelledError):
        job.result(timeout=30)
    took = time.monotonic() - cancelled_at
    print(f"cancel to TaskCancelledError: {took:.3f} s")
    # Stopped by the hooks, not by the runner: a worker that misses its checkpoints for the
    # grace period (2 s) is killed, and a new pid would show it.
    assert da3_runner.worker_pid == pid, "the worker was killed instead of stopping"
    # The next run on the same worker needs no reload and works (no hook or state left broken).
    rec = tasks.reconstruct.call(request(2), demo, runner=da3_runner)
    assert rec.depth.shape[0] == 2 and np.isfinite(rec.depth).all()
    state = tasks.worker_info.call(runner=da3_runner)
    assert state["model_loads"] == loads and state["pid"] == pid


def cpu_bf16_flags_here() -> list[str]:
    """The hardware bfloat16 flags in this machine's /proc/cpuinfo (the worker's rule, re-read here)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            flags.update(f for f in value.split() if f in ("avx512_bf16", "amx_bf16"))
    return sorted(flags)


def test_cpu_precision_auto_follows_the_cpu_flags_and_bf16_can_be_forced(da3_runner, workspace):
    demo = str(workspace / "demo-weights")
    expected = "bf16" if cpu_bf16_flags_here() else "fp32"  # fp32 on an Intel Xeon without AVX512-BF16
    auto = tasks.reconstruct.call(request(2), demo, runner=da3_runner)
    assert auto.params["cpu_precision"] == expected and "auto" in auto.params["cpu_precision_reason"]
    assert tasks.worker_info.call(runner=da3_runner)["cpu_precision_auto"] == expected
    fp32 = tasks.reconstruct.call(request(2), demo, 0, "fp32", runner=da3_runner)
    bf16 = tasks.reconstruct.call(request(2), demo, 0, "bf16", runner=da3_runner)
    assert fp32.params["cpu_precision"] == "fp32" and bf16.params["cpu_precision"] == "bf16"
    assert bf16.params["cpu_precision_reason"] == "asked for"
    # Forced bf16 works without hardware support (emulated: right, maybe slower). Two views,
    # so no reference-view choice can flip; bound as in test_parity (bf16 vs float32).
    assert bf16.depth.dtype == np.float32 and np.isfinite(bf16.depth).all()
    assert np.abs(bf16.depth - fp32.depth).max() <= 3e-3 * np.abs(fp32.depth).max()
    with pytest.raises(ValueError, match="cpu_precision"):
        tasks.reconstruct.call(request(2), demo, 0, "fp16", runner=da3_runner)


XEON = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512bw avx512_vnni\n\nprocessor\t: 1\nflags\t\t: fpu sse2 avx2 avx512f avx512bw avx512_vnni\n"
EPYC = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni\n"
SPR = "processor\t: 0\nflags\t\t: fpu avx512f amx_bf16 amx_tile avx512_bf16\n"


@pytest.mark.parametrize(
    "requested,env,cpuinfo,flags,precision",
    [
        ("fp32", None, EPYC, ["avx512_bf16"], "fp32"),
        ("bf16", None, XEON, [], "bf16"),
        ("auto", "fp32", SPR, ["amx_bf16", "avx512_bf16"], "fp32"),
        ("auto", "bf16", XEON, [], "bf16"),
        ("BF16", "", XEON, [], "bf16"),
    ],
    ids=[
        "fp32-asked-on-epyc",
        "bf16-asked-on-xeon",
        "auto-env-fp32-on-spr",
        "auto-env-bf16-on-xeon",
        "upper-case-empty-env",
    ],
)
def test_cpu_precision_choice_in_the_worker(da3_runner, requested, env, cpuinfo, flags, precision):
    got = da3_runner.call("tests.parity_tasks:precision_choice", requested, env, cpuinfo)
    assert got["flags"] == flags and got["precision"] == precision


def test_cpu_precision_rejects_unknown_values(da3_runner):
    assert "not allowed" in da3_runner.call("tests.parity_tasks:precision_choice", "fp16", None, XEON)["error"]
    assert "DA3_CPU_PRECISION" in da3_runner.call("tests.parity_tasks:precision_choice", "auto", "half", XEON)["error"]


def test_reference_view_and_order_kept(da3_runner, workspace):
    """Forcing view 2 must make view 2 DA3's reference, and the result must still come back in
    input order. DA3 gives its reference view a camera token of its own (random in untrained
    weights, so the choice shows in every output) and puts it first in the views, others in
    order. So "force view 2 on frames 0, 1, 2" must equal "frames 2, 0, 1 with the first view
    as reference", put back in input order; and it must differ from view 0 as reference,
    which is what ignoring ``reference_view`` would give."""
    demo = str(workspace / "demo-weights")
    imgs, names = frames(3), ("f0.png", "f1.png", "f2.png")
    first = tasks.reconstruct.call(request(3, ref_view_strategy="first"), demo, runner=da3_runner)
    forced = tasks.reconstruct.call(request(3, ref_view_strategy="first", reference_view=2), demo, runner=da3_runner)
    perm = [2, 0, 1]
    permuted = tasks.reconstruct.call(
        ReconstructRequest(
            tuple(imgs[i] for i in perm),
            tuple(names[i] for i in perm),
            ModelSpec("demo", "da3-small"),
            process_res=140,
            ref_view_strategy="first",
        ),
        demo,
        runner=da3_runner,
    )
    back = np.argsort(perm)  # permuted-run index of each input frame
    assert forced.params["reference_view"] == 2
    # Input order kept whatever view led.
    np.testing.assert_array_equal(forced.images, first.images)
    assert forced.names == first.names == names
    np.testing.assert_array_equal(permuted.images[back], forced.images)
    # View 2 led: the same computation as DA3 given frame 2 first.
    for field in ("depth", "conf", "extrinsics", "intrinsics"):
        np.testing.assert_allclose(
            getattr(forced, field), getattr(permuted, field)[back], rtol=1e-5, atol=1e-6, err_msg=field
        )
    # ... which is not what view 0 as reference gives (the result if reference_view were ignored).
    assert np.abs(forced.depth - first.depth).max() > 1e-5 * np.abs(first.depth).max()
    assert np.abs(forced.extrinsics - first.extrinsics).max() > 1e-5


def test_local_folder_loads_through_from_pretrained(da3_runner, workspace):
    folder = workspace / "demo-weights" / "da3-small"
    tasks.build_demo_weights.call("da3-small", str(workspace / "demo-weights"), runner=da3_runner)
    rec = tasks.reconstruct.call(
        request(2, ModelSpec("local", str(folder))), str(workspace / "demo-weights"), runner=da3_runner
    )
    assert rec.model.kind == "local" and rec.preset == "da3-small" and not rec.untrained


def test_offline_hub_names_model_and_ways_on(da3_runner, workspace):
    with pytest.raises(ModelUnavailableError) as info:
        tasks.reconstruct.call(
            request(2, ModelSpec("hub", "depth-anything/DA3-SMALL")), str(workspace / "demo-weights"), runner=da3_runner
        )
    msg = info.value.message
    assert "depth-anything/DA3-SMALL" in msg and "DA3_MODEL_DIR" in msg and "demo weights" in msg
    assert isinstance(info.value, TaskError)


def test_missing_local_folder_is_clear(da3_runner, workspace, tmp_path):
    with pytest.raises(ModelUnavailableError, match="lacks config.json"):
        tasks.reconstruct.call(
            request(2, ModelSpec("local", str(tmp_path))), str(workspace / "demo-weights"), runner=da3_runner
        )


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
