"""The run guard under a real memory limit: Streamlit Community Cloud's 2.7 GB.

A server process (`SERVER`: the real `RunService`, runner and spawned worker) runs inside a
memory cgroup limited to 2,700 MB, as the host would impose it. There:
* 64 frames of DA3-SMALL at process_res 1008 are refused before anything starts: no worker
  process, no run folder, the message gives the numbers and the ways on;
* 4 frames at 504 then run to the end, and the cgroup never hit its limit (nothing was killed).

The cgroup is made by the test (cgroup v1's memory controller, or v2 where this process may
write a child group); where neither can be written the test is skipped and says why.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow

LIMIT_MB = 2700

SERVER = r"""
import json, sys, time
from pathlib import Path
import numpy as np
from da3_core.config import load_settings
from da3_core.contract import ModelSpec
from da3_core.runs.service import RunRefused, RunService
from da3_core.runner import Runner

params = {"process_res": 1008, "process_res_method": "upper_bound_resize", "ref_view_strategy": "saddle_balanced",
          "reference_view": None, "infer_gs": False, "device": "cpu"}
settings = load_settings()
runner = Runner(abandon_after_s=None)
service = RunService(runner, settings)
session = Path(sys.argv[1])
model = ModelSpec("demo", "da3-small")
frames = [np.random.default_rng(i).integers(0, 255, (480, 640, 3), dtype=np.uint8) for i in range(64)]
out = {}
try:
    service.submit(session, frames, [f"{i}.png" for i in range(64)], "upload", model, params)
    out["big"] = "started"
except RunRefused as exc:
    out["big"] = {"reason": exc.reason, "message": str(exc), "source": exc.estimate.available.source,
                  "available_mb": exc.estimate.available.mb, "needs_mb": exc.estimate.memory_mb}
out["workers_after_refusal"] = [[w.state, w.pid] for w in runner.status().workers]
out["folders_after_refusal"] = sorted(p.name for p in session.glob("*")) if session.exists() else []
small = dict(params, process_res=504)
est, _ = service.estimate([(640, 480)] * 4, model, small)
out["small_estimate_mb"], out["small_summary"] = est.memory_mb, est.summary()
active = service.submit(session, frames[:4], [f"{i}.png" for i in range(4)], "upload", model, small)
while not active.finished:
    time.sleep(0.1)
out["small"] = [active.outcome.status, active.outcome.message]
out["worker_peak_mb"] = runner.status().workers[0].state_report.get("peak_rss_mb")
runner.close()
print(json.dumps(out))
"""


def make_cgroup(name: str, limit_mb: int) -> tuple[Path, str]:
    """A memory cgroup limited to ``limit_mb``: (its folder, what to write a pid into).
    Skips the test where no cgroup can be made here."""
    why = []
    v1 = Path("/sys/fs/cgroup/memory")
    if (v1 / "memory.limit_in_bytes").exists():
        group = v1 / name
        try:
            group.mkdir(exist_ok=True)
            (group / "memory.limit_in_bytes").write_text(str(limit_mb * 2**20))
            return group, "cgroup.procs"
        except OSError as exc:
            why.append(f"cgroup v1 at {v1}: {exc}")
    v2 = Path("/sys/fs/cgroup")
    if (v2 / "cgroup.controllers").exists() and "memory" in (v2 / "cgroup.controllers").read_text():
        own = v2 / Path("/proc/self/cgroup").read_text().strip().split("::", 1)[-1].lstrip("/")
        group = own.parent / name if own != v2 else v2 / name
        try:
            group.mkdir(exist_ok=True)
            (group / "memory.max").write_text(str(limit_mb * 2**20))
            return group, "cgroup.procs"
        except OSError as exc:
            why.append(f"cgroup v2 at {group}: {exc}")
    pytest.skip(
        "no memory cgroup can be made here (needs root and a writable cgroup tree): "
        + "; ".join(why or ["none mounted"])
    )
    raise AssertionError  # unreachable


def remove_cgroup(group: Path) -> None:
    for _ in range(50):
        try:
            group.rmdir()
            return
        except OSError:
            time.sleep(0.1)  # its last processes are still exiting


def test_cloud_sized_limit_refuses_64_frames_at_1008_and_runs_4_at_504(tmp_path, workspace):
    group, procs = make_cgroup(f"da3-guard-{os.getpid()}", LIMIT_MB)
    try:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "DA3_WORKSPACE": str(workspace), "HF_HUB_OFFLINE": "1"}
        env.pop("DA3_MEMORY_LIMIT_MB", None)  # the guard must find the limit itself
        session = tmp_path / "session"

        def enter_cgroup() -> None:  # in the child, before exec: it and its worker live in the group
            (group / procs).write_text(str(os.getpid()))

        done = subprocess.run(
            [sys.executable, "-c", SERVER, str(session)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            preexec_fn=enter_cgroup,
        )
        assert done.returncode == 0, f"exit {done.returncode} (137: killed by the limit)\n{done.stderr[-6000:]}"
        out = json.loads(done.stdout.strip().splitlines()[-1])
        peak = group / (
            "memory.max_usage_in_bytes" if (group / "memory.max_usage_in_bytes").exists() else "memory.peak"
        )
        peak_mb = int(peak.read_text()) / 2**20 if peak.exists() else None
    finally:
        remove_cgroup(group)

    print(json.dumps({"cgroup_peak_mb": peak_mb, **out}, indent=1))  # the figures, for `pytest -s`
    big = out["big"]
    assert isinstance(big, dict) and big["reason"] == "memory", big
    assert big["source"].startswith("container limit 2.6 GB"), big  # found the cgroup's 2,700 MB by itself
    assert big["needs_mb"] > big["available_mb"]
    assert big["message"].startswith("DA3 Small, 64 frame(s) at process_res 1008, needs about ")
    assert (
        "Ways on: " in big["message"]
        and " process_res: " in big["message"]
        and big["message"].endswith("; a GPU server.")
    )
    assert all(pid is None for _, pid in out["workers_after_refusal"]), out  # refused before the worker started
    assert out["folders_after_refusal"] == []  # nothing written for the refused run

    assert out["small"] == ["done", ""], out
    assert out["small_estimate_mb"] < LIMIT_MB
    if peak_mb is not None:
        assert peak_mb < LIMIT_MB, f"the group peaked at {peak_mb:.0f} MB"
        # The estimate covered what the run really used (server and worker together).
        assert out["small_estimate_mb"] >= 0.8 * peak_mb, (out["small_estimate_mb"], peak_mb)
