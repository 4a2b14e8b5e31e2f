"""Everything that crosses the process boundary between the Streamlit parent and the worker.

The DA3 request and its CPU-only result (`ModelSpec`, `ReconstructRequest`,
`Reconstruction`, `Gaussians`; the result's dicts are `ReadOnlyDict`s): frozen dataclasses
of plain Python and numpy, never torch. The runner's own messages and errors, which know
nothing of DA3, are in `da3_core.runner.protocol`.

Camera conventions (see ``docs/CONVENTIONS.md``): OpenCV camera frame (x right, y down,
z forward); ``extrinsics`` are world-to-camera; ``intrinsics`` are in processed-image pixels.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from da3_core.presets import DEVICES, PRESETS_BY_NAME, PROCESS_RES_METHODS, REF_VIEW_STRATEGIES, default_preset

# --------------------------------------------------------------------------------------
# The DA3 request and result
# --------------------------------------------------------------------------------------

ModelKind = Literal["hub", "local", "demo"]
CAMERA_SOURCES: tuple[str, ...] = ("COLMAP", "JSON", "NPZ")
"""Where known cameras can come from (`da3_core.media.cameras`)."""


@dataclass(frozen=True)
class ModelSpec:
    """Which weights the worker loads.

    Attributes:
        kind: ``"hub"`` (``ref`` is a hub id such as ``depth-anything/DA3-SMALL``),
            ``"local"`` (``ref`` is a folder holding ``config.json`` and
            ``model.safetensors``), or ``"demo"`` (``ref`` is a DA3 preset name; untrained
            weights are built once under the workspace and loaded through the real
            ``from_pretrained`` path; their geometry is meaningless).
        ref: The hub id, folder path or preset name.
    """

    kind: ModelKind
    ref: str

    def __post_init__(self) -> None:
        if self.kind not in ("hub", "local", "demo"):
            raise ValueError(f"ModelSpec.kind must be 'hub', 'local' or 'demo', got {self.kind!r}")
        if not isinstance(self.ref, str) or not self.ref.strip():
            raise ValueError("ModelSpec.ref must be a non-empty string (hub id, folder or preset name)")

    @classmethod
    def from_setting(cls, value: str, model_dir: Path | None, device: str | None) -> ModelSpec:
        """The default model: ``DA3_MODEL_DIR`` if set, else ``DA3_MODEL`` read as below.

        ``DA3_MODEL`` may be ``auto`` (a default per device), a preset name (its hub id), a
        hub id, ``demo:<preset>`` (untrained demo weights), or an existing folder.

        Raises:
            ValueError: ``value`` names an unknown preset after ``demo:``.
        """
        if model_dir is not None:
            return cls("local", str(model_dir))
        value = (value or "auto").strip()
        if value == "auto":
            return cls("hub", default_preset(device or "cpu").hub_id)
        if value.startswith("demo:"):
            name = value[len("demo:") :]
            if name not in PRESETS_BY_NAME:
                raise ValueError(
                    f"DA3_MODEL={value!r}: unknown preset {name!r}; use one of {', '.join(PRESETS_BY_NAME)}"
                )
            return cls("demo", name)
        if value.lower() in PRESETS_BY_NAME:
            return cls("hub", PRESETS_BY_NAME[value.lower()].hub_id)
        if Path(value).expanduser().is_dir():
            return cls("local", str(Path(value).expanduser().resolve()))
        return cls("hub", value)

    @property
    def untrained(self) -> bool:
        """True when these are demo weights with no training."""
        return self.kind == "demo"

    def describe(self) -> str:
        """One line for the UI, e.g. ``hub depth-anything/DA3-SMALL``."""
        return {"hub": "hub", "local": "folder", "demo": "untrained demo weights"}[self.kind] + f" {self.ref}"


@dataclass(frozen=True)
class ReconstructRequest:
    """One DA3 run: frames plus parameters (DA3 API names).

    Attributes:
        images: Frames, each (H, W, 3) uint8 RGB; sizes may differ.
        names: One display name per frame (already sanitised; never used as a path).
        model: The weights to use.
        process_res: DA3 ``process_res`` (pixels of the long or short side, see method).
        process_res_method: DA3 ``process_res_method``.
        ref_view_strategy: DA3 ``ref_view_strategy`` (acts with >= 3 views, multi-view presets).
        reference_view: Index of a frame the user forces as reference (world frame = that
            camera); None leaves the choice to ``ref_view_strategy``.
        infer_gs: Ask for the Gaussian-splatting head (only presets with one, and CUDA).
        device: ``"auto"``, ``"cuda"``, ``"mps"`` or ``"cpu"``.
        extrinsics: Known cameras, (N, 4, 4) world-to-camera (OpenCV axes) for every frame,
            or None to let DA3 estimate them (DA3 takes cameras for all views or none). A
            (N, 3, 4) is completed to 4x4. Kept as float64 (DA3 converts to float32).
        intrinsics: (N, 3, 3) pinhole K in pixels of each frame of ``images`` (DA3 rescales
            them to the processed size); given together with ``extrinsics``.
        align_to_input_ext_scale: DA3's switch for given cameras: True (DA3's default) keeps
            the given cameras and scales depth to them (the result is in the user's world
            frame and units); False keeps DA3's own scale and moves the given cameras into
            DA3's frame (a similarity fitted to its predicted poses).
        use_ray_pose: DA3's ``use_ray_pose``: poses from the ray head (slower, more accurate)
            instead of the camera decoder.
        camera_source: Where known cameras came from (``"COLMAP"``, ``"JSON"``, ``"NPZ"``);
            "" when none are given.
    """

    images: tuple[np.ndarray, ...]
    names: tuple[str, ...]
    model: ModelSpec
    process_res: int = 504
    process_res_method: str = "upper_bound_resize"
    ref_view_strategy: str = "saddle_balanced"
    reference_view: int | None = None
    infer_gs: bool = False
    device: str = "auto"
    extrinsics: np.ndarray | None = None
    intrinsics: np.ndarray | None = None
    align_to_input_ext_scale: bool = True
    use_ray_pose: bool = False
    camera_source: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "images", tuple(self.images))
        object.__setattr__(self, "names", tuple(self.names))
        if not self.images:
            raise ValueError("ReconstructRequest.images is empty: give at least one frame")
        if len(self.names) != len(self.images):
            raise ValueError(f"ReconstructRequest.names has {len(self.names)} entries for {len(self.images)} images")
        for i, img in enumerate(self.images):
            if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
                shape = getattr(img, "shape", None)
                dtype = getattr(img, "dtype", type(img).__name__)
                raise ValueError(
                    f"ReconstructRequest.images[{i}] ({self.names[i] if i < len(self.names) else i}) must be "
                    f"(H, W, 3) uint8 RGB, got shape {shape} dtype {dtype}"
                )
        if not 14 <= int(self.process_res) <= 4096:
            raise ValueError(f"ReconstructRequest.process_res must be in 14..4096, got {self.process_res}")
        if self.process_res_method not in PROCESS_RES_METHODS:
            raise ValueError(f"ReconstructRequest.process_res_method must be one of {PROCESS_RES_METHODS}")
        if self.ref_view_strategy not in REF_VIEW_STRATEGIES:
            raise ValueError(f"ReconstructRequest.ref_view_strategy must be one of {REF_VIEW_STRATEGIES}")
        if self.reference_view is not None and not 0 <= self.reference_view < len(self.images):
            raise ValueError(
                f"ReconstructRequest.reference_view {self.reference_view} is outside 0..{len(self.images) - 1}"
            )
        if self.device not in DEVICES:
            raise ValueError(f"ReconstructRequest.device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        self._check_cameras()

    def _check_cameras(self) -> None:
        """Known cameras: both or neither, one per frame, finite, rigid poses, positive focal lengths."""
        ext, ixt, n = self.extrinsics, self.intrinsics, len(self.images)
        if (ext is None) != (ixt is None):
            raise ValueError("ReconstructRequest.extrinsics and .intrinsics must both be given or both be None")
        if ext is None or ixt is None:
            if self.camera_source:
                raise ValueError("ReconstructRequest.camera_source is set but no cameras are given")
            return
        ext = np.array(ext, dtype=np.float64, copy=True)
        ixt = np.array(ixt, dtype=np.float64, copy=True)
        if ext.shape == (n, 3, 4):
            ext = np.concatenate([ext, np.tile([[[0.0, 0.0, 0.0, 1.0]]], (n, 1, 1))], axis=1)
        if ext.shape != (n, 4, 4):
            raise ValueError(
                f"ReconstructRequest.extrinsics must be ({n}, 4, 4) or ({n}, 3, 4) (one per frame: DA3 takes "
                f"cameras for all views or none), got {ext.shape}"
            )
        if ixt.shape != (n, 3, 3):
            raise ValueError(f"ReconstructRequest.intrinsics must be ({n}, 3, 3), got {ixt.shape}")
        if not (np.isfinite(ext).all() and np.isfinite(ixt).all()):
            raise ValueError("ReconstructRequest.extrinsics/intrinsics hold NaN or inf")
        rot = ext[:, :3, :3]
        det = np.linalg.det(rot)
        off = np.abs(rot @ np.swapaxes(rot, 1, 2) - np.eye(3)).max(axis=(1, 2))
        bad = np.flatnonzero(
            (np.abs(det - 1.0) > 1e-3) | (off > 1e-3) | (np.abs(ext[:, 3] - [0, 0, 0, 1]).max(axis=1) > 1e-9)
        )
        if bad.size:
            i = int(bad[0])
            raise ValueError(
                f"ReconstructRequest.extrinsics[{i}] ({self.names[i]}) is not a rigid world-to-camera pose "
                f"(det {det[i]:.4g}, max |R Rᵀ − I| {off[i]:.3g})"
            )
        bad = np.flatnonzero((ixt[:, 0, 0] <= 0) | (ixt[:, 1, 1] <= 0))
        if bad.size:
            i = int(bad[0])
            raise ValueError(f"ReconstructRequest.intrinsics[{i}] ({self.names[i]}) has a focal length <= 0")
        if self.camera_source and self.camera_source not in CAMERA_SOURCES:
            raise ValueError(
                f"ReconstructRequest.camera_source must be one of {', '.join(CAMERA_SOURCES)} (or empty), got {self.camera_source!r}"
            )
        if self.infer_gs:
            raise ValueError(
                "ReconstructRequest: infer_gs with given cameras is not offered: DA3 leaves the Gaussians in its "
                "own predicted frame, not the given cameras' world"
            )
        ext.setflags(write=False)
        ixt.setflags(write=False)
        object.__setattr__(self, "extrinsics", ext)
        object.__setattr__(self, "intrinsics", ixt)

    @property
    def n_frames(self) -> int:
        return len(self.images)

    @property
    def cameras_given(self) -> bool:
        return self.extrinsics is not None

    @property
    def camera_label(self) -> str:
        """``"given (COLMAP)"`` etc., or ``"estimated"``."""
        if not self.cameras_given:
            return "estimated"
        return f"given ({self.camera_source})" if self.camera_source else "given"


@dataclass(frozen=True)
class Gaussians:
    """3D Gaussians from DA3's GS head, in world space, as CPU numpy.

    Attributes:
        means: (G, 3) float32 world points.
        scales: (G, 3) float32 standard deviations.
        rotations: (G, 4) float32 world quaternions, wxyz.
        harmonics: (G, 3, D) float32 spherical-harmonic colour coefficients.
        opacities: (G,) or (G, 1, D) float32.
    """

    means: np.ndarray
    scales: np.ndarray
    rotations: np.ndarray
    harmonics: np.ndarray
    opacities: np.ndarray

    def __post_init__(self) -> None:
        for name in ("means", "scales", "rotations", "harmonics", "opacities"):
            if not isinstance(getattr(self, name), np.ndarray):
                raise TypeError(f"Gaussians.{name} must be a numpy array, got {type(getattr(self, name)).__name__}")


class ReadOnlyDict(dict):
    """A `dict` that refuses changes after it is built; `Reconstruction` keeps its dicts in one.

    A real ``dict`` subclass (not a `types.MappingProxyType`) so that it pickles, passes the
    worker's CPU-only pickler, serialises with `json`, and reads like a dict everywhere
    (``.get``, ``.items()``, ``**d``, ``dict(d)``). To change values, copy it: ``dict(d)``.

    It is read-only through its own methods; ``dict.__setitem__(d, k, v)`` still works, as
    with any frozen object a determined caller can change.
    """

    __slots__ = ()

    def __new__(cls, *args: Any, **kwargs: Any) -> ReadOnlyDict:
        # Filled here, not in __init__, so calling ``d.__init__(...)`` again cannot change it.
        self = super().__new__(cls)
        dict.update(self, *args, **kwargs)
        return self

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass  # already filled in __new__

    def _refuse(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(f"{type(self).__name__} is read-only; copy it first (dict(d)) to change values")

    __setitem__ = __delitem__ = __ior__ = _refuse
    clear = pop = popitem = setdefault = update = _refuse

    def __reduce__(self) -> Any:
        # The default dict-subclass pickling refills through __setitem__, which refuses.
        return (type(self), (dict(self),))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({dict.__repr__(self)})"


@dataclass(frozen=True)
class Reconstruction:
    """The CPU-only result of one DA3 run. Nothing here references torch.

    Attributes:
        depth: (N, H, W) float32 depth along the camera z axis; metres if ``is_metric``,
            otherwise relative units.
        conf: (N, H, W) float32 confidence (higher is better, >= 1 for DA3), or None
            (mono and metric presets predict none).
        extrinsics: (N, 3, 4) float32 world-to-camera [R|t], OpenCV axes, or None when the
            preset predicts no poses (mono presets): see ``geometry`` for the assumed ones.
        intrinsics: (N, 3, 3) float32 pinhole K in processed-image pixels, or None.
        images: (N, H, W, 3) uint8 RGB frames as the model saw them (processed size).
        sky: (N, H, W) bool, True where DA3 predicts sky, or None.
        is_metric: Depth is in metres.
        scale_factor: DA3's metric scale factor, or None.
        gaussians: 3D Gaussians, or None.
        names: One display name per frame, input order.
        model: The weights that produced this.
        preset: DA3 preset name of the model (e.g. ``"da3-small"``).
        device: Device it ran on (``"cuda"``, ``"mps"``, ``"cpu"``).
        timings: Seconds per stage (``load_model``, ``preprocess``, ``inference``,
            ``postprocess``, ``total``). Read-only (a `ReadOnlyDict` copy of what was given).
        params: The run parameters, for display and export metadata. Read-only, likewise.
    """

    depth: np.ndarray
    conf: np.ndarray | None
    extrinsics: np.ndarray | None
    intrinsics: np.ndarray | None
    images: np.ndarray
    sky: np.ndarray | None
    is_metric: bool
    scale_factor: float | None
    gaussians: Gaussians | None
    names: tuple[str, ...]
    model: ModelSpec
    preset: str
    device: str
    timings: dict[str, float] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        d = self.depth
        if not isinstance(d, np.ndarray) or d.ndim != 3:
            raise ValueError(f"Reconstruction.depth must be (N, H, W), got {getattr(d, 'shape', type(d))}")
        n, h, w = d.shape
        _check(self.conf, "conf", (n, h, w))
        _check(self.extrinsics, "extrinsics", (n, 3, 4))
        _check(self.intrinsics, "intrinsics", (n, 3, 3))
        _check(self.images, "images", (n, h, w, 3), np.uint8, required=True)
        _check(self.sky, "sky", (n, h, w), np.bool_)
        if (self.extrinsics is None) != (self.intrinsics is None):
            raise ValueError("Reconstruction.extrinsics and .intrinsics must both be given or both be None")
        if len(self.names) != n:
            raise ValueError(f"Reconstruction.names has {len(self.names)} entries for {n} views")
        # Frozen means frozen: a copy the caller's dict cannot reach, which refuses changes.
        object.__setattr__(self, "timings", ReadOnlyDict(self.timings))
        object.__setattr__(self, "params", ReadOnlyDict(self.params))

    @property
    def n_views(self) -> int:
        return int(self.depth.shape[0])

    @property
    def hw(self) -> tuple[int, int]:
        return int(self.depth.shape[1]), int(self.depth.shape[2])

    @property
    def has_poses(self) -> bool:
        """True when the model predicted cameras (multi-view presets)."""
        return self.extrinsics is not None

    @property
    def untrained(self) -> bool:
        """True when produced by untrained demo weights: the geometry means nothing."""
        return self.model.untrained

    @property
    def depth_unit(self) -> str:
        """``"m"`` for metric presets, ``"relative units"`` otherwise."""
        return "m" if self.is_metric else "relative units"


def _check(arr: Any, name: str, shape: tuple[int, ...], dtype: Any = None, required: bool = False) -> None:
    if arr is None:
        if required:
            raise ValueError(f"Reconstruction.{name} is required")
        return
    if not isinstance(arr, np.ndarray):
        raise TypeError(f"Reconstruction.{name} must be a numpy array, got {type(arr).__name__}")
    if arr.shape != shape:
        raise ValueError(f"Reconstruction.{name} must have shape {shape}, got {arr.shape}")
    if dtype is not None and arr.dtype != dtype:
        raise ValueError(f"Reconstruction.{name} must be {np.dtype(dtype).name}, got {arr.dtype}")


class ModelUnavailableError(Exception):
    """Raised in the worker when weights cannot be found; the message names the ways on.

    The caller receives it as a `TaskError` whose ``type_name`` is this class's name (and
    which is also an instance of this class), so the page can offer demo weights.
    """


# --------------------------------------------------------------------------------------
# Chunked runs (`da3_core.chunks`): one worker call per chunk of frames
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChunkRequest:
    """One chunk of a chunked run: a DA3 request over some of the run's frames.

    Attributes:
        request: The chunk's frames and DA3 parameters (``request.names`` are the frames' names).
        chunk: Index of the chunk in the run's plan (``-1`` for a loop-closure chunk).
        frame_ids: The run-wide index of each frame of ``request.images``, same order.
        descriptors: Also compute one global descriptor per frame (for loop closure).
    """

    request: ReconstructRequest
    chunk: int
    frame_ids: tuple[int, ...]
    descriptors: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "frame_ids", tuple(int(i) for i in self.frame_ids))
        if len(self.frame_ids) != self.request.n_frames:
            raise ValueError(
                f"ChunkRequest.frame_ids has {len(self.frame_ids)} entries for {self.request.n_frames} frames"
            )
        if len(set(self.frame_ids)) != len(self.frame_ids) or min(self.frame_ids) < 0:
            raise ValueError("ChunkRequest.frame_ids must be distinct run-wide frame indices >= 0")


@dataclass(frozen=True)
class ChunkResult:
    """What one chunk's worker call sends back: the chunk in its own frame, CPU numpy only.

    Attributes:
        rec: The chunk's `Reconstruction`, in the chunk's own world frame and scale (DA3's
            reference view of the chunk); views in ``frame_ids`` order.
        frame_ids: The run-wide index of each view of ``rec``.
        chunk: The chunk index (as requested).
        descriptors: (n, D) float32 L2-normalised global descriptor per view (from DA3's
            backbone features), or None when not asked for.
    """

    rec: Reconstruction
    frame_ids: tuple[int, ...]
    chunk: int
    descriptors: np.ndarray | None = None

    def __post_init__(self) -> None:
        if len(self.frame_ids) != self.rec.n_views:
            raise ValueError(f"ChunkResult.frame_ids has {len(self.frame_ids)} entries for {self.rec.n_views} views")
        d = self.descriptors
        if d is not None and (not isinstance(d, np.ndarray) or d.ndim != 2 or d.shape[0] != self.rec.n_views):
            raise ValueError(f"ChunkResult.descriptors must be (n_views, D), got {getattr(d, 'shape', type(d))}")


# --------------------------------------------------------------------------------------
# Feature maps (`export_feat_layers`): a worker job on an existing run's frames
# --------------------------------------------------------------------------------------

MAX_FEATURE_LAYERS = 8
"""Most backbone layers one feature-map job exports (each is N x h x w x C float16)."""


@dataclass(frozen=True)
class FeatureRequest:
    """DA3's backbone features of chosen layers for a run's frames (``export_feat_layers``).

    Attributes:
        request: The run's frames and DA3 parameters (same model, process_res, resize method,
            reference view and cameras as the run, so the features are those of its forward pass).
        layers: Backbone block indices (0-based, as DA3's ``export_feat_layers``), distinct,
            sorted here; at most `MAX_FEATURE_LAYERS`.
        run_id: The run they belong to (for messages).
    """

    request: ReconstructRequest
    layers: tuple[int, ...]
    run_id: str = ""

    def __post_init__(self) -> None:
        try:
            layers = tuple(sorted({int(x) for x in self.layers}))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"FeatureRequest.layers must be integers, got {self.layers!r}") from exc
        where = f" (run {self.run_id})" if self.run_id else ""
        if not layers:
            raise ValueError(f"FeatureRequest.layers is empty{where}: choose at least one backbone layer")
        if layers[0] < 0:
            raise ValueError(f"FeatureRequest.layers{where} must be >= 0, got {layers[0]}")
        if len(layers) > MAX_FEATURE_LAYERS:
            raise ValueError(
                f"FeatureRequest.layers{where} has {len(layers)} layers; at most {MAX_FEATURE_LAYERS} per job"
            )
        object.__setattr__(self, "layers", layers)


@dataclass(frozen=True)
class FeatureMaps:
    """What a feature-map job sends back: CPU numpy, float16 to keep it small.

    Attributes:
        layers: The backbone layers, ascending.
        maps: One (N, h, w, C) float16 array per layer (``h = H // patch``, ``w = W // patch``
            of the processed frames), views in input order (DA3's reference-view reordering
            undone).
        names: One name per view.
        image_hw: (H, W) of the processed frames.
        patch_size: Pixels per feature cell (14 for DA3).
        preset: The DA3 preset that produced them.
    """

    layers: tuple[int, ...]
    maps: tuple[np.ndarray, ...]
    names: tuple[str, ...]
    image_hw: tuple[int, int]
    patch_size: int
    preset: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(int(x) for x in self.layers))
        object.__setattr__(self, "maps", tuple(self.maps))
        object.__setattr__(self, "names", tuple(self.names))
        if len(self.maps) != len(self.layers):
            raise ValueError(f"FeatureMaps.maps has {len(self.maps)} arrays for {len(self.layers)} layers")
        n = len(self.names)
        for layer, m in zip(self.layers, self.maps):
            if not isinstance(m, np.ndarray) or m.dtype != np.float16 or m.ndim != 4 or m.shape[0] != n:
                raise ValueError(
                    f"FeatureMaps.maps of layer {layer} must be ({n}, h, w, C) float16, got "
                    f"{getattr(m, 'shape', type(m).__name__)} {getattr(m, 'dtype', '')}"
                )

    @property
    def n_views(self) -> int:
        return len(self.names)

    def layer(self, k: int) -> np.ndarray:
        """The (N, h, w, C) features of backbone layer ``k``."""
        if k not in self.layers:
            raise KeyError(f"layer {k} was not exported (these are: {', '.join(map(str, self.layers))})")
        return self.maps[self.layers.index(k)]
