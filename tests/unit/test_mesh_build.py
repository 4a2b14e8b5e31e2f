"""What the mesh export is built from (`mesh_build.mesh_inputs`: the Point cloud page's
confidence rule and the sky mask) and the normal-PNG export (`export.normals_png_zip_bytes`)."""

from __future__ import annotations

import dataclasses
import io
import json
import zipfile

import numpy as np

from da3_core.scene import export, geometry, mesh_build, normals
from tests.unit import synthetic


def test_inputs_drop_low_confidence_and_sky_pixels_with_da3s_threshold() -> None:
    rec = synthetic.box_scene(2)
    sky = np.zeros(rec.depth.shape, dtype=bool)
    sky[:, :5] = True
    rec = dataclasses.replace(rec, sky=sky)
    inputs = mesh_build.mesh_inputs(rec, conf_percentile=40.0)
    pop = np.sort(rec.conf[np.isfinite(rec.depth) & (rec.depth > 0)])
    want = min(max(1.05, geometry.percentile_sorted(pop, 40.0)), geometry.percentile_sorted(pop, 90.0))
    assert inputs.conf_threshold == want
    kept = np.isfinite(inputs.depth)
    assert not kept[:, :5].any() and (rec.conf[kept] >= want).all()
    assert ((rec.conf >= want) & ~sky == kept).all()
    assert 0.4 < inputs.kept < 0.6
    np.testing.assert_array_equal(inputs.extrinsics, rec.extrinsics.astype(np.float64))
    # Nothing dropped at percentile 0 and without sky; mono presets get assumed cameras.
    assert mesh_build.mesh_inputs(dataclasses.replace(rec, sky=None), 0.0).kept == 1.0
    mono = synthetic.mono_box_scene(50.0)
    assert (
        mesh_build.mesh_inputs(mono, fov_deg=50.0).intrinsics[0][0, 0]
        == geometry.intrinsics_from_fov(*mono.hw, 50.0)[0, 0]
    )


def test_normal_pngs_hold_every_view_and_decode_to_the_normals() -> None:
    rec = synthetic.box_scene(2)
    data = export.export_bytes("normals_png", rec)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        doc = json.loads(zf.read(export.NORMALS_FILE))
        assert [v["file"] for v in doc["views"]] == ["normals/0000.png", "normals/0001.png"]
        assert doc["intrinsics"] == "predicted" and "OpenCV" in doc["frame"]
        for i, v in enumerate(doc["views"]):
            back, valid = normals.read_normals_png16(zf.read(v["file"]))
            want, want_valid = normals.normals_from_depth(rec.depth[i], rec.intrinsics[i])
            np.testing.assert_array_equal(valid, want_valid)
            assert np.abs(back[valid] - want[valid]).max() < 2e-5
            assert v["valid"] == round(float(want_valid.mean()), 4) and v["name"] == rec.names[i]
