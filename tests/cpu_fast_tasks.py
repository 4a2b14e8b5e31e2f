"""Worker-side tasks of tests/integration/test_cpu_fast.py: DA3's network forward with the
steps of `da3_core.worker.cpu_fast` on or off. Options cross as plain dicts (the test process
stays torch-free); only numpy comes back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from da3_core.contract import ReconstructRequest

FIELDS = ("depth", "depth_conf", "extrinsics", "intrinsics", "ray", "ray_conf")


def forward(
    request: ReconstructRequest,
    demo_root: str,
    precision: str,
    options: dict[str, Any] | str | None,
    use_ray_pose: bool = False,
) -> dict[str, Any]:
    """`run_forward` on the request's frames. ``options``: None (DA3's own code), ``"auto"``,
    or `FastOptions` fields (the rest from `cpu_fast.OFF`)."""
    import dataclasses

    from da3_core.worker import cpu_fast
    from da3_core.worker.model import get_model
    from da3_core.worker.reconstruct import run_forward

    model, _ = get_model(request.model, "cpu", Path(demo_root))
    imgs_cpu, _, _ = model._preprocess_inputs(
        list(request.images), None, None, request.process_res, request.process_res_method
    )
    imgs, _, _ = model._prepare_model_inputs(imgs_cpu, None, None)
    fast: Any = options
    if isinstance(options, dict):
        fast = dataclasses.replace(cpu_fast.OFF, **options)
    raw = run_forward(
        model,
        imgs,
        "cpu",
        infer_gs=False,
        ref_view_strategy=request.ref_view_strategy,
        cpu_precision=precision,
        fast=fast,
        use_ray_pose=use_ray_pose,
    )
    out = {k: raw[k].float().numpy() for k in FIELDS if k in raw}
    out["active_after"] = cpu_fast.active() is not None
    out["patched"] = bool(getattr(model.model, "_da3_cpu_fast", False))
    return out


def defaults() -> dict[str, dict[str, Any]]:
    """The default steps per precision, as dicts."""
    import dataclasses

    from da3_core.worker import cpu_fast

    return {p: dataclasses.asdict(cpu_fast.for_precision(p)) for p in ("fp32", "bf16")}


def flops(request: ReconstructRequest, demo_root: str, options: dict[str, Any] | str | None) -> float:
    """FLOPs of `forward` in float32 (``torch.utils.flop_counter``; attention on its math path)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, sdpa_kernel(SDPBackend.MATH):
        forward(request, demo_root, "fp32", options)
    return float(counter.get_total_flops())
