"""The Depth Anything 3 model presets, as plain data the parent may read without torch.

Facts from `depth_anything_3/configs` (0.1.1) and the hub org `depth-anything`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Preset:
    """One DA3 model preset.

    Attributes:
        name: DA3's preset (config) name, e.g. ``"da3-small"``; the key of ``MODEL_REGISTRY``.
        hub_id: Hugging Face hub repository holding trained weights.
        label: Human-readable name for the UI.
        params: Approximate parameter count, for the UI.
        multi_view: Predicts camera poses and confidence from several views.
        metric: Depth is in metres (after DA3's own scaling).
        sky: Predicts a sky mask.
        gs_head: Has a Gaussian-splatting head (``infer_gs`` possible).
    """

    name: str
    hub_id: str
    label: str
    params: str
    multi_view: bool
    metric: bool
    sky: bool
    gs_head: bool


PRESETS: tuple[Preset, ...] = (
    Preset("da3-small", "depth-anything/DA3-SMALL", "DA3 Small", "0.08B", True, False, False, False),
    Preset("da3-base", "depth-anything/DA3-BASE", "DA3 Base", "0.12B", True, False, False, False),
    Preset("da3-large", "depth-anything/DA3-LARGE-1.1", "DA3 Large 1.1", "0.35B", True, False, False, False),
    Preset("da3-giant", "depth-anything/DA3-GIANT-1.1", "DA3 Giant 1.1", "1.15B", True, False, False, True),
    Preset(
        "da3nested-giant-large",
        "depth-anything/DA3NESTED-GIANT-LARGE-1.1",
        "DA3 Nested Giant-Large 1.1 (metric)",
        "1.40B",
        True,
        True,
        True,
        True,
    ),
    Preset(
        "da3metric-large",
        "depth-anything/DA3METRIC-LARGE",
        "DA3 Metric Large (mono)",
        "0.35B",
        False,
        True,
        True,
        False,
    ),
    Preset(
        "da3mono-large", "depth-anything/DA3MONO-LARGE", "DA3 Mono Large (mono)", "0.35B", False, False, True, False
    ),
)

PRESETS_BY_NAME: dict[str, Preset] = {p.name: p for p in PRESETS}
PRESETS_BY_HUB_ID: dict[str, Preset] = {p.hub_id.lower(): p for p in PRESETS}
# Older hub ids (before the 1.1 refresh) still name the same architecture.
PRESETS_BY_HUB_ID.update(
    {
        "depth-anything/da3-large": PRESETS_BY_NAME["da3-large"],
        "depth-anything/da3-giant": PRESETS_BY_NAME["da3-giant"],
        "depth-anything/da3nested-giant-large": PRESETS_BY_NAME["da3nested-giant-large"],
    }
)

CPU_DEFAULT = "da3-small"
GPU_DEFAULT = "da3nested-giant-large"

PROCESS_RES_METHODS: tuple[str, ...] = (
    "upper_bound_resize",
    "lower_bound_resize",
    "upper_bound_crop",
    "lower_bound_crop",
)
REF_VIEW_STRATEGIES: tuple[str, ...] = ("saddle_balanced", "saddle_sim_range", "first", "middle")
# Where the worker may run: "auto" picks cuda, then mps, then cpu.
DEVICES: tuple[str, ...] = ("auto", "cuda", "mps", "cpu")
DEFAULT_FOV_DEG = 60.0  # assumed horizontal field of view for presets that predict no intrinsics
PATCH_SIZE = 14  # DA3's ViT patch: processed sides are multiples of it
PROCESS_RES_RANGE: tuple[int, int] = (14, 4096)


def snap_process_res(value: int, method: str = "upper_bound_resize") -> int:
    """The ``process_res`` DA3 actually runs at for a requested ``value``.

    DA3 makes each processed side a multiple of 14: the ``*_resize`` methods round to the
    nearest multiple (ties up), the ``*_crop`` methods floor (`InputProcessor` in
    depth_anything_3/utils/io/input_processor.py). The result is clamped to 14..4096.
    """
    lo, hi = PROCESS_RES_RANGE
    v = int(value)
    if method.endswith("_crop"):
        snapped = (v // PATCH_SIZE) * PATCH_SIZE
    else:
        down = (v // PATCH_SIZE) * PATCH_SIZE
        snapped = down + PATCH_SIZE if v - down >= PATCH_SIZE - (v - down) else down
    return max(lo, min(hi - hi % PATCH_SIZE, snapped))


# DA3's camera paths for the novel-view video of the Gaussians (its ``trj_mode``), the
# page's default first. Plain data here so the page and the worker share one list.
GS_TRAJECTORIES: tuple[str, ...] = (
    "interpolate_smooth",
    "smooth",
    "interpolate",
    "extend",
    "wander",
    "dolly_zoom",
    "original",
)


def preset_for(name_or_hub_id: str) -> Preset | None:
    """Find a preset by DA3 preset name or hub id (case-insensitive); None if unknown."""
    key = name_or_hub_id.strip()
    return PRESETS_BY_NAME.get(key.lower()) or PRESETS_BY_HUB_ID.get(key.lower())


def default_preset(device: str) -> Preset:
    """The preset a user gets by default on ``device`` (``"cuda"``, ``"mps"`` or ``"cpu"``)."""
    return PRESETS_BY_NAME[GPU_DEFAULT if device == "cuda" else CPU_DEFAULT]


def preset_name_in_folder(folder: str | Path) -> str | None:
    """The DA3 preset name a checkpoint folder was saved from, or None.

    Reads ``model_name`` from the folder's ``config.json`` (written by DA3's
    ``save_pretrained``); no torch. The name is returned as written, known preset or not.

    Args:
        folder: A checkpoint folder (``config.json`` + ``model.safetensors``).

    Returns:
        The preset name (e.g. ``"da3-small"``), or None when ``config.json`` is missing,
        unreadable, or has no string ``model_name``.
    """
    import json

    try:
        name = json.loads((Path(folder).expanduser() / "config.json").read_text(encoding="utf-8"))["model_name"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return name if isinstance(name, str) and name else None
