"""Worker-side tasks of the parity tests: our `reconstruct()` and stock DA3 on the same frames.

Called through a `da3_core.runner.Runner` by import path (``"tests.parity_tasks:compare"``), so
torch and DA3 are imported only in the worker; everything returned is CPU numpy or plain
data. The test process computes the differences.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from da3_core.contract import ReconstructRequest

log = logging.getLogger(__name__)

STOCK_MODES = ("fp32", "shipped")


@contextlib.contextmanager
def stock_autocast_off() -> Iterator[None]:
    """Run stock DA3 with every ``torch.autocast`` it opens disabled (float32 throughout).

    ``DepthAnything3.forward`` opens ``torch.autocast(device_type, dtype=float16)`` on CPU
    (it asks ``torch.cuda.is_bf16_supported()``); DA3 looks ``torch.autocast`` up at call
    time, so swapping the attribute for one that forces ``enabled=False`` leaves the stock
    code itself untouched. The worker runs one task at a time, so nothing else sees it.
    """
    import torch

    real = torch.autocast

    def disabled(*args: Any, **kwargs: Any) -> Any:
        kwargs["enabled"] = False
        return real(*args, **kwargs)

    torch.autocast = disabled  # type: ignore[assignment,misc]  # swapped on purpose (see above)
    try:
        yield
    finally:
        torch.autocast = real  # type: ignore[misc]  # put back


@contextlib.contextmanager
def record_reference_view(chosen: list[int]) -> Iterator[None]:
    """Append the view index DA3's backbone picks as reference (model order) to ``chosen``.

    DA3 picks it only for 3+ views on multi-view presets; a data-dependent strategy
    (``saddle_*``) compares scores that can tie within rounding, so the tests need to know.
    """
    import depth_anything_3.model.dinov2.vision_transformer as vt

    real = vt.select_reference_view

    def spy(x: Any, strategy: str = "saddle_balanced") -> Any:
        b_idx = real(x, strategy=strategy)
        chosen.append(int(b_idx[0]))
        return b_idx

    vt.select_reference_view = spy
    try:
        yield
    finally:
        vt.select_reference_view = real


@contextlib.contextmanager
def seeded(on: bool) -> Iterator[None]:
    """torch's CPU generator forked and seeded with our `RAY_POSE_SEED` (when ``on``)."""
    if not on:
        yield
        return
    import torch

    from da3_core.worker.reconstruct import RAY_POSE_SEED

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RAY_POSE_SEED)
        yield


def _model_order(request: ReconstructRequest) -> list[int]:
    """Input index of each view in the order the model sees them (a forced reference first)."""
    n, k = request.n_frames, request.reference_view
    return list(range(n)) if k is None else [k] + [i for i in range(n) if i != k]


def stock(request: ReconstructRequest, demo_root: str, mode: str = "fp32") -> dict[str, Any]:
    """Stock ``DepthAnything3.inference()`` on the request's frames, in input order.

    A forced ``reference_view=k`` becomes its stock equivalent: the frames reordered with
    ``k`` first (the others in order, as DA3's own reordering does), ``ref_view_strategy=
    "first"``, and the outputs put back in input order. Given cameras are reordered with
    the frames and passed as ``extrinsics``/``intrinsics`` with ``align_to_input_ext_scale``;
    ``use_ray_pose`` is passed, and such a call runs under torch's generator forked and
    seeded as our path seeds it (DA3's ray RANSAC draws from it).

    Args:
        request: Frames and parameters (``model`` must be demo weights or a local folder).
        demo_root: Folder of demo weights.
        mode: ``fp32`` (autocast disabled) or ``shipped`` (DA3's CPU float16 autocast).

    Returns:
        ``depth`` (N, H, W) float32, ``conf`` (N, H, W) or None, ``extrinsics`` (N, 3, 4) or
        None, ``intrinsics`` (N, 3, 3) or None, ``images`` (N, H, W, 3) uint8, ``sky``
        (N, H, W) bool or None; raw stock values (no metric scaling); ``ref_view``: the
        input index of the view DA3 took as reference, or None when it picked none.
    """
    import torch

    from da3_core.worker.model import get_model, resolve_device

    if mode not in STOCK_MODES:
        raise ValueError(f"mode must be one of {STOCK_MODES}, got {mode!r}")
    # The same cached model our path uses: the same weights, loaded once. Our cancel hooks on
    # it do nothing outside a cancelled call.
    model, _ = get_model(request.model, resolve_device("cpu"), Path(demo_root))
    order = _model_order(request)
    strategy = "first" if request.reference_view is not None else request.ref_view_strategy
    images = [request.images[i] for i in order]
    ctx = stock_autocast_off() if mode == "fp32" else contextlib.nullcontext()
    cams = {}
    if request.extrinsics is not None:
        cams = {
            "extrinsics": np.array(request.extrinsics[order]),
            "intrinsics": np.array(request.intrinsics[order]),
            "align_to_input_ext_scale": request.align_to_input_ext_scale,
        }
    chosen: list[int] = []
    with ctx, record_reference_view(chosen), seeded(request.use_ray_pose):
        pred = model.inference(
            images,
            process_res=request.process_res,
            process_res_method=request.process_res_method,
            ref_view_strategy=strategy,
            use_ray_pose=request.use_ray_pose,
            **cams,
        )
    inverse = np.argsort(order)

    def take(a: Any) -> np.ndarray | None:
        if a is None:
            return None
        if isinstance(a, torch.Tensor):
            a = a.float().cpu().numpy()
        return np.ascontiguousarray(np.asarray(a)[inverse])

    ext = take(pred.extrinsics)
    return {
        "depth": take(pred.depth).astype(np.float32),
        "conf": take(pred.conf),
        "extrinsics": None if ext is None else np.ascontiguousarray(ext[:, :3, :]),
        "intrinsics": take(pred.intrinsics),
        "images": take(pred.processed_images),
        "sky": take(pred.sky),
        "ref_view": order[chosen[-1]] if chosen else None,
    }


def ours(request: ReconstructRequest, demo_root: str, cpu_precision: str = "fp32") -> dict[str, Any]:
    """Our `reconstruct()` called directly in the worker: its arrays, params, preset, and
    ``ref_view`` (input index of the reference view DA3 took, or None; see `stock`)."""
    from da3_core.worker.reconstruct import reconstruct

    chosen: list[int] = []
    with record_reference_view(chosen):
        rec = reconstruct(request, demo_root, cpu_precision=cpu_precision)
    return {
        "depth": rec.depth,
        "conf": rec.conf,
        "extrinsics": rec.extrinsics,
        "intrinsics": rec.intrinsics,
        "images": rec.images,
        "sky": rec.sky,
        "params": dict(rec.params),
        "preset": rec.preset,
        "ref_view": _model_order(request)[chosen[-1]] if chosen else None,
    }


def compare(
    request: ReconstructRequest,
    demo_root: str,
    cpu_precision: str = "fp32",
    stock_modes: tuple[str, ...] = ("fp32",),
) -> dict[str, Any]:
    """Ours at ``cpu_precision`` and stock in each of ``stock_modes``, on the same frames.

    Returns:
        ``{"ours": ours(...), "stock": {mode: stock(...)}}``.
    """
    return {
        "ours": ours(request, demo_root, cpu_precision),
        "stock": {mode: stock(request, demo_root, mode) for mode in stock_modes},
    }


def model_info(request: ReconstructRequest, demo_root: str) -> dict[str, Any]:
    """Facts about the loaded model the tests rely on: how many cancel hooks it carries."""
    from da3_core.worker.model import get_model, resolve_device

    model, preset = get_model(request.model, resolve_device("cpu"), Path(demo_root))
    return {"preset": preset, "cancel_hooks": len(getattr(model, "_da3_cancel_hooks", []))}


def precision_choice(requested: str, env_value: str | None, cpuinfo: str) -> dict[str, Any]:
    """How the worker resolves ``cpu_precision=requested`` with ``DA3_CPU_PRECISION=env_value``
    (None: unset), and which bfloat16 flags it reads in the ``/proc/cpuinfo`` text ``cpuinfo``.

    Returns:
        ``{"flags": [...], "precision": str, "reason": str}`` or ``{"flags": [...], "error": str}``.
    """
    import os

    from da3_core.worker.model import cpu_bf16_flags, resolve_cpu_precision

    old = os.environ.pop("DA3_CPU_PRECISION", None)
    if env_value is not None:
        os.environ["DA3_CPU_PRECISION"] = env_value
    try:
        out: dict[str, Any] = {"flags": cpu_bf16_flags(cpuinfo)}
        try:
            out["precision"], out["reason"] = resolve_cpu_precision(requested)
        except ValueError as exc:
            out["error"] = str(exc)
        return out
    finally:
        os.environ.pop("DA3_CPU_PRECISION", None)
        if old is not None:
            os.environ["DA3_CPU_PRECISION"] = old
