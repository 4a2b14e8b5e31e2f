"""`python -m da3_core.runs.demo_weights`: untrained weights built by the worker, for offline machines."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from da3_core.runs import demo_weights
from tests.conftest import ROOT


def test_an_unknown_preset_is_refused_with_the_choices(capsys):
    assert demo_weights.main(["da3-huge"]) == 2
    err = capsys.readouterr().err
    assert "Unknown preset 'da3-huge'" in err and "da3-small" in err


@pytest.mark.slow
def test_the_command_builds_weights_in_the_worker(workspace):
    """As a user runs it; the session's workspace may already hold the weights (then it only checks them)."""
    env = {**os.environ, "DA3_WORKSPACE": str(workspace), "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-m", "da3_core.runs.demo_weights", "da3-small"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    folder = workspace / "demo-weights" / "da3-small"
    assert f"Untrained da3-small weights are in {folder}" in out.stdout
    assert (folder / "config.json").is_file() and any(folder.glob("*.safetensors"))
