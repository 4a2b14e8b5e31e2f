"""The bundled example scenes: present, small, loadable, with consistent ground-truth cameras."""

from __future__ import annotations

import importlib.util
import io
import json
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from PIL import Image

from da3_core.media import batches, image_io

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"


@pytest.fixture(scope="module")
def maker() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_examples", REPO / "scripts" / "make_examples.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["make_examples"] = module
    spec.loader.exec_module(module)
    return module


def test_examples_are_listed_and_load() -> None:
    examples = batches.list_examples(EXAMPLES)
    assert [e.key for e in examples] == ["courtyard", "room", "tabletop"]
    for ex in examples:
        assert ex.title and ex.description and len(ex.description) < 200
        assert 3 <= len(ex.files) <= 4
        frames = batches.load_example(ex)
        assert len(frames) == len(ex.files)
        for f in frames:
            assert f.image.shape == (240, 320, 3) and f.image.dtype == np.uint8
            assert f.source == f"example:{ex.key}" and f.note == ""
            assert 40 < f.image.mean() < 220 and f.image.std() > 25  # a real picture, not flat
        assert ex.extrinsics.shape == (len(ex.files), 3, 4) and ex.intrinsics.shape == (len(ex.files), 3, 3)


def test_examples_fit_the_size_budget() -> None:
    total = sum(p.stat().st_size for p in EXAMPLES.rglob("*") if p.is_file())
    assert total < 1.5 * 1024 * 1024, total


def test_ground_truth_cameras_are_valid() -> None:
    for ex in batches.list_examples(EXAMPLES):
        for ext, k in zip(ex.extrinsics, ex.intrinsics):
            rot = ext[:, :3]
            assert np.allclose(rot @ rot.T, np.eye(3), atol=1e-6) and np.linalg.det(rot) == pytest.approx(1.0)
            assert k[0, 2] == pytest.approx(159.5) and k[1, 2] == pytest.approx(119.5)
            assert k[0, 0] == pytest.approx(k[1, 1]) and k[0, 0] > 100
        centres = [-ext[:, :3].T @ ext[:, 3] for ext in ex.extrinsics]
        steps = [np.linalg.norm(a - b) for a, b in zip(centres, centres[1:])]
        assert all(0.05 < s < 1.5 for s in steps), steps  # the camera moves, slightly
        for c, view in zip(centres, ex.meta["frames"]):
            assert np.allclose(c, view["camera_center"], atol=1e-5)


@pytest.mark.parametrize("key,shape_index,colour", [("room", 5, "red"), ("tabletop", 7, "red"), ("room", 6, "yellow")])
def test_poses_project_objects_where_they_are_drawn(maker: ModuleType, key: str, shape_index: int, colour: str) -> None:
    """World-to-camera extrinsics + K put a known object's centre on pixels of its colour."""
    ex = {e.key: e for e in batches.list_examples(EXAMPLES)}[key]
    sphere = maker.SCENES[key]().shapes[shape_index]
    assert isinstance(sphere, maker.Sphere)
    centre = np.asarray(sphere.center)
    for frame, ext, k in zip(batches.load_example(ex), ex.extrinsics, ex.intrinsics):
        cam = ext[:, :3] @ centre + ext[:, 3]
        assert cam[2] > 0, "object behind the camera: extrinsics are not world-to-camera"
        u, v = (k @ cam)[:2] / cam[2]
        x, y = int(round(u)), int(round(v))
        assert 5 <= x < 315 and 5 <= y < 235
        r, g, b = frame.image[y - 2 : y + 3, x - 2 : x + 3].reshape(-1, 3).mean(axis=0)
        if colour == "red":
            assert r > 120 and r > g + 60 and r > b + 60, (frame.name, r, g, b)
        else:
            assert r > 120 and g > 90 and b < g - 40, (frame.name, r, g, b)


def test_courtyard_has_sky_at_the_top() -> None:
    ex = {e.key: e for e in batches.list_examples(EXAMPLES)}["courtyard"]
    assert ex.meta["has_sky"] is True
    top = batches.load_example(ex)[0].image[:8, 100:220].reshape(-1, 3).astype(int).mean(axis=0)
    assert top[2] > top[0] + 20  # blue-ish sky


def test_script_is_deterministic_and_matches_bundled(maker: ModuleType) -> None:
    scene = maker.SCENES["courtyard"]()
    img, rot, tvec, k = maker.render(scene, *scene.cameras[0])
    ex = {e.key: e for e in batches.list_examples(EXAMPLES)}["courtyard"]
    bundled = batches.load_example(ex)[0].image.astype(int)
    assert np.abs(bundled - img.astype(int)).mean() < 8  # JPEG q90 on fine texture
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=maker.JPEG_QUALITY, optimize=True)
    again = image_io.load_image("again.jpg", buf.getvalue()).image.astype(int)
    assert np.abs(bundled - again).mean() < 0.5  # same pixels, same encoder: identical here
    assert np.allclose(ex.extrinsics[0], np.concatenate([rot, tvec[:, None]], axis=1), atol=1e-7)
    assert np.allclose(ex.intrinsics[0], k, atol=1e-6)
    img2, *_ = maker.render(scene, *scene.cameras[0], width=80, height=60)
    img3, *_ = maker.render(scene, *scene.cameras[0], width=80, height=60)
    assert np.array_equal(img2, img3)


def test_list_examples_skips_broken_folders(tmp_path: Path) -> None:
    good = tmp_path / "good"
    good.mkdir()
    (good / "00.jpg").write_bytes((EXAMPLES / "room" / "00.jpg").read_bytes())
    view = {"file": "00.jpg", "extrinsics": np.eye(3, 4).tolist(), "intrinsics": np.eye(3).tolist()}
    (good / "scene.json").write_text(json.dumps({"title": "Good", "frames": [view]}))
    evil = tmp_path / "evil"
    evil.mkdir()
    (evil / "scene.json").write_text(json.dumps({"title": "Evil", "frames": [dict(view, file="../good/00.jpg")]}))
    missing = tmp_path / "missing"
    missing.mkdir()
    (missing / "scene.json").write_text(json.dumps({"title": "Missing", "frames": [view]}))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "scene.json").write_text("{not json")
    (tmp_path / "no_json").mkdir()
    assert [e.key for e in batches.list_examples(tmp_path)] == ["good"]
    assert batches.list_examples(tmp_path / "absent") == []
