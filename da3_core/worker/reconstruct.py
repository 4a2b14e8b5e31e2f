"""The DA3 run inside the worker: preprocess, forward, post-process, to a CPU `Reconstruction`.

It follows `DepthAnything3.inference()` stage by stage (its private steps, pinned by
depth-anything-3==0.1.1) so that each stage reports progress and its time, with two
changes:

* on CPU the network runs in float32 with no autocast: the stock ``forward`` autocasts to
  float16 on CPU (it asks ``torch.cuda.is_bf16_supported()``), which is 3-4x slower there;
* the result is assembled from CPU numpy (gaussians included), and GPU memory is freed
  after every call.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from da3_core.contract import Gaussians, ReconstructRequest, Reconstruction
from da3_core.presets import PRESETS_BY_NAME
from da3_core.worker.context import report_progress
from da3_core.worker.model import configure_cpu_threads, get_model, resolve_device

# The metric preset's raw output becomes metres as depth * focal_px / 300 (DA3 README).
METRIC_FOCAL_DIVISOR = 300.0
# Mono presets predict no intrinsics; metric scaling then uses this assumed horizontal FOV.
ASSUMED_FOV_DEG = 60.0


def run_forward(model: Any, imgs: torch.Tensor, device: str, *, infer_gs: bool, ref_view_strategy: str) -> Any:
    """Run the network on ``imgs`` (1, N, 3, H, W) and return DA3's raw output dict.

    CPU: float32, no autocast, ``inference_mode``. Elsewhere: DA3's own ``forward``
    (bfloat16/float16 autocast on CUDA, as the authors ship it).
    """
    if device == "cpu":
        with torch.inference_mode():
            return model.model(imgs, None, None, [], infer_gs, False, ref_view_strategy)
    return model.forward(imgs, None, None, [], infer_gs, False, ref_view_strategy)


def reconstruct(request: ReconstructRequest, demo_root: str, cpu_threads: int = 0) -> Reconstruction:
    """Run DA3 on the request's frames.

    Args:
        request: Frames and parameters.
        demo_root: Folder for untrained demo weights (``<workspace>/demo-weights``).
        cpu_threads: Torch threads on CPU (0: all cores).

    Returns:
        A CPU-only `Reconstruction` in the input frame order.
    """
    timings: dict[str, float] = {}
    t_start = time.perf_counter()
    device = resolve_device(request.device)
    if device == "cpu":
        configure_cpu_threads(cpu_threads)

    report_progress("loading model", 0.02, request.model.describe())
    t = time.perf_counter()
    model, preset_name = get_model(request.model, device, Path(demo_root))
    timings["load_model"] = time.perf_counter() - t
    preset = PRESETS_BY_NAME.get(preset_name)

    # A forced reference view goes first and DA3 is told to take the first view.
    n = request.n_frames
    order = list(range(n))
    strategy = request.ref_view_strategy
    if request.reference_view is not None:
        order = [request.reference_view] + [i for i in range(n) if i != request.reference_view]
        strategy = "first"
    images = [request.images[i] for i in order]

    report_progress("preprocessing", 0.15, f"{n} frame(s) at process_res {request.process_res}")
    t = time.perf_counter()
    imgs_cpu, _, _ = model._preprocess_inputs(images, None, None, request.process_res, request.process_res_method)
    imgs, _, _ = model._prepare_model_inputs(imgs_cpu, None, None)
    timings["preprocess"] = time.perf_counter() - t

    infer_gs = bool(request.infer_gs and preset is not None and preset.gs_head and device == "cuda")
    report_progress("inference", 0.25, f"{preset_name} on {device}")
    t = time.perf_counter()
    raw = run_forward(model, imgs, device, infer_gs=infer_gs, ref_view_strategy=strategy)
    if device == "cuda":
        torch.cuda.synchronize()
    timings["inference"] = time.perf_counter() - t

    report_progress("post-processing", 0.9)
    t = time.perf_counter()
    prediction = model._convert_to_prediction(raw)
    prediction = model._add_processed_images(prediction, imgs_cpu)
    gaussians = _gaussians_to_numpy(raw.get("gaussians")) if infer_gs else None
    del raw, imgs
    result = _assemble(request, prediction, gaussians, order, preset_name, device, timings)
    if device == "cuda":
        torch.cuda.empty_cache()
    timings["postprocess"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t_start
    report_progress("done", 1.0)
    return result


def _gaussians_to_numpy(g: Any) -> Gaussians | None:
    if g is None:
        return None

    def arr(t: torch.Tensor) -> np.ndarray:
        a = t.detach().float().cpu().numpy()
        return a[0] if a.ndim >= 2 and a.shape[0] == 1 else a  # drop the batch dimension

    return Gaussians(arr(g.means), arr(g.scales), arr(g.rotations), arr(g.harmonics), arr(g.opacities))


def _assemble(
    request: ReconstructRequest,
    prediction: Any,
    gaussians: Gaussians | None,
    order: list[int],
    preset_name: str,
    device: str,
    timings: dict[str, float],
) -> Reconstruction:
    inverse = np.argsort(order)  # back to the input order

    def take(a: Any, dtype: Any) -> np.ndarray | None:
        if a is None:
            return None
        return np.ascontiguousarray(np.asarray(a)[inverse], dtype=dtype)

    preset = PRESETS_BY_NAME.get(preset_name)
    depth = take(prediction.depth, np.float32)
    assert depth is not None
    extrinsics = take(prediction.extrinsics, np.float32)
    if extrinsics is not None and extrinsics.shape[1:] == (4, 4):
        extrinsics = np.ascontiguousarray(extrinsics[:, :3, :])
    intrinsics = take(prediction.intrinsics, np.float32)
    # DA3 0.1.1 reads is_metric with getattr on an addict Dict, which yields an empty Dict
    # unless the nested model set it: trust the preset as well.
    is_metric = bool(isinstance(prediction.is_metric, (int, float)) and prediction.is_metric) or bool(preset and preset.metric)
    params: dict[str, Any] = {
        "process_res": request.process_res,
        "process_res_method": request.process_res_method,
        "ref_view_strategy": request.ref_view_strategy,
        "reference_view": request.reference_view,
        "infer_gs": gaussians is not None,
        "n_frames": request.n_frames,
    }
    if preset_name == "da3metric-large" and intrinsics is None:
        w = depth.shape[2]
        focal = (w / 2) / np.tan(np.radians(ASSUMED_FOV_DEG) / 2)
        depth = depth * np.float32(focal / METRIC_FOCAL_DIVISOR)
        params["metric_focal_px"] = float(focal)
        params["metric_assumed_fov_deg"] = ASSUMED_FOV_DEG
    scale = prediction.scale_factor
    return Reconstruction(
        depth=depth,
        conf=take(prediction.conf, np.float32),
        extrinsics=extrinsics,
        intrinsics=intrinsics,
        images=take(prediction.processed_images, np.uint8),
        sky=take(prediction.sky, np.bool_),
        is_metric=is_metric,
        scale_factor=float(scale) if isinstance(scale, (int, float)) else None,
        gaussians=gaussians,
        names=request.names,
        model=request.model,
        preset=preset_name,
        device=device,
        timings=timings,
        params=params,
    )
