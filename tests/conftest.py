"""Shared fixtures. Isolation is the default everywhere, tests included."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# Nothing in the suite may talk to the model hub; the real loading code still runs.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DA3_ISOLATION", "isolated")
# Every process the tests start (workers, Streamlit servers, fresh interpreters) inherits this:
# torch's OpenMP threads sleep when idle instead of spinning. On a 2-core machine, a worker's
# two threads otherwise spin against whatever else runs (the browser, the server, the
# AppTest script, this process): a DA3-SMALL call at 112 took 2.3-4 s instead of 0.13-0.16 s
# with one other busy process here. Only how idle threads wait changes, not the numbers.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


# Test modules that share one Ray cluster: under pytest-xdist they run in the same worker
# process (the session's cluster is started once there, not once per worker).
RAY_MODULES = ("test_ray_backend.py", "test_runner_contract.py")


def pytest_collection_modifyitems(session, config, items):
    """The AppTests run first: they prove torch never enters the Streamlit process, which this
    pytest process stands in for, so no earlier test may have imported torch here.

    Under pytest-xdist (``make test`` runs ``-n 2 --dist loadgroup``) each module is one unit
    of work, so a module's fixtures (a runner, a Streamlit server) start once; the Ray modules
    form one unit.
    """
    app_dir = ROOT / "tests" / "app"
    first = [item for item in items if app_dir in Path(str(item.path)).parents]
    if first:
        chosen = {id(item) for item in first}
        items[:] = first + [item for item in items if id(item) not in chosen]
    for item in items:
        path = Path(str(item.path))
        group = "ray" if path.name in RAY_MODULES else str(path.relative_to(ROOT))
        item.add_marker(pytest.mark.xdist_group(group))


def pytest_sessionfinish(session, exitstatus):
    """A run that ran no test fails (exit 1, not pytest's 5): a typo in a path, a marker or
    ``-k`` must never look like a pass to `make test` or CI."""
    if exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line("ERROR: no test ran; this counts as a failure (exit 1)", red=True, bold=True)


@pytest.fixture
def runner():
    """A fresh isolated runner per test, closed afterwards (no worker left behind)."""
    from da3_core.runner import Runner

    r = Runner(cancel_grace_s=1.0)
    yield r
    r.close()


@pytest.fixture(scope="module")
def module_runner():
    """One isolated runner for a test module whose tests leave its worker healthy."""
    from da3_core.runner import Runner

    r = Runner(cancel_grace_s=1.0)
    yield r
    r.close()


@pytest.fixture(scope="session")
def workspace(tmp_path_factory):
    """One workspace for the session, so untrained demo weights are built once (about 1 s, 137 MB)."""
    return tmp_path_factory.mktemp("workspace")


def png_bytes(seed: int, size: tuple[int, int] = (160, 120)) -> bytes:
    """A small textured RGB PNG (deterministic)."""
    import io

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([(xx * 255 // w), (yy * 255 // h), rng.integers(0, 255, (h, w))], -1).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def run_python(code: str, env_extra: dict | None = None, timeout: float = 600) -> str:
    """Run ``code`` in a fresh interpreter at the repo root; return stdout; fail with stderr."""
    import subprocess
    import sys

    env = dict(os.environ)
    env.update(env_extra or {})
    env["PYTHONPATH"] = str(ROOT)
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert out.returncode == 0, f"exit {out.returncode}\nSTDOUT:\n{out.stdout[-4000:]}\nSTDERR:\n{out.stderr[-6000:]}"
    return out.stdout
