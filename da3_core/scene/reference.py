"""Ground truth to score a run against: a bundled example's true cameras and depth (numpy).

Pure functions: no Streamlit, no torch. A bundled example (``examples/<key>/scene.json``,
written by ``scripts/make_examples.py``) holds each frame's true world-to-camera
``[R|t]`` and ``K`` in pixels of its 320 x 240 JPEG. A run's depth maps are on DA3's
processed grid (``process_res``, ``process_res_method``), so the truth is brought to that
grid exactly as DA3's input processor moves the intrinsics (`processed_intrinsics`), and its
z-depth is rendered there by the examples' own ray caster (`render_depth`: the analytic
shapes of ``scripts/make_examples.py``, a depth-only pass at integer pixel coordinates, as
``tests/oracle.py`` renders its ground truth).
"""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

PATCH_SIZE = 14
"""DA3's ``InputProcessor.PATCH_SIZE``: processed sides are multiples of it."""
METHODS = ("upper_bound_resize", "lower_bound_resize", "upper_bound_crop", "lower_bound_crop")
_GENERATOR = Path(__file__).resolve().parents[2] / "scripts" / "make_examples.py"


def _scaled(k: np.ndarray, from_wh: tuple[int, int], to_wh: tuple[int, int]) -> np.ndarray:
    """DA3's ``_resize_ixt``: row 0 times w'/w, row 1 times h'/h."""
    k = np.array(k, dtype=np.float64, copy=True)
    k[..., 0, :] *= to_wh[0] / float(from_wh[0])
    k[..., 1, :] *= to_wh[1] / float(from_wh[1])
    return k


def _nearest_multiple(x: int, p: int) -> int:
    down = (x // p) * p
    up = down + p
    return up if abs(up - x) <= abs(x - down) else down


def processed_intrinsics(
    k: np.ndarray, wh: tuple[int, int], process_res: int, method: str = "upper_bound_resize"
) -> tuple[np.ndarray, tuple[int, int]]:
    """K on DA3's processed grid and that grid's (H, W), as DA3's ``InputProcessor._process_one``.

    1. The long side (``upper_bound_*``) or the short side (``lower_bound_*``) becomes
       ``process_res``: ``(round(w s), round(h s))``, K scaled per axis.
    2. ``*_resize``: each side to its nearest multiple of 14 (K scaled again);
       ``*_crop``: each side floored to a multiple of 14 by a centre crop (cx, cy shifted
       by the cropped margin).

    Args:
        k: (3, 3) or (N, 3, 3) K in pixels of the original ``wh`` = (width, height) image.
        wh: The original image size.
        process_res: DA3's ``process_res``.
        method: DA3's ``process_res_method``.

    Raises:
        ValueError: An unknown method or a size below 1.
    """
    if method not in METHODS:
        raise ValueError(f"process_res_method must be one of {', '.join(METHODS)}, got {method!r}")
    w, h = int(wh[0]), int(wh[1])
    if w < 1 or h < 1 or process_res < 1:
        raise ValueError(f"image size and process_res must be >= 1, got {wh} and {process_res}")
    side = max(w, h) if method.startswith("upper_bound") else min(w, h)
    if side != process_res:
        s = process_res / float(side)
        w1, h1 = max(1, int(round(w * s))), max(1, int(round(h * s)))
    else:
        w1, h1 = w, h
    out = _scaled(k, (w, h), (w1, h1))
    if method.endswith("resize"):
        w2, h2 = max(1, _nearest_multiple(w1, PATCH_SIZE)), max(1, _nearest_multiple(h1, PATCH_SIZE))
        out = _scaled(out, (w1, h1), (w2, h2))
    else:
        w2, h2 = (w1 // PATCH_SIZE) * PATCH_SIZE, (h1 // PATCH_SIZE) * PATCH_SIZE
        out[..., 0, 2] -= (w1 - w2) // 2
        out[..., 1, 2] -= (h1 - h2) // 2
    return out, (h2, w2)


@lru_cache(maxsize=1)
def _generator() -> Any:
    """``scripts/make_examples.py``, the examples' ray caster (loaded from its file, so the
    server's working folder does not matter)."""
    if "scripts.make_examples" in sys.modules:
        return sys.modules["scripts.make_examples"]
    spec = importlib.util.spec_from_file_location("da3_make_examples", _GENERATOR)
    if spec is None or spec.loader is None:  # pragma: no cover - the file ships with the app
        raise FileNotFoundError(f"the examples' generator is missing: {_GENERATOR}")
    module = importlib.util.module_from_spec(spec)
    sys.modules["da3_make_examples"] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def render_depth(scene_key: str, extrinsics: np.ndarray, intrinsics: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """True z-depth (N, H, W) float32 of an example scene at integer pixel coordinates (inf:
    no surface, e.g. sky).

    Args:
        scene_key: An example of ``scripts/make_examples.py`` (``room``, ``tabletop``, ``courtyard``).
        extrinsics: (N, 3, 4) world-to-camera.
        intrinsics: (N, 3, 3) K in pixels of the (H, W) grid.
        hw: The grid.
    """
    me = _generator()
    if scene_key not in me.SCENES:
        raise ValueError(f"no example scene {scene_key!r} in {_GENERATOR.name}: one of {', '.join(sorted(me.SCENES))}")
    scene = me.SCENES[scene_key]()
    h, w = int(hw[0]), int(hw[1])
    u, v = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    pix = np.stack([u.ravel(), v.ravel(), np.ones(u.size)], axis=1)
    out = np.empty((len(extrinsics), h, w), dtype=np.float32)
    for i, (ext, k) in enumerate(zip(np.asarray(extrinsics, np.float64), np.asarray(intrinsics, np.float64))):
        rot, t = ext[:, :3], ext[:, 3]
        rays = pix @ np.linalg.inv(k).T
        norm = np.linalg.norm(rays, axis=1)
        dirs = np.ascontiguousarray((rays / norm[:, None]) @ rot)  # camera -> world: R^T x
        origins = np.ascontiguousarray(np.broadcast_to(-rot.T @ t, dirs.shape))
        best = np.full(len(dirs), np.inf)
        for shape in scene.shapes:
            hit, _, _ = shape.intersect(origins, dirs)
            best = np.minimum(best, np.where(hit < me.INF, hit, np.inf))
        out[i] = (best / norm).reshape(h, w)  # distance along the unit ray -> z-depth
    return out


@dataclass(frozen=True)
class ExampleTruth:
    """A bundled example's truth for some of its frames, on a run's processed grid.

    Attributes:
        key: The example (folder name).
        names: The frames, in the order asked for.
        depth: (N, H, W) float32 true z-depth (inf where no surface).
        intrinsics: (N, 3, 3) K on the grid.
        extrinsics: (N, 3, 4) true world-to-camera (metres).
        note: How the grid was matched ("" when it is DA3's processed grid exactly).
    """

    key: str
    names: tuple[str, ...]
    depth: np.ndarray
    intrinsics: np.ndarray
    extrinsics: np.ndarray
    note: str = ""


def read_scene(example_dir: Path) -> dict[str, Any]:
    """``scene.json`` of an example folder.

    Raises:
        ValueError: Missing, unreadable, or without frames (the message names the file).
    """
    path = Path(example_dir) / "scene.json"
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        frames = meta["frames"]
        if not isinstance(frames, list) or not frames:
            raise ValueError("no frames")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: not a usable example scene ({exc})") from exc
    return meta


def example_truth(
    example_dir: Path,
    names: Sequence[str],
    hw: tuple[int, int],
    process_res: int | None,
    method: str = "upper_bound_resize",
) -> ExampleTruth:
    """The truth of the example in ``example_dir`` for the frames ``names``, on the (H, W) grid
    of a run made at ``process_res`` with ``method``.

    When DA3's rule (`processed_intrinsics`) does not give ``hw`` (an unknown method, or a run
    whose size came from elsewhere), K is scaled per axis to ``hw`` and ``note`` says so.

    Raises:
        ValueError: A name that is not a frame of the example (named), or a bad scene file.
    """
    example_dir = Path(example_dir)
    meta = read_scene(example_dir)
    by_file = {str(f["file"]): f for f in meta["frames"]}
    missing = [n for n in names if n not in by_file]
    if missing:
        raise ValueError(
            f"frame(s) {', '.join(missing[:5])} are not frames of the example {example_dir.name} "
            f"(it has {', '.join(sorted(by_file))})"
        )
    ext = np.asarray([by_file[n]["extrinsics"] for n in names], dtype=np.float64).reshape(len(names), 3, 4)
    k0 = np.asarray([by_file[n]["intrinsics"] for n in names], dtype=np.float64).reshape(len(names), 3, 3)
    wh = (int(meta.get("width", 320)), int(meta.get("height", 240)))
    note = ""
    k = None
    if process_res is not None and method in METHODS:
        k, grid = processed_intrinsics(k0, wh, int(process_res), method)
        if grid != tuple(hw):
            k = None
    if k is None:
        k = _scaled(k0, wh, (int(hw[1]), int(hw[0])))
        note = (
            f"the run's depth grid {hw[1]}x{hw[0]} is not what DA3's rule gives for process_res {process_res} "
            f"({method}): the true K was scaled per axis to it"
        )
    depth = render_depth(example_dir.name, ext, k, hw)
    return ExampleTruth(example_dir.name, tuple(str(n) for n in names), depth, k, ext, note)


__all__ = [
    "METHODS",
    "PATCH_SIZE",
    "ExampleTruth",
    "example_truth",
    "processed_intrinsics",
    "read_scene",
    "render_depth",
]
