"""Security rules: no pickle on load, no user string as a path, only the server talks to the
worker, settings validated with clear errors."""

from __future__ import annotations

import re
from pathlib import Path

import psutil
import pytest

from da3_core.config import ConfigError, load_settings
from da3_core.runner import Runner

ROOT = Path(__file__).resolve().parents[2]


def code_files() -> list[Path]:
    return [p for d in ("da3_core", "pages", "benchmarks", "scripts") for p in (ROOT / d).rglob("*.py")] + [
        ROOT / "streamlit_app.py"
    ]


def test_every_numpy_load_refuses_pickles():
    offenders = []
    for path in code_files():
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"\bnp\.load\(", line) and "allow_pickle=False" not in line:
                offenders.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not offenders, offenders


def test_no_pickle_loads_of_files():
    # The only pickle.loads in the app read the runner's own pipe messages and results.
    hits = [
        (p.relative_to(ROOT), line.strip())
        for p in code_files()
        for line in p.read_text().splitlines()
        if re.search(r"pickle\.load\(|torch\.load\(", line)
    ]
    assert not hits, hits


def test_worker_talks_only_to_its_parent():
    """No listening or connected network socket: the worker is reached through an inherited pipe."""
    r = Runner()
    try:
        r.call("tests.fake_tasks:square", 3)
        worker = psutil.Process(r.worker_pid)
        assert worker.net_connections(kind="inet") == []
        assert worker.ppid() == psutil.Process().pid
    finally:
        r.close()


@pytest.mark.parametrize(
    "env,needle",
    [
        ({"DA3_MODEL_DIR": "/nonexistent/da3"}, "DA3_MODEL_DIR='/nonexistent/da3' is not a folder"),
        ({"DA3_MODELS_ROOT": "/nonexistent/root"}, "DA3_MODELS_ROOT='/nonexistent/root' is not a folder"),
        ({"DA3_DEVICE": "tpu"}, "DA3_DEVICE='tpu' is not allowed; use one of auto, cuda, mps, cpu"),
        ({"DA3_ISOLATION": "fork"}, "DA3_ISOLATION='fork' is not allowed"),
        ({"DA3_MAX_FRAMES": "lots"}, "DA3_MAX_FRAMES='lots' is not an integer"),
        ({"DA3_MAX_FRAMES": "0"}, "DA3_MAX_FRAMES='0' is outside 1..2000"),
        ({"DA3_DURATION_S": "-5"}, "DA3_DURATION_S='-5' is outside"),
        ({"DA3_WORKSPACE_MAX_GB": "x"}, "DA3_WORKSPACE_MAX_GB='x' is not a number"),
    ],
)
def test_bad_settings_name_the_variable(env, needle):
    with pytest.raises(ConfigError) as info:
        load_settings(env)
    assert needle in str(info.value)


def test_model_dir_without_config_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="has no config.json"):
        load_settings({"DA3_MODEL_DIR": str(tmp_path)})


def test_local_checkpoints_are_a_closed_list(tmp_path):
    root = tmp_path / "models"
    (root / "small").mkdir(parents=True)
    (root / "small" / "config.json").write_text('{"model_name": "da3-small"}')
    (root / "empty").mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "config.json").write_text("{}")
    (root / "link").symlink_to(outside)  # a link out of the root is not offered
    settings = load_settings({"DA3_MODELS_ROOT": str(root)})
    assert settings.local_checkpoints() == [(root / "small").resolve()]


def test_defaults_are_valid():
    s = load_settings({})
    assert s.isolation == "isolated" and s.device == "auto" and s.model == "auto" and s.max_frames == 64
