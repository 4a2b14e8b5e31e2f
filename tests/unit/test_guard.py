"""The run guard's model (`da3_core.runs.guard`): sizes as DA3 processes them, estimates that cover
what was measured, refusals with the numbers and ways on that fit, the cgroup limit, and the
server's own speed calibration."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from da3_core.presets import PRESETS, PRESETS_BY_NAME
from da3_core.runs import guard

ROOT = Path(__file__).resolve().parents[2]
SMALL, GIANT = PRESETS_BY_NAME["da3-small"], PRESETS_BY_NAME["da3-giant"]
PLENTY = guard.Available(1e9, "test")


def test_processed_sizes_follow_da3s_rules():
    assert guard.processed_size(640, 480, 504) == (504, 378)  # long side to process_res, sides multiples of 14
    assert guard.processed_size(480, 640, 1008) == (756, 1008)
    assert guard.processed_size(640, 480, 504, "lower_bound_resize") == (672, 504)  # short side to process_res
    assert guard.processed_size(1000, 333, 504, "upper_bound_crop")[1] % 14 == 0
    assert guard.ktokens(4, 504) == pytest.approx(4 * 36 * 27 / 1000)
    k, q, h, pixels = guard.frame_ktokens([(640, 480), (480, 640)], 504)
    assert k == pytest.approx(2 * 0.972) and q == pytest.approx(2 * 0.972**2) and pixels == 2 * 504 * 378
    assert h == pytest.approx(k)  # up to 8 frames are one chunk of DA3's head
    k, _, h, _ = guard.frame_ktokens([(640, 480)] * 20 + [(1280, 960)], 1008)
    assert h == pytest.approx(8 * 3.888) and k == pytest.approx(21 * 3.888)  # the largest chunk of 8


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_the_model_never_under_estimates_a_measured_run(device):
    """Every point `benchmarks.fit_guard` measured lies under the fitted model (worker and GPU)."""
    data = json.loads((ROOT / "benchmarks" / f"guard_points_{device}.json").read_text())
    checked = 0
    for p in data["points"]:
        if "error" in p:
            continue
        preset = PRESETS_BY_NAME[p["preset"]]
        est = guard.estimate(preset, [(640, 480)] * p["frames"], p["process_res"], device, PLENTY, 1e9)
        assert est.worker_mb >= p["rss_peak_mb"] - 1, p
        if device == "cuda":
            assert est.gpu_mb >= p["cuda_peak_reserved_mb"] - 1, p
        checked += 1
    assert checked >= 8


def test_the_head_term_counts_the_frames_the_head_decodes_at_once():
    """h is the ktokens of the largest ``head_frames`` frames: 8 in DA3 (and for a borrowed
    line), 1 where the fitted line says the CPU head goes frame by frame."""
    sizes = [(640, 480)] * 4 + [(960, 960)]  # 504x378 and 504x504 at 504
    per = [guard.frame_ktokens([s], 504)[0] for s in sizes]
    assert guard.frame_ktokens(sizes, 504)[2] == pytest.approx(sum(per))
    assert guard.frame_ktokens(sizes, 504, head_frames=1)[2] == pytest.approx(max(per)) and max(per) > min(per)
    fits = {"da3-small": {"a_mb": 1.0, "b_mb_per_ktoken": 2.0, "d_mb_per_chunk_ktoken": 3.0, "head_frames": 1}}
    assert guard._memory_line(fits, PRESETS_BY_NAME["da3-small"])[3] == 1
    assert guard._memory_line(fits, PRESETS_BY_NAME["da3-base"])[3] == guard.CHUNK  # borrowed: DA3's own chunk
    del fits["da3-small"]["head_frames"]
    assert guard._memory_line(fits, PRESETS_BY_NAME["da3-small"])[3] == guard.CHUNK  # older model files


def test_estimates_grow_with_frames_resolution_and_preset():
    def est(preset, n, res, device="cpu"):
        return guard.estimate(preset, [(640, 480)] * n, res, device, PLENTY, 1e9, model_loaded=True)

    a = est(SMALL, 4, 504)
    assert est(SMALL, 8, 504).memory_mb > a.memory_mb and est(SMALL, 8, 504).seconds > a.seconds
    assert est(SMALL, 4, 1008).memory_mb > est(SMALL, 16, 504).memory_mb  # same tokens, but the head's chunk has 2x
    assert est(GIANT, 4, 504).memory_mb > a.memory_mb + 3000  # 4.6 GB of float32 weights
    assert est(SMALL, 4, 504, "cuda").gpu_mb is not None and a.gpu_mb is None
    for p in PRESETS:  # every preset has an estimate, measured or scaled from the nearest measured one
        assert est(p, 2, 504).memory_mb > 0


def test_a_run_that_cannot_fit_names_the_numbers_and_ways_on_that_fit():
    cloud = guard.Available(3_000.0, "container limit 3.0 GB")
    sizes = [(640, 480)] * 64
    est = guard.estimate(SMALL, sizes, 1008, "cpu", cloud, 760.0)
    assert not est.fits_memory
    ways = guard.ways_on(est, sizes, "upper_bound_resize", lambda n: 120 + 10 * n)
    text = guard.memory_problem(est, ways)
    assert text.startswith("DA3 Small, 64 frame(s) at process_res 1008, needs about ")
    assert "2.9 GB is available (container limit 3.0 GB)" in text
    frames_way = next(w for w in ways if w.startswith("fewer frames: up to "))
    n_ok = int(frames_way.split("up to ")[1].split()[0])
    assert guard.estimate(SMALL, sizes[:n_ok], 1008, "cpu", cloud, 1e9).fits_memory  # the way on does fit
    # The largest that fits with the headroom a way on keeps (`guard.headroom`).
    assert not guard.estimate(SMALL, sizes[: n_ok + 1], 1008, "cpu", guard.headroom(cloud), 1e9).fits_memory
    res_way = next(w for w in ways if w.startswith("a lower process_res: "))
    res_ok = int(res_way.split(": ")[1].split()[0])
    assert guard.estimate(SMALL, sizes, res_ok, "cpu", cloud, 1e9).fits_memory
    assert ways[-1] == "a GPU server"


def test_a_run_over_its_time_budget_is_named_with_its_budget():
    est = guard.estimate(GIANT, [(640, 480)] * 4, 2016, "cpu", PLENTY, 160.0)
    assert est.fits_memory and not est.fits_time
    text = guard.time_problem(est, guard.ways_on(est, [(640, 480)] * 4, "upper_bound_resize", lambda n: 120 + 10 * n))
    assert "more than its budget of 160 s" in text and "DA3_DURATION_S" in text and "Ways on: " in text


def test_gpu_memory_is_checked_on_cuda():
    small_gpu = guard.Available(1e9, "test", gpu_mb=4_000.0)
    est = guard.estimate(GIANT, [(640, 480)] * 8, 504, "cuda", small_gpu, 1e9)
    assert not est.fits_gpu and not est.fits_memory
    assert "of GPU memory and the GPU has 3.9 GB" in guard.memory_problem(est, [])


def _cgroup_tree(tmp_path: Path, v1: bool, limits: dict[str, int], usage: int, inactive: int = 0) -> Path:
    base = tmp_path / ("memory" if v1 else "")
    for rel, limit in limits.items():
        d = base / rel if rel else base
        d.mkdir(parents=True, exist_ok=True)
        (d / ("memory.limit_in_bytes" if v1 else "memory.max")).write_text(str(limit) if limit else "max")
        (d / ("memory.usage_in_bytes" if v1 else "memory.current")).write_text(str(usage))
        (d / "memory.stat").write_text(f"{'total_inactive_file' if v1 else 'inactive_file'} {inactive}\n")
    return tmp_path


def test_cgroup_limits_are_found_for_v1_and_v2_and_the_tightest_wins(tmp_path):
    mb = 2**20
    root = _cgroup_tree(tmp_path / "v1", True, {"": 2**62, "app": 8000 * mb, "app/run": 2700 * mb}, 1000 * mb, 200 * mb)
    assert guard.cgroup_limit("4:memory:/app/run\n", root) == (2700, 800)
    root = _cgroup_tree(tmp_path / "v2", False, {"": 0, "app": 2700 * mb, "app/run": 0}, 500 * mb)
    assert guard.cgroup_limit("0::/app/run\n", root) == (2700, 500)
    assert guard.cgroup_limit("0::/\n", _cgroup_tree(tmp_path / "none", False, {"": 0}, 1)) is None


def test_an_explicit_limit_counts_this_process_as_used():
    got = guard.available_memory(limit_mb=2700, parent_rss_mb=300)
    assert got.mb == 2400 and got.source == "DA3_MEMORY_LIMIT_MB=2700"
    assert guard.available_memory().mb > 0


def test_calibration_learns_this_servers_speed(tmp_path):
    cal = guard.Calibration.load(tmp_path / "cal.json")
    assert cal.factor("cpu") is None
    base = guard.estimate(SMALL, [(640, 480)] * 4, 504, "cpu", PLENTY, 1e9, model_loaded=True)
    for _ in range(3):
        cal.record("cpu", SMALL, [(640, 480)] * 4, 504, "upper_bound_resize", base.seconds * 2)
    again = guard.Calibration.load(tmp_path / "cal.json")  # kept on disk
    assert again.factor("cpu") == pytest.approx(2.0)
    faster = guard.estimate(
        SMALL, [(640, 480)] * 4, 504, "cpu", PLENTY, 1e9, model_loaded=True, speed_factor=again.factor("cpu")
    )
    assert faster.seconds == pytest.approx(2 * base.seconds) and faster.calibrated
    assert "at this server's measured speed" in faster.summary()
    (tmp_path / "bad.json").write_text("{not json")
    assert guard.Calibration.load(tmp_path / "bad.json").factor("cpu") is None
