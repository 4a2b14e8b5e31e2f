"""One chunk of a chunked run, inside the worker: DA3 on the chunk's frames plus a global
descriptor per frame (for loop closure), as a CPU-only `ChunkResult`."""

from __future__ import annotations

import logging
from typing import Any

from da3_core.contract import ChunkRequest, ChunkResult
from da3_core.runner.context import CancelledInWorker
from da3_core.worker import reconstruct as da3

log = logging.getLogger(__name__)


def reconstruct_chunk(
    chunk: ChunkRequest, demo_root: str, cpu_threads: int = 0, cpu_precision: str = "auto"
) -> ChunkResult:
    """Run DA3 on one chunk (see `da3_core.worker.reconstruct.reconstruct`).

    The chunk comes back in its own world frame (DA3's reference view of the chunk); the
    parent aligns chunks afterwards. Descriptors come from the same forward pass
    (`da3_core.worker.reconstruct.descriptor_layer`), so they cost no extra network call.
    """
    features: dict[str, Any] | None = {} if chunk.descriptors else None
    try:
        rec = da3._reconstruct(chunk.request, demo_root, cpu_threads, cpu_precision, features=features)
    except CancelledInWorker:
        log.debug("chunk %d cancelled by its caller", chunk.chunk)
        raise
    except Exception:
        log.debug("chunk %d (%d frame(s)) failed", chunk.chunk, chunk.request.n_frames, exc_info=True)
        raise
    desc = (features or {}).get("descriptors")
    return ChunkResult(rec=rec, frame_ids=chunk.frame_ids, chunk=chunk.chunk, descriptors=desc)
