"""The run guard: before a run starts, estimate its peak memory and its time, and refuse
what cannot fit (parent side, torch-free; pure functions but `check`).

The model is fitted to measured runs by ``python -m benchmarks.fit_guard`` and stored in
``da3_core/runs/guard_model.json`` (one part per device: ``cpu``, ``cuda``):

* the worker's resident peak, per preset: ``a + b * ktokens + d * h`` (ktokens: thousands of
  14x14 patch tokens over all frames at the processed size, which DA3's backbone holds; h:
  those of the largest chunk of 8 frames, which its DPT head decodes at once at full
  resolution), drawn over every measured point;
* on CUDA also the GPU's peak (reserved) memory, the same way;
* the parent's growth while it saves, loads and unprojects the result: linear in its size and
  in its largest frame's (unprojecting makes per-frame temporaries);
* inference seconds: ``gparams * (c0 + c1 * k + c2 * k**2 + c3 * q)``, scaled by this server's own
  measured throughput once it has finished runs (`Calibration`).

A preset that was not measured borrows the fit of the measured preset nearest in size,
scaled by its parameter count. Available memory: ``DA3_MEMORY_LIMIT_MB`` when set, else the
cgroup limit of this process (v1 or v2, the tightest up the tree), else the machine's
available memory; the workers' own current memory counts as theirs to use.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from da3_core.presets import PATCH_SIZE, PRESETS, Preset, snap_process_res

MODEL_FILE = Path(__file__).with_name("guard_model.json")
CHUNK = 8  # DA3's DPT heads decode frames in chunks of 8 (``chunk_size`` in depth_anything_3/model/dpt.py)
MARGIN = 1.05  # estimates are raised 5 % above the fit (which already covers every measured point): runs vary
DEFAULT_RES = 504  # DA3's default process_res, offered first as a way on
# A way on must fit with this much less memory than the check it answers had: what is
# available moves between two looks (this process's own memory is counted as used), and a
# suggestion that fitted by a few MB was refused on the next page run (seen: "392 takes all
# 10 frames", then 392 refused).
HEADROOM_FRACTION = 0.03
HEADROOM_MIN_MB = 64.0
RESULT_BYTES_PER_PIXEL = 3 + 4 + 4  # image uint8 + depth + confidence float32 (the parent's part is fitted to this)
LOAD_S_PER_GB = 4.0  # reading weights from a local disk into the worker (measured: DA3-GIANT's 4.6 GB in ~18 s)


def processed_size(width: int, height: int, process_res: int, method: str = "upper_bound_resize") -> tuple[int, int]:
    """The (width, height) DA3 processes a frame at, step by step as its `InputProcessor`
    does: the long (``upper_*``) or short (``lower_*``) side scaled to ``process_res``, each
    side rounded to whole pixels, then to a multiple of 14 (nearest, ties up; the ``*_crop``
    methods floor)."""
    side = max(width, height) if method.startswith("upper") else min(width, height)
    scale = process_res / max(1, side)
    w, h = (
        (width, height)
        if side == process_res
        else (max(1, int(round(width * scale))), max(1, int(round(height * scale))))
    )

    def snap(v: int) -> int:
        down = (v // PATCH_SIZE) * PATCH_SIZE
        if not method.endswith("_crop") and v - down >= down + PATCH_SIZE - v:
            down += PATCH_SIZE
        return max(PATCH_SIZE, down)

    return snap(w), snap(h)


def centre_crop_notice(
    sizes: Sequence[tuple[int, int]], process_res: int, method: str = "upper_bound_resize"
) -> str | None:
    """What DA3 cuts from frames of different shapes, in a sentence (Markdown-free), or None.

    DA3 processes one size per call: when the frames' processed sizes differ (portrait and
    landscape photos, 4:3 and 16:9), its `InputProcessor` centre-crops every frame to the
    smallest processed width and the smallest height (``_unify_batch_shapes``), so a mix of
    portrait and landscape frames becomes squares.

    Args:
        sizes: Each frame's (width, height) in pixels.
        process_res: The process_res DA3 runs at.
        method: ``process_res_method``.
    """
    processed = [processed_size(w, h, process_res, method) for w, h in sizes]
    if len(set(processed)) <= 1:
        return None
    w_min, h_min = min(w for w, _ in processed), min(h for _, h in processed)
    lost = max(1.0 - (w_min * h_min) / (w * h) for w, h in processed)
    portrait = sum(1 for w, h in sizes if h > w)
    landscape = sum(1 for w, h in sizes if w > h)
    square = len(sizes) - portrait - landscape
    shapes = ", ".join(
        f"{n} {what}" for n, what in ((landscape, "landscape"), (portrait, "portrait"), (square, "square")) if n
    )
    kinds = ", ".join(f"{w}x{h}" for w, h in sorted(set(processed), key=lambda s: -s[0] * s[1])[:4])
    return (
        f"These frames differ in shape ({shapes}; at process_res {process_res} they become {kinds}), and DA3 runs "
        f"one size per call: it centre-crops every frame to {w_min}x{h_min}, cutting up to {lost:.0%} of a frame "
        "(the depth, the cloud and the exports then cover the crop only). To keep every pixel, run frames of one "
        "orientation (rotate the others) or one shape."
    )


def ktokens(n_frames: int, process_res: int, aspect: float = 4 / 3, method: str = "upper_bound_resize") -> float:
    """Thousands of patch tokens for ``n_frames`` frames of width/height ``aspect``."""
    w, h = processed_size(int(round(1000 * aspect)), 1000, process_res, method)
    return n_frames * (w // PATCH_SIZE) * (h // PATCH_SIZE) / 1000


def frame_ktokens(
    sizes: Iterable[tuple[int, int]], process_res: int, method: str = "upper_bound_resize", head_frames: int = CHUNK
) -> tuple[float, float, float, int]:
    """(ktokens, q, h, processed pixels) over frames of the given (width, height): q sums
    (ktokens per frame)^2 (DA3's per-frame attention, for time); h is the ktokens of the
    largest chunk of ``head_frames`` frames, which the DPT head decodes at once (for memory):
    `CHUNK` in DA3, 1 where our CPU forward decodes the head frame by frame
    (``da3_core/worker/cpu_fast.py``, ``head_chunk``; the fitted line says which)."""
    per_frame = []
    pix = 0
    for w, h in sizes:
        pw, ph = processed_size(w, h, process_res, method)
        per_frame.append((pw // PATCH_SIZE) * (ph // PATCH_SIZE) / 1000)
        pix += pw * ph
    chunk = sum(sorted(per_frame, reverse=True)[:head_frames])
    return sum(per_frame), sum(t * t for t in per_frame), chunk, pix


def gparams(preset: Preset) -> float:
    return float(preset.params.rstrip("B"))


def load_model(path: Path = MODEL_FILE) -> dict[str, Any]:
    """The fitted model (``{"cpu": {...}, "cuda": {...}}``)."""
    return json.loads(path.read_text())


_MODEL: dict[str, Any] | None = None


def model() -> dict[str, Any]:
    global _MODEL
    if _MODEL is None:
        _MODEL = load_model()
    return _MODEL


def _memory_line(fits: dict[str, dict[str, float]], preset: Preset) -> tuple[float, float, float, int, str]:
    """(a, b, d, head frames, what it is based on) for ``preset``; an unmeasured preset
    borrows the nearest measured one in parameters, scaled by the parameter ratio, with DA3's
    own head chunk (`CHUNK` frames: a borrowed line cannot know the worker's head decodes
    fewer at once)."""
    if preset.name in fits:
        f = fits[preset.name]
        return f["a_mb"], f["b_mb_per_ktoken"], f["d_mb_per_chunk_ktoken"], int(f.get("head_frames", CHUNK)), "measured"
    by_size = {name: gparams(p) for p in PRESETS for name in [p.name] if name in fits}
    if not by_size:
        raise KeyError("the guard model has no measured preset")
    near = min(by_size, key=lambda n: abs(math.log(by_size[n] / gparams(preset))))
    ratio = gparams(preset) / by_size[near]
    f = fits[near]
    grow = max(1.0, math.sqrt(ratio))
    return (
        f["a_mb"] * max(1.0, ratio),
        f["b_mb_per_ktoken"] * grow,
        f["d_mb_per_chunk_ktoken"] * grow,
        CHUNK,
        f"scaled from {near}",
    )


@dataclass(frozen=True)
class Available:
    """Memory a run may use, and where the figure comes from."""

    mb: float
    source: str
    gpu_mb: float | None = None


@dataclass(frozen=True)
class Estimate:
    """A run's expected needs against what is available.

    Attributes:
        worker_mb: The worker's resident peak.
        parent_mb: The server process's growth while it holds the result.
        gpu_mb: The GPU's peak (CUDA runs), else None.
        seconds: Inference plus model load, on this device.
        available: The memory available (and the GPU's, on CUDA).
        budget_s: The run's time budget (it is stopped beyond it).
        basis: What the estimate rests on (e.g. "measured", "scaled from da3-large").
    """

    preset: Preset
    frames: int
    process_res: int
    device: str
    worker_mb: float
    parent_mb: float
    gpu_mb: float | None
    seconds: float
    available: Available
    budget_s: float
    basis: str = "measured"
    calibrated: bool = False

    @property
    def memory_mb(self) -> float:
        return (self.worker_mb + self.parent_mb) * MARGIN

    @property
    def fits_memory(self) -> bool:
        return self.memory_mb <= self.available.mb and self.fits_gpu

    @property
    def fits_gpu(self) -> bool:
        return self.gpu_mb is None or self.available.gpu_mb is None or self.gpu_mb * MARGIN <= self.available.gpu_mb

    @property
    def fits_time(self) -> bool:
        return self.seconds <= self.budget_s

    @property
    def passes(self) -> bool:
        """The run guard lets it start as it is (`RunService.check`: memory, then time)."""
        return self.fits_memory and self.fits_time

    def summary(self) -> str:
        """One line: memory and time against what is available (Markdown-free)."""
        need, have = gb_pair(self.memory_mb, self.available.mb)
        parts = [f"about {need} of memory ({have} available: {self.available.source})"]
        if self.gpu_mb is not None:
            gpu_need, gpu_have = gb_pair(self.gpu_mb * MARGIN, self.available.gpu_mb)
            gpu_free = f" of {gpu_have}" if self.available.gpu_mb is not None else ""
            parts.append(f"{gpu_need}{gpu_free} of GPU memory")
        how = (
            "at this server's measured speed"
            if self.calibrated
            else f"on a {self.device.upper()} like the one measured"
        )
        parts.append(f"about {duration(self.seconds)} {how} (budget {duration(self.budget_s)})")
        return f"{self.preset.label}, {self.frames} frame(s) at {self.process_res}: " + ", ".join(parts) + "."


def gb(mb: float | None) -> str:
    return "?" if mb is None else f"{mb / 1024:.1f} GB"


def gb_pair(need_mb: float, have_mb: float | None) -> tuple[str, str]:
    """``need_mb`` and ``have_mb`` written so that two different amounts never read alike
    ("needs about 2.3 GB and 2.3 GB is available" said nothing): GB with one decimal, else
    two, else whole MB, else MB with one decimal."""
    if have_mb is None:
        return gb(need_mb), gb(have_mb)
    for fmt in (lambda v: f"{v / 1024:.1f} GB", lambda v: f"{v / 1024:.2f} GB", lambda v: f"{v:,.0f} MB"):
        a, b = fmt(need_mb), fmt(have_mb)
        if a != b:
            return a, b
    return f"{need_mb:,.1f} MB", f"{have_mb:,.1f} MB"


def duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 600 else f"{seconds / 60:.0f} min"


def estimate(
    preset: Preset,
    sizes: Sequence[tuple[int, int]],
    process_res: int,
    device: str,
    available: Available,
    budget_s: float,
    method: str = "upper_bound_resize",
    model_loaded: bool = False,
    speed_factor: float | None = None,
    fitted: dict[str, Any] | None = None,
) -> Estimate:
    """The estimate for ``sizes`` (each frame's width, height) at ``process_res`` on ``device``.

    ``speed_factor``: this server's measured time / the model's (`Calibration`), or None.
    """
    fitted = fitted or model()
    process_res = snap_process_res(process_res, method)  # what DA3 runs at (the page sends it snapped)
    part = fitted.get("cuda" if device == "cuda" else "cpu") or fitted["cpu"]
    sizes = list(sizes)
    a, b, d, head_frames, basis = _memory_line(part["worker_mb"], preset)
    k, q, h, pixels = frame_ktokens(sizes, process_res, method, head_frames)
    worker = a + b * k + d * h
    gpu = None
    if device == "cuda" and "gpu_mb" in part:
        ga, gb_, gd, g_frames, _ = _memory_line(part["gpu_mb"], preset)
        gpu = ga + gb_ * k + gd * frame_ktokens(sizes, process_res, method, g_frames)[2]
    largest = max((w * h for w, h in (processed_size(fw, fh, process_res, method) for fw, fh in sizes)), default=0)
    pm = part["parent_mb"]
    parent = (
        pm["a_mb"]
        + (pm["b_per_result_mb"] * pixels + pm.get("e_per_frame_result_mb", 0.0) * largest)
        * RESULT_BYTES_PER_PIXEL
        / 2**20
    )
    t = part["time"]
    seconds = gparams(preset) * (
        t["c0_s_per_gparam"]
        + t["c1_s_per_gparam_ktoken"] * k
        + t["c2_s_per_gparam_ktoken2"] * k * k
        + t.get("c3_s_per_gparam_q", 0.0) * q
    )
    seconds *= speed_factor or 1.0
    if not model_loaded:
        seconds += LOAD_S_PER_GB * gparams(preset) * 4
    return Estimate(
        preset,
        len(sizes),
        process_res,
        device,
        worker,
        parent,
        gpu,
        seconds,
        available,
        budget_s,
        basis,
        calibrated=speed_factor is not None,
    )


# --------------------------------------------------------------------------------------
# The ways on: what would fit
# --------------------------------------------------------------------------------------


def headroom(available: Available) -> Available:
    """``available`` less the headroom a way on must leave (`HEADROOM_FRACTION`, at least
    `HEADROOM_MIN_MB`); the GPU's figure is its fixed size, so it is kept."""
    if not math.isfinite(available.mb):
        return available
    less = max(HEADROOM_MIN_MB, HEADROOM_FRACTION * available.mb)
    return Available(max(0.0, available.mb - less), available.source, available.gpu_mb)


def largest_first(sizes: Sequence[tuple[int, int]], process_res: int, method: str) -> list[tuple[int, int]]:
    """``sizes`` with the frames that cost most (patch tokens at ``process_res``) first: the
    first n are the worst n frames a user could keep."""

    def tokens(wh: tuple[int, int]) -> int:
        w, h = processed_size(wh[0], wh[1], process_res, method)
        return (w // PATCH_SIZE) * (h // PATCH_SIZE)

    return sorted(sizes, key=tokens, reverse=True)


def ways_on(est: Estimate, sizes: Sequence[tuple[int, int]], method: str, budget: Any, **kw: Any) -> list[str]:
    """Concrete changes that make the run pass the guard: fewer frames, a lower process_res,
    a smaller preset. ``budget(n)``: the time budget of an n-frame run; ``kw``: `estimate`'s
    options.

    Each way is checked the way the refusal is (`Estimate.passes`: the same estimate, sizes,
    budget and margin, at the process_res DA3 will run at), with `headroom` less memory than
    now, so it still passes on the next look when this process has grown a little. "Fewer
    frames" holds for any n of the frames: the n costliest are checked.
    """
    room = headroom(est.available)
    worst: dict[int, list[tuple[int, int]]] = {}

    def again(preset: Preset, n: int, res: int) -> Estimate:
        res = snap_process_res(res, method)
        if res not in worst:
            worst[res] = largest_first(sizes, res, method)
        return estimate(preset, worst[res][:n], res, est.device, room, budget(n), method, **kw)

    def ok(e: Estimate) -> bool:
        return e.passes  # the refusal's own test

    # Lower process_res values: DA3's own steps (multiples of 14), snapped as DA3 snaps them.
    lower = sorted(
        {snap_process_res(r, method) for r in range(est.process_res - PATCH_SIZE * 4, 139, -PATCH_SIZE * 4)}
        - {est.process_res},
        reverse=True,
    )
    out = []
    n_ok = next((n for n in range(est.frames - 1, 0, -1) if ok(again(est.preset, n, est.process_res))), 0)
    if n_ok:
        out.append(f"fewer frames: up to {n_ok} at process_res {est.process_res}")
    res_ok = next((r for r in lower if ok(again(est.preset, est.frames, r))), 0)
    if res_ok:
        out.append(f"a lower process_res: {res_ok} takes all {est.frames} frames")
    smaller = [p for p in PRESETS if gparams(p) < gparams(est.preset) and p.multi_view == est.preset.multi_view]
    for p in sorted(smaller, key=gparams, reverse=True):
        if ok(again(p, est.frames, est.process_res)):
            out.append(f"a smaller preset: {p.label} takes all {est.frames} frames at {est.process_res}")
            break
    if not out and est.frames > 1:  # no one change is enough: fewer frames at a lower process_res,
        # DA3's default 504 first, else the highest that takes at least two frames
        for r in ([DEFAULT_RES] if DEFAULT_RES < est.process_res else []) + lower:
            n = next((n for n in range(est.frames - 1, 1, -1) if ok(again(est.preset, n, r))), 0)
            if n:
                out.append(f"fewer frames at a lower process_res: up to {n} at {r}")
                break
    if est.device == "cpu":
        out.append("a GPU server")
    return out


def memory_problem(est: Estimate, ways: Sequence[str]) -> str:
    """Why a run that cannot fit in memory is refused, with the numbers and the ways on."""
    if est.memory_mb > est.available.mb:
        need, have = gb_pair(est.memory_mb, est.available.mb)
        what = (
            f"needs about {need} of memory (the worker {gb(est.worker_mb * MARGIN)}, this server "
            f"{gb(est.parent_mb * MARGIN)}) and {have} is available ({est.available.source})"
        )
    else:
        need, have = gb_pair((est.gpu_mb or 0) * MARGIN, est.available.gpu_mb)
        what = f"needs about {need} of GPU memory and the GPU has {have}"
    return (
        f"{est.preset.label}, {est.frames} frame(s) at process_res {est.process_res}, {what}; it would be killed "
        f"part-way." + (" Ways on: " + "; ".join(ways) + "." if ways else "")
    )


def time_problem(est: Estimate, ways: Sequence[str]) -> str:
    """Why a run will probably not finish within its budget, with the numbers and the ways on."""
    return (
        f"{est.preset.label}, {est.frames} frame(s) at process_res {est.process_res}, should take about "
        f"{duration(est.seconds)} on this {est.device.upper()}, more than its budget of {duration(est.budget_s)} "
        "(DA3_DURATION_S + DA3_DURATION_PER_FRAME_S per frame): it would be stopped at the budget."
        + (" Ways on: " + "; ".join(ways) + "." if ways else "")
    )


# --------------------------------------------------------------------------------------
# Available memory
# --------------------------------------------------------------------------------------


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def cgroup_limit(proc_cgroup: str | None = None, root: Path = Path("/sys/fs/cgroup")) -> tuple[float, float] | None:
    """(limit MB, reclaimable-excluded usage MB) of this process's memory cgroup, the
    tightest limit up its tree; None where no limit is set. Reads v2 (``memory.max``) and
    v1 (``memory.limit_in_bytes``)."""
    text = proc_cgroup if proc_cgroup is not None else (_read(Path("/proc/self/cgroup")) or "")
    candidates: list[tuple[Path, str, str, str]] = []
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, rel = parts
        if controllers == "":  # v2
            candidates.append((root / rel.lstrip("/"), "memory.max", "memory.current", "inactive_file"))
            candidates.append((root / "unified" / rel.lstrip("/"), "memory.max", "memory.current", "inactive_file"))
        elif "memory" in controllers.split(","):
            candidates.append(
                (
                    root / "memory" / rel.lstrip("/"),
                    "memory.limit_in_bytes",
                    "memory.usage_in_bytes",
                    "total_inactive_file",
                )
            )
    best: tuple[float, float] | None = None
    for folder, limit_name, usage_name, inactive_name in candidates:
        d = folder
        while True:
            limit = _read(d / limit_name)
            usage = _read(d / usage_name)
            if limit and limit.isdigit() and int(limit) < 2**60 and usage and usage.isdigit():
                inactive = 0
                for stat_line in (_read(d / "memory.stat") or "").splitlines():
                    key, _, value = stat_line.partition(" ")
                    if key == inactive_name and value.isdigit():
                        inactive = int(value)
                found = (int(limit) / 2**20, max(0, int(usage) - inactive) / 2**20)
                if best is None or found[0] - found[1] < best[0] - best[1]:
                    best = found
            if d == root or d.parent == d or root not in d.parents:
                break
            d = d.parent
    return best


_TRIM_EVERY_S = 5.0
_trim_lock = threading.Lock()
_last_trim = 0.0


def release_free_heap() -> bool:
    """Give the memory this process has freed back to the system (glibc's ``malloc_trim``),
    at most every `_TRIM_EVERY_S` seconds; True when it ran.

    glibc keeps freed blocks in its heaps (one per thread that allocated: Streamlit runs
    each page in a thread of its own), so after results and figures are let go the process's
    resident size stays up, and the guard counted that as used ("available" shrank over an
    hour of use). A few milliseconds; nothing off glibc."""
    global _last_trim
    import time

    with _trim_lock:
        now = time.monotonic()
        if now - _last_trim < _TRIM_EVERY_S:
            return False
        _last_trim = now
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to trim
        return False
    return True


def available_memory(
    limit_mb: float = 0.0,
    workers_rss_mb: float = 0.0,
    parent_rss_mb: float | None = None,
    gpu_total_mb: float | None = None,
) -> Available:
    """What a run may use now. ``workers_rss_mb``: the workers' current memory (theirs to
    reuse); ``parent_rss_mb``: this process's (counted as used under ``limit_mb``)."""
    import psutil

    if parent_rss_mb is None:
        release_free_heap()
        parent_rss_mb = psutil.Process().memory_info().rss / 2**20
    if limit_mb > 0:
        return Available(max(0.0, limit_mb - parent_rss_mb), f"DA3_MEMORY_LIMIT_MB={limit_mb:.0f}", gpu_total_mb)
    machine = psutil.virtual_memory().available / 2**20 + workers_rss_mb
    cg = cgroup_limit()
    if cg is not None:
        limit, used = cg
        free = limit - used + workers_rss_mb
        if free < machine:
            return Available(max(0.0, free), f"container limit {gb(limit)}", gpu_total_mb)
    return Available(machine, "this machine's free memory", gpu_total_mb)


# --------------------------------------------------------------------------------------
# Calibration: this server's own measured speed
# --------------------------------------------------------------------------------------


@dataclass
class Calibration:
    """Measured time / the model's, per device, from this server's finished runs (the
    median of the last 20), kept in a small JSON file in the workspace."""

    path: Path
    ratios: dict[str, list[float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def load(cls, path: Path) -> Calibration:
        try:
            data = json.loads(path.read_text())
            ratios = {str(k): [float(x) for x in v][-20:] for k, v in data.items() if isinstance(v, list)}
        except (OSError, ValueError, TypeError):
            ratios = {}
        return cls(path, ratios)

    def factor(self, device: str) -> float | None:
        values = sorted(self.ratios.get(device, []))
        return values[len(values) // 2] if values else None

    def record(
        self,
        device: str,
        preset: Preset,
        sizes: Sequence[tuple[int, int]],
        process_res: int,
        method: str,
        inference_s: float,
        fitted: dict[str, Any] | None = None,
    ) -> None:
        """Add one finished run (its measured inference seconds)."""
        est = estimate(
            preset, sizes, process_res, device, Available(0, ""), 0, method, model_loaded=True, fitted=fitted
        )
        if est.seconds <= 0 or inference_s <= 0:
            return
        with self._lock:
            self.ratios.setdefault(device, []).append(inference_s / est.seconds)
            self.ratios[device] = self.ratios[device][-20:]
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self.path.write_text(json.dumps(self.ratios))
            except OSError:
                pass


__all__ = [
    "Available",
    "Calibration",
    "Estimate",
    "available_memory",
    "cgroup_limit",
    "estimate",
    "frame_ktokens",
    "gb_pair",
    "headroom",
    "ktokens",
    "memory_problem",
    "processed_size",
    "time_problem",
    "ways_on",
]
