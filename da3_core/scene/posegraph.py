"""Sim(3) pose graph over video chunks, and loop-closure candidates (numpy + scipy).

Each node is a chunk with its own world frame; ``S_k`` maps node k's frame into the common
world (node ``fixed``, usually 0, is the world). Edges are measured relative transforms:
sequential edges between consecutive chunks (from their shared frames, `align.align_overlap`)
and loop-closure edges between chunks that see the same place again. `optimize` spreads the
drift accumulated along the chain over the loop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import least_squares
from scipy.sparse import coo_matrix
from scipy.spatial.transform import Rotation

from da3_core.scene.align import Sim3

EDGE_KINDS = ("sequential", "loop")

_BLOCK_ELEMENTS = 4_000_000
"""Similarity entries computed at once by `loop_candidates` (float32: 16 MB)."""


@dataclass(frozen=True)
class Edge:
    """A measured relative transform between two nodes.

    Attributes:
        i: First node.
        j: Second node (!= i).
        t_ij: Maps node j's frame into node i's frame; ideally ``S_i^-1 ∘ S_j == t_ij``.
        weight: Multiplies the edge's residual (>= 0; 0 switches the edge off).
        kind: ``"sequential"`` or ``"loop"``.
    """

    i: int
    j: int
    t_ij: Sim3
    weight: float = 1.0
    kind: str = "sequential"

    def __post_init__(self) -> None:
        if int(self.i) == int(self.j):
            raise ValueError(f"Edge needs two different nodes, got i = j = {self.i}")
        if int(self.i) < 0 or int(self.j) < 0:
            raise ValueError(f"Edge nodes must be >= 0, got ({self.i}, {self.j})")
        if not (math.isfinite(float(self.weight)) and float(self.weight) >= 0):
            raise ValueError(f"Edge.weight must be finite and >= 0, got {self.weight}")
        if self.kind not in EDGE_KINDS:
            raise ValueError(f"Edge.kind must be one of {EDGE_KINDS}, got {self.kind!r}")
        if not isinstance(self.t_ij, Sim3):
            raise ValueError(f"Edge.t_ij must be a Sim3, got {type(self.t_ij).__name__}")
        object.__setattr__(self, "i", int(self.i))
        object.__setattr__(self, "j", int(self.j))
        object.__setattr__(self, "weight", float(self.weight))


def chain(edges_sequential: list[Edge], n: int) -> list[Sim3]:
    """World transforms from sequential edges alone: ``S_0 = I``, ``S_k = S_{k-1} ∘ t_{k-1,k}``.

    Args:
        edges_sequential: Exactly one edge between each pair of consecutive nodes (k-1, k),
            k = 1..n-1; an edge written as (k, k-1) is used inverted. Their ``kind`` is not
            checked.
        n: Number of nodes (>= 1).

    Returns:
        n transforms, node k's frame into node 0's frame.

    Raises:
        ValueError: An edge joins non-consecutive nodes or nodes >= n, or a consecutive pair
            has no edge or more than one.
    """
    if int(n) < 1:
        raise ValueError(f"chain needs n >= 1 nodes, got {n}")
    step: dict[int, Sim3] = {}
    for e in edges_sequential:
        if max(e.i, e.j) >= n:
            raise ValueError(f"edge ({e.i}, {e.j}) refers to a node >= n = {n}")
        if abs(e.i - e.j) != 1:
            raise ValueError(f"chain takes edges between consecutive nodes only, got ({e.i}, {e.j})")
        k = max(e.i, e.j)
        if k in step:
            raise ValueError(f"more than one sequential edge between nodes {k - 1} and {k}")
        step[k] = e.t_ij if e.i == k - 1 else e.t_ij.inverse()
    missing = [k for k in range(1, n) if k not in step]
    if missing:
        raise ValueError(f"no sequential edge between nodes {[(k - 1, k) for k in missing]}")
    out = [Sim3.identity()]
    for k in range(1, n):
        out.append(out[-1].compose(step[k]))
    return out


def _reanchor(transforms: list[Sim3], fixed: int) -> list[Sim3]:
    """Same relative poses with node ``fixed`` at identity (a change of world frame)."""
    inv = transforms[fixed].inverse()
    return [Sim3.identity() if k == fixed else inv.compose(s) for k, s in enumerate(transforms)]


def _edge_arrays(edges: list[Edge]) -> dict[str, np.ndarray]:
    return {
        "i": np.array([e.i for e in edges], dtype=np.int64),
        "j": np.array([e.j for e in edges], dtype=np.int64),
        "s": np.array([e.t_ij.scale for e in edges]),
        "r": np.array([e.t_ij.rotation for e in edges]).reshape(-1, 3, 3),
        "t": np.array([e.t_ij.translation for e in edges]).reshape(-1, 3),
        "w": np.array([e.weight for e in edges]),
    }


def _residuals(s: np.ndarray, r: np.ndarray, t: np.ndarray, ed: dict[str, np.ndarray], length: float,
               with_scale: bool) -> np.ndarray:
    """(E * 7,) or (E * 6,) residuals of all edges for node arrays s (n,), r (n,3,3), t (n,3)."""
    ii, jj = ed["i"], ed["j"]
    si, ri, ti = s[ii], r[ii], t[ii]
    sj, rj, tj = s[jj], r[jj], t[jj]
    # S_i^-1 ∘ S_j: node j's frame into node i's frame.
    s_rel = sj / si
    r_rel = np.einsum("eba,ebc->eac", ri, rj)
    t_rel = np.einsum("eba,eb->ea", ri, tj - ti) / si[:, None]
    # S_err = t_ij^-1 ∘ (S_i^-1 ∘ S_j), a map of node j's frame onto itself (identity when exact).
    s_err = s_rel / ed["s"]
    r_err = np.einsum("eba,ebc->eac", ed["r"], r_rel)
    t_err = np.einsum("eba,eb->ea", ed["r"], t_rel - ed["t"]) / ed["s"][:, None]
    parts = [Rotation.from_matrix(r_err).as_rotvec(), t_err / length]
    if with_scale:
        parts.append(np.log(s_err)[:, None])
    return (np.concatenate(parts, axis=1) * ed["w"][:, None]).reshape(-1)


def optimize(
    n: int,
    edges: list[Edge],
    initial: list[Sim3] | None = None,
    fixed: int = 0,
    with_scale: bool = True,
) -> tuple[list[Sim3], dict]:
    """Least-squares Sim(3) (or SE(3)) pose graph.

    Unknowns: every node's transform but node ``fixed`` (held at identity), each as a right
    perturbation ``S_k = S_k^0 ∘ exp(δ_k)`` of its initial value (``δ = [rotvec, t,
    log s]``, so large absolute rotations never reach the rotation vector's singularity).
    Residual per edge, times its weight: ``[rotvec(R_err), t_err / L, log(s_err)]`` with
    ``S_err = t_ij^-1 ∘ S_i^-1 ∘ S_j`` (in node j's frame) and L the median edge translation
    ``|t_ij.translation| / t_ij.scale`` over all edges (1 when that is 0), so radians and
    lengths weigh alike whatever the units. Solved by ``scipy.optimize.least_squares``
    (``trf``, ``x_scale='jac'``, finite differences over a sparse Jacobian pattern: each
    edge touches two nodes, so hundreds of nodes stay fast).

    Args:
        n: Number of nodes.
        edges: Sequential and loop edges (node indices < n).
        initial: Starting transforms (n of them), or None for `chain` of the sequential
            edges. They are first re-expressed so that node ``fixed`` is the identity.
        fixed: The node held at identity (the world frame).
        with_scale: False for metric reconstructions: SE(3), every scale is exactly 1 (the
            scale residual is dropped; edges and ``initial`` must have scale 1).

    Returns:
        ``(transforms, info)``: n `Sim3` mapping each node's frame into node ``fixed``'s, and
        ``{"cost_before", "cost_after", "iterations", "n_loop_edges"}`` with costs
        ``0.5 * sum(residual^2)`` and iterations the Jacobian evaluations. Without loop edges
        the result is exactly `chain` of the sequential edges (re-anchored at ``fixed``;
        ``initial`` is not used), with no solve.

    Raises:
        ValueError: Bad node indices, an ``initial`` of the wrong length, scales != 1 with
            ``with_scale=False``, or (without ``initial``) sequential edges `chain` refuses.
    """
    n = int(n)
    fixed = int(fixed)
    if n < 1:
        raise ValueError(f"optimize needs n >= 1 nodes, got {n}")
    if not 0 <= fixed < n:
        raise ValueError(f"fixed node {fixed} is outside 0..{n - 1}")
    for e in edges:
        if max(e.i, e.j) >= n:
            raise ValueError(f"edge ({e.i}, {e.j}) refers to a node >= n = {n}")
    if not with_scale:
        scaled = [(e.i, e.j) for e in edges if not math.isclose(e.t_ij.scale, 1.0, rel_tol=0, abs_tol=1e-9)]
        if scaled:
            raise ValueError(f"with_scale=False (SE(3)) needs edges with scale 1; edges {scaled[:5]} have another scale")
    loops = [e for e in edges if e.kind == "loop"]
    sequential = [e for e in edges if e.kind == "sequential"]

    ed = _edge_arrays(edges)
    lengths = np.linalg.norm(ed["t"], axis=1) / ed["s"] if edges else np.zeros(0)
    med = float(np.median(lengths)) if lengths.size else 0.0
    length = med if med > 0 and math.isfinite(med) else 1.0

    def cost_of(nodes_: list[Sim3]) -> float:
        if not edges:
            return 0.0
        s, r, t = (np.array([x.scale for x in nodes_]), np.array([x.rotation for x in nodes_]),
                   np.array([x.translation for x in nodes_]))
        return 0.5 * float(np.sum(_residuals(s, r, t, ed, length, with_scale) ** 2))

    if not loops:
        # Sequential edges alone form a tree: chaining meets every one exactly; nothing to solve.
        out = chain(sequential, n)
        if fixed != 0:
            out = _reanchor(out, fixed)
        cost = cost_of(out)
        return out, {"cost_before": cost, "cost_after": cost, "iterations": 0, "n_loop_edges": 0}

    if initial is None:
        start = chain(sequential, n)
    else:
        if len(initial) != n:
            raise ValueError(f"initial must hold {n} transforms, got {len(initial)}")
        start = list(initial)
    if not with_scale:
        bad = [k for k, x in enumerate(start) if not math.isclose(x.scale, 1.0, rel_tol=0, abs_tol=1e-9)]
        if bad:
            raise ValueError(f"with_scale=False (SE(3)) needs initial transforms with scale 1; nodes {bad[:5]} differ")
    # Node `fixed` becomes the identity (a change of world frame; residuals are unchanged).
    start = _reanchor(start, fixed)
    cost_before = cost_of(start)

    s0 = np.array([x.scale for x in start])
    r0 = np.array([x.rotation for x in start])
    t0 = np.array([x.translation for x in start])
    if not with_scale:
        s0 = np.ones(n)  # exactly 1, not 1 +- 1e-12

    p = 7 if with_scale else 6  # parameters per node, and residual rows per edge
    free = np.array([k for k in range(n) if k != fixed], dtype=np.int64)

    def nodes(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        s, r, t = s0.copy(), r0.copy(), t0.copy()
        d = x.reshape(len(free), p)
        # S_k^0 ∘ exp(δ): s0 e^l, R0 Exp(ω), s0 R0 δt + t0.
        t[free] = s0[free, None] * np.einsum("kab,kb->ka", r0[free], d[:, 3:6]) + t0[free]
        r[free] = r0[free] @ Rotation.from_rotvec(d[:, :3]).as_matrix()
        if with_scale:
            s[free] = s0[free] * np.exp(d[:, 6])
        return s, r, t

    if len(free) == 0:
        return [Sim3.identity()], {"cost_before": cost_before, "cost_after": cost_before, "iterations": 0,
                                   "n_loop_edges": len(loops)}

    # Sparsity: edge e's residual rows depend on the parameters of its two nodes only.
    col_of = np.full(n, -1, dtype=np.int64)
    col_of[free] = np.arange(len(free))
    rows, cols = [], []
    for e_idx, e in enumerate(edges):
        for node in (e.i, e.j):
            c = col_of[node]
            if c < 0:
                continue
            rr, cc = np.meshgrid(np.arange(e_idx * p, (e_idx + 1) * p), np.arange(c * p, (c + 1) * p), indexing="ij")
            rows.append(rr.ravel())
            cols.append(cc.ravel())
    sparsity = coo_matrix(
        (np.ones(sum(len(r) for r in rows)), (np.concatenate(rows), np.concatenate(cols))),
        shape=(len(edges) * p, len(free) * p),
    ).tocsr()

    def fun(x: np.ndarray) -> np.ndarray:
        return _residuals(*nodes(x), ed, length, with_scale)

    res = least_squares(fun, np.zeros(len(free) * p), jac_sparsity=sparsity, method="trf", x_scale="jac",
                        ftol=1e-12, xtol=1e-12, gtol=1e-12, max_nfev=200)
    s, r, t = nodes(res.x)
    out = []
    for k in range(n):
        if k == fixed:
            out.append(Sim3.identity())
        else:
            # Re-orthonormalise: Exp and products keep R a rotation up to rounding only.
            out.append(Sim3(1.0 if not with_scale else float(s[k]), Rotation.from_matrix(r[k]).as_matrix(), t[k]))
    info = {"cost_before": cost_before, "cost_after": float(res.cost), "iterations": int(res.njev or 0),
            "n_loop_edges": len(loops)}
    return out, info


def loop_candidates(
    descriptors: np.ndarray,
    chunk_of: np.ndarray,
    *,
    min_chunk_gap: int = 2,
    threshold: float = 0.85,
    max_loops: int = 8,
    nms_frames: int = 5,
) -> list[tuple[int, int, float]]:
    """Frame pairs that look alike but lie in chunks far apart: loop-closure candidates.

    A pair (i, j), i < j, qualifies when ``|chunk_of[j] - chunk_of[i]| >= min_chunk_gap`` and
    its cosine similarity is >= ``threshold``. Qualifying pairs are taken best first (ties:
    smaller i, then smaller j) with non-maximum suppression: a pair with ``|i - i'| <=
    nms_frames`` and ``|j - j'| <= nms_frames`` of an accepted pair (i', j') is dropped; at most
    ``max_loops`` are returned.

    Similarities are computed in row blocks (float32, about 4M entries each) against the
    later frames only, and only the best ``max_loops * (2 * nms_frames + 1)^2`` qualifying
    pairs are kept between blocks: greedy suppression of ``max_loops`` winners never looks
    further down the ranking than that (each winner suppresses at most that box), so the
    result is exact while N = 5000 never needs an N x N matrix.

    Args:
        descriptors: (N, D) global image descriptors, L2-normalised (rows are normalised
            again here; a zero row has similarity 0 with everything).
        chunk_of: (N,) int chunk index of each frame (a frame in an overlap: its first chunk).
        min_chunk_gap: Least chunk distance of a pair (>= 0).
        threshold: Least cosine similarity.
        max_loops: Most pairs returned (>= 0).
        nms_frames: Suppression radius in frames (>= 0).

    Returns:
        ``[(i, j, similarity), ...]`` best first, ints and a float.
    """
    desc = np.asarray(descriptors, dtype=np.float32)
    chunk = np.asarray(chunk_of).astype(np.int64)
    if desc.ndim != 2:
        raise ValueError(f"descriptors must be (N, D), got {desc.shape}")
    n = desc.shape[0]
    if chunk.shape != (n,):
        raise ValueError(f"chunk_of must be ({n},), got {chunk.shape}")
    if int(max_loops) < 0 or int(nms_frames) < 0 or int(min_chunk_gap) < 0:
        raise ValueError("max_loops, nms_frames and min_chunk_gap must be >= 0")
    max_loops, nms_frames = int(max_loops), int(nms_frames)
    if n < 2 or max_loops == 0:
        return []
    norms = np.linalg.norm(desc, axis=1, keepdims=True)
    desc = desc / np.where(norms > 0, norms, 1.0)

    keep_best = max_loops * (2 * nms_frames + 1) ** 2
    best_i = np.zeros(0, dtype=np.int64)
    best_j = np.zeros(0, dtype=np.int64)
    best_s = np.zeros(0, dtype=np.float32)
    rows_per_block = max(1, _BLOCK_ELEMENTS // n)
    for b0 in range(0, n - 1, rows_per_block):
        b1 = min(n - 1, b0 + rows_per_block)
        sim = desc[b0:b1] @ desc[b0:].T  # (rows, n - b0): columns from b0, only j > i matter
        ii = np.arange(b0, b1)[:, None]
        jj = np.arange(b0, n)[None, :]
        ok = (jj > ii) & (np.abs(chunk[b0:][None, :] - chunk[b0:b1][:, None]) >= int(min_chunk_gap))
        ok &= sim >= np.float32(threshold)
        ri, cj = np.nonzero(ok)
        if ri.size == 0:
            continue
        best_i = np.concatenate([best_i, ri + b0])
        best_j = np.concatenate([best_j, cj + b0])
        best_s = np.concatenate([best_s, sim[ri, cj]])
        if best_s.size > keep_best:
            order = np.lexsort((best_j, best_i, -best_s))[:keep_best]
            best_i, best_j, best_s = best_i[order], best_j[order], best_s[order]

    order = np.lexsort((best_j, best_i, -best_s))
    accepted: list[tuple[int, int, float]] = []
    for o in order:
        i, j = int(best_i[o]), int(best_j[o])
        if any(abs(i - ai) <= nms_frames and abs(j - aj) <= nms_frames for ai, aj, _ in accepted):
            continue
        accepted.append((i, j, float(best_s[o])))
        if len(accepted) >= max_loops:
            break
    return accepted
