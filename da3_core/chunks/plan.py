"""Which frames each chunk of a chunked run takes, and the chunk size the guard picks.

Pure functions: no Streamlit, no I/O. A chunked run of N frames runs as chunks of C frames
whose neighbours share O frames (the overlap the alignment uses). Chunk k covers
``[start_k, start_k + C)``; starts advance by ``C - O`` and the last chunk is pulled back
to end at frame N, so every chunk has C frames and every overlap at least O.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

MAX_CHUNK = 120
"""DA3-Streaming's chunk size (its overlap is 60): larger chunks add little to the alignment."""
MIN_CHUNK = 2


@dataclass(frozen=True)
class ChunkPlan:
    """The chunks of a run.

    Attributes:
        n_frames: Frames in the run.
        chunk: Frames per chunk (C).
        overlap: Frames shared by neighbouring chunks (O), at least.
        spans: ``(start, end)`` of each chunk, end exclusive, in order.
    """

    n_frames: int
    chunk: int
    overlap: int
    spans: tuple[tuple[int, int], ...]

    @property
    def n_chunks(self) -> int:
        return len(self.spans)

    @property
    def frames_computed(self) -> int:
        """Frames the network sees in all (overlaps count twice)."""
        return sum(e - s for s, e in self.spans)

    def owner(self, frame: int) -> int:
        """The chunk whose copy of ``frame`` goes into the result: in an overlap, the earlier
        chunk up to the overlap's middle and the later one after it."""
        for k, (s, e) in enumerate(self.spans):
            nxt = self.spans[k + 1] if k + 1 < len(self.spans) else None
            if nxt is None or frame < (nxt[0] + e + 1) // 2:
                if s <= frame < e:
                    return k
        raise ValueError(f"frame {frame} is outside 0..{self.n_frames - 1}")

    def owned(self, k: int) -> tuple[int, int]:
        """``(first, end)`` of the frames chunk ``k`` supplies to the result."""
        s, e = self.spans[k]
        first = s if k == 0 else (s + self.spans[k - 1][1] + 1) // 2
        end = e if k + 1 == len(self.spans) else (self.spans[k + 1][0] + e + 1) // 2
        return first, end

    def overlap_with_previous(self, k: int) -> tuple[int, int]:
        """``(first, end)`` of the frames chunk ``k`` shares with chunk ``k - 1``."""
        if k == 0:
            raise ValueError("chunk 0 has no previous chunk")
        return self.spans[k][0], self.spans[k - 1][1]

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "spans": [list(s) for s in self.spans]}

    @staticmethod
    def from_json(data: dict[str, Any]) -> ChunkPlan:
        return ChunkPlan(
            int(data["n_frames"]),
            int(data["chunk"]),
            int(data["overlap"]),
            tuple((int(s), int(e)) for s, e in data["spans"]),
        )


def plan_chunks(n_frames: int, chunk: int, overlap: int) -> ChunkPlan:
    """Chunks of ``chunk`` frames overlapping by at least ``overlap``.

    Raises:
        ValueError: ``n_frames`` < 1, ``chunk`` < 2, or ``overlap`` not in 1..chunk-1.
    """
    if n_frames < 1:
        raise ValueError(f"a chunked run needs at least one frame, got {n_frames}")
    if chunk < MIN_CHUNK:
        raise ValueError(f"chunk size must be at least {MIN_CHUNK} frames, got {chunk}")
    if not 1 <= overlap < chunk:
        raise ValueError(f"overlap must be between 1 and chunk size - 1 ({chunk - 1}), got {overlap}")
    if n_frames <= chunk:
        return ChunkPlan(n_frames, chunk, overlap, ((0, n_frames),))
    step = chunk - overlap
    starts = [0]
    while starts[-1] + chunk < n_frames:
        starts.append(min(starts[-1] + step, n_frames - chunk))
    return ChunkPlan(n_frames, chunk, overlap, tuple((s, s + chunk) for s in starts))


def default_overlap(chunk: int) -> int:
    """A third of the chunk (at least 1, at most 60): each chunk adds two thirds new frames,
    and the overlap still gives the alignment whole depth maps of several views."""
    return max(1, min(60, chunk // 3))


def largest_chunk(fits: Callable[[int], bool], n_frames: int, most: int = MAX_CHUNK) -> int:
    """The largest C in ``MIN_CHUNK..min(n_frames, most)`` with ``fits(C)`` (memory grows with
    C, so a binary search), or 0 when not even two frames fit."""
    lo, hi = MIN_CHUNK, max(MIN_CHUNK, min(n_frames, most))
    if not fits(lo):
        return 0
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def chunk_sizes(sizes: Sequence[tuple[int, int]], plan: ChunkPlan) -> list[list[tuple[int, int]]]:
    """The frame sizes of each chunk (for the guard's estimate of each)."""
    return [list(sizes[s:e]) for s, e in plan.spans]
