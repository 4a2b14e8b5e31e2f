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
from scipy.sparse import coo_matrix, csr_matrix, diags
from scipy.sparse.linalg import spsolve
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


def _so3_exp(v: np.ndarray) -> np.ndarray:
    """(E, 3) rotation vectors to (E, 3, 3) matrices (Rodrigues; series near 0)."""
    theta = np.linalg.norm(v, axis=1)
    small = theta < 1e-4
    th = np.where(small, 1.0, theta)
    a = np.where(small, 1.0 - theta**2 / 6.0, np.sin(th) / th)
    b = np.where(small, 0.5 - theta**2 / 24.0, (1.0 - np.cos(th)) / th**2)
    k = np.zeros(v.shape[:1] + (3, 3))
    k[:, 0, 1], k[:, 0, 2], k[:, 1, 2] = -v[:, 2], v[:, 1], -v[:, 0]
    k[:, 1, 0], k[:, 2, 0], k[:, 2, 1] = v[:, 2], -v[:, 1], v[:, 0]
    return np.eye(3) + a[:, None, None] * k + b[:, None, None] * (k @ k)


def _so3_log(r: np.ndarray) -> np.ndarray:
    """(E, 3, 3) rotations to (E, 3) rotation vectors (angle in [0, pi]).

    Much faster than scipy's Rotation for the many small batches of the solver. Angles
    above 120 degrees take the axis from the symmetric part, where ``w / sin`` loses accuracy.
    """
    w = 0.5 * np.stack([r[:, 2, 1] - r[:, 1, 2], r[:, 0, 2] - r[:, 2, 0], r[:, 1, 0] - r[:, 0, 1]], axis=1)
    cos = np.clip(0.5 * (np.trace(r, axis1=1, axis2=2) - 1.0), -1.0, 1.0)
    sin = np.linalg.norm(w, axis=1)
    theta = np.arctan2(sin, cos)
    small = sin < 1e-7
    factor = np.where(small, 1.0 + theta**2 / 6.0, theta / np.where(small, 1.0, sin))
    out = w * factor[:, None]
    big = cos < -0.5
    if big.any():
        rb, cb = r[big], cos[big]
        # (R + R^T)/2 = cos I + (1 - cos) a a^T: the axis from its largest diagonal column.
        aat = (0.5 * (rb + rb.transpose(0, 2, 1)) - cb[:, None, None] * np.eye(3)) / (1.0 - cb)[:, None, None]
        col = np.argmax(np.diagonal(aat, axis1=1, axis2=2), axis=1)
        axis = aat[np.arange(len(col)), :, col]
        axis /= np.linalg.norm(axis, axis=1, keepdims=True)
        sign = np.where(np.einsum("ij,ij->i", axis, w[big]) < 0, -1.0, 1.0)
        out[big] = axis * (sign * theta[big])[:, None]
    return out


def _edge_arrays(edges: list[Edge]) -> dict[str, np.ndarray]:
    return {
        "i": np.array([e.i for e in edges], dtype=np.int64),
        "j": np.array([e.j for e in edges], dtype=np.int64),
        "s": np.array([e.t_ij.scale for e in edges]),
        "r": np.array([e.t_ij.rotation for e in edges]).reshape(-1, 3, 3),
        "t": np.array([e.t_ij.translation for e in edges]).reshape(-1, 3),
        "w": np.array([e.weight for e in edges]),
    }


def _residuals(
    s: np.ndarray, r: np.ndarray, t: np.ndarray, ed: dict[str, np.ndarray], length: float, with_scale: bool
) -> np.ndarray:
    """(E * 7,) or (E * 6,) residuals of all edges for node arrays s (n,), r (n,3,3), t (n,3)."""
    ii, jj = ed["i"], ed["j"]
    si, ri, ti = s[ii], r[ii], t[ii]
    sj, rj, tj = s[jj], r[jj], t[jj]
    # S_i^-1 ∘ S_j: node j's frame into node i's frame.
    s_rel = sj / si
    ri_t = ri.transpose(0, 2, 1)
    r_rel = ri_t @ rj
    t_rel = (ri_t @ (tj - ti)[:, :, None])[:, :, 0] / si[:, None]
    # S_err = t_ij^-1 ∘ (S_i^-1 ∘ S_j), a map of node j's frame onto itself (identity when exact).
    s_err = s_rel / ed["s"]
    re_t = ed["r"].transpose(0, 2, 1)
    r_err = re_t @ r_rel
    t_err = (re_t @ (t_rel - ed["t"])[:, :, None])[:, :, 0] / ed["s"][:, None]
    parts = [_so3_log(r_err), t_err / length]
    if with_scale:
        parts.append(np.log(s_err)[:, None])
    return (np.concatenate(parts, axis=1) * ed["w"][:, None]).reshape(-1)


def _node_colours(n_free: int, ci: np.ndarray, cj: np.ndarray) -> np.ndarray:
    """Greedy colouring of the free nodes: two nodes joined by an edge get different colours.

    Nodes of one colour share no edge, hence no residual row, so their parameters can be
    perturbed together in one finite difference (a chain needs 2 colours, loops add few).
    """
    neighbours: list[set[int]] = [set() for _ in range(n_free)]
    for a, b in zip(ci.tolist(), cj.tolist()):
        if a >= 0 and b >= 0:
            neighbours[a].add(b)
            neighbours[b].add(a)
    colour = np.full(n_free, -1, dtype=np.int64)
    for u in range(n_free):
        used = {int(colour[v]) for v in neighbours[u]}
        c = 0
        while c in used:
            c += 1
        colour[u] = c
    return colour


def _levenberg_marquardt(
    fun,
    ci: np.ndarray,
    cj: np.ndarray,
    n_free: int,
    p: int,
    *,
    max_iterations: int = 100,
    ftol: float = 1e-12,
    xtol: float = 1e-12,
    gtol: float = 1e-12,
) -> tuple[np.ndarray, float, int]:
    """Minimise ``0.5 |fun(x)|^2`` from x = 0: Levenberg-Marquardt with sparse direct solves.

    Edge e's ``p`` residual rows depend only on the ``p`` parameters of its free nodes
    ``ci[e]``, ``cj[e]`` (-1 for the fixed node). The Jacobian is built by central differences,
    one pair of evaluations per (node colour, parameter), and each step solves
    ``(J^T J + lam diag(J^T J)) dx = -J^T r`` with SuperLU; the diagonal damping makes the
    steps invariant to the parameters' units (as ``x_scale='jac'`` in scipy's least_squares).

    Why not ``scipy.optimize.least_squares``: with a sparse Jacobian it must use its LSMR
    (Krylov) trust-region solver, and a pose chain's normal matrix has a condition number
    growing as the square of its length, so LSMR needs hundreds of products per step and
    steps stay inexact (300 nodes: 200 Jacobians and 23-40 s without converging, against
    20 steps and about 1.5 s here). A direct sparse factorisation of the (nearly banded)
    normal matrix takes milliseconds.

    Returns:
        (x, cost, Jacobian evaluations).
    """
    m_e = p  # residual rows per edge: as many as parameters per node (7, or 6 for SE(3))
    n_params = n_free * p
    colour = _node_colours(n_free, ci, cj)
    # For every colour: the (row, node) pairs of the residual rows each of its nodes moves.
    entries = []
    edge_rows = np.arange(m_e)
    for c in range(int(colour.max()) + 1 if n_free else 0):
        rows, nodes_ = [], []
        for end in (ci, cj):
            hit = np.flatnonzero((end >= 0) & (colour[np.maximum(end, 0)] == c))
            rows.append((hit[:, None] * m_e + edge_rows).ravel())
            nodes_.append(np.repeat(end[hit], m_e))
        entries.append((np.flatnonzero(colour == c), np.concatenate(rows), np.concatenate(nodes_)))

    def jacobian(x: np.ndarray) -> csr_matrix:
        vals, rr, cc = [], [], []
        for members, rows, nodes_ in entries:
            for q in range(p):
                cols = members * p + q
                h = 1e-6 * np.maximum(1.0, np.abs(x[cols]))
                xp, xm = x.copy(), x.copy()
                xp[cols] += h
                xm[cols] -= h
                step = np.zeros(n_params)
                step[cols] = 2.0 * h
                diff = fun(xp) - fun(xm)
                col = nodes_ * p + q
                vals.append(diff[rows] / step[col])
                rr.append(rows)
                cc.append(col)
        return coo_matrix(
            (np.concatenate(vals), (np.concatenate(rr), np.concatenate(cc))), shape=(len(ci) * m_e, n_params)
        ).tocsr()

    x = np.zeros(n_params)
    r = fun(x)
    cost = 0.5 * float(r @ r)
    lam, nu = 1e-4, 2.0  # damping relative to diag(J^T J); Nielsen's update below
    n_jac = 0
    # Residuals are unitless (radians, lengths / L, log scales): an RMS of 1e-14 is rounding.
    tiny_cost = 0.5 * len(ci) * m_e * 1e-28
    while n_jac < max_iterations and cost > tiny_cost:
        jac = jacobian(x)
        n_jac += 1
        grad = jac.T @ r
        normal = (jac.T @ jac).tocsc()
        d = normal.diagonal()
        d = np.maximum(d, 1e-12 * max(float(d.max()), 1e-300))  # a parameter no edge sees stays put
        scale = np.sqrt(d)
        if float(np.max(np.abs(grad) / scale)) <= gtol * max(math.sqrt(2.0 * cost), 1e-300):
            break
        accepted = False
        for _ in range(40):
            dx = spsolve((normal + diags(lam * d)).tocsc(), -grad)
            r_new = fun(x + dx)
            cost_new = 0.5 * float(r_new @ r_new)
            predicted = 0.5 * float(dx @ (lam * d * dx - grad))  # model decrease, > 0
            rho = (cost - cost_new) / predicted if predicted > 0 else -1.0
            if math.isfinite(cost_new) and rho > 0:
                lam *= max(1.0 / 3.0, 1.0 - (2.0 * rho - 1.0) ** 3)
                nu = 2.0
                accepted = True
                break
            lam *= nu
            nu *= 2.0
        if not accepted:
            break
        small_step = float(np.linalg.norm(scale * dx)) <= xtol * (xtol + float(np.linalg.norm(scale * x)))
        small_gain = cost - cost_new <= ftol * cost
        x, r, cost = x + dx, r_new, cost_new
        if small_step or small_gain:
            break
    return x, cost, n_jac


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
    lengths weigh alike whatever the units. Solved by Levenberg-Marquardt with a sparse
    finite-difference Jacobian (each edge touches two nodes) and sparse direct solves, so
    hundreds of nodes stay fast (300 nodes, 4 loops: about 1.5 s, 20 steps); see
    `_levenberg_marquardt` for why not ``scipy.optimize.least_squares``.

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
        ``0.5 * sum(residual^2)`` and iterations the Jacobian evaluations (LM steps, at
        most 100). Without loop edges the result is exactly `chain` of the sequential edges
        (re-anchored at ``fixed``; ``initial`` is not used), with no solve.

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
            raise ValueError(
                f"with_scale=False (SE(3)) needs edges with scale 1; edges {scaled[:5]} have another scale"
            )
    loops = [e for e in edges if e.kind == "loop"]
    sequential = [e for e in edges if e.kind == "sequential"]

    ed = _edge_arrays(edges)
    lengths = np.linalg.norm(ed["t"], axis=1) / ed["s"] if edges else np.zeros(0)
    med = float(np.median(lengths)) if lengths.size else 0.0
    length = med if med > 0 and math.isfinite(med) else 1.0

    def cost_of(nodes_: list[Sim3]) -> float:
        if not edges:
            return 0.0
        s, r, t = (
            np.array([x.scale for x in nodes_]),
            np.array([x.rotation for x in nodes_]),
            np.array([x.translation for x in nodes_]),
        )
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
        t[free] = s0[free, None] * (r0[free] @ d[:, 3:6, None])[:, :, 0] + t0[free]
        r[free] = r0[free] @ _so3_exp(d[:, :3])
        if with_scale:
            s[free] = s0[free] * np.exp(d[:, 6])
        return s, r, t

    if len(free) == 0:
        return [Sim3.identity()], {
            "cost_before": cost_before,
            "cost_after": cost_before,
            "iterations": 0,
            "n_loop_edges": len(loops),
        }

    def fun(x: np.ndarray) -> np.ndarray:
        return _residuals(*nodes(x), ed, length, with_scale)

    col_of = np.full(n, -1, dtype=np.int64)
    col_of[free] = np.arange(len(free))
    x, cost_after, iterations = _levenberg_marquardt(fun, col_of[ed["i"]], col_of[ed["j"]], len(free), p)
    s, r, t = nodes(x)
    out = []
    for k in range(n):
        if k == fixed:
            out.append(Sim3.identity())
        else:
            # Re-orthonormalise: Exp and products keep R a rotation up to rounding only.
            out.append(Sim3(1.0 if not with_scale else float(s[k]), Rotation.from_matrix(r[k]).as_matrix(), t[k]))
    info = {"cost_before": cost_before, "cost_after": cost_after, "iterations": iterations, "n_loop_edges": len(loops)}
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

    Similarities are computed in row blocks (float32, about 4M entries, 16 MB, each) against
    the later frames only, and only the best ``max_loops * (2 * nms_frames + 1)^2`` qualifying
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
    if not math.isfinite(float(threshold)):
        raise ValueError(f"threshold must be a finite cosine similarity, got {threshold}")
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
        # Mask in place (no block-sized temporaries): j <= i, then chunks closer than the gap.
        for r in range(b1 - b0):
            sim[r, : r + 1] = -np.inf
        rows_chunk = chunk[b0:b1]
        for c in np.unique(rows_chunk):
            close = np.flatnonzero(np.abs(chunk[b0:] - c) < int(min_chunk_gap))
            if close.size:
                sim[np.ix_(np.flatnonzero(rows_chunk == c), close)] = -np.inf
        ri, cj = np.nonzero(sim >= np.float32(threshold))
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
