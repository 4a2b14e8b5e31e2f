"""A ground-truth "oracle" that stands in for DA3 in chunked-run tests and benchmarks.

`make_oracle` renders a camera path through one of the example scenes of
``scripts/make_examples.py`` (its numpy ray caster) and saves the frames with their exact
depth and cameras. The "model" is the folder itself (`oracle_model`): the worker task
`tests.oracle_tasks.oracle_chunk` reads the truth from it and answers each chunk the way
DA3 would, in the chunk's OWN world frame and scale (`simulate_chunk`):

* a random similarity per chunk (`chunk_truth`): the chunk's first camera is the chunk
  world's origin, up to a small random rigid offset, times a log-uniform random scale;
  seeded by ``OracleOptions.seed`` and the chunk's frame ids only, so the same chunk always
  gets the same transform and noise (bit-identical resume) and different chunks differ;
* optional drift: view ``k`` of ``K`` is turned about the vertical axis through the chunk's
  first camera by ``drift_deg * k / (K - 1)`` and scaled by ``(1 + drift_scale) ** (k / (K - 1))``
  (its depth and camera together, so each view stays self-consistent), so that chaining
  chunks by their overlaps accumulates error;
* multiplicative depth noise, DA3-like confidence (>= 1), a few garbage pixels with
  confidence 1, and a per-view global descriptor computed from the image alone.

Conventions are the project's (``docs/CONVENTIONS.md``): OpenCV axes, world-to-camera
(N, 3, 4) extrinsics, K in pixels, z-depth unprojected at integer pixel coordinates. The
ground-truth world is make_examples' (metres, y up).

Typical use::

    folder = make_oracle(tmp_path / "oracle", n_frames=128, path="loop")
    req = chunk_request(folder, range(0, 16), chunk=0)
    result = oracle_chunk.submit(req, demo_root, 0, "auto", runner=runner).result()
    truth = chunk_truth(folder, req.frame_ids)       # the Sim(3) per view, float64

Light imports only (numpy, PIL, the contract): the worker imports this module too.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from da3_core.contract import ChunkRequest, ChunkResult, ModelSpec, Reconstruction, ReconstructRequest

RENDER_VERSION = 2
"""Bump when rendering changes: cached renders with another version are redone."""

PATH_KINDS: tuple[str, ...] = ("line", "loop")
LOOP_REVISIT = 0.1
"""Fraction of a loop path's frames that come back over the first frames' viewpoints."""
LINE_ARC_DEG = 200.0
"""How far round its scene a line path goes (a widening spiral arc: never revisits)."""
SKY_DEPTH = 100.0
"""Depth (ground-truth units, before the chunk's scale) the oracle gives sky pixels (no hit)."""
DESCRIPTOR_THUMB = (8, 6)
DESCRIPTOR_BINS = 4
JPEG_TOLERANCE = 10.0
"""Mean absolute difference (levels) up to which a received image counts as the saved frame."""


# --------------------------------------------------------------------------------------
# Options
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OracleOptions:
    """How the oracle departs from the truth (saved in ``oracle.json``; read by the worker).

    Attributes:
        scale_range: Each chunk's random scale is log-uniform in this range.
        depth_noise: Sigma of the multiplicative Gaussian depth noise (0.01: 1 %).
        drift_deg: Rotation of the chunk's last view about the vertical axis through its
            first camera (views in between: linearly less).
        drift_scale: Scale drift over the chunk: the last view is scaled by ``1 + drift_scale``
            (views in between: geometrically less).
        conf_noise: Sigma of a multiplicative log-normal noise on the confidence.
        outliers: Fraction of valid pixels given a wrong depth (x 1.3..3 or / 1.3..3) and
            confidence 1, so that robust alignment matters.
        seed: Seeds every chunk's transform and noise (with the chunk's frame ids).
        delay_s: Seconds each chunk takes at least (a slow model: runs that tests watch
            while they go on, cancel mid-way or resume). Changes no array.
    """

    scale_range: tuple[float, float] = (0.5, 2.0)
    depth_noise: float = 0.01
    drift_deg: float = 0.0
    drift_scale: float = 0.0
    conf_noise: float = 0.0
    outliers: float = 0.02
    seed: int = 0
    delay_s: float = 0.0

    def __post_init__(self) -> None:
        lo, hi = (float(x) for x in self.scale_range)
        object.__setattr__(self, "scale_range", (lo, hi))
        if not 0 < lo <= hi:
            raise ValueError(f"OracleOptions.scale_range must be 0 < low <= high, got {self.scale_range}")
        for name in ("depth_noise", "drift_deg", "drift_scale", "conf_noise"):
            if not (np.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
                raise ValueError(f"OracleOptions.{name} must be finite and >= 0, got {getattr(self, name)}")
        if not 0 <= self.outliers < 0.5:
            raise ValueError(f"OracleOptions.outliers must be in [0, 0.5), got {self.outliers}")
        if int(self.seed) != self.seed or self.seed < 0:
            raise ValueError(f"OracleOptions.seed must be an integer >= 0, got {self.seed}")

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["scale_range"] = list(self.scale_range)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> OracleOptions:
        known = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in d.items() if k in known}
        if "scale_range" in kw:
            kw["scale_range"] = tuple(kw["scale_range"])
        return cls(**kw)


# --------------------------------------------------------------------------------------
# Scenes and camera paths
# --------------------------------------------------------------------------------------

# Per scene: the circle the camera walks round (centre x, z; radius), eye and target heights,
# and how far ahead along the circle it looks (degrees; 180 looks through the centre).
_PATH_SETUP: dict[str, dict[str, Any]] = {
    "courtyard": {
        "center": (0.0, 6.0),
        "radius": 4.0,
        "eye_y": 1.6,
        "target_y": 1.1,
        "ahead_deg": 100.0,
        "start_deg": -90.0,
    },
    "room": {"center": (0.0, 0.4), "radius": 1.2, "eye_y": 1.5, "target_y": 0.9, "ahead_deg": 70.0, "start_deg": -90.0},
    "tabletop": {
        "center": (0.0, 0.0),
        "radius": 1.6,
        "eye_y": 1.5,
        "target_y": 0.78,
        "ahead_deg": 180.0,
        "start_deg": -90.0,
    },
}
SCENE_NAMES: tuple[str, ...] = tuple(_PATH_SETUP)


def _make_examples() -> Any:
    from scripts import make_examples

    return make_examples


def build_scene(name: str) -> Any:
    """The `make_examples.Scene` called ``name``. The courtyard gets a fourth (front) wall,
    so that no view looks out over an endless ground plane (sky stays above the walls), and
    its right wall another colour."""
    me = _make_examples()
    if name not in _PATH_SETUP:
        raise ValueError(f"unknown oracle scene {name!r}; use one of {', '.join(SCENE_NAMES)}")
    scene = me.SCENES[name]()
    if name == "courtyard":
        # The right wall's red is close to the back wall's: recoloured so that places differ.
        right = scene.shapes[3]
        scene.shapes[3] = me.Box(me.bricks("#7f8a4a", "#e0dccb", seed=73), center=right.center, half=right.half)
        scene.shapes.append(
            me.Box(me.bricks("#6d7a86", "#d8d4cc", seed=91), center=(0.0, 2.5, -1.0), half=(10.5, 2.5, 1.0))
        )
    return scene


def camera_path(scene: str, path: str, n_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """(eyes, targets), each (n_frames, 3) float64 in the scene's world (metres, y up).

    ``loop``: a closed walk round the scene's circle; the last `LOOP_REVISIT` of the frames
    pass again over the first frames' viewpoints (2 % further out, so not exact copies).
    ``line``: a `LINE_ARC_DEG` arc whose radius widens from 0.9 to 1.06 of the circle's:
    it never comes back.
    """
    if path not in PATH_KINDS:
        raise ValueError(f"path must be one of {PATH_KINDS}, got {path!r}")
    if n_frames < 2:
        raise ValueError(f"n_frames must be >= 2, got {n_frames}")
    cfg = _PATH_SETUP[scene]
    f = np.arange(n_frames, dtype=np.float64) / (n_frames - 1)
    start = np.radians(cfg["start_deg"])
    if path == "loop":
        theta = start + 2.0 * np.pi * f / (1.0 - LOOP_REVISIT)
        radius = cfg["radius"] * (1.0 + 0.02 * f)
    else:
        theta = start + np.radians(LINE_ARC_DEG) * f
        radius = cfg["radius"] * (0.9 + 0.16 * f)
    cx, cz = cfg["center"]
    ahead = theta + np.radians(cfg["ahead_deg"])
    eyes = np.stack([cx + radius * np.cos(theta), np.full(n_frames, cfg["eye_y"]), cz + radius * np.sin(theta)], axis=1)
    targets = np.stack(
        [cx + radius * np.cos(ahead), np.full(n_frames, cfg["target_y"]), cz + radius * np.sin(ahead)], axis=1
    )
    return eyes, targets


def _render(
    scene: Any,
    eyes: np.ndarray,
    targets: np.ndarray,
    width: int,
    height: int,
    supersample: int,
    batch_rays: int = 65536,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """All views at once through make_examples' ``trace``: (images (N,H,W,3) uint8,
    z-depth (N,H,W) float32 at integer pixel coordinates (inf: no hit), extrinsics
    (N,3,4) float64, K (3,3) float64)."""
    me = _make_examples()
    n = len(eyes)
    k = me.intrinsics(width, height, scene.hfov_deg)
    k_inv = np.linalg.inv(k)
    ext = np.zeros((n, 3, 4))
    for i in range(n):
        rot, tvec = me.look_at(eyes[i], targets[i])
        ext[i, :, :3], ext[i, :, 3] = rot, tvec
    rots = ext[:, :, :3]
    centers = -np.einsum("nji,nj->ni", rots, ext[:, :, 3])
    u, v = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
    if supersample <= 1:
        offsets = [(0.0, 0.0)]
    else:
        step = 1.0 / supersample
        grid = (np.arange(supersample) + 0.5) * step - 0.5
        offsets = [(du, dv) for dv in grid for du in grid]
    pixels = height * width
    per_batch = max(1, batch_rays // pixels)
    color = np.zeros((n, pixels, 3))
    depth = np.empty((n, pixels))
    ray_norm = np.linalg.norm(np.stack([u.ravel(), v.ravel(), np.ones(pixels)], 1) @ k_inv.T, axis=1)
    passes = offsets if (0.0, 0.0) in offsets else [*offsets, None]  # None: a depth-only pass at integer pixels
    for off in passes:
        du, dv = off if off is not None else (0.0, 0.0)
        pix = np.stack([(u + du).ravel(), (v + dv).ravel(), np.ones(pixels)], axis=1)
        cam = pix @ k_inv.T
        cam /= np.linalg.norm(cam, axis=1, keepdims=True)
        for s in range(0, n, per_batch):
            sl = slice(s, min(n, s + per_batch))
            dirs = np.einsum("pj,nji->npi", cam, rots[sl])  # camera -> world: R^T x
            origins = np.broadcast_to(centers[sl, None, :], dirs.shape).reshape(-1, 3)
            flat = np.ascontiguousarray(dirs.reshape(-1, 3))
            if off is None:
                best = np.full(len(flat), np.inf)
                for shape in scene.shapes:
                    t, _, _ = shape.intersect(np.ascontiguousarray(origins), flat)
                    best = np.minimum(best, np.where(t < me.INF, t, np.inf))
                t_hit = best
            else:
                col, t_hit = me.trace(scene, np.ascontiguousarray(origins), flat)
                color[sl] += col.reshape(-1, pixels, 3)
            if du == 0.0 and dv == 0.0:
                # t is the distance along the unit ray; z-depth = t / |K^-1 [u, v, 1]|
                depth[sl] = t_hit.reshape(-1, pixels) / ray_norm
    lin = color / len(offsets)
    lin = lin / (1.0 + 0.15 * lin)  # make_examples.render's tone curve
    img = np.clip(lin, 0.0, 1.0) ** (1 / 2.2)
    images = (img.reshape(n, height, width, 3) * 255.0 + 0.5).astype(np.uint8)
    return images, depth.reshape(n, height, width).astype(np.float32), ext, k


# --------------------------------------------------------------------------------------
# The oracle folder
# --------------------------------------------------------------------------------------


def frame_name(i: int) -> str:
    return f"{i:04d}.png"


def _render_key(scene: str, path: str, n_frames: int, width: int, height: int, supersample: int) -> str:
    spec = json.dumps(
        [
            RENDER_VERSION,
            scene,
            path,
            n_frames,
            width,
            height,
            supersample,
            _PATH_SETUP[scene],
            LOOP_REVISIT,
            LINE_ARC_DEG,
        ],
        sort_keys=True,
    )
    return hashlib.sha256(spec.encode()).hexdigest()[:16]


def make_oracle(
    folder: Path,
    *,
    n_frames: int,
    path: str = "line",
    width: int = 64,
    height: int = 48,
    options: OracleOptions = OracleOptions(),
    scene: str = "courtyard",
    supersample: int = 1,
) -> Path:
    """Render ``n_frames`` along a camera path and save them with the truth under ``folder``.

    Writes ``frames/0000.png`` ... (RGB uint8, lossless), ``gt.npz`` (``depth`` (N,H,W)
    float32 z-depth, inf where a ray hits nothing (sky); ``extrinsics`` (N,3,4) float64
    world-to-camera; ``intrinsics`` (N,3,3) float64 in pixels; ``centers`` (N,3) float64)
    and ``oracle.json`` (options, path kind, scene, sizes, names, the render cache key).

    Args:
        folder: Where to write (created).
        n_frames: Number of frames (>= 2).
        path: ``"line"`` (a widening arc round the scene, never revisiting) or ``"loop"``
            (a closed walk whose last 10 % of frames revisit the first frames' viewpoints).
        width, height: Image size in pixels.
        options: How chunks depart from the truth; may change without re-rendering.
        scene: ``"courtyard"`` (default: enclosed courtyard, walls all round, some sky),
            ``"room"`` (no sky: every pixel has a depth) or ``"tabletop"``.
        supersample: Rays per pixel side for the colours (1: one ray at the integer pixel
            coordinate; 2: 2x2, four times slower). Depth is always at integer coordinates.

    Returns ``folder``. Called again with the same scene, path and sizes, the renders are
    reused (only ``oracle.json`` is rewritten when the options differ).
    """
    folder = Path(folder)
    if scene not in _PATH_SETUP:
        raise ValueError(f"unknown oracle scene {scene!r}; use one of {', '.join(SCENE_NAMES)}")
    if not (isinstance(width, int) and isinstance(height, int) and width >= 8 and height >= 8):
        raise ValueError(f"width and height must be integers >= 8, got {width}x{height}")
    if int(supersample) < 1:
        raise ValueError(f"supersample must be >= 1, got {supersample}")
    if not isinstance(options, OracleOptions):
        raise TypeError(f"options must be an OracleOptions, got {type(options).__name__}")
    key = _render_key(scene, path, int(n_frames), width, height, int(supersample))
    meta_path = folder / "oracle.json"
    old = _read_meta(folder) if meta_path.exists() else None
    names = [frame_name(i) for i in range(n_frames)]
    reuse = (
        old is not None
        and old.get("render_key") == key
        and (folder / "gt.npz").exists()
        and all((folder / "frames" / nm).exists() for nm in names)
    )
    render_s = float(old.get("render_seconds", 0.0)) if reuse and old else 0.0
    if not reuse:
        t0 = time.perf_counter()
        eyes, targets = camera_path(scene, path, int(n_frames))
        sc = build_scene(scene)
        images, depth, ext, k = _render(sc, eyes, targets, width, height, int(supersample))
        (folder / "frames").mkdir(parents=True, exist_ok=True)
        if meta_path.exists():
            meta_path.unlink()  # an interrupted re-render must not look complete
        for stale in (folder / "frames").glob("*.png"):
            stale.unlink()
        for nm, img in zip(names, images):
            Image.fromarray(img).save(folder / "frames" / nm, format="PNG", compress_level=1)
        centers = -np.einsum("nji,nj->ni", ext[:, :, :3], ext[:, :, 3])
        with open(folder / "gt.npz", "wb") as fh:
            np.savez(fh, depth=depth, extrinsics=ext, intrinsics=np.tile(k, (n_frames, 1, 1)), centers=centers)
        render_s = time.perf_counter() - t0
    meta = {
        "generator": "tests/oracle.py",
        "render_key": key,
        "render_version": RENDER_VERSION,
        "scene": scene,
        "path": path,
        "n_frames": int(n_frames),
        "width": width,
        "height": height,
        "supersample": int(supersample),
        "hfov_deg": float(build_scene(scene).hfov_deg),
        "render_seconds": round(render_s, 3),
        "names": names,
        "options": options.to_json(),
        "world": "make_examples' scene world: metres, y up; OpenCV cameras, extrinsics world-to-camera",
    }
    if old != meta:
        tmp = meta_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
        tmp.replace(meta_path)
    return folder


def _read_meta(folder: Path | str) -> dict[str, Any]:
    path = Path(folder) / "oracle.json"
    if not path.exists():
        raise FileNotFoundError(f"{folder} is not an oracle folder (no oracle.json): make it with make_oracle")
    return json.loads(path.read_text(encoding="utf-8"))


def load_gt(folder: Path | str) -> dict[str, Any]:
    """The truth: ``depth`` (N,H,W) float32 (inf: sky), ``extrinsics`` (N,3,4) float64,
    ``intrinsics`` (N,3,3) float64, ``centers`` (N,3) float64, ``options`` (`OracleOptions`)
    and ``meta`` (the ``oracle.json`` dict)."""
    meta = _read_meta(folder)
    with np.load(Path(folder) / "gt.npz", allow_pickle=False) as z:
        out: dict[str, Any] = {name: z[name] for name in z.files}
    out["options"] = OracleOptions.from_json(meta["options"])
    out["meta"] = meta
    return out


def frames(folder: Path | str, frame_ids: Iterable[int] | None = None) -> list[np.ndarray]:
    """The saved frames, RGB uint8 (H, W, 3), in order (or those of ``frame_ids``)."""
    meta = _read_meta(folder)
    ids = range(meta["n_frames"]) if frame_ids is None else [int(i) for i in frame_ids]
    out = []
    for i in ids:
        if not 0 <= i < meta["n_frames"]:
            raise ValueError(f"frame {i} is outside 0..{meta['n_frames'] - 1} of the oracle at {folder}")
        with Image.open(Path(folder) / "frames" / frame_name(i)) as im:
            out.append(np.asarray(im.convert("RGB"), dtype=np.uint8).copy())
    return out


def oracle_model(folder: Path | str) -> ModelSpec:
    """The oracle's "model": ``ModelSpec("local", folder)`` (the folder holding the truth)."""
    return ModelSpec("local", str(Path(folder).resolve()))


def chunk_request(folder: Path | str, frame_ids: Iterable[int], chunk: int, **params: Any) -> ChunkRequest:
    """A `ChunkRequest` for the saved frames ``frame_ids`` of the oracle in ``folder``.

    ``params`` go to `ReconstructRequest` (``process_res`` defaults to 504, ``device`` to
    ``"cpu"``), except ``descriptors`` which goes to `ChunkRequest`.
    """
    ids = [int(i) for i in frame_ids]
    descriptors = params.pop("descriptors", True)
    params.setdefault("device", "cpu")
    request = ReconstructRequest(
        images=tuple(frames(folder, ids)), names=tuple(frame_name(i) for i in ids), model=oracle_model(folder), **params
    )
    return ChunkRequest(request=request, chunk=int(chunk), frame_ids=tuple(ids), descriptors=descriptors)


# --------------------------------------------------------------------------------------
# The chunk simulation (runs in the worker; also callable in-process)
# --------------------------------------------------------------------------------------

_GT_CACHE: dict[tuple[str, int, int], dict[str, Any]] = {}


def _load_gt_cached(folder: str) -> dict[str, Any]:
    """`load_gt`, kept per process while gt.npz and oracle.json are unchanged."""
    st = (Path(folder) / "gt.npz").stat()
    mt = (Path(folder) / "oracle.json").stat()
    key = (str(Path(folder).resolve()), st.st_mtime_ns ^ mt.st_mtime_ns, st.st_size + mt.st_size)
    if key not in _GT_CACHE:
        _GT_CACHE.clear()
        _GT_CACHE[key] = load_gt(folder)
    return _GT_CACHE[key]


def _rng(options: OracleOptions, frame_ids: tuple[int, ...], stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(options.seed), stream, len(frame_ids), *frame_ids]))


def _axis_angle(axis: np.ndarray, angle: float) -> np.ndarray:
    a = np.asarray(axis, np.float64) / np.linalg.norm(axis)
    kx = np.array([[0.0, -a[2], a[1]], [a[2], 0.0, -a[0]], [-a[1], a[0], 0.0]])
    return np.eye(3) + np.sin(angle) * kx + (1.0 - np.cos(angle)) * (kx @ kx)


def sim3_matrix(scale: float, rot: np.ndarray, trans: np.ndarray) -> np.ndarray:
    """4x4 ``[[s R, t], [0, 1]]``: ``X' = s R X + t``."""
    m = np.eye(4)
    m[:3, :3] = scale * np.asarray(rot)
    m[:3, 3] = trans
    return m


def _truth(gt: dict[str, Any], options: OracleOptions, frame_ids: tuple[int, ...]) -> dict[str, Any]:
    rng = _rng(options, frame_ids, 1)
    lo, hi = options.scale_range
    scale = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
    # Small random rigid offset of the chunk world from its first camera (DA3's reference
    # camera is near identity, not exactly).
    axis = rng.normal(size=3)
    offset_rot = _axis_angle(axis, np.radians(rng.uniform(0.0, 3.0)))
    d = rng.normal(size=3)
    offset_t = d / np.linalg.norm(d) * rng.uniform(0.0, 0.05)
    ext = gt["extrinsics"]
    r0, t0 = ext[frame_ids[0], :, :3], ext[frame_ids[0], :, 3]
    q_rot = offset_rot @ r0  # GT world -> chunk world rotation
    q_t = offset_rot @ t0 + offset_t
    chunk_sim = sim3_matrix(scale, q_rot, scale * q_t)  # X' = s (Q X + q)
    # Drift about the vertical (GT y) axis through the chunk's first camera, in the chunk frame.
    up = q_rot @ np.array([0.0, 1.0, 0.0])
    pivot = scale * (q_rot @ gt["centers"][frame_ids[0]] + q_t)
    n = len(frame_ids)
    views = np.empty((n, 4, 4))
    scales = np.empty(n)
    for k in range(n):
        frac = k / (n - 1) if n > 1 else 0.0
        sigma = (1.0 + options.drift_scale) ** frac
        turn = _axis_angle(up, np.radians(options.drift_deg * frac)) if options.drift_deg else np.eye(3)
        # X'' = sigma Turn (X' - c) + c = (sigma s) (Turn Q) X + [sigma Turn (s q - c) + c]
        views[k] = sim3_matrix(sigma * scale, turn @ q_rot, sigma * turn @ (scale * q_t - pivot) + pivot)
        scales[k] = sigma * scale
    return {"scale": scale, "sim3": chunk_sim, "view_sim3": views, "view_scale": scales}


def chunk_truth(folder: Path | str, frame_ids: Iterable[int]) -> dict[str, Any]:
    """The exact transforms the oracle applies to the chunk of ``frame_ids`` (float64):

    ``scale`` (the chunk's random scale), ``sim3`` (4x4, GT world -> chunk world without
    drift: ``X' = sim3[:3,:3] @ X + sim3[:3,3]``), ``view_sim3`` (K,4,4) (the map of each
    view's points and camera, drift included; ``view_sim3[0] == sim3``) and ``view_scale`` (K,).
    """
    gt = load_gt(folder)
    return _truth(gt, gt["options"], tuple(int(i) for i in frame_ids))


def image_descriptor(images: np.ndarray | list[np.ndarray]) -> np.ndarray:
    """(n, D) float32 L2-normalised global descriptors from the images alone (D = 256).

    An 8x6 colour thumbnail of the blurred image (Gaussian, sigma 3 px per 64 px of width:
    the bricks' aliasing must not move it), as grey plus twice the chroma (4 values a cell), with each row's
    mean removed (so the sky-above-ground layout that all views share does not make them
    alike), normalised; beside a coarse joint RGB histogram (4x4x4 bins, square-rooted,
    mean removed, normalised) at half weight.
    """
    from PIL import ImageFilter

    out = []
    tw, th = DESCRIPTOR_THUMB
    bins = DESCRIPTOR_BINS
    for img in images:
        img = np.asarray(img, np.uint8)
        im = Image.fromarray(img).filter(ImageFilter.GaussianBlur(3.0 * img.shape[1] / 64.0))
        t = np.asarray(im.resize((tw, th), Image.BOX), np.float64) / 255.0
        grey = t.mean(axis=2, keepdims=True)
        g = np.concatenate([grey, 2.0 * (t - grey)], axis=2)
        g = (g - g.mean(axis=1, keepdims=True)).ravel()
        g /= max(float(np.linalg.norm(g)), 1e-9)
        q = (img.reshape(-1, 3).astype(np.int64) * bins) // 256
        hist = np.bincount((q[:, 0] * bins + q[:, 1]) * bins + q[:, 2], minlength=bins**3).astype(np.float64)
        h = np.sqrt(hist / max(hist.sum(), 1.0))
        h = h - h.mean()
        h /= max(float(np.linalg.norm(h)), 1e-9)
        d = np.concatenate([g, 0.5 * h])
        out.append(d / np.linalg.norm(d))
    return np.asarray(out, np.float32).reshape(len(out), -1)


def simulate_chunk(chunk: ChunkRequest, progress: Callable[[str, float, str], None] | None = None) -> ChunkResult:
    """What the oracle "model" answers for ``chunk`` (see the module docstring).

    Raises:
        FileNotFoundError: ``chunk.request.model.ref`` is not an oracle folder.
        ValueError: A frame id is outside the oracle, or an image differs from the saved frame.
    """
    t_start = time.perf_counter()
    report = progress or (lambda stage, fraction, detail="": None)
    folder = chunk.request.model.ref
    report("oracle: reading the truth", 0.05, folder)
    gt = _load_gt_cached(folder)
    meta, options = gt["meta"], gt["options"]
    ids = chunk.frame_ids
    n_all = meta["n_frames"]
    bad = [i for i in ids if not 0 <= i < n_all]
    if bad:
        raise ValueError(f"oracle: frame id {bad[0]} is outside 0..{n_all - 1} of the oracle at {folder}")
    saved = frames(folder, ids)
    for pos, (i, img, ref) in enumerate(zip(ids, chunk.request.images, saved)):
        # Runs save their frames as JPEG q95 and chunks read them back: a few levels of
        # difference are the codec's; a different frame differs by far more.
        if img.shape != ref.shape or np.abs(img.astype(np.int16) - ref.astype(np.int16)).mean() > JPEG_TOLERANCE:
            what = (
                f"shape {img.shape} vs {ref.shape}"
                if img.shape != ref.shape
                else f"mean difference {np.abs(img.astype(np.int16) - ref.astype(np.int16)).mean():.1f} levels"
            )
            raise ValueError(
                f"oracle: image {pos} ({chunk.request.names[pos]}) does not match saved frame {i} "
                f"({frame_name(i)}) of the oracle at {folder}: {what}"
            )
    report("oracle: inference", 0.3, f"{len(ids)} frames")
    if options.delay_s > 0:
        import time as _time

        _time.sleep(options.delay_s)
    truth = _truth(gt, options, ids)
    rng = _rng(options, ids, 2)
    depth_gt = gt["depth"][list(ids)].astype(np.float64)
    n, h, w = depth_gt.shape
    hit = np.isfinite(depth_gt)
    sigma = options.depth_noise
    noise = rng.normal(0.0, 1.0, size=depth_gt.shape) * sigma
    noise = np.clip(noise, -0.5, 0.5)
    vs = truth["view_scale"][:, None, None]
    depth = np.where(hit, depth_gt, SKY_DEPTH) * vs * (1.0 + noise)
    conf = 1.0 + 4.0 * np.exp(-np.abs(noise) / sigma) if sigma > 0 else np.full(depth.shape, 5.0)
    if options.conf_noise > 0:
        conf = conf * np.exp(rng.normal(0.0, options.conf_noise, size=depth.shape))
    outlier = (rng.random(depth.shape) < options.outliers) & hit
    factor = np.exp(rng.uniform(np.log(1.3), np.log(3.0), size=depth.shape) * rng.choice([-1.0, 1.0], size=depth.shape))
    depth = np.where(outlier, depth * factor, depth)
    conf = np.where(outlier | ~hit, 1.0, np.maximum(conf, 1.0))
    ext = np.empty((n, 3, 4))
    for k, i in enumerate(ids):
        m = truth["view_sim3"][k]
        s_k = truth["view_scale"][k]
        q_k, tau_k = m[:3, :3] / s_k, m[:3, 3]
        r_i, t_i = gt["extrinsics"][i, :, :3], gt["extrinsics"][i, :, 3]
        # X_cam' = s_k X_cam, X = Q_k^T (X'' - tau_k) / s_k  =>  R' = R Q_k^T, t' = s_k t - R Q_k^T tau_k
        ext[k, :, :3] = r_i @ q_k.T
        ext[k, :, 3] = s_k * t_i - r_i @ q_k.T @ tau_k
    images = np.stack([np.asarray(img, np.uint8) for img in chunk.request.images])
    descriptors = image_descriptor(images) if chunk.descriptors else None
    report("oracle: done", 1.0, "")
    elapsed = time.perf_counter() - t_start
    rec = Reconstruction(
        depth=depth.astype(np.float32),
        conf=conf.astype(np.float32),
        extrinsics=ext.astype(np.float32),
        intrinsics=gt["intrinsics"][list(ids)].astype(np.float32),
        images=images,
        sky=None if hit.all() else ~hit,
        is_metric=False,
        scale_factor=None,
        gaussians=None,
        names=chunk.request.names,
        model=chunk.request.model,
        preset="oracle",
        device="cpu",
        timings={"inference": elapsed, "total": elapsed},
        params={
            "process_res": chunk.request.process_res,
            "process_res_method": chunk.request.process_res_method,
            "ref_view_strategy": chunk.request.ref_view_strategy,
            "device": "cpu",
            "cameras": "estimated",
            "chunk": chunk.chunk,
            "oracle": True,
            "oracle_scale": truth["scale"],
            "oracle_sim3": truth["sim3"].tolist(),
            "oracle_view_sim3": truth["view_sim3"].tolist(),
            "oracle_options": options.to_json(),
        },
    )
    return ChunkResult(rec=rec, frame_ids=ids, chunk=chunk.chunk, descriptors=descriptors)
