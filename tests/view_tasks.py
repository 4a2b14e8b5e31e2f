"""A light stand-in for the feature-map task of `da3_core.runs.tasks` (same signature): in the
real worker it returns `FeatureMaps` made from the frames' pixels (no model), so the job's
path (queued, the float16 arrays crossing the contract, the parent writing the NPZ) takes
milliseconds. The request's first frame name ``"fail"`` makes it raise."""

from __future__ import annotations

import numpy as np

from da3_core.contract import FeatureMaps, FeatureRequest
from da3_core.runner import gpu


@gpu(duration=30)
def fake_export_features(
    req: FeatureRequest, demo_root: str, cpu_threads: int = 0, cpu_precision: str = "auto"
) -> FeatureMaps:
    from da3_core.runner.context import report_progress

    r = req.request
    if r.names[0] == "fail":
        raise ValueError(f"the fake feature task refuses run {req.run_id}")
    report_progress("inference", 0.5, f"layers {req.layers}")
    h, w = r.images[0].shape[0] // 14, r.images[0].shape[1] // 14
    maps = []
    for k in req.layers:
        cells = np.stack([im[: h * 14 : 14, : w * 14 : 14].astype(np.float32) for im in r.images])  # (N, h, w, 3)
        maps.append(np.concatenate([cells, cells * k], axis=-1).astype(np.float16))
    return FeatureMaps(req.layers, tuple(maps), r.names, (h * 14, w * 14), 14, "da3-small")
