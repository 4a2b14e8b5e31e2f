"""The oracle's worker task: a stand-in for the real chunk task that answers from ground truth.

Same signature as the real chunk task; the "model" (``chunk.request.model.ref``) is an
oracle folder made by `tests.oracle.make_oracle`. Everything it does is in
`tests.oracle.simulate_chunk` (numpy only): the chunk comes back in its own world frame at
a random scale, seeded by the oracle's seed and the chunk's frame ids, so the same chunk
always gives bit-identical arrays.
"""

from __future__ import annotations

from da3_core.contract import ChunkRequest, ChunkResult
from da3_core.runner import gpu


@gpu(duration=120)
def oracle_chunk(chunk: ChunkRequest, demo_root: str, cpu_threads: int = 0, cpu_precision: str = "auto") -> ChunkResult:
    """Answer ``chunk`` from the oracle folder ``chunk.request.model.ref`` (in the worker).

    ``demo_root``, ``cpu_threads`` and ``cpu_precision`` are accepted for the real task's
    signature and ignored.

    Raises:
        ValueError: An image differs from the saved frame (the message names it), or a frame
            id is outside the oracle.
        FileNotFoundError: The model folder is not an oracle.
    """
    from da3_core.runner.context import report_progress
    from tests.oracle import simulate_chunk

    return simulate_chunk(chunk, progress=report_progress)
