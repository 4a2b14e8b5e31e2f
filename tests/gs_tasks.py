"""Worker tasks for the Gaussian-head-on-CPU check (imported by name in the worker)."""

from __future__ import annotations

from typing import Any


def gs_head_on_cpu(process_res: int = 70, n_views: int = 2) -> dict[str, Any]:
    """DA3's network with a GS head (DA3-SMALL's backbone + DA3-GIANT's GS head and adapter,
    resized to the small width; untrained), run forward on CPU with ``infer_gs``; returns the
    Gaussians as `da3_core.worker.reconstruct` hands them on, and the device they were on."""
    import pathlib

    import torch
    from depth_anything_3 import cfg
    from omegaconf import OmegaConf

    from da3_core.worker.reconstruct import _gaussians_to_numpy

    configs = pathlib.Path(cfg.__file__).parent / "configs"
    small = OmegaConf.load(configs / "da3-small.yaml")
    giant = OmegaConf.load(configs / "da3-giant.yaml")
    head = OmegaConf.to_container(giant.gs_head, resolve=True)
    head.update(dim_in=small.head.dim_in, features=small.head.features, out_channels=list(small.head.out_channels))
    small.gs_head = head
    small.gs_adapter = giant.gs_adapter
    torch.manual_seed(0)
    net = cfg.create_object(small).eval()
    images = torch.rand(1, n_views, 3, process_res, process_res)
    with torch.inference_mode():
        out = net(images, None, None, [], True, False, "first")
    return {"device": str(out.gaussians.means.device), "gaussians": _gaussians_to_numpy(out.gaussians)}
