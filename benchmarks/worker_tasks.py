"""Benchmark tasks that run inside the worker (imported there by name)."""

from __future__ import annotations

import time
from pathlib import Path

from da3_core.contract import ReconstructRequest


def time_inprocess(request: ReconstructRequest, demo_root: str, repeats: int = 1) -> list[float]:
    """Wall seconds of our reconstruction called directly in this process (no runner)."""
    from da3_core.worker.reconstruct import reconstruct

    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        reconstruct(request, demo_root)
        out.append(time.perf_counter() - t)
    return out


def time_stock_vs_ours(request: ReconstructRequest, demo_root: str, repeats: int = 2) -> dict[str, list[float]]:
    """Interleaved wall seconds: stock ``DepthAnything3.inference()`` vs our CPU path, same model and frames."""
    from da3_core.worker.model import configure_cpu_threads, get_model
    from da3_core.worker.reconstruct import reconstruct

    configure_cpu_threads(0)
    model, _ = get_model(request.model, "cpu", Path(demo_root))
    images = list(request.images)
    out: dict[str, list[float]] = {"stock": [], "ours": []}
    reconstruct(request, demo_root)  # warm both paths' kernels once
    model.inference(images, process_res=request.process_res, process_res_method=request.process_res_method)
    for _ in range(repeats):
        t = time.perf_counter()
        model.inference(images, process_res=request.process_res, process_res_method=request.process_res_method)
        out["stock"].append(time.perf_counter() - t)
        t = time.perf_counter()
        reconstruct(request, demo_root)
        out["ours"].append(time.perf_counter() - t)
    return out
