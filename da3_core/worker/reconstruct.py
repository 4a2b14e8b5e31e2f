"""The DA3 run inside the worker: preprocess, forward, post-process, to a CPU `Reconstruction`.

It follows `DepthAnything3.inference()` stage by stage (its private steps, pinned by
depth-anything-3==0.1.1) so that each stage reports progress and its time, with two
changes:

* on CPU the network runs in float32 with no autocast, or under bfloat16 autocast where the
  CPU has hardware bfloat16 (`resolve_cpu_precision`); the stock ``forward`` autocasts to
  float16 on CPU (it asks ``torch.cuda.is_bf16_supported()``), which is 3-4x slower there;
* the result is assembled from CPU numpy (gaussians included), and GPU memory is freed
  after every call, failed or cancelled ones included;
* with ``use_ray_pose`` the forward runs under a seeded, forked torch generator (DA3's ray
  RANSAC draws from it), so a run repeats exactly.

Known cameras go through the same steps as in ``inference()``: the input processor rescales
the intrinsics to the processed size, ``_normalize_extrinsics`` feeds the network poses
relative to the first view with median distance 1, and ``_align_to_input_extrinsics_intrinsics``
puts the result back in the given cameras' frame (``align_to_input_ext_scale``). A forced
reference view reorders the cameras with the frames.

Everything else equals the stock call; ``tests/integration/test_parity.py`` compares the two.
"""

from __future__ import annotations

import contextlib
import logging
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from da3_core.contract import Gaussians, ModelUnavailableError, Reconstruction, ReconstructRequest
from da3_core.presets import DEFAULT_FOV_DEG, PRESETS_BY_NAME
from da3_core.runner.context import CancelledInWorker, report_progress
from da3_core.worker import cpu_fast
from da3_core.worker.model import configure_cpu_threads, get_model, resolve_cpu_precision, resolve_device

log = logging.getLogger(__name__)

# The metric preset's raw output becomes metres as depth * focal_px / 300 (DA3 README).
METRIC_FOCAL_DIVISOR = 300.0
# Mono presets predict no intrinsics; metric scaling then uses this assumed horizontal FOV.
ASSUMED_FOV_DEG = DEFAULT_FOV_DEG
# Seed of torch's generator for DA3's ray-pose RANSAC (use_ray_pose), so runs repeat exactly.
RAY_POSE_SEED = 0


def run_forward(
    model: Any,
    imgs: torch.Tensor,
    device: str,
    *,
    infer_gs: bool,
    ref_view_strategy: str,
    cpu_precision: str = "fp32",
    extrinsics: torch.Tensor | None = None,
    intrinsics: torch.Tensor | None = None,
    use_ray_pose: bool = False,
    export_feat_layers: list[int] | None = None,
    fast: cpu_fast.FastOptions | None | str = "auto",
) -> Any:
    """Run the network on ``imgs`` and return DA3's raw output (an addict ``Dict`` of tensors).

    Args:
        model: A loaded ``DepthAnything3``.
        imgs: (1, N, 3, H, W) float32 ImageNet-normalised frames on ``device``.
        device: ``cpu``, ``cuda`` or ``mps``.
        infer_gs: Run the Gaussian head.
        ref_view_strategy: DA3's reference-view strategy (used when N >= 3 and no cameras
            are given: with cameras DA3's backbone selects no reference view).
        cpu_precision: On CPU, ``fp32`` (no autocast) or ``bf16`` (bfloat16 autocast; DA3's
            heads switch autocast off themselves, as on CUDA). Ignored elsewhere: DA3's own
            ``forward`` runs, with its bfloat16/float16 autocast, as the authors ship it.
        extrinsics: (1, N, 4, 4) given cameras already normalised by DA3's
            ``_normalize_extrinsics``, or None.
        intrinsics: (1, N, 3, 3) given intrinsics at the processed size, or None.
        use_ray_pose: Poses from DA3's ray head instead of its camera decoder. Its RANSAC
            draws from torch's global generator: the call runs under a forked generator
            seeded with `RAY_POSE_SEED`, so the same inputs give the same poses.
        export_feat_layers: Backbone layers whose features DA3 puts in ``raw.aux``
            (``feat_layer_<k>``: (1, N, H/14, W/14, C)); none by default.
        fast: On CPU, the steps of `da3_core.worker.cpu_fast` to take: ``"auto"`` (those of
            `cpu_fast.for_precision`), a `cpu_fast.FastOptions`, or None (DA3's own network
            code). Ignored elsewhere.
    """
    layers = list(export_feat_layers or [])
    rng = _seeded(device) if use_ray_pose else contextlib.nullcontext()
    with rng:
        if device == "cpu":
            bf16 = cpu_precision == "bf16"
            if isinstance(fast, str):
                fast = cpu_fast.for_precision(cpu_precision)
            need_aux = use_ray_pose or infer_gs or getattr(model.model, "cam_dec", None) is None
            with (
                cpu_fast.enabled(model, fast, bf16=bf16, need_aux=need_aux),
                torch.inference_mode(),
                torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16),
            ):
                return model.model(imgs, extrinsics, intrinsics, layers, infer_gs, use_ray_pose, ref_view_strategy)
        return model.forward(imgs, extrinsics, intrinsics, layers, infer_gs, use_ray_pose, ref_view_strategy)


@contextlib.contextmanager
def _seeded(device: str) -> Iterator[None]:
    """torch's global generators forked (restored afterwards) and seeded with `RAY_POSE_SEED`."""
    devices = [torch.cuda.current_device()] if device == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(RAY_POSE_SEED)
        yield


def view_order(request: ReconstructRequest) -> tuple[list[int], str]:
    """The order the frames go to DA3 in, and the reference-view strategy to tell it.

    A forced reference view goes first and DA3 is told to take the first view. DA3's own
    choice reorders the same way inside the backbone (reference first, the others in
    order), so "view k forced" equals "strategy picked k".
    """
    n = request.n_frames
    if request.reference_view is None:
        return list(range(n)), request.ref_view_strategy
    return [request.reference_view] + [i for i in range(n) if i != request.reference_view], "first"


def reconstruct(
    request: ReconstructRequest, demo_root: str, cpu_threads: int = 0, cpu_precision: str = "auto"
) -> Reconstruction:
    """Run DA3 on the request's frames.

    Args:
        request: Frames and parameters.
        demo_root: Folder for untrained demo weights (``<workspace>/demo-weights``).
        cpu_threads: Torch threads on CPU (0: all cores).
        cpu_precision: ``auto``, ``fp32`` or ``bf16``; see `resolve_cpu_precision`. The one
            used is in ``params["cpu_precision"]`` (None off CPU).

    Returns:
        A CPU-only `Reconstruction` in the input frame order.

    Raises:
        ModelUnavailableError: The weights cannot be loaded.
        CancelledInWorker: The caller cancelled (checked between stages and before every
            network block).
        ValueError: ``cpu_precision`` or the device is not allowed.
    """
    try:
        return _reconstruct(request, demo_root, cpu_threads, cpu_precision)
    # The error travels to the server with its traceback, which logs it once (one line; the
    # traceback at DEBUG): nothing more is printed here.
    except CancelledInWorker:
        log.debug("reconstruction of %d frame(s) cancelled by its caller", request.n_frames)
        raise
    except ModelUnavailableError:
        log.debug("reconstruction not run: the weights are unavailable (%s)", request.model.describe())
        raise
    except Exception:
        log.debug(
            "reconstruction of %d frame(s) with %s failed", request.n_frames, request.model.describe(), exc_info=True
        )
        raise


def _reconstruct(
    request: ReconstructRequest,
    demo_root: str,
    cpu_threads: int,
    cpu_precision: str,
    features: dict[str, Any] | None = None,
) -> Reconstruction:
    """`reconstruct`'s body. With ``features`` (a dict the caller owns), the frame-local
    backbone features of `descriptor_layer` are put there as ``features["descriptors"]``:
    (N, D) float32 descriptors in input order (`frame_descriptors`)."""
    timings: dict[str, float] = {}
    t_start = time.perf_counter()
    device = resolve_device(request.device)
    precision: str | None = None
    precision_reason = ""
    if device == "cpu":
        precision, precision_reason = resolve_cpu_precision(cpu_precision)
        configure_cpu_threads(cpu_threads)

    report_progress("loading model", 0.02, request.model.describe())
    t = time.perf_counter()
    model, preset_name = get_model(request.model, device, Path(demo_root))
    timings["load_model"] = time.perf_counter() - t
    preset = PRESETS_BY_NAME.get(preset_name)

    n = request.n_frames
    order, strategy = view_order(request)
    images = [request.images[i] for i in order]
    # Given cameras travel with their frames (a forced reference view puts its camera first:
    # DA3 normalises the poses to the first camera). They go back in input order with the rest.
    given = request.extrinsics is not None and request.intrinsics is not None
    if given and preset is not None and not preset.multi_view:
        raise ValueError(
            f"{preset_name} takes no cameras (it has no camera encoder): known cameras need a multi-view preset"
        )
    ext_in: np.ndarray | None = None
    ixt_in: np.ndarray | None = None
    if request.extrinsics is not None and request.intrinsics is not None:  # `given`
        ext_in, ixt_in = np.array(request.extrinsics[order]), np.array(request.intrinsics[order])

    imgs: torch.Tensor | None = None
    ex_t: torch.Tensor | None = None
    raw: Any = None
    try:
        report_progress(
            "preprocessing",
            0.15,
            f"{n} frame(s) at process_res {request.process_res}"
            + (f", cameras {request.camera_label}" if given else ""),
        )
        t = time.perf_counter()
        # As inference(): DA3's input processor rescales the intrinsics to the processed size.
        imgs_cpu, ext_cpu, ixt_cpu = model._preprocess_inputs(
            images, ext_in, ixt_in, request.process_res, request.process_res_method
        )
        imgs, ex_t, in_t = model._prepare_model_inputs(imgs_cpu, ext_cpu, ixt_cpu)
        ex_t_norm = model._normalize_extrinsics(ex_t.clone() if ex_t is not None else None)
        timings["preprocess"] = time.perf_counter() - t

        infer_gs = bool(request.infer_gs and preset is not None and preset.gs_head)  # the GS head runs on CPU too
        detail = f"{preset_name} on {device}" + (f" ({precision})" if precision else "")
        report_progress("inference", 0.25, detail)
        t = time.perf_counter()
        feat_layer = descriptor_layer(model) if features is not None else None
        raw = run_forward(
            model,
            imgs,
            device,
            infer_gs=infer_gs,
            ref_view_strategy=strategy,
            cpu_precision=precision or "fp32",
            extrinsics=ex_t_norm,
            intrinsics=in_t,
            use_ray_pose=request.use_ray_pose,
            export_feat_layers=None if feat_layer is None else [feat_layer],
        )
        if features is not None:
            feat = raw.get("aux", {}).get(f"feat_layer_{feat_layer}") if feat_layer is not None else None
            desc = frame_descriptors(feat[0]) if feat is not None else None
            # Model order (a forced reference view first) back to input order.
            features["descriptors"] = None if desc is None else np.ascontiguousarray(desc[np.argsort(order)])
            features["descriptor_layer"] = feat_layer
        if device == "cuda":
            torch.cuda.synchronize()
        timings["inference"] = time.perf_counter() - t

        report_progress("post-processing", 0.9)
        t = time.perf_counter()
        prediction = model._convert_to_prediction(raw)
        # As inference(): with given cameras the result takes them (and depth their scale),
        # or, with align_to_input_ext_scale off, they are moved into DA3's predicted frame.
        prediction, alignment = align_to_given(model, ext_cpu, ixt_cpu, prediction, request.align_to_input_ext_scale)
        prediction = model._add_processed_images(prediction, imgs_cpu)
        gaussians = _gaussians_to_numpy(raw.get("gaussians")) if infer_gs else None
    except BaseException as exc:
        # The traceback's finished frames (the network's forward) still hold activations;
        # clear them so the memory is freed below, not when the error is finally dropped.
        # Their file and line numbers stay, so the caller still gets the full traceback.
        traceback.clear_frames(exc.__traceback__)
        raise
    finally:
        imgs = raw = ex_t = ex_t_norm = in_t = None
        if device == "cuda":
            torch.cuda.empty_cache()

    fields, params = _assemble(request, prediction, gaussians, order, preset_name)
    if alignment:
        params["camera_alignment"] = alignment
    params["cpu_precision"] = precision
    if precision is not None:
        params["cpu_precision_reason"] = precision_reason
    # Every timing is in place before the (frozen) result is built.
    timings["postprocess"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t_start
    result = Reconstruction(
        **fields,
        names=request.names,
        model=request.model,
        preset=preset_name,
        device=device,
        timings=timings,
        params=params,
    )
    report_progress("done", 1.0)
    return result


def descriptor_layer(model: Any) -> int | None:
    """The backbone layer whose features describe a frame on its own, or None.

    DA3's backbone attends within each frame up to ``alt_start`` and across frames after it;
    at layer ``alt_start - 1`` it may already have moved its reference view first (and DA3
    does not restore the order of exported features). Layer ``alt_start - 2`` is the last
    one that depends on the frame alone and is in input order, so the same frame gives the
    same descriptor in every chunk: what loop closure needs.
    """
    vit = getattr(getattr(getattr(model, "model", None), "backbone", None), "pretrained", None)
    alt_start = int(getattr(vit, "alt_start", -1) or -1)
    n_blocks = len(getattr(vit, "blocks", []) or [])
    if alt_start >= 2:
        return alt_start - 2
    return n_blocks - 1 if n_blocks else None


def frame_descriptors(feat: torch.Tensor) -> np.ndarray:
    """One global descriptor per frame from DA3's patch features.

    SALAD's aggregation needs weights of its own (not to be had offline): here each patch
    token is L2-normalised, the tokens are mean-pooled per frame, power-normalised (signed
    square root, which damps bursty patches) and L2-normalised.

    Args:
        feat: (N, h, w, C) features of one layer.

    Returns:
        (N, C) float32, unit norm.
    """
    f = feat.detach().float().cpu().reshape(feat.shape[0], -1, feat.shape[-1])
    f = torch.nn.functional.normalize(f, dim=-1).mean(dim=1)
    f = torch.sign(f) * torch.sqrt(torch.abs(f))
    return torch.nn.functional.normalize(f, dim=-1).numpy().astype(np.float32)


def align_to_given(
    model: Any, ext: torch.Tensor | None, ixt: torch.Tensor | None, prediction: Any, align: bool
) -> tuple[Any, str]:
    """DA3's ``_align_to_input_extrinsics_intrinsics``, with a fallback where it cannot work.

    DA3 fits a similarity (Umeyama, evo) from the given camera centres to its predicted ones
    and divides depth by its scale (or, with ``align`` off, moves the given cameras into its
    frame with it). evo refuses fewer than 3 non-collinear centres (2 cameras, one camera),
    and DA3's call then fails; for centres on a line within round-off (a straight dolly) it
    returns a rotation about that line that means nothing. There (`_collinear`) the scale is the ratio of the
    centres' spreads (predicted / given: the same quantity for collinear centres) and, with
    ``align`` off, the given cameras are expressed relative to the first one (DA3's world is
    its first view) at DA3's scale. When the given centres have no spread (one camera, or a
    camera turning on the spot) there is no scale to fit: depth keeps DA3's own scale.

    Returns:
        (prediction, how): ``how`` is "" without cameras, ``"umeyama"`` for DA3's own fit,
        else a sentence saying which fallback was used.
    """
    if ext is None or ixt is None:  # cameras come as a pair: both given or neither
        return prediction, ""
    from evo.core.geometry import GeometryException

    predicted = np.array(prediction.extrinsics, dtype=np.float64, copy=True)
    given = ext.numpy().astype(np.float64)
    if not _collinear(np.linalg.inv(given)[:, :3, 3]):
        try:
            return model._align_to_input_extrinsics_intrinsics(ext, ixt, prediction, align), "umeyama"
        except GeometryException:  # the predicted centres are degenerate
            pass
    pred4 = np.tile(np.eye(4), (len(predicted), 1, 1))
    pred4[:, :3, :] = predicted[:, :3, :]
    centres_g = np.linalg.inv(given)[:, :3, 3]
    centres_p = np.linalg.inv(pred4)[:, :3, 3]
    spread_g = float(np.sqrt(((centres_g - centres_g.mean(0)) ** 2).sum(1).mean()))
    spread_p = float(np.sqrt(((centres_p - centres_p.mean(0)) ** 2).sum(1).mean()))
    if spread_g <= 1e-9 * max(1.0, float(np.abs(centres_g).max())) or spread_p <= 0.0:
        scale, how = 1.0, "none: the given cameras share one centre, so depth keeps DA3's own scale"
    else:
        scale = spread_p / spread_g
        how = "scale from the camera centres' spread (DA3's Umeyama fit needs 3 or more non-collinear cameras)"
    prediction.intrinsics = ixt.numpy()
    if align:
        prediction.extrinsics = ext[..., :3, :].numpy()
        prediction.depth = prediction.depth / np.float32(scale)
    else:
        relative = given @ np.linalg.inv(given[0])
        relative[:, :3, 3] *= scale
        prediction.extrinsics = relative[:, :3, :]
    log.debug("known cameras: %s (scale %.6g)", how, scale)
    return prediction, how


def _collinear(centres: np.ndarray, rel_tol: float = 1e-6) -> bool:
    """Fewer than 3 camera centres, or all on one line (or one point), within ``rel_tol``:
    a similarity fitted to them leaves the rotation about that line arbitrary (evo refuses
    exact cases only; round-off lets near-exact ones through with a meaningless rotation)."""
    if len(centres) < 3:
        return True
    sv = np.linalg.svd(centres - centres.mean(0), compute_uv=False)
    return bool(sv[0] == 0.0 or sv[1] <= rel_tol * sv[0])


def _gaussians_to_numpy(g: Any) -> Gaussians | None:
    """DA3's Gaussians (tensors with a batch dimension of 1) as CPU float32 numpy."""
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
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The arrays of the result, back in input order, and the run parameters.

    Args:
        request: The request.
        prediction: DA3's ``Prediction`` (numpy fields, model order).
        gaussians: Gaussians already on the CPU, or None.
        order: ``order[j]`` is the input index of the model's view ``j``.
        preset_name: DA3 preset of the weights.

    Returns:
        (fields, params): ``fields`` are `Reconstruction` keyword arguments (depth (N, H, W)
        float32, conf (N, H, W) float32 or None, extrinsics (N, 3, 4) float32 world-to-camera
        or None, intrinsics (N, 3, 3) float32 or None, images (N, H, W, 3) uint8, sky (N, H, W)
        bool or None, is_metric, scale_factor, gaussians); ``params`` is a new dict.
    """
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
    is_metric = bool(isinstance(prediction.is_metric, (int, float)) and prediction.is_metric) or bool(
        preset and preset.metric
    )
    params: dict[str, Any] = {
        "process_res": request.process_res,
        "process_res_method": request.process_res_method,
        "ref_view_strategy": request.ref_view_strategy,
        "reference_view": request.reference_view,
        "infer_gs": gaussians is not None,
        "n_frames": request.n_frames,
        "use_ray_pose": bool(request.use_ray_pose),
        "cameras": request.camera_label
        if request.cameras_given
        else (
            "estimated" + (" (ray head)" if request.use_ray_pose else "")
            if extrinsics is not None
            else "none (monocular preset)"
        ),
        "align_to_input_ext_scale": bool(request.align_to_input_ext_scale) if request.cameras_given else None,
    }
    if request.cameras_given and request.align_to_input_ext_scale:
        # Depth now follows the given cameras' units, whatever the preset's own units were.
        is_metric = False
    if preset_name == "da3metric-large" and intrinsics is None:
        w = depth.shape[2]
        focal = (w / 2) / np.tan(np.radians(ASSUMED_FOV_DEG) / 2)
        depth = depth * np.float32(focal / METRIC_FOCAL_DIVISOR)
        params["metric_focal_px"] = float(focal)
        params["metric_assumed_fov_deg"] = ASSUMED_FOV_DEG
    scale = prediction.scale_factor
    fields: dict[str, Any] = {
        "depth": depth,
        "conf": take(prediction.conf, np.float32),
        "extrinsics": extrinsics,
        "intrinsics": intrinsics,
        "images": take(prediction.processed_images, np.uint8),
        "sky": take(prediction.sky, np.bool_),
        "is_metric": is_metric,
        "scale_factor": float(scale) if isinstance(scale, (int, float)) else None,
        "gaussians": gaussians,
    }
    return fields, params
