"""A run's life in the parent, owned in one place: submit, watch, collect, fail.

One `RunService` per server (held by `da3_core.app.holder`), shared by every browser session:

* `RunService.submit` validates the request, saves the frames and ``run.json`` (status
  ``pending``), and queues the reconstruction on the runner;
* when the job ends, a thread saves its outcome to the run folder
  (``done`` with ``result.npz``; ``failed`` or ``cancelled`` with the reason), whether or
  not a page is looking. If saving the result fails, the run is marked failed with that
  reason; it never stays ``pending``;
* pages look runs up by id (`RunService.get`, `RunService.live_for_session`), so a browser
  reload finds its running job again (the run folder names it, the service holds it);
* `RunService.reconcile` marks ``pending`` runs that no job of this server owns (the
  server restarted mid-run) as failed, saying so.

Nothing here touches ``st.session_state``: `da3_core.app.session` keeps which run a browser
session watches.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from da3_core import presets
from da3_core.config import Settings
from da3_core.contract import FeatureRequest, ModelSpec, ModelUnavailableError, Reconstruction, ReconstructRequest
from da3_core.logs import one_line
from da3_core.runner import Job, Runner
from da3_core.runner.protocol import GPUError, TaskCancelledError, TaskError
from da3_core.runs import guard, records, tasks
from da3_core.runs.exports import (
    EXPORT_TITLES,
    INTERRUPTED_EXPORT,
    ExportEstimate,
    ExportJob,
    ExportStatus,
    _export_files,
    _jsonable,
    _land_export,
    _status_from_record,
    _write_export_record,
    export_estimate,
    export_target,
    read_export_record,
)
from da3_core.runs.jobs import (
    QUEUE_WAIT_S,
    WALL_S,
    OneJob,
    RunOutcome,
    _read_events,
    clock_timings,
    job_clock,
    queued_text,
    took_text,
)

log = logging.getLogger(__name__)


INTERRUPTED = "interrupted: the server stopped while this run was pending, so its result was lost (its frames are kept)"


INTERRUPTED_CHUNKED = "interrupted: the server stopped while this chunked run was running; its finished chunks are kept: Resume continues from there"


ABANDONED = "the page that started it was closed, so the run was stopped (its frames are kept)"


KEEP_RESULTS = 4  # finished results no page collected yet, kept in memory (the others are read from disk)


def _let_go_of_result(run: Any) -> None:
    """Drop a finished run's in-memory result: its own reference and its job's (a chunked run
    has no single job)."""
    run.result = None
    job = getattr(run, "job", None)
    if job is not None and job.done():
        job.release_value()


@dataclass
class ActiveRun(OneJob):
    """A run this server submitted: its folder, its job and what it last reported.

    Attributes:
        run_dir: The run folder (inputs saved there before the job was queued).
        meta: Its metadata as submitted.
        job: The runner's job.
        stage: Last stage text for display.
        fraction: Last progress fraction in [0, 1].
        position: Place in the queue while waiting, else None.
        outcome: Set once the outcome is saved to the run folder.
        result: The result while fresh (handed to the first page that collects it).
    """

    run_dir: Path
    meta: records.RunMeta
    job: Job
    stage: str = "queued"
    fraction: float = 0.0
    position: int | None = None
    outcome: RunOutcome | None = None
    result: Reconstruction | None = None
    finished_at: float | None = None
    images: tuple[np.ndarray, ...] = ()
    ahead: int | None = None
    collected: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def run_id(self) -> str:
        return self.meta.run_id

    @property
    def session_id(self) -> str:
        return self.run_dir.parent.name

    @property
    def queued(self) -> bool:
        return self.position is not None and self.job.started_at is None

    @property
    def ended_at(self) -> float | None:
        """When the job ended (monotonic; before its outcome was saved), else None."""
        return self.job.finished_at

    def pump(self) -> None:
        """Read the job's new events into the display fields, and tell the runner someone watches."""
        self.job.touch()
        with self._lock:
            _read_events(self, self.job)

    def status_line(self) -> str:
        """One line for the page, e.g. ``Queued: position 1 (1 ahead) · 4 frames · waiting 2.1 s``."""
        n = len(self.meta.names)
        frames = f"{n} frame{'s' if n != 1 else ''}"
        if self.job.started_at is None:
            return f"{queued_text(self.position, self.ahead)} · {frames} · waiting {self.elapsed_s:.1f} s"
        return f"Running {frames}: {self.stage} · {self.elapsed_s:.1f} s"


class RunRefused(ValueError):
    """The run guard refused a run before anything was saved or queued (`da3_core.runs.guard`).

    Attributes:
        estimate: The estimate behind the refusal (memory, time, what is available).
        reason: ``"memory"`` (refused outright) or ``"time"`` (may be started anyway).
    """

    def __init__(self, message: str, estimate: guard.Estimate, reason: str) -> None:
        super().__init__(message)
        self.estimate = estimate
        self.reason = reason


@dataclass(frozen=True)
class ChunkChoice:
    """The guard's chunking of a run: chunks of ``chunk`` frames overlapping by ``overlap``.

    Attributes:
        chunk / overlap: C and O.
        plan: The chunks.
        per_chunk: The guard's estimate for one chunk (memory is per chunk: they run one
            per worker).
        seconds: Time for every chunk on one worker (chunks run side by side on a pool).
        reason: Why this C and O, in a sentence.
    """

    chunk: int
    overlap: int
    plan: Any
    per_chunk: guard.Estimate | None
    seconds: float | None
    reason: str

    def summary(self) -> str:
        est = self.per_chunk
        mem = (
            f"about {guard.gb(est.memory_mb)} of memory per chunk ({guard.gb(est.available.mb)} available)"
            if est
            else ""
        )
        t = f", about {guard.duration(self.seconds)} in all" if self.seconds is not None else ""
        return (
            f"{self.plan.n_frames} frames as {self.plan.n_chunks} chunk(s) of {self.chunk} overlapping by {self.overlap} "
            f"({self.plan.frames_computed} frame passes): {mem}{t}."
        )


def preset_of(model: ModelSpec) -> presets.Preset | None:
    """The DA3 preset of a model choice (hub id, demo preset or checkpoint folder), or None."""
    if model.kind == "local":
        name = presets.preset_name_in_folder(model.ref)
        return presets.preset_for(name) if name else None
    return presets.preset_for(model.ref)


class RunService:
    """Owns every run this server starts (see the module doc).

    Args:
        runner: The server's runner.
        settings: The validated settings (demo weights folder, CPU threads).
        keep_finished_s: How long a finished run stays in memory for a page to collect.
        task: The `gpu` task that runs a `ReconstructRequest` (tests pass a light stand-in
            with the same signature).
        chunk_task: The `gpu` task that runs one chunk of a chunked run (`ChunkRequest`;
            tests pass the ground-truth oracle).
        export_tasks: The `gpu` tasks of the export jobs by kind (``colmap``, ``gs_ply``,
            ``gs_video``; tests pass light stand-ins with the same signatures).
    """

    def __init__(
        self,
        runner: Runner,
        settings: Settings,
        keep_finished_s: float = 600.0,
        task: Any = None,
        chunk_task: Any = None,
        export_tasks: dict[str, Any] | None = None,
    ) -> None:
        self.runner = runner
        self.settings = settings
        self.keep_finished_s = keep_finished_s
        self.task = task or tasks.reconstruct
        self.chunk_task = chunk_task or tasks.reconstruct_chunk
        self._assembler: Any = None
        self._comparer: Any = None
        self._runs: dict[str, ActiveRun] = {}
        self.export_tasks: dict[str, Any] = {
            "colmap": tasks.export_colmap,
            "gs_ply": tasks.export_gs_ply,
            "gs_video": tasks.render_gs_video,
            "mesh": tasks.export_mesh,
            "features": tasks.export_features,
            **(export_tasks or {}),
        }
        self._exports: dict[tuple[str, str], ExportJob] = {}
        self._lock = threading.Lock()
        self.calibration = guard.Calibration.load(Path(settings.workspace) / "guard_calibration.json")
        self._gpu_mb: list[float | None] | None = None

    # -- the run guard -----------------------------------------------------------------
    def _device(self, wanted: str, workers: Sequence[Any]) -> str:
        """The device a run will use: the one asked for, else the workers' own report, else
        a GPU when nvidia-smi lists one, else the CPU."""
        for choice in (wanted, self.settings.device):
            if choice and choice != "auto":
                return choice
        for w in workers:
            reported = (w.state_report or {}).get("device")
            if reported:
                return str(reported)
        return "cuda" if self._gpus() else "cpu"

    def _gpus(self) -> list[float | None]:
        if self._gpu_mb is None:
            from da3_core.runner.devices import visible_gpus

            self._gpu_mb = [g.memory_mb for g in visible_gpus()] if self.settings.isolation != "ray" else []
        return self._gpu_mb

    def budget_s(self, n_frames: int) -> float:
        """A run's time budget: ``DA3_DURATION_S + DA3_DURATION_PER_FRAME_S * frames``."""
        return self.settings.duration_base_s + self.settings.duration_per_frame_s * n_frames

    def estimate(
        self, sizes: Sequence[tuple[int, int]], model: ModelSpec, params: dict[str, Any], ways: bool = True
    ) -> tuple[guard.Estimate, list[str]] | None:
        """The run guard's estimate for frames of these (width, height) sizes, and the ways on
        when it does not fit; None when the model's preset is unknown (nothing to go by).

        Cheap: reads the runner's status and this process's memory, starts nothing."""
        preset = preset_of(model)
        if preset is None or not sizes:
            return None
        workers = self.runner.status().workers
        device = self._device(str(params.get("device", "auto")), workers)
        if self.settings.isolation == "ray":
            available = guard.Available(float("inf"), "Ray cluster: not checked here")
        else:
            gpu_sizes = [m for m in self._gpus() if m]
            available = guard.available_memory(
                self.settings.memory_limit_mb,
                sum(w.rss_mb or 0.0 for w in workers),
                gpu_total_mb=min(gpu_sizes) * 0.95 if device == "cuda" and gpu_sizes else None,
            )
        loaded = any(
            preset.name in m.lower() or preset.hub_id.lower() in m.lower()
            for w in workers
            for m in ((w.state_report or {}).get("models_loaded") or [])
        )
        method = str(params.get("process_res_method", "upper_bound_resize"))
        speed = self.calibration.factor(device)
        est = guard.estimate(
            preset,
            sizes,
            int(params["process_res"]),
            device,
            available,
            self.budget_s(len(sizes)),
            method,
            model_loaded=loaded,
            speed_factor=speed,
        )
        found = (
            []
            if not ways or (est.fits_memory and est.fits_time)
            else guard.ways_on(est, sizes, method, self.budget_s, model_loaded=loaded, speed_factor=speed)
        )
        return est, found

    def check(
        self, sizes: Sequence[tuple[int, int]], model: ModelSpec, params: dict[str, Any], over_budget_ok: bool = False
    ) -> guard.Estimate | None:
        """Raise `RunRefused` for a run that cannot fit in memory, or (unless
        ``over_budget_ok``) cannot finish within its time budget; else return the estimate."""
        found = self.estimate(sizes, model, params)
        if found is None:
            return None
        est, ways = found
        if not est.fits_memory:
            raise RunRefused(guard.memory_problem(est, ways), est, "memory")
        if not est.fits_time and not over_budget_ok:
            raise RunRefused(guard.time_problem(est, ways), est, "time")
        return est

    # -- chunked runs (da3_core.chunks) --------------------------------------------------
    @property
    def assembler(self) -> Any:
        """The child process that assembles chunked runs (started on first use)."""
        with self._lock:
            if self._assembler is None:
                from da3_core.chunks.service import Assembler

                self._assembler = Assembler()
            return self._assembler

    @property
    def comparer(self) -> Any:
        """The child process that compares runs and scores them against references
        (`da3_core.runs.compare.Comparer`, started on first use)."""
        with self._lock:
            if self._comparer is None:
                from da3_core.runs.compare import Comparer

                self._comparer = Comparer()
            return self._comparer

    def choose_chunks(self, sizes: Sequence[tuple[int, int]], model: ModelSpec, params: dict[str, Any]) -> ChunkChoice:
        """C and O for a chunked run of frames of these sizes: the user's when set in
        ``params["chunking"]`` (``chunk``, ``overlap``; 0 = let the guard choose), else the
        largest chunk (up to 120, DA3-Streaming's) whose one-call estimate fits in memory,
        overlapping by a third of it.

        Raises:
            RunRefused: not even two frames per chunk fit.
        """
        from da3_core.chunks import plan as chunk_plan

        opts = dict(params.get("chunking") or {})
        n = len(sizes)
        found = self.estimate(sizes[: min(n, 2)], model, params, ways=False)
        wanted_c, wanted_o = int(opts.get("chunk") or 0), int(opts.get("overlap") or 0)
        if wanted_c:
            c = max(chunk_plan.MIN_CHUNK, wanted_c)
            reason = f"chunks of {c} as set under Parameters"
        elif found is None:  # no preset to estimate from (a custom folder): DA3-Streaming's size
            c = min(chunk_plan.MAX_CHUNK, max(chunk_plan.MIN_CHUNK, n))
            reason = "no memory estimate for this model: DA3-Streaming's chunk size"
        else:
            c = chunk_plan.largest_chunk(
                lambda k: bool((e := self.estimate(sizes[:k], model, params, ways=False)) and e[0].fits_memory), n
            )
            if c == 0:
                est = found[0]
                raise RunRefused(
                    "Not even a chunk of two frames fits in memory: "
                    + est.summary()
                    + " Try a lower process_res or a smaller preset.",
                    est,
                    "memory",
                )
            reason = (
                "the largest chunk whose estimate fits in the memory available"
                if c < min(n, chunk_plan.MAX_CHUNK)
                else f"{c} frames per chunk (at most {chunk_plan.MAX_CHUNK}, DA3-Streaming's size)"
            )
        o = wanted_o or chunk_plan.default_overlap(c)
        o = max(1, min(o, c - 1))
        if not wanted_o:
            reason += f"; overlap {o} (a third of the chunk: the frames the alignment fits on)"
        plan = chunk_plan.plan_chunks(n, c, o)
        per = self.estimate(sizes[: plan.chunk], model, params, ways=False)
        seconds = None
        if per is not None:
            each = per[0].seconds
            seconds = each * plan.n_chunks if per[0].frames == min(n, plan.chunk) else None
        return ChunkChoice(c, o, plan, per[0] if per else None, seconds, reason)

    def submit_chunked(
        self,
        session_dir: Path,
        images: Any,
        names: Sequence[str],
        source: str,
        model: ModelSpec,
        params: dict[str, Any],
        cameras: Any = None,
        sizes: Sequence[tuple[int, int]] | None = None,
    ) -> Any:
        """Save the frames and start a chunked run (`da3_core.chunks.service.ChunkedRun`).

        ``images`` may be any iterable of (H, W, 3) uint8 frames (a generator keeps only one
        in memory); ``sizes`` (width, height) of each, when ``images`` is not a sequence.
        ``params["chunking"]``: ``chunk``, ``overlap`` (0: the guard chooses), ``loop_closure``.

        Raises:
            RunRefused: not even a chunk of two frames fits.
            ValueError: Gaussians asked for (not offered for chunked runs) or no frames.
        """
        from da3_core.chunks import store
        from da3_core.chunks.service import ChunkedRun

        if params.get("infer_gs"):
            raise ValueError(
                "3D Gaussians are not offered for chunked runs: each chunk's Gaussians would need merging; "
                "turn infer_gs off or run fewer frames in one call"
            )
        images = images if sizes is not None else list(images)
        sizes = list(sizes) if sizes is not None else [(im.shape[1], im.shape[0]) for im in images]
        if not sizes:
            raise ValueError("a chunked run needs at least one frame")
        choice = self.choose_chunks(sizes, model, params)
        opts = dict(params.get("chunking") or {})
        options = {
            "loop_closure": bool(opts.get("loop_closure", True)),
            "depth_video": bool(opts.get("depth_video", True)),
            "fps": opts.get("fps"),
            "cameras_given": cameras is not None,
            "parallel": max(1, len(self.runner.status().workers)),
            "reason": choice.reason,
        }
        saved = None if cameras is None else (cameras.extrinsics, cameras.intrinsics, cameras.source)
        run_params = {
            **params,
            "chunking": {**opts, "chunk": choice.chunk, "overlap": choice.overlap},
            "cameras": "estimated" if cameras is None else f"given ({cameras.source})",
            "infer_gs": False,
            "reference_view": None,
        }
        with self._lock:
            run_dir, meta = records.start_run(session_dir, images, names, source, model, run_params, cameras=saved)
            store.write_plan(run_dir, choice.plan, options)
            run = ChunkedRun(self, run_dir, meta, choice.plan, options, self.chunk_task, self._chunked_ended)
            self._runs[str(run_dir)] = run  # type: ignore[assignment]  # duck-typed: a ChunkedRun has what the pages read of an ActiveRun
        run.start()
        log.debug("run %s queued as %d chunk(s): %s", meta.run_id, choice.plan.n_chunks, choice.reason)
        return run

    def resume(self, run_dir: Path) -> Any:
        """Continue a chunked run that stopped (cancelled, failed, or the server restarted):
        only the chunks missing from its folder are computed.

        Raises:
            ValueError: Not a chunked run, already done, or still running here.
        """
        from da3_core.chunks import store
        from da3_core.chunks.service import ChunkedRun

        run_dir = Path(run_dir)
        if not store.is_chunked(run_dir):
            raise ValueError(f"run {run_dir.name} is not a chunked run: start it again instead")
        with self._lock:
            live = self._runs.get(str(run_dir))
            if live is not None and not live.finished:
                raise ValueError(f"run {run_dir.name} is still running")
            meta = records.read_meta(run_dir)
            if meta.status == "done":
                raise ValueError(f"run {run_dir.name} is already done")
            plan, options = store.read_plan(run_dir)
            from dataclasses import replace

            meta = replace(meta, status="pending", error="")
            records.write_meta(run_dir, meta)
            options = {**options, "parallel": max(1, len(self.runner.status().workers))}
            run = ChunkedRun(self, run_dir, meta, plan, options, self.chunk_task, self._chunked_ended)
            self._runs[str(run_dir)] = run  # type: ignore[assignment]  # duck-typed: a ChunkedRun has what the pages read of an ActiveRun
        run.start()
        return run

    def _chunked_ended(self, run: Any) -> None:
        run.finished_at = run.finished_at or time.monotonic()
        # The time from submission to the end, and the wait before the first chunk started
        # (known when a page looked while it ran), for the page once the server let go of it.
        saved = {WALL_S: float(run.finished_at - run.submitted_at)}
        if run.started_at is not None:
            saved[QUEUE_WAIT_S] = float(max(0.0, run.started_at - run.submitted_at))
        with self._lock:  # `resume` writes run.json under the same lock
            try:
                meta = records.read_meta(run.run_dir)
                if meta.status != "pending":
                    records.write_meta(run.run_dir, replace(meta, timings={**meta.timings, **saved}))
            except (OSError, ValueError, TypeError) as exc:
                log.warning("run %s: could not save its queue wait: %s", run.run_id, exc)

    # -- submit ------------------------------------------------------------------------
    def submit(
        self,
        session_dir: Path,
        images: Sequence[np.ndarray],
        names: Sequence[str],
        source: str,
        model: ModelSpec,
        params: dict[str, Any],
        cameras: Any = None,
        over_budget_ok: bool = False,
    ) -> ActiveRun:
        """Validate, save the inputs to a new run folder, and queue the reconstruction.

        Args:
            session_dir: The browser session's folder (created if missing).
            images: Frames, (H, W, 3) uint8 RGB each.
            names: Their display names.
            source: Where they came from (``"upload"``, ``"video"``, ``"example:<key>"``).
            model: The weights.
            params: DA3 parameters (``process_res``, ``process_res_method``,
                ``ref_view_strategy``, ``reference_view``, ``infer_gs``, ``device``, and
                optionally ``use_ray_pose``, ``align_to_input_ext_scale``).
            cameras: Known cameras for every frame (`da3_core.media.cameras.KnownCameras`: its
                ``extrinsics``, ``intrinsics``, ``source``), or None to let DA3 estimate them.
                Saved in the run folder with the frames.
            over_budget_ok: Start it even if the guard expects it to overrun its time budget.

        Returns:
            The run, already queued.

        Raises:
            RunRefused: The run guard expects it not to fit in memory (or its time budget):
                nothing is written and no worker is started.
            ValueError: The request is invalid (nothing is written then).
            GPUError: The runner refused the call; the run is saved as failed.
        """
        self.check([(im.shape[1], im.shape[0]) for im in images], model, params, over_budget_ok)
        request = ReconstructRequest(
            images=tuple(images),
            names=tuple(names),
            model=model,
            process_res=int(params["process_res"]),
            process_res_method=params["process_res_method"],
            ref_view_strategy=params["ref_view_strategy"],
            reference_view=params.get("reference_view"),
            infer_gs=bool(params.get("infer_gs", False)),
            device=params.get("device", "auto"),
            extrinsics=None if cameras is None else cameras.extrinsics,
            intrinsics=None if cameras is None else cameras.intrinsics,
            align_to_input_ext_scale=bool(params.get("align_to_input_ext_scale", True)),
            use_ray_pose=bool(params.get("use_ray_pose", False)),
            camera_source="" if cameras is None else cameras.source,
        )
        saved: tuple[np.ndarray, np.ndarray, str] | None = None
        if request.extrinsics is not None and request.intrinsics is not None:  # cameras given
            saved = (request.extrinsics, request.intrinsics, request.camera_source)
        params = {**params, "cameras": request.camera_label}
        with self._lock:  # reconcile() must not see the folder before the run is registered
            run_dir, meta = records.start_run(session_dir, images, names, source, model, params, cameras=saved)
            try:
                job = self.task.submit(
                    request,
                    str(self.settings.demo_weights_dir),
                    self.settings.cpu_threads,
                    self.settings.cpu_precision,
                    runner=self.runner,
                )  # type: ignore[call-arg]  # runner= is GPUFunction's own keyword, which ParamSpec cannot declare
            except GPUError as exc:
                log.error("run %s could not be queued: %s: %s", meta.run_id, type(exc).__name__, one_line(str(exc)))
                log.debug("traceback", exc_info=True)
                records.fail_run(run_dir, meta, f"{type(exc).__name__}: {exc}")
                raise
            job.touch()
            # The exact frames stay in memory until the outcome is known: a run that failed for
            # want of weights can be re-run on them (the saved JPEGs are close, not equal).
            active = ActiveRun(run_dir, meta, job, images=tuple(images))
            self._runs[str(run_dir)] = active
        log.debug("run %s queued: %d frame(s), %s, %s", meta.run_id, len(names), model.describe(), params)
        # Saving may take a second (compressing the arrays): it runs in a thread of its own,
        # started when the job ends, never in the runner's dispatcher.
        job.add_done_callback(
            lambda _job: threading.Thread(
                target=self._watch, args=(active,), name=f"da3-run-{meta.run_id}", daemon=True
            ).start()
        )
        return active

    # -- look-ups ----------------------------------------------------------------------
    def get(self, run_dir: Path) -> ActiveRun | None:
        """The run of this server in ``run_dir``, if it is running or finished recently."""
        self._forget_old()
        with self._lock:
            return self._runs.get(str(run_dir))

    def live_for_session(self, session_dir: Path) -> list[ActiveRun]:
        """This session's runs that no page has collected yet (queued, running, or finished
        while no page was looking, e.g. during a reload), oldest first."""
        with self._lock:
            found = [r for r in self._runs.values() if r.run_dir.parent == session_dir and not r.collected]
        return sorted(found, key=lambda r: r.submitted_at)

    def reconcile(self, session_dir: Path) -> list[str]:
        """Mark this session's ``pending`` runs that no job of this server owns as failed.

        Such a run was started by an earlier server process (or its outcome could not be
        written): without this it would show "pending" forever.

        Returns:
            The run ids marked failed.
        """
        fixed = []
        with self._lock:
            owned = {key for key in self._runs}
            for meta in records.list_session_runs(session_dir):
                run_dir = session_dir / meta.run_id
                if meta.status == "pending" and str(run_dir) not in owned:
                    try:
                        records.fail_run(
                            run_dir, meta, INTERRUPTED_CHUNKED if records.is_chunked(run_dir) else INTERRUPTED
                        )
                        fixed.append(meta.run_id)
                    except OSError:
                        log.exception("could not mark the interrupted run %s as failed", meta.run_id)
        for run_id in fixed:
            log.warning("run %s was pending with no job in this server: marked failed (interrupted)", run_id)
        return fixed

    # -- the watcher ---------------------------------------------------------------------
    def _watch(self, active: ActiveRun) -> None:
        """Save the ended job's outcome to the run folder (never leaves it pending)."""
        job = active.job
        try:
            rec = job.result()
        except TaskCancelledError as exc:
            abandoned = job.abandoned(self.runner.abandon_after_s)
            self._settle(active, RunOutcome("cancelled", ABANDONED if abandoned else "cancelled by the user"), exc)
            return
        except GPUError as exc:
            kind = getattr(exc, "type_name", type(exc).__name__)
            message = exc.message if isinstance(exc, TaskError) else str(exc)
            outcome = RunOutcome(
                "failed",
                f"{kind}: {message}",
                isinstance(exc, ModelUnavailableError),
                getattr(exc, "remote_traceback", ""),
            )
            self._settle(active, outcome, exc)
            return
        except BaseException as exc:  # noqa: BLE001 - whatever happens, the run must not stay pending
            log.error(
                "run %s: reading the result failed: %s: %s", active.run_id, type(exc).__name__, one_line(str(exc))
            )
            log.debug("traceback", exc_info=True)
            self._settle(
                active, RunOutcome("failed", f"the result could not be read: {type(exc).__name__}: {exc}"), exc
            )
            return
        try:
            done = records.finish_run(active.run_dir, active.meta, rec)
        except Exception as exc:  # noqa: BLE001 - disk full, permissions, a removed folder...
            log.error("run %s: saving the result failed: %s: %s", active.run_id, type(exc).__name__, one_line(str(exc)))
            log.debug("traceback", exc_info=True)
            self._settle(
                active, RunOutcome("failed", f"the result could not be saved: {type(exc).__name__}: {exc}"), exc
            )
            return
        self._save_clock(active.run_dir, done, job_clock(job))
        self._calibrate(active, rec)
        active.result = rec
        active.images = ()
        log.info(
            "run %s done in %s (%d frame(s), %s%s on %s)",
            active.run_id,
            self._took(active),
            len(active.meta.names),
            rec.preset or active.meta.model_ref,
            " untrained" if rec.untrained else "",
            rec.device,
        )
        active.finished_at = time.monotonic()
        active.outcome = RunOutcome("done")  # last: the run reads as finished once its line is out

    def _calibrate(self, active: ActiveRun, rec: Reconstruction) -> None:
        """Teach the run guard this server's speed from a finished run's inference time."""
        preset = presets.preset_for(rec.preset or "") or preset_of(active.meta.model)
        inference = float(rec.timings.get("inference") or 0.0)
        if preset is None or inference <= 0 or not active.images or rec.params.get("infer_gs"):
            return
        try:
            self.calibration.record(
                rec.device,
                preset,
                [(im.shape[1], im.shape[0]) for im in active.images],
                int(rec.params["process_res"]),
                str(rec.params.get("process_res_method", "upper_bound_resize")),
                inference,
            )
        except (KeyError, ValueError, TypeError) as exc:  # a guard model without this device: nothing to calibrate
            log.debug("no calibration from run %s: %s", active.run_id, exc)

    def _settle(self, active: ActiveRun, outcome: RunOutcome, exc: BaseException) -> None:
        """Write a run that did not finish as ``failed`` or ``cancelled``, then publish it."""
        # The run's one line (the error itself was logged where it happened, also one line).
        log.log(
            logging.WARNING if outcome.status == "failed" else logging.INFO,
            "run %s %s after %s: %s",
            active.run_id,
            outcome.status,
            self._took(active),
            one_line(outcome.message),
        )
        if outcome.traceback:
            log.debug("run %s worker traceback:\n%s", active.run_id, outcome.traceback)
        try:
            records.fail_run(
                active.run_dir,
                replace(active.meta, timings={**active.meta.timings, **clock_timings(job_clock(active.job))}),
                outcome.message,
                status=outcome.status,
            )
        except Exception as exc:  # noqa: BLE001 - the page still learns the outcome from memory
            log.error(
                "run %s: could not write its %s status: %s: %s",
                active.run_id,
                outcome.status,
                type(exc).__name__,
                one_line(str(exc)),
            )
            log.debug("traceback", exc_info=True)
        if not outcome.model_unavailable:
            active.images = ()
        active.finished_at = time.monotonic()
        active.outcome = outcome

    @staticmethod
    def _seconds(active: ActiveRun) -> float:
        """Seconds from the run's submission (queue included) to now."""
        return time.monotonic() - active.job.submitted_at

    @staticmethod
    def _took(active: ActiveRun) -> str:
        """The run's time as the page says it: ``6.1 s (4.0 s running, 2.1 s waiting)``."""
        clock = job_clock(active.job)
        return took_text(*clock) if clock else f"{RunService._seconds(active):.1f} s"

    @staticmethod
    def _save_clock(run_dir: Path, meta: records.RunMeta, clock: tuple[float, float] | None) -> None:
        """Add the run's time from submission to end and its wait in the queue to ``run.json``
        (`WALL_S`, `QUEUE_WAIT_S`), so the page says both after the server let go of it."""
        if clock is None:
            return
        try:
            records.write_meta(run_dir, replace(meta, timings={**meta.timings, **clock_timings(clock)}))
        except OSError as exc:  # the result stands; only the wait is not on disk
            log.warning("run %s: could not save its queue wait: %s", meta.run_id, exc)

    def close(self) -> None:
        """Stop the assembler and comparer children (the runner is closed by its owner)."""
        if self._assembler is not None:
            self._assembler.close()
        if self._comparer is not None:
            self._comparer.close()

    def _forget_old(self) -> None:
        now = time.monotonic()
        with self._lock:
            for key, run in list(self._runs.items()):
                if run.finished_at is not None and now - run.finished_at > self.keep_finished_s:
                    del self._runs[key]
            # Results no page collected yet (a closed tab): the newest few stay in memory, the
            # others are read from their run folder when a page asks (the server's memory
            # grew by every finished run's arrays until keep_finished_s passed).
            held = sorted(
                (r for r in self._runs.values() if r.finished_at is not None and r.result is not None),
                key=lambda r: r.finished_at or 0.0,
            )  # never None here: filtered above
            for run in held[: max(0, len(held) - KEEP_RESULTS)]:
                _let_go_of_result(run)
            for job_key, ej in list(self._exports.items()):  # their record in exports/ stays
                if ej.finished_at is not None and now - ej.finished_at > self.keep_finished_s:
                    del self._exports[job_key]

    def mark_collected(self, active: ActiveRun) -> None:
        """A page showed the outcome: the in-memory result is no longer needed (neither this
        run's reference nor its job's: the job stays for its clock, without the arrays)."""
        active.collected = True
        _let_go_of_result(active)

    def frames_for_retry(self, run_dir: Path) -> tuple[list[np.ndarray], bool]:
        """The frames of an earlier run, to run them again (e.g. with demo weights).

        Returns:
            (frames, exact): the very arrays the run was submitted with while this server
            still holds them (``exact`` True); otherwise the copies saved in the run folder
            (JPEG q95, so close but not bit-equal; ``exact`` False).
        """
        active = self.get(run_dir)
        if active is not None and active.images:
            return list(active.images), True
        from PIL import Image

        meta = records.read_meta(run_dir)
        frames = []
        for path in records.input_paths(run_dir, meta):
            with Image.open(path) as im:
                frames.append(np.asarray(im.convert("RGB")))
        return frames, False

    def cancel(self, run_dir: Path) -> bool:
        """Cancel the run in ``run_dir`` if this server runs it; False when there is none to cancel."""
        run = self.get(Path(run_dir))
        if run is None or run.finished:
            return False
        log.debug("run %s: cancel asked by the user", run.run_id)
        run.cancel()
        return True

    # -- a run again with untrained demo weights -------------------------------------------
    def retry_with_demo_weights(
        self, run_dir: Path, fallback_preset: str = "da3-small", over_budget_ok: bool = False
    ) -> Any:
        """Run an earlier run's frames again with untrained demo weights (its weights could
        not be found: `RunOutcome.model_unavailable`).

        The demo weights are built from the preset of the weights the run asked for (its hub
        id, or its checkpoint folder's config), else from ``fallback_preset``; the worker
        builds them once (`da3_core.worker.model.ensure_demo_weights`). The new run gets the
        same frames (the exact arrays while this server holds them, else the saved copies:
        `frames_for_retry`), names, source, known cameras and parameters; a chunked run is run
        again as a chunked run with the same chunk size and overlap. Its parameters say
        ``retry_of`` (the first run's id) and ``retry_frames`` (``exact`` or ``saved copies``).

        Returns:
            The new run, queued (an `ActiveRun` or a chunked run).

        Raises:
            ValueError: The run is still running here, or its folder is unreadable.
            RunRefused: The run guard refused the new run (nothing saved).
            GPUError: The runner refused the call (the new run is saved as failed).
        """
        run_dir = Path(run_dir)
        live = self.get(run_dir)
        if live is not None and not live.finished:
            raise ValueError(f"run {run_dir.name} is still running")
        try:
            meta = records.read_meta(run_dir)
        except (OSError, ValueError, TypeError) as exc:
            raise ValueError(f"run {run_dir.name} cannot be read again: {exc}") from exc
        preset = preset_of(meta.model)
        model = ModelSpec("demo", preset.name if preset is not None else fallback_preset)
        frames, exact = self.frames_for_retry(run_dir)
        saved = records.load_cameras(run_dir, meta)
        cameras = None
        if saved is not None:
            from da3_core.media.cameras import KnownCameras

            cameras = KnownCameras(*saved)
        params = {k: v for k, v in meta.params.items() if k not in ("cameras", "chunked", "retry_of", "retry_frames")}
        params.update(retry_of=meta.run_id, retry_frames="exact" if exact else "saved copies")
        log.info(
            "run %s: run again with untrained %s weights (%s frames)",
            meta.run_id,
            model.ref,
            "the exact" if exact else "the saved JPEG copies of the",
        )
        if records.is_chunked(run_dir):
            return self.submit_chunked(
                run_dir.parent, frames, list(meta.names), meta.source, model, params, cameras=cameras
            )
        return self.submit(
            run_dir.parent,
            frames,
            list(meta.names),
            meta.source,
            model,
            params,
            cameras=cameras,
            over_budget_ok=over_budget_ok,
        )

    # -- export jobs ------------------------------------------------------------------------
    def _export_task(self, kind: str) -> Any:
        if kind not in EXPORT_TITLES:
            raise ValueError(f"unknown export {kind!r}: one of {', '.join(EXPORT_TITLES)}")
        return self.export_tasks[kind]

    def _export_args(self, run_dir: Path, kind: str, rec: Reconstruction, options: dict[str, Any]) -> tuple[Any, ...]:
        """The task's arguments for an export of ``kind`` (the tasks of `da3_core.runs.tasks`)."""
        target = export_target(run_dir, kind)
        if kind == "colmap":
            meta = records.read_meta(run_dir)
            return rec, records.input_paths(run_dir, meta), str(target), float(options.get("conf_percentile", 40.0))
        if kind == "gs_ply":
            return rec, str(target.parent.parent)
        if kind == "mesh":
            return (
                rec,
                str(target),
                float(options.get("conf_percentile", 40.0)),
                float(options.get("fov_deg", 60.0)),
                int(options.get("view_stride", 2)),
            )
        if kind == "features":
            return (
                self._feature_request(run_dir, rec, options.get("layers") or ()),
                str(self.settings.demo_weights_dir),
                self.settings.cpu_threads,
                self.settings.cpu_precision,
            )
        return (
            rec,
            str(target),
            str(options.get("trajectory", "interpolate_smooth")),
            int(options.get("fps", 24)),
            int(options.get("crf", 18)),
            bool(options.get("depth_panel", False)),
        )

    def _feature_request(self, run_dir: Path, rec: Reconstruction, layers: Sequence[int]) -> FeatureRequest:
        """The run's frames and DA3 parameters with the chosen layers (`FeatureRequest`): the
        exact frames while this server holds them, else the saved copies (`frames_for_retry`).

        Raises:
            ValueError: No layer, a layer the preset lacks, a chunked run, or an unreadable
                run folder (the message names the run).
        """
        from da3_core.scene.features import check_layers

        try:
            layers = check_layers(rec.preset, list(layers))
        except ValueError as exc:
            raise ValueError(f"feature maps of run {run_dir.name}: {exc}") from exc
        if records.is_chunked(run_dir):
            raise ValueError(
                f"feature maps of run {run_dir.name}: a chunked run has no single forward pass; "
                "run fewer frames in one call to get its feature maps"
            )
        try:
            meta = records.read_meta(run_dir)
            frames, _exact = self.frames_for_retry(run_dir)
            saved = records.load_cameras(run_dir, meta)
        except (OSError, ValueError, TypeError) as exc:
            raise ValueError(f"feature maps of run {run_dir.name}: its frames cannot be read: {exc}") from exc
        p = meta.params
        request = ReconstructRequest(
            images=tuple(frames),
            names=tuple(meta.names),
            model=meta.model,
            process_res=int(p.get("process_res", 504)),
            process_res_method=str(p.get("process_res_method", "upper_bound_resize")),
            ref_view_strategy=str(p.get("ref_view_strategy", "saddle_balanced")),
            reference_view=p.get("reference_view"),
            device=str(p.get("device", "auto")),
            extrinsics=None if saved is None else saved[0],
            intrinsics=None if saved is None else saved[1],
            align_to_input_ext_scale=bool(p.get("align_to_input_ext_scale", True)),
            camera_source="" if saved is None else saved[2],
        )
        return FeatureRequest(request, layers, run_id=run_dir.name)

    def export_estimate(self, run_dir: Path, kind: str, rec: Reconstruction, **options: Any) -> ExportEstimate:
        """The estimate of an export job (see `export_estimate`); starts nothing."""
        task = self._export_task(kind)
        return export_estimate(kind, rec, task.budget_s(*self._export_args(Path(run_dir), kind, rec, options)), options)

    def submit_export(self, run_dir: Path, kind: str, rec: Reconstruction, **options: Any) -> ExportJob:
        """Queue an export of the run in ``run_dir`` (returns at once).

        Args:
            run_dir: The run folder; the export lands in its ``exports/`` (`export_target`).
            kind: ``"colmap"`` (option ``conf_percentile``), ``"gs_ply"``, or ``"gs_video"``
                (options ``trajectory``, ``fps``, ``crf``, ``depth_panel``).
            rec: The run's result (sent to the worker).

        Returns:
            The job, queued. Its record in exports/ says ``pending`` until it ends.

        Raises:
            ValueError: Unknown kind, or an export of this kind of this run is still queued
                or running.
            GPUError: The runner refused the call (recorded as failed).
        """
        run_dir = Path(run_dir)
        task = self._export_task(kind)
        args = self._export_args(run_dir, kind, rec, options)
        estimate = export_estimate(kind, rec, task.budget_s(*args), options)
        key = (str(run_dir), kind)
        record = {
            "kind": kind,
            "run_id": run_dir.name,
            "status": "pending",
            "message": "",
            "options": _jsonable(options),
            "estimate": estimate.note(),
            "submitted": time.time(),
        }
        with self._lock:
            held = self._exports.get(key)
            if held is not None and not held.finished:
                raise ValueError(f"the {EXPORT_TITLES[kind]} of run {run_dir.name} is already being made")
            self._remove_partial(run_dir, kind)
            _write_export_record(run_dir, kind, record)
            try:
                job = task.submit(*args, runner=self.runner)
            except GPUError as exc:
                log.error(
                    "run %s: the %s could not be queued: %s: %s",
                    run_dir.name,
                    EXPORT_TITLES[kind],
                    type(exc).__name__,
                    one_line(str(exc)),
                )
                _write_export_record(
                    run_dir, kind, {**record, "status": "failed", "message": f"{type(exc).__name__}: {exc}"}
                )
                raise
            ej = ExportJob(kind, run_dir, job, estimate, dict(options))
            self._exports[key] = ej
        log.info("run %s: %s queued (%s)", run_dir.name, EXPORT_TITLES[kind], one_line(estimate.note()))
        job.add_done_callback(
            lambda _job: threading.Thread(
                target=self._watch_export, args=(ej,), name=f"da3-export-{kind}-{run_dir.name}", daemon=True
            ).start()
        )
        return ej

    def export_job(self, run_dir: Path, kind: str) -> ExportJob | None:
        """The export job of ``kind`` of the run in ``run_dir`` that this server holds
        (queued, running or finished recently), or None."""
        self._forget_old()
        with self._lock:
            return self._exports.get((str(run_dir), kind))

    def export_status(self, run_dir: Path, kind: str) -> ExportStatus | None:
        """What a page shows of the last export of ``kind`` of the run in ``run_dir``: the job
        this server holds (its new events read first), else its record in exports/, else
        None. A record left ``pending`` by an earlier server process is marked failed
        (interrupted) here, and whatever that writer left half-written is removed."""
        run_dir = Path(run_dir)
        ej = self.export_job(run_dir, kind)
        if ej is not None:
            ej.pump()
            return ej.snapshot()
        with self._lock:
            if self._exports.get((str(run_dir), kind)) is not None:  # submitted since the look above
                return self._exports[(str(run_dir), kind)].snapshot()
            record = read_export_record(run_dir, kind)
            if record is None:
                return None
            if record.get("status") == "pending":
                record = {**record, "status": "failed", "message": INTERRUPTED_EXPORT}
                try:
                    self._remove_partial(run_dir, kind)
                    _write_export_record(run_dir, kind, record)
                except OSError:
                    log.exception(
                        "run %s: could not mark the interrupted %s as failed", run_dir.name, EXPORT_TITLES[kind]
                    )
                log.warning(
                    "run %s: the %s was pending with no job in this server: marked failed (interrupted)",
                    run_dir.name,
                    EXPORT_TITLES[kind],
                )
        return _status_from_record(kind, record)

    def cancel_export(self, run_dir: Path, kind: str) -> bool:
        """Cancel the export of ``kind`` of the run in ``run_dir``; False when none is pending."""
        ej = self.export_job(run_dir, kind)
        if ej is None or ej.finished:
            return False
        log.debug("run %s: cancel of the %s asked by the user", ej.run_id, ej.title)
        ej.cancel()
        return True

    @staticmethod
    def _remove_partial(run_dir: Path, kind: str) -> None:
        """Remove what a stopped writer of this export left under a hidden name."""
        from da3_core.atomic import remove_partial

        target = export_target(run_dir, kind)
        # The 3DGS PLY's writer works in a hidden folder beside gs_ply/ (DA3 names the file).
        for removed in remove_partial(target.parent if kind == "gs_ply" else target):
            log.debug("run %s: removed the unfinished %s", run_dir.name, removed.name)

    def _watch_export(self, ej: ExportJob) -> None:
        """Save how an export job ended to its record in exports/ (never leaves it pending)."""
        job = ej.job
        files: tuple[str, ...] = ()
        info: dict[str, Any] = {}
        try:
            value = job.result()
        except TaskCancelledError:
            outcome = RunOutcome("cancelled", "cancelled by the user")
        except GPUError as exc:
            kind = getattr(exc, "type_name", type(exc).__name__)
            message = exc.message if isinstance(exc, TaskError) else str(exc)
            outcome = RunOutcome("failed", f"{kind}: {message}", traceback=getattr(exc, "remote_traceback", ""))
        except BaseException as exc:  # noqa: BLE001 - whatever happens, the job must not stay pending
            log.debug("traceback", exc_info=True)
            outcome = RunOutcome("failed", f"the result could not be read: {type(exc).__name__}: {exc}")
        else:
            try:
                value = _land_export(ej, value)
            except Exception as exc:  # noqa: BLE001 - a file the parent could not write: failed, not pending
                log.debug("traceback", exc_info=True)
                outcome = RunOutcome("failed", f"the result could not be saved: {type(exc).__name__}: {exc}")
            else:
                files, info = _export_files(ej.run_dir, value)
                outcome = RunOutcome("done")
        clock = job_clock(job)
        if not outcome.ok:
            try:
                self._remove_partial(ej.run_dir, ej.kind)
            except OSError:
                log.exception("run %s: could not remove the unfinished %s", ej.run_id, ej.title)
        log.log(
            logging.WARNING if outcome.status == "failed" else logging.INFO,
            "run %s: %s %s in %s%s",
            ej.run_id,
            ej.title,
            outcome.status,
            took_text(*clock) if clock else "?",
            f": {one_line(outcome.message)}" if outcome.message else "",
        )
        if outcome.traceback:
            log.debug("run %s: %s worker traceback:\n%s", ej.run_id, ej.title, outcome.traceback)
        record = {
            "kind": ej.kind,
            "run_id": ej.run_id,
            "status": outcome.status,
            "message": outcome.message,
            "traceback": outcome.traceback,
            "files": list(files),
            "info": _jsonable(info),
            "options": _jsonable(ej.options),
            "estimate": ej.estimate.note(),
            "total_s": clock[0] if clock else None,
            "waiting_s": clock[1] if clock else None,
        }
        try:
            _write_export_record(ej.run_dir, ej.kind, record)
        except OSError as exc:  # the page still learns the outcome from memory
            log.error("run %s: could not write the %s's record: %s", ej.run_id, ej.title, exc)
        ej.files, ej.info = tuple(files), dict(info)
        ej.finished_at = time.monotonic()
        ej.outcome = outcome  # last: the job reads as finished once its record is written
