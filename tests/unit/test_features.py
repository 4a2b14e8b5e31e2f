"""Feature maps (`da3_core.scene.features`, the contract's `FeatureRequest` / `FeatureMaps`):
DA3's PCA visualisation checked against a hand-built feature field, the NPZ read back, and
every bad value refused with a message naming the field or the run."""

from __future__ import annotations

import numpy as np
import pytest

from da3_core.contract import FeatureMaps, FeatureRequest, ModelSpec, ReconstructRequest
from da3_core.scene import features


def maps_from_directions(
    n: int = 3, h: int = 6, w: int = 8, c: int = 32, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Features a[i, y, x] = s1 * e1 + s2 * e2 + s3 * e3 + mean (e orthonormal, decreasing
    spread), so the principal components are known: the first follows x, the second y."""
    rng = np.random.default_rng(seed)
    e, _ = np.linalg.qr(rng.normal(size=(c, 3)))
    mean = rng.normal(size=c)
    x = np.linspace(-1, 1, w)[None, None, :] * np.ones((n, h, 1))
    y = np.linspace(-1, 1, h)[None, :, None] * np.ones((n, 1, w))
    z = np.linspace(-1, 1, n)[:, None, None] * np.ones((1, h, w))
    a = 10 * x[..., None] * e[:, 0] + 5 * y[..., None] * e[:, 1] + 1 * z[..., None] * e[:, 2] + mean
    return a.astype(np.float16), e


def test_pca_colours_follow_the_principal_directions_across_all_views() -> None:
    maps, _ = maps_from_directions()
    rgb = features.pca_rgb(maps)
    assert rgb.shape == (3, 6, 8, 3) and rgb.dtype == np.uint8
    r, g, b = (rgb[..., k].astype(int) for k in range(3))
    # Red follows x (first component), monotonic along each row, same in every view and row
    # (one basis and one set of percentiles for all views: DA3's "fixed"/"global" mode).
    assert (np.diff(r, axis=2) >= 0).all() or (np.diff(r, axis=2) <= 0).all()
    assert (r == r[:1, :1]).all()
    # Green follows y; blue (the smallest spread) follows the view index.
    assert (g == g[:1, :, :1]).all() and g[:, 0, 0].tolist() != g[:, -1, 0].tolist()
    # (float16 storage adds a few levels of noise to the weakest component)
    assert np.abs(b - b[:, :1, :1]).max() <= 8 and np.ptp(b.mean(axis=(1, 2))) > 200
    # 10 % clipped at each end: the extremes saturate.
    assert r.min() == 0 and r.max() == 255
    # Deterministic: same input, same picture; the sign of each component is fixed.
    np.testing.assert_array_equal(features.pca_rgb(maps), rgb)
    # Views in another order: each view keeps its colours (SVD signs fixed by the largest loading).
    np.testing.assert_array_equal(features.pca_rgb(maps[::-1])[::-1], rgb)


def test_pca_fits_on_a_sample_when_there_are_many_tokens() -> None:
    maps, _ = maps_from_directions(n=4, h=40, w=50)
    full = features.pca_rgb(maps).astype(int)
    sampled = features.pca_rgb(maps, max_fit_tokens=2000).astype(int)
    assert np.abs(full - sampled).max() <= 12  # percentiles of a 25 % sample: within a few levels


def test_upsample_is_nearest_neighbour() -> None:
    rgb = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    up = features.upsample(rgb, (28, 42))
    assert up.shape == (28, 42, 3)
    np.testing.assert_array_equal(up[:14, :14], np.broadcast_to(rgb[0, 0], (14, 14, 3)))
    np.testing.assert_array_equal(up[14:, 28:], np.broadcast_to(rgb[1, 2], (14, 14, 3)))


def fm(layers=(5, 11)) -> FeatureMaps:
    maps, _ = maps_from_directions(n=2)
    return FeatureMaps(layers, tuple(maps for _ in layers), ("a.png", "b.png")[:2], (84, 112), 14, "da3-small")


def test_npz_reads_back_exactly() -> None:
    maps, _ = maps_from_directions(n=2)
    f = FeatureMaps((5, 11), (maps, maps[:, :, ::-1].copy()), ("a.png", "b.png"), (84, 112), 14, "da3-small")
    data = features.features_npz_bytes(f)
    with np.load(__import__("io").BytesIO(data), allow_pickle=False) as z:
        assert sorted(z.files) == ["feat_layer_11", "feat_layer_5", "image_hw", "layers", "meta", "names", "patch_size"]
        assert z["feat_layer_5"].dtype == np.float16
    back = features.read_features_npz(data)
    assert back.layers == (5, 11) and back.names == ("a.png", "b.png") and back.image_hw == (84, 112)
    assert back.preset == "da3-small" and back.patch_size == 14
    np.testing.assert_array_equal(back.layer(11), f.layer(11))
    with pytest.raises(KeyError, match="layer 7 was not exported"):
        back.layer(7)
    with pytest.raises(ValueError, match="not a feature-map NPZ"):
        features.read_features_npz(_npz_without_layers())


def _npz_without_layers() -> bytes:
    import io

    buf = io.BytesIO()
    np.savez(buf, x=np.zeros(1))
    return buf.getvalue()


def test_contract_types_refuse_bad_values() -> None:
    req = ReconstructRequest((np.zeros((28, 28, 3), np.uint8),), ("a",), ModelSpec("demo", "da3-small"))
    assert FeatureRequest(req, (11, 5, 5)).layers == (5, 11)
    with pytest.raises(ValueError, match=r"FeatureRequest.layers is empty \(run r1\)"):
        FeatureRequest(req, (), run_id="r1")
    with pytest.raises(ValueError, match="must be >= 0"):
        FeatureRequest(req, (-1,))
    with pytest.raises(ValueError, match="at most 8 per job"):
        FeatureRequest(req, tuple(range(9)))
    with pytest.raises(ValueError, match="FeatureMaps.maps of layer 5 must be .* float16"):
        FeatureMaps((5,), (np.zeros((2, 3, 4, 8), np.float32),), ("a", "b"), (42, 56), 14, "da3-small")
    with pytest.raises(ValueError, match="2 arrays for 1 layers"):
        FeatureMaps((5,), (np.zeros((2, 3, 4, 8), np.float16),) * 2, ("a", "b"), (42, 56), 14, "da3-small")


def test_layers_are_checked_against_the_preset() -> None:
    assert features.check_layers("da3-small", [11, 5]) == (5, 11)
    with pytest.raises(ValueError, match=r"da3-small has backbone layers 0..11"):
        features.check_layers("da3-small", [12])
    with pytest.raises(ValueError, match="at least one"):
        features.check_layers("da3-small", [])
    assert features.check_layers("my-own", [99]) == (99,)  # unknown backbone: the worker checks
    assert features.feature_mb(16, (378, 504), "da3-small", 1) == pytest.approx(16 * 27 * 36 * 384 * 2 / 2**20)
    assert features.feature_mb(16, (378, 504), "my-own", 1) is None
