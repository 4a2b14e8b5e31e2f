"""The data contract's validation, the settings' less common variables, the default-model
rules and the logging set-up: each refusal names what was wrong."""

from __future__ import annotations

import json
import logging
import signal

import numpy as np
import pytest

from da3_core import config, logs, presets
from da3_core.contract import Gaussians, ModelSpec, ReconstructRequest
from da3_core.runner.protocol import WorkerCrashedError
from tests.unit import synthetic

# --------------------------------------------------------------------------------------
# ModelSpec / ReconstructRequest
# --------------------------------------------------------------------------------------


def test_model_spec_refuses_unknown_kinds_and_empty_refs():
    with pytest.raises(ValueError, match="kind must be"):
        ModelSpec("web", "x")  # type: ignore[arg-type]  # the point: an unknown kind is refused
    with pytest.raises(ValueError, match="non-empty string"):
        ModelSpec("hub", "  ")
    assert ModelSpec("local", "/m").describe() == "folder /m"
    assert ModelSpec("demo", "da3-small").untrained and not ModelSpec("hub", "x").untrained


def _frame(h: int = 8, w: int = 8) -> np.ndarray:
    return np.zeros((h, w, 3), np.uint8)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"images": ()}, "is empty"),
        ({"names": ("a", "b")}, "names has 2 entries for 1 images"),
        ({"images": (np.zeros((8, 8), np.uint8),)}, r"images\[0\] \(a\) must be \(H, W, 3\) uint8"),
        ({"images": (np.zeros((8, 8, 3), np.float32),)}, "dtype float32"),
        ({"process_res": 10}, "process_res must be in 14..4096"),
        ({"process_res_method": "stretch"}, "process_res_method must be one of"),
        ({"ref_view_strategy": "random"}, "ref_view_strategy must be one of"),
        ({"reference_view": 1}, "reference_view 1 is outside 0..0"),
        ({"device": "tpu"}, "device must be one of auto, cuda, mps, cpu"),
    ],
)
def test_reconstruct_request_refuses_bad_fields(kwargs, message):
    base = {"images": (_frame(),), "names": ("a",), "model": ModelSpec("demo", "da3-small")}
    with pytest.raises(ValueError, match=message):
        ReconstructRequest(**{**base, **kwargs})


def test_reconstruct_request_keeps_lists_as_tuples():
    req = ReconstructRequest([_frame(), _frame(4, 6)], ["a", "b"], ModelSpec("demo", "da3-small"), reference_view=1)
    assert isinstance(req.images, tuple) and isinstance(req.names, tuple) and req.n_frames == 2


# --------------------------------------------------------------------------------------
# Reconstruction / Gaussians
# --------------------------------------------------------------------------------------


def test_reconstruction_refuses_inconsistent_arrays():
    rec = synthetic.box_scene(2)
    n, h, w = rec.depth.shape
    with pytest.raises(ValueError, match=r"depth must be \(N, H, W\)"):
        type(rec)(**{**rec.__dict__, "depth": rec.depth[0]})
    with pytest.raises(ValueError, match="conf must have shape"):
        synthetic.make_rec(rec.depth, conf=np.ones((n, h, w + 1)))
    with pytest.raises(TypeError, match="conf must be a numpy array"):
        type(rec)(**{**rec.__dict__, "conf": [[1.0]]})
    with pytest.raises(ValueError, match="images must be uint8"):
        synthetic.make_rec(rec.depth, images=rec.images.astype(np.float32))
    with pytest.raises(ValueError, match="sky must be bool"):
        synthetic.make_rec(rec.depth, sky=np.zeros((n, h, w), np.uint8))
    with pytest.raises(ValueError, match="both be given or both be None"):
        synthetic.make_rec(rec.depth, extrinsics=rec.extrinsics)
    with pytest.raises(ValueError, match="names has 1 entries for 2 views"):
        type(rec)(**{**rec.__dict__, "names": ("only one",)})
    with pytest.raises(ValueError, match="images is required"):
        type(rec)(**{**rec.__dict__, "images": None})


def test_reconstruction_properties_and_read_only_dicts():
    rec = synthetic.box_scene(2, is_metric=True)
    assert rec.n_views == 2 and rec.hw == (synthetic.H, synthetic.W) and rec.has_poses and rec.untrained
    assert rec.depth_unit == "m" and synthetic.mono_box_scene().depth_unit == "relative units"
    with pytest.raises(TypeError, match="read-only"):
        rec.params["x"] = 1  # type: ignore[index]  # the point: a read-only dict refuses it


def test_gaussians_need_numpy_arrays():
    with pytest.raises(TypeError, match="Gaussians.means must be a numpy array"):
        Gaussians([[0, 0, 0]], *(np.zeros((1, k)) for k in (3, 4, 3)), np.zeros(1))  # type: ignore[arg-type]  # the point: lists are refused


def test_worker_crash_messages_name_the_signal_or_exit_code():
    assert WorkerCrashedError("t", -signal.SIGKILL).how == "signal SIGKILL"
    assert WorkerCrashedError("t", -250).how == "signal 250"  # not a known signal number
    assert WorkerCrashedError("t", 3).how == "exit code 3"
    assert "fresh worker" in str(WorkerCrashedError("t", None))


# --------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------


def _checkpoint(folder, model_name: str = "da3-small"):
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_name": model_name}))
    return folder


def test_local_checkpoints_from_model_dir_model_folder_and_models_root(tmp_path):
    direct = _checkpoint(tmp_path / "direct")
    root = tmp_path / "root"
    a = _checkpoint(root / "a")
    (root / "not-a-checkpoint").mkdir()
    (root / "link").symlink_to(_checkpoint(tmp_path / "outside"))  # leads outside the root: skipped
    settings = config.load_settings({"DA3_MODEL_DIR": str(direct), "DA3_MODELS_ROOT": str(root), "DA3_MODEL": str(a)})
    assert settings.local_checkpoints() == [direct.resolve(), a.resolve()]  # a given twice, listed once
    assert config.load_settings({"DA3_WORKSPACE": str(tmp_path)}).demo_weights_dir == tmp_path / "demo-weights"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DA3_DEVICE": "tpu"}, "DA3_DEVICE='tpu' is not allowed; use one of auto, cuda, mps, cpu"),
        ({"DA3_MODEL_DIR": "/nonexistent/da3"}, "is not a folder"),
        ({"DA3_MODELS_ROOT": "/nonexistent/da3"}, "is not a folder"),
        ({"DA3_MAX_FRAMES": "many"}, "is not an integer"),
        ({"DA3_DURATION_S": "soon"}, "is not a number"),
        ({"DA3_MAX_FRAMES": "0"}, "outside 1..2000"),
    ],
)
def test_bad_settings_name_the_variable(env, message):
    with pytest.raises(config.ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        config.load_settings(env)


def test_model_dir_without_config_json_is_refused(tmp_path):
    with pytest.raises(config.ConfigError, match="has no config.json"):
        config.load_settings({"DA3_MODEL_DIR": str(tmp_path)})


def test_blank_and_padded_values(tmp_path):
    s = config.load_settings({"DA3_DEVICE": "  CPU ", "DA3_MAX_FRAMES": " ", "DA3_WORKSPACE": f" {tmp_path} "})
    assert s.device == "cpu" and s.max_frames == config.Settings().max_frames and s.workspace == tmp_path


# --------------------------------------------------------------------------------------
# The default model
# --------------------------------------------------------------------------------------


def test_model_from_setting_every_form(tmp_path):
    folder = _checkpoint(tmp_path / "ckpt")
    assert ModelSpec.from_setting("anything", folder, "cpu") == ModelSpec("local", str(folder))
    assert ModelSpec.from_setting("", None, None).kind == "hub"
    assert ModelSpec.from_setting("auto", None, "cuda") == ModelSpec("hub", presets.default_preset("cuda").hub_id)
    assert ModelSpec.from_setting("demo:da3-small", None, "cpu") == ModelSpec("demo", "da3-small")
    with pytest.raises(ValueError, match="unknown preset 'nope'"):
        ModelSpec.from_setting("demo:nope", None, "cpu")
    assert ModelSpec.from_setting("DA3-SMALL", None, "cpu") == ModelSpec(
        "hub", presets.PRESETS_BY_NAME["da3-small"].hub_id
    )
    assert ModelSpec.from_setting(str(folder), None, "cpu") == ModelSpec("local", str(folder.resolve()))
    assert ModelSpec.from_setting("someone/some-model", None, "cpu") == ModelSpec("hub", "someone/some-model")


def test_model_name_of_a_folder(tmp_path):
    assert presets.preset_name_in_folder(str(_checkpoint(tmp_path / "ok", "da3-base"))) == "da3-base"
    assert presets.preset_name_in_folder(str(tmp_path / "missing")) is None
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text("{not json")
    assert presets.preset_name_in_folder(str(bad)) is None
    (bad / "config.json").write_text(json.dumps({"model_name": 3}))
    assert presets.preset_name_in_folder(str(bad)) is None


# --------------------------------------------------------------------------------------
# Logging
# --------------------------------------------------------------------------------------


@pytest.fixture
def fresh_logging(monkeypatch):
    """`logs.setup` as in a new process; the da3_core logger's handlers restored afterwards."""
    root = logging.getLogger("da3_core")
    saved = (list(root.handlers), root.level, root.propagate)
    monkeypatch.setattr(logs, "_done", False)
    yield root
    for h in root.handlers:
        if h not in saved[0]:
            h.close()
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
    root.propagate = saved[2]


def test_logs_to_a_file_once(fresh_logging, monkeypatch, tmp_path):
    log_file = tmp_path / "app.log"
    monkeypatch.setenv("DA3_LOG_FILE", str(log_file))
    assert logs.setup("debug") == f"stderr and {log_file}"
    assert logs.setup() == f"stderr and {log_file}"  # the second call adds nothing
    assert fresh_logging.level == logging.DEBUG
    logging.getLogger("da3_core.test").info("hello from the test")
    for h in fresh_logging.handlers:
        h.flush()
    text = log_file.read_text()
    assert text.count("DA3 dashboard logs go to") == 1 and "hello from the test" in text


def test_an_unwritable_log_file_falls_back_to_stderr(fresh_logging, monkeypatch, tmp_path):
    monkeypatch.setenv("DA3_LOG_FILE", str(tmp_path / "no-such-dir" / "app.log"))
    assert logs.setup() == "stderr"
