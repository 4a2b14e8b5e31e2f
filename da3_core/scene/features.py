"""DA3's backbone feature maps (``export_feat_layers``): which layers there are, their PCA
colour images, and their NPZ (numpy only: the parent draws them without torch).

The PCA follows DA3's own visualisation (``depth_anything_3/utils/export/feat_vis.py``:
``PCARGBVisualizer(basis_mode="fixed", percentile_mode="global", clip_percent=10)``): one
mean and one 3-component basis fitted over the tokens of all views of a layer, every view
projected on it, each component clipped to its 10th..90th percentile over all views and
scaled to 0..1. So one colour means the same feature direction in every view. DA3 fits with
``torch.pca_lowrank`` (randomised); here an exact SVD on at most ``max_fit_tokens`` tokens
drawn with a fixed seed, with each component's sign fixed (largest loading positive), so
the same features always give the same picture.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass

import numpy as np

from da3_core.contract import FeatureMaps


@dataclass(frozen=True)
class Backbone:
    """The ViT backbone of a DA3 preset (``depth_anything_3/configs``, 0.1.1).

    Attributes:
        blocks: Number of transformer blocks (valid layers are 0..blocks-1).
        dim: Feature channels per token.
        out_layers: The layers DA3's depth head reads (a good default choice).
        alt_start: First block that attends across views (-1: none, mono presets).
    """

    blocks: int
    dim: int
    out_layers: tuple[int, ...]
    alt_start: int


_VITS = Backbone(12, 384, (5, 7, 9, 11), 4)
_VITB = Backbone(12, 768, (5, 7, 9, 11), 4)
_VITL = Backbone(24, 1024, (11, 15, 19, 23), 8)
_VITG = Backbone(40, 1536, (19, 27, 33, 39), 13)
BACKBONES: dict[str, Backbone] = {
    "da3-small": _VITS,
    "da3-base": _VITB,
    "da3-large": _VITL,
    "da3-giant": _VITG,
    "da3nested-giant-large": _VITG,  # the any-view (giant) branch exports the features
    "da3metric-large": Backbone(24, 1024, (4, 11, 17, 23), -1),
    "da3mono-large": Backbone(24, 1024, (4, 11, 17, 23), -1),
}
PATCH_SIZE = 14
FEATURES_FILENAME = "features.npz"
CLIP_PERCENT = 10.0


def backbone(preset: str) -> Backbone | None:
    """The backbone of a preset name, or None when unknown (a custom checkpoint)."""
    return BACKBONES.get(preset)


def check_layers(preset: str, layers: list[int] | tuple[int, ...]) -> tuple[int, ...]:
    """``layers`` sorted and checked against the preset's backbone.

    Raises:
        ValueError: Empty, or a layer outside 0..blocks-1 (the message names the preset).
    """
    out = tuple(sorted({int(x) for x in layers}))
    if not out:
        raise ValueError("choose at least one backbone layer")
    b = backbone(preset)
    if b is not None and (out[0] < 0 or out[-1] >= b.blocks):
        raise ValueError(f"layers {list(out)}: {preset} has backbone layers 0..{b.blocks - 1}")
    return out


def feature_mb(n_views: int, image_hw: tuple[int, int], preset: str, n_layers: int) -> float | None:
    """MB of the float16 features of ``n_layers`` layers, or None for an unknown preset."""
    b = backbone(preset)
    if b is None:
        return None
    h, w = image_hw[0] // PATCH_SIZE, image_hw[1] // PATCH_SIZE
    return n_views * h * w * b.dim * 2 * n_layers / 2**20


def pca_rgb(
    maps: np.ndarray, *, clip_percent: float = CLIP_PERCENT, max_fit_tokens: int = 200_000, seed: int = 0
) -> np.ndarray:
    """PCA colour images of one layer's features, DA3's way (see the module doc).

    Args:
        maps: (N, h, w, C) features of all views (any float dtype).
        clip_percent: Percent clipped at each end of every component (0 <= p < 50).
        max_fit_tokens: Most tokens the basis and percentiles are fitted on (drawn with ``seed``).

    Returns:
        (N, h, w, 3) uint8 RGB.
    """
    x = np.asarray(maps)
    if x.ndim != 4:
        raise ValueError(f"maps must be (N, h, w, C), got {x.shape}")
    if not 0.0 <= clip_percent < 50.0:
        raise ValueError(f"clip_percent must be in [0, 50), got {clip_percent}")
    n, h, w, c = x.shape
    flat = x.reshape(-1, c)
    rows = flat.shape[0]
    if rows == 0:
        return np.zeros((n, h, w, 3), dtype=np.uint8)
    fit_idx = (
        np.sort(np.random.default_rng(seed).choice(rows, size=max_fit_tokens, replace=False))
        if rows > max_fit_tokens
        else slice(None)
    )
    fit = np.nan_to_num(flat[fit_idx].astype(np.float32), nan=0.0, posinf=1e6, neginf=-1e6)
    mean = fit.mean(axis=0, keepdims=True)
    _, _, vt = np.linalg.svd(fit - mean, full_matrices=False)
    basis = vt[:3].T  # (C, k), k <= 3
    signs = np.sign(basis[np.abs(basis).argmax(axis=0), np.arange(basis.shape[1])])
    basis = basis * np.where(signs == 0, 1.0, signs)
    if basis.shape[1] < 3:
        basis = np.concatenate([basis, np.zeros((c, 3 - basis.shape[1]), dtype=basis.dtype)], axis=1)
    fit_pcs = (fit - mean) @ basis
    lo = np.percentile(fit_pcs, clip_percent, axis=0)
    hi = np.percentile(fit_pcs, 100.0 - clip_percent, axis=0)
    denom = np.maximum(hi - lo, 1e-8)
    out = np.empty((rows, 3), dtype=np.uint8)
    step = 1 << 18
    for s in range(0, rows, step):  # bounded float32 work arrays
        part = np.nan_to_num(flat[s : s + step].astype(np.float32), nan=0.0, posinf=1e6, neginf=-1e6)
        pcs = np.clip(((part - mean) @ basis - lo) / denom, 0.0, 1.0)
        out[s : s + step] = np.rint(pcs * 255.0).astype(np.uint8)
    return out.reshape(n, h, w, 3)


def upsample(rgb: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """(h, w, 3) nearest-neighbour enlarged to ``hw`` (as DA3's ``cv2.INTER_NEAREST``)."""
    h, w = rgb.shape[:2]
    rows = np.minimum((np.arange(hw[0]) * h) // max(hw[0], 1), h - 1)
    cols = np.minimum((np.arange(hw[1]) * w) // max(hw[1], 1), w - 1)
    return rgb[rows][:, cols]


def features_npz_bytes(fm: FeatureMaps) -> bytes:
    """The features as an NPZ: ``feat_layer_<k>`` (N, h, w, C) float16 per layer (DA3's
    ``aux`` key names), ``names``, ``layers``, ``image_hw``, ``patch_size`` and a ``meta``
    JSON string. Reads back with ``np.load(..., allow_pickle=False)``."""
    arrays: dict[str, np.ndarray] = {f"feat_layer_{k}": m for k, m in zip(fm.layers, fm.maps)}
    arrays["names"] = np.array(fm.names, dtype=np.str_)
    arrays["layers"] = np.array(fm.layers, dtype=np.int32)
    arrays["image_hw"] = np.array(fm.image_hw, dtype=np.int32)
    arrays["patch_size"] = np.array(fm.patch_size, dtype=np.int32)
    meta = {
        "preset": fm.preset,
        "about": "DA3 backbone features (export_feat_layers), tokens after the backbone's norm, "
        "views in input order; feat_layer_<k>[i, y, x] covers pixels [y*patch, (y+1)*patch) x "
        "[x*patch, (x+1)*patch) of the processed frame i",
    }
    arrays["meta"] = np.array(json.dumps(meta))
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # float16 features barely compress; plain zip is faster
    return buf.getvalue()


def read_features_npz(data: bytes | str) -> FeatureMaps:
    """Inverse of `features_npz_bytes` (bytes, or a path).

    Raises:
        ValueError: Not such an NPZ (a key is missing or malformed).
    """
    src = io.BytesIO(data) if isinstance(data, bytes) else data
    try:
        with np.load(src, allow_pickle=False) as z:
            layers = tuple(int(x) for x in z["layers"])
            maps = tuple(np.asarray(z[f"feat_layer_{k}"]) for k in layers)
            meta = json.loads(str(z["meta"]))
            hw = tuple(int(x) for x in z["image_hw"])
            return FeatureMaps(
                layers=layers,
                maps=maps,
                names=tuple(str(s) for s in z["names"]),
                image_hw=(hw[0], hw[1]),
                patch_size=int(z["patch_size"]),
                preset=str(meta.get("preset", "")),
            )
    except (KeyError, OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"not a feature-map NPZ of this app: {exc}") from exc


__all__ = [
    "BACKBONES",
    "FEATURES_FILENAME",
    "Backbone",
    "backbone",
    "check_layers",
    "feature_mb",
    "features_npz_bytes",
    "pca_rgb",
    "read_features_npz",
    "upsample",
]
