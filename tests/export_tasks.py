"""Light stand-ins for the export tasks of `da3_core.runs.tasks` (same signatures), for the export
job tests: they run in the real worker, write a few small files the way the real exporters do
(under a hidden name, renamed when complete: `da3_core.atomic`), in milliseconds.

The first frame name of the reconstruction steers them: ``"fail"`` raises after writing part
of the output; ``"slow"`` writes one file, then waits (cancellable) for two seconds before the
rest, so a test can look at the folder mid-write.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from da3_core.contract import Reconstruction
from da3_core.runner import gpu

COLMAP_FILES = ("cameras.bin", "images.bin", "points3D.bin")


def _pause(first: str) -> None:
    from da3_core.runner.context import check_cancelled, report_progress

    if first != "slow":
        return
    report_progress("writing the COLMAP model", 0.3, "half")
    end = time.monotonic() + 2.0
    while time.monotonic() < end:
        check_cancelled()
        time.sleep(0.02)


@gpu(duration=30)
def fake_export_colmap(
    rec: Reconstruction, image_paths: list[str], out_dir: str, conf_percentile: float = 40.0
) -> list[str]:
    from da3_core.atomic import atomic_dir
    from da3_core.runner.context import report_progress

    first = rec.names[0]
    report_progress("writing the COLMAP model", 0.1)
    out = Path(out_dir)
    with atomic_dir(out) as partial:
        (partial / COLMAP_FILES[0]).write_bytes(json.dumps({"views": rec.n_views, "images": len(image_paths)}).encode())
        _pause(first)
        if first == "fail":
            raise ValueError("the fake exporter refuses this run")
        for name in COLMAP_FILES[1:]:
            (partial / name).write_bytes(f"{name} conf {conf_percentile}".encode())
    return sorted(str(p) for p in out.iterdir())


@gpu(duration=30)
def fake_export_gs_ply(rec: Reconstruction, out_dir: str) -> str:
    from da3_core.atomic import atomic_file

    if rec.gaussians is None:
        raise ValueError("This run has no 3D Gaussians")
    final = Path(out_dir) / "gs_ply" / "0000.ply"
    with atomic_file(final) as partial:
        partial.write_bytes(b"ply\n" + str(len(rec.gaussians.means)).encode())
        _pause(rec.names[0])
    return str(final)


@gpu(duration=30)
def fake_render_gs_video(
    rec: Reconstruction,
    out_path: str,
    trajectory: str = "interpolate_smooth",
    fps: int = 24,
    crf: int = 18,
    depth_panel: bool = False,
) -> dict[str, Any]:
    from da3_core.atomic import atomic_file
    from da3_core.runner.context import report_progress

    report_progress("compiling gsplat kernels", 0.05, "first use on this server: about a minute")
    with atomic_file(Path(out_path)) as partial:
        partial.write_bytes(b"\x00\x00\x00\x18ftypmp42")
        _pause(rec.names[0])
    return {"frames": 48, "width": 64, "height": 48, "compile_s": 0.0, "render_s": 0.01, "path": out_path}
