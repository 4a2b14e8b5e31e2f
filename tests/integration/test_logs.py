"""Quiet, useful logs, through real spawned workers.

* What a library prints in a worker (a warning, a WARNING record, a print), at its start or
  during a call, reaches the parent's notice list once, with a count, and never the terminal
  (`tests.notice_tasks` plays the noisy library).
* The terminal of a server that starts a worker with the real DA3 import and runs DA3 once
  well and once into an error shows exactly: where the logs go, one line for the worker's
  start, one per run, one per error; nothing else, from us or from any library.
* ``DA3_APP_LOG_LEVEL=DEBUG`` prints everything again.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import pytest

from da3_core.runner import Runner
from tests.conftest import ROOT

NT = "tests.notice_tasks"
FT = "tests.fake_tasks"


def ours(notices) -> dict[tuple[str, str, str, str], int]:
    """The test library's notices: (kind, category, source, message) -> count."""
    return {n.key: n.count for n in notices if n.message.startswith("notice-test:")}


def wait_for(runner: Runner, count: int, timeout: float = 60.0):
    """The first worker's notices once the test library's number ``count`` of them arrived
    (they come from the worker's preload, so while it is idle: read by ``status()``)."""
    deadline = time.monotonic() + timeout
    while True:
        notices = runner.status().workers[0].notices
        if len(ours(notices)) >= count:
            return notices
        assert time.monotonic() < deadline, f"only {ours(notices)} after {timeout:.0f} s"
        time.sleep(0.05)


START = {
    ("warning", "UserWarning", NT, "notice-test: a warning at worker start"): 1,
    ("log", "WARNING", "notice_test_lib", "notice-test: a third-party log record"): 1,
    ("print", "stdout", NT, "notice-test: printed to stdout at worker start"): 1,
    ("print", "stderr", NT, "notice-test: printed to stderr at worker start"): 1,
}


def test_a_workers_notices_reach_the_parent_once_and_never_the_terminal(capfd):
    runner = Runner(preload=(NT,), cancel_grace_s=1.0)
    try:
        assert runner.call(f"{FT}:square", 3) == 9  # starts the worker; its preload prints while it is idle
        assert ours(wait_for(runner, len(START))) == START
        status = runner.status().workers[0]
        assert all(n.first_seen > 0 for n in status.notices)

        # During calls: the same record is counted, a new warning and a new print are added.
        assert runner.call(f"{NT}:noisy", 5) == 5
        assert runner.call(f"{NT}:noisy", 6) == 6
        during = ours(runner.status().workers[0].notices)
        assert during[("log", "WARNING", "notice_test_lib", "notice-test: a third-party log record")] == 3
        assert during[("print", "stdout", NT, "notice-test: printed during a call")] == 2
        assert during[("warning", "RuntimeWarning", NT, "notice-test: a warning during a call")] >= 1

        # A fresh worker prints them again: still one notice each, counted over both workers,
        # first seen when the first worker saw it.
        first_seen = {n.key: n.first_seen for n in runner.status().workers[0].notices}
        runner.restart()
        assert runner.call(f"{FT}:square", 4) == 16
        deadline = time.monotonic() + 60
        while (
            ours(runner.status().workers[0].notices)[
                ("print", "stderr", NT, "notice-test: printed to stderr at worker start")
            ]
            < 2
        ):
            assert time.monotonic() < deadline, "the second worker's preload notices never arrived"
            time.sleep(0.05)
        after = runner.status().workers[0].notices
        assert len(ours(after)) == len(during)
        assert all(n.first_seen == first_seen[n.key] for n in after if n.key in first_seen)
        assert runner.status().workers[0].starts == 2
    finally:
        runner.close()
    out, err = capfd.readouterr()
    assert "notice-test" not in out and "notice-test" not in err, (out, err)


SERVER = r"""
import json, sys, time
from pathlib import Path
import numpy as np
from da3_core import logs
logs.setup()
from da3_core.config import load_settings
from da3_core.contract import ModelSpec
from da3_core.runs.service import RunService
from da3_core.runner import Runner

PARAMS = {"process_res": 112, "process_res_method": "upper_bound_resize", "ref_view_strategy": "saddle_balanced",
          "reference_view": None, "infer_gs": False, "device": "cpu"}
settings = load_settings()
runner = Runner(preload=(PRELOAD), abandon_after_s=None)
service = RunService(runner, settings)
frames = [np.random.default_rng(i).integers(0, 255, (120, 160, 3), dtype=np.uint8) for i in range(2)]
session = Path(sys.argv[1])
outcomes = []
models = {"good": ModelSpec("demo", "da3-small"), "bad": ModelSpec("local", sys.argv[2])}
for model in (models[name] for name in sys.argv[3].split(",")):
    active = service.submit(session, frames, ["a.png", "b.png"], "upload", model, PARAMS)
    while not active.finished:
        time.sleep(0.05)
    outcomes.append(active.outcome.status)
deadline = time.monotonic() + 60
while time.monotonic() < deadline and not any(n.message.startswith("notice-test:") for n in runner.status().workers[0].notices):
    time.sleep(0.05)
notices = [[n.kind, n.category, n.source, n.message, n.count] for n in runner.status().workers[0].notices]
runner.close()
print(json.dumps({"outcomes": outcomes, "notices": notices}))
"""


def serve(tmp_path, workspace, preload: tuple[str, ...], runs: str, level: str = "INFO") -> tuple[dict, str, str]:
    """Run `SERVER` in a fresh interpreter (its stderr is the terminal of a server and its
    worker); ``runs``: ``"good"`` (demo weights) and/or ``"bad"`` (missing weights), in order."""
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DA3_WORKSPACE": str(workspace),
        "DA3_APP_LOG_LEVEL": level,
        "HF_HUB_OFFLINE": "1",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("DA3_LOG_FILE", None)
    code = SERVER.replace("PRELOAD", ", ".join(repr(p) for p in preload) + ",")
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "session"), str(tmp_path / "no-such-model"), runs],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, f"exit {out.returncode}\nSTDOUT:\n{out.stdout[-3000:]}\nSTDERR:\n{out.stderr[-6000:]}"
    return json.loads(out.stdout.strip().splitlines()[-1]), out.stdout, out.stderr


# One line each, in this order: where the logs go, the worker's start, the good run's end, the
# error, the failed run's end.
STAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} "
EXPECTED = [
    STAMP
    + r"INFO MainProcess da3_core: DA3 dashboard logs go to stderr .*\(level INFO; .*DA3_APP_LOG_LEVEL=DEBUG prints everything\)",
    STAMP + r"INFO MainProcess da3_core\.runner\.backends\.process: worker 1 started on CPU \(pid \d+, \d+\.\d s\)",
    STAMP
    + r"INFO MainProcess da3_core\.runs\.service: run run-\S+ done in \d+\.\d s \(\d+\.\d s running, \d+\.\d s waiting\) \(2 frame\(s\), da3-small untrained on cpu\)",
    STAMP
    + r"ERROR MainProcess da3_core\.runner\.backends\.base: call 2 \(da3_core\.runs\.tasks:reconstruct\) failed on worker 1: "
    r"ModelUnavailableError: .*no-such-model.*",
    STAMP
    + r"WARNING MainProcess da3_core\.runs\.service: run run-\S+ failed after \d+\.\d s \(\d+\.\d s running, \d+\.\d s waiting\): ModelUnavailableError: .*",
]


@pytest.mark.slow
def test_the_terminal_shows_one_line_per_start_run_and_error(tmp_path, workspace):
    """The real DA3 import (xFormers, OmegaConf, gsplat... print at it here) and two real runs."""
    result, stdout, stderr = serve(tmp_path, workspace, (NT, "da3_core.worker.reconstruct"), "good,bad")
    assert result["outcomes"] == ["done", "failed"]
    lines = stderr.splitlines()
    assert len(lines) == len(EXPECTED) and all(re.fullmatch(p, line) for p, line in zip(EXPECTED, lines)), (
        "the terminal showed:\n" + stderr
    )
    assert stdout.strip().count("\n") == 0, (
        "something printed to stdout:\n" + stdout
    )  # only the script's own result line
    # The warnings went to the notice list instead, once each.
    notices = {(k, c, s, m): n for k, c, s, m, n in result["notices"]}
    assert {key: notices.get(key) for key in START} == START
    assert len(notices) == len(result["notices"])


def test_debug_prints_everything_again(tmp_path, workspace):
    result, stdout, stderr = serve(tmp_path, workspace, (NT,), "bad", level="DEBUG")
    assert result["outcomes"] == ["failed"]
    # The library's output, as it wrote it, and our DEBUG lines from both processes.
    for text in (
        "UserWarning: notice-test: a warning at worker start",
        "notice-test: a third-party log record",
        "notice-test: printed to stderr at worker start",
        "DEBUG da3-worker da3_core.runner.inside.loop: worker pid",
        "DEBUG MainProcess da3_core.runs.service: run run-",
        "worker traceback",
    ):
        assert text in stderr, stderr
    assert "notice-test: printed to stdout at worker start" in stdout
    assert len(result["notices"]) >= len(START)  # captured all the same
