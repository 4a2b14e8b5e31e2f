"""DA3's backbone features of chosen layers (``export_feat_layers``), inside the worker.

The frames go through the same steps as the run (`da3_core.worker.reconstruct`: DA3's input
processor, the forced reference view first, known cameras normalised), then one forward
pass with ``export_feat_layers``; the heads' outputs are dropped. DA3 returns a layer's
features in the order the backbone holds the views at that layer: from block
``alt_start - 1`` on, after its reference-view selection put the reference first (and it
does not undo that for exported features). The selection is captured here (the reorder
function is wrapped for the call) and undone, then the forced reference view's order, so
the maps come back in input order, as float16 CPU numpy.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from da3_core.contract import FeatureMaps, FeatureRequest
from da3_core.runner.context import CancelledInWorker, report_progress
from da3_core.worker.model import configure_cpu_threads, get_model, resolve_cpu_precision, resolve_device
from da3_core.worker.reconstruct import run_forward, view_order

log = logging.getLogger(__name__)


@contextlib.contextmanager
def _captured_reference(found: list[int]) -> Iterator[None]:
    """Record the reference view DA3's backbone moves first (``reorder_by_reference``)."""
    from depth_anything_3.model.dinov2 import vision_transformer as vt

    original = vt.reorder_by_reference

    def wrapped(x: torch.Tensor, b_idx: torch.Tensor) -> torch.Tensor:
        if not found:  # called for x, then for local_x, with the same index
            found.append(int(b_idx.reshape(-1)[0]))
        return original(x, b_idx)

    vt.reorder_by_reference = wrapped
    try:
        yield
    finally:
        vt.reorder_by_reference = original


def _blocks(model: Any) -> tuple[int, int]:
    vit = getattr(getattr(getattr(model, "model", None), "backbone", None), "pretrained", None)
    if vit is None:  # nested presets: the any-view branch
        inner = getattr(getattr(model, "model", None), "da3", None)
        vit = getattr(getattr(inner, "backbone", None), "pretrained", None)
    n_blocks = len(getattr(vit, "blocks", []) or [])
    alt_start = int(getattr(vit, "alt_start", -1) if vit is not None else -1)
    return n_blocks, alt_start


def feature_maps(req: FeatureRequest, demo_root: str, cpu_threads: int = 0, cpu_precision: str = "auto") -> FeatureMaps:
    """The features of ``req.layers`` for the request's frames (see the module doc).

    Raises:
        ValueError: A layer the model does not have (the message names the run and the range).
        ModelUnavailableError: The weights cannot be loaded.
    """
    request = req.request
    try:
        return _feature_maps(req, demo_root, cpu_threads, cpu_precision)
    except CancelledInWorker:
        log.debug("feature maps of %d frame(s) cancelled by their caller", request.n_frames)
        raise
    except Exception:
        log.debug("feature maps of run %s failed", req.run_id, exc_info=True)
        raise


def _feature_maps(req: FeatureRequest, demo_root: str, cpu_threads: int, cpu_precision: str) -> FeatureMaps:
    request = req.request
    device = resolve_device(request.device)
    precision = "fp32"
    if device == "cpu":
        precision, _ = resolve_cpu_precision(cpu_precision)
        configure_cpu_threads(cpu_threads)
    report_progress("loading model", 0.05, request.model.describe())
    model, preset_name = get_model(request.model, device, Path(demo_root))
    n_blocks, alt_start = _blocks(model)
    bad = [k for k in req.layers if n_blocks and k >= n_blocks]
    if bad:
        raise ValueError(
            f"FeatureRequest.layers {bad} of run {req.run_id or '?'}: {preset_name} has backbone layers 0..{n_blocks - 1}"
        )
    n = request.n_frames
    order, strategy = view_order(request)
    images = [request.images[i] for i in order]
    ext_in = None if request.extrinsics is None else np.array(request.extrinsics[order])
    ixt_in = None if request.intrinsics is None else np.array(request.intrinsics[order])
    report_progress("preprocessing", 0.15, f"{n} frame(s) at process_res {request.process_res}")
    imgs_cpu, ext_cpu, ixt_cpu = model._preprocess_inputs(
        images, ext_in, ixt_in, request.process_res, request.process_res_method
    )
    imgs, ex_t, in_t = model._prepare_model_inputs(imgs_cpu, ext_cpu, ixt_cpu)
    ex_t_norm = model._normalize_extrinsics(ex_t.clone() if ex_t is not None else None)
    h_img, w_img = int(imgs.shape[-2]), int(imgs.shape[-1])
    report_progress("inference", 0.3, f"{preset_name}: layers {', '.join(map(str, req.layers))}")
    found: list[int] = []
    raw: Any = None
    try:
        with _captured_reference(found):
            raw = run_forward(
                model,
                imgs,
                device,
                infer_gs=False,
                ref_view_strategy=strategy,
                cpu_precision=precision or "fp32",
                extrinsics=ex_t_norm,
                intrinsics=in_t,
                use_ray_pose=False,  # the poses are not kept: the ray head's cost buys nothing here
                export_feat_layers=list(req.layers),
            )
        report_progress("collecting features", 0.9)
        aux = raw.get("aux", {}) or {}
        back = np.argsort(order)
        maps = []
        for k in req.layers:
            t = aux.get(f"feat_layer_{k}")
            if t is None:
                raise ValueError(f"DA3 returned no features for layer {k} (run {req.run_id or '?'})")
            a = t[0].detach().to(torch.float32).cpu().numpy().astype(np.float16)  # (N, h, w, C) model order
            if found and alt_start > 0 and k >= alt_start - 1:
                ref = found[0]  # the backbone's order was [ref, 0, 1, .., ref-1, ref+1, ..]
                backbone_order = [ref] + [i for i in range(n) if i != ref]
                a = a[np.argsort(backbone_order)]
            maps.append(np.ascontiguousarray(a[back]))
    finally:
        raw = imgs = ex_t = ex_t_norm = in_t = None
        if device == "cuda":
            torch.cuda.empty_cache()
    report_progress("done", 1.0)
    return FeatureMaps(
        layers=req.layers,
        maps=tuple(maps),
        names=request.names,
        image_hw=(h_img, w_img),
        patch_size=14,
        preset=preset_name,
    )
