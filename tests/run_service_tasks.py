"""A light stand-in for `da3_core.runs.tasks.reconstruct` (same signature), for the run-service tests.

It runs in the real worker but builds its `Reconstruction` from the request with numpy
alone, in milliseconds. The first frame name steers it: ``"fail"`` raises, ``"no-weights"``
raises `ModelUnavailableError` unless the weights are untrained demo ones, ``"slow"`` waits
(cancellable) for two seconds first.
"""

from __future__ import annotations

import time

import numpy as np

from da3_core.contract import ModelUnavailableError, Reconstruction, ReconstructRequest
from da3_core.runner import gpu


@gpu(duration=30)
def fake_reconstruct(
    request: ReconstructRequest, demo_root: str, cpu_threads: int = 0, *args: object
) -> Reconstruction:
    from da3_core.runner.context import check_cancelled, report_progress

    first = request.names[0]
    if first == "fail":
        raise ValueError("the fake model refuses this frame")
    if first == "no-weights" and request.model.kind != "demo":  # demo weights are built, so they always load
        raise ModelUnavailableError(f"Could not load model {request.model.ref} (fake)")
    if first == "slow":
        end = time.monotonic() + 2.0
        while time.monotonic() < end:
            check_cancelled()
            time.sleep(0.02)
    report_progress("inference", 0.5)
    n = request.n_frames
    h, w = 28, 42
    images = np.stack(
        [
            np.asarray(img[:h, :w]) if img.shape[0] >= h and img.shape[1] >= w else np.zeros((h, w, 3), np.uint8)
            for img in request.images
        ]
    )
    depth = np.ones((n, h, w), np.float32) + np.arange(n, dtype=np.float32)[:, None, None]
    ext = np.tile(np.eye(4, dtype=np.float32)[:3], (n, 1, 1))
    k = np.tile(np.array([[40, 0, w / 2], [0, 40, h / 2], [0, 0, 1]], np.float32), (n, 1, 1))
    return _result(request, depth, ext, k, images)


def _result(
    request: ReconstructRequest, depth: np.ndarray, ext: np.ndarray, k: np.ndarray, images: np.ndarray
) -> Reconstruction:
    """The stand-ins' result around their arrays (confidence 2 everywhere, no sky)."""
    n, h, w = depth.shape
    return Reconstruction(
        depth=depth,
        conf=np.full((n, h, w), 2.0, np.float32),
        extrinsics=ext,
        intrinsics=k,
        images=images,
        sky=None,
        is_metric=False,
        scale_factor=None,
        gaussians=None,
        names=request.names,
        model=request.model,
        preset="da3-small",
        device="cpu",
        timings={"total": 0.01},
        params={"process_res": request.process_res},
    )


@gpu(duration=30)
def sized_reconstruct(
    request: ReconstructRequest, demo_root: str, cpu_threads: int = 0, *args: object
) -> Reconstruction:
    """`fake_reconstruct`'s sibling whose result has the size DA3's would: each frame at
    ``process_res`` (long side, sides multiples of 14), with depth and confidence, so a test
    of the server's memory holds what a real run makes it hold (a few MB a run)."""
    from da3_core.runs.guard import processed_size

    img0 = request.images[0]
    w, h = processed_size(img0.shape[1], img0.shape[0], request.process_res, request.process_res_method)
    n = request.n_frames
    ys = (np.arange(h) * img0.shape[0] // h)[:, None]
    xs = (np.arange(w) * img0.shape[1] // w)[None, :]
    images = np.stack([np.asarray(img)[ys % img.shape[0], xs % img.shape[1]] for img in request.images])
    rng = np.random.default_rng(n)
    depth = (1.0 + rng.random((n, h, w), dtype=np.float32)) + np.arange(n, dtype=np.float32)[:, None, None]
    ext = np.tile(np.eye(4, dtype=np.float32)[:3], (n, 1, 1))
    ext[:, 0, 3] = np.arange(n, dtype=np.float32) * 0.1
    k = np.tile(np.array([[w, 0, w / 2], [0, w, h / 2], [0, 0, 1]], np.float32), (n, 1, 1))
    return _result(request, depth, ext, k, images)
