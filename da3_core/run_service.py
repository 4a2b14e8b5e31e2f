"""A run's life in the parent, owned in one place: submit, watch, collect, fail.

One `RunService` per server (held by `da3_core.holder`), shared by every browser session:

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

Nothing here touches ``st.session_state``: `da3_core.session` keeps which run a browser
session watches.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from da3_core import guard, presets, runs, tasks
from da3_core.config import Settings
from da3_core.contract import ModelSpec, ModelUnavailableError, ReconstructRequest, Reconstruction
from da3_core.logs import one_line
from da3_core.runner.protocol import GPUError, TaskCancelledError, TaskError
from da3_core.runner import Job, Progress, Queued, Runner, Started

log = logging.getLogger(__name__)

INTERRUPTED = "interrupted: the server stopped while this run was pending, so its result was lost (its frames are kept)"
INTERRUPTED_CHUNKED = "interrupted: the server stopped while this chunked run was running; its finished chunks are kept: Resume continues from there"
ABANDONED = "the page that started it was closed, so the run was stopped (its frames are kept)"


@dataclass
class RunOutcome:
    """How a run ended.

    Attributes:
        status: ``"done"``, ``"failed"`` or ``"cancelled"``.
        message: The reason when not done ("" when done).
        model_unavailable: The weights could not be found (the page offers demo weights).
        traceback: The worker-side traceback, when there is one.
    """

    status: str
    message: str = ""
    model_unavailable: bool = False
    traceback: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "done"


@dataclass
class ActiveRun:
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
    meta: runs.RunMeta
    job: Job
    stage: str = "queued"
    fraction: float = 0.0
    position: int | None = None
    outcome: RunOutcome | None = None
    result: Reconstruction | None = None
    finished_at: float | None = None
    images: tuple[np.ndarray, ...] = ()
    collected: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    chunked = False

    @property
    def run_id(self) -> str:
        return self.meta.run_id

    @property
    def submitted_at(self) -> float:
        return self.job.submitted_at

    @property
    def cancel_requested(self) -> bool:
        return self.job.cancel_requested

    def cancel(self) -> None:
        self.job.cancel()

    @property
    def session_id(self) -> str:
        return self.run_dir.parent.name

    @property
    def finished(self) -> bool:
        """True once the outcome is saved (the page may show it)."""
        return self.outcome is not None

    @property
    def queued(self) -> bool:
        return self.position is not None and self.job.started_at is None

    @property
    def elapsed_s(self) -> float:
        """Seconds running (or waiting, while queued)."""
        if self.job.started_at is not None:
            return self.job.elapsed_s
        return time.monotonic() - self.job.submitted_at

    def pump(self) -> None:
        """Read the job's new events into the display fields, and tell the runner someone watches."""
        self.job.touch()
        with self._lock:
            for event in self.job.poll_events():
                if isinstance(event, Queued):
                    self.position = event.position
                    self.stage = f"position {event.position} in the queue ({event.ahead} ahead)"
                elif isinstance(event, Started):
                    self.position, self.stage = None, "starting"
                elif isinstance(event, Progress):
                    self.position = None
                    self.stage = event.stage + (f" ({event.detail})" if event.detail else "")
                    if event.fraction is not None:
                        self.fraction = event.fraction

    def status_line(self) -> str:
        """One line for the page, e.g. ``Queued: position 1 in the queue … · 4 frames``."""
        n = len(self.meta.names)
        frames = f"{n} frame{'s' if n != 1 else ''}"
        if self.job.started_at is None:
            return f"Queued ({self.stage}) · {frames} · waiting {self.elapsed_s:.1f} s"
        return f"Running {frames}: {self.stage} · {self.elapsed_s:.1f} s"


class RunRefused(ValueError):
    """The run guard refused a run before anything was saved or queued (`da3_core.guard`).

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
        mem = f"about {guard.gb(est.memory_mb)} of memory per chunk ({guard.gb(est.available.mb)} available)" if est else ""
        t = f", about {guard.duration(self.seconds)} in all" if self.seconds is not None else ""
        return (f"{self.plan.n_frames} frames as {self.plan.n_chunks} chunk(s) of {self.chunk} overlapping by {self.overlap} "
                f"({self.plan.frames_computed} frame passes): {mem}{t}.")


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
    """

    def __init__(self, runner: Runner, settings: Settings, keep_finished_s: float = 600.0, task: Any = None,
                 chunk_task: Any = None) -> None:
        self.runner = runner
        self.settings = settings
        self.keep_finished_s = keep_finished_s
        self.task = task or tasks.reconstruct
        self.chunk_task = chunk_task or tasks.reconstruct_chunk
        self._assembler: Any = None
        self._runs: dict[str, ActiveRun] = {}
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

    def estimate(self, sizes: Sequence[tuple[int, int]], model: ModelSpec, params: dict[str, Any],
                 ways: bool = True) -> tuple[guard.Estimate, list[str]] | None:
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
            available = guard.available_memory(self.settings.memory_limit_mb, sum(w.rss_mb or 0.0 for w in workers),
                                               gpu_total_mb=min(gpu_sizes) * 0.95 if device == "cuda" and gpu_sizes else None)
        loaded = any(preset.name in m.lower() or preset.hub_id.lower() in m.lower()
                     for w in workers for m in ((w.state_report or {}).get("models_loaded") or []))
        method = str(params.get("process_res_method", "upper_bound_resize"))
        opts = {"model_loaded": loaded, "speed_factor": self.calibration.factor(device)}
        est = guard.estimate(preset, sizes, int(params["process_res"]), device, available, self.budget_s(len(sizes)), method, **opts)
        found = [] if not ways or (est.fits_memory and est.fits_time) else guard.ways_on(est, sizes, method, self.budget_s, **opts)
        return est, found

    def check(self, sizes: Sequence[tuple[int, int]], model: ModelSpec, params: dict[str, Any], over_budget_ok: bool = False) -> guard.Estimate | None:
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
            c = chunk_plan.largest_chunk(lambda k: bool((e := self.estimate(sizes[:k], model, params, ways=False)) and e[0].fits_memory), n)
            if c == 0:
                est = found[0]
                raise RunRefused("Not even a chunk of two frames fits in memory: " + est.summary()
                                 + " Try a lower process_res or a smaller preset.", est, "memory")
            reason = (f"the largest chunk whose estimate fits in the memory available" if c < min(n, chunk_plan.MAX_CHUNK)
                      else f"{c} frames per chunk (at most {chunk_plan.MAX_CHUNK}, DA3-Streaming's size)")
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

    def submit_chunked(self, session_dir: Path, images: Any, names: Sequence[str], source: str, model: ModelSpec,
                       params: dict[str, Any], cameras: Any = None, sizes: Sequence[tuple[int, int]] | None = None) -> Any:
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
            raise ValueError("3D Gaussians are not offered for chunked runs: each chunk's Gaussians would need merging; "
                             "turn infer_gs off or run fewer frames in one call")
        images = images if sizes is not None else list(images)
        sizes = list(sizes) if sizes is not None else [(im.shape[1], im.shape[0]) for im in images]
        if not sizes:
            raise ValueError("a chunked run needs at least one frame")
        choice = self.choose_chunks(sizes, model, params)
        opts = dict(params.get("chunking") or {})
        options = {"loop_closure": bool(opts.get("loop_closure", True)), "depth_video": bool(opts.get("depth_video", True)),
                   "fps": opts.get("fps"), "cameras_given": cameras is not None, "parallel": max(1, len(self.runner.status().workers)),
                   "reason": choice.reason}
        saved = None if cameras is None else (cameras.extrinsics, cameras.intrinsics, cameras.source)
        run_params = {**params, "chunking": {**opts, "chunk": choice.chunk, "overlap": choice.overlap},
                      "cameras": "estimated" if cameras is None else f"given ({cameras.source})", "infer_gs": False,
                      "reference_view": None}
        with self._lock:
            run_dir, meta = runs.start_run(session_dir, images, names, source, model, run_params, cameras=saved)
            store.write_plan(run_dir, choice.plan, options)
            run = ChunkedRun(self, run_dir, meta, choice.plan, options, self.chunk_task, self._chunked_ended)
            self._runs[str(run_dir)] = run
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
            meta = runs.read_meta(run_dir)
            if meta.status == "done":
                raise ValueError(f"run {run_dir.name} is already done")
            plan, options = store.read_plan(run_dir)
            from dataclasses import replace

            meta = replace(meta, status="pending", error="")
            runs.write_meta(run_dir, meta)
            options = {**options, "parallel": max(1, len(self.runner.status().workers))}
            run = ChunkedRun(self, run_dir, meta, plan, options, self.chunk_task, self._chunked_ended)
            self._runs[str(run_dir)] = run
        run.start()
        return run

    def _chunked_ended(self, run: Any) -> None:
        run.finished_at = run.finished_at or time.monotonic()

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
            cameras: Known cameras for every frame (`da3_core.cameras.KnownCameras`: its
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
        saved = None if cameras is None else (request.extrinsics, request.intrinsics, request.camera_source)
        params = {**params, "cameras": request.camera_label}
        with self._lock:  # reconcile() must not see the folder before the run is registered
            run_dir, meta = runs.start_run(session_dir, images, names, source, model, params, cameras=saved)
            try:
                job = self.task.submit(request, str(self.settings.demo_weights_dir), self.settings.cpu_threads,
                                       self.settings.cpu_precision, runner=self.runner)
            except GPUError as exc:
                log.error("run %s could not be queued: %s: %s", meta.run_id, type(exc).__name__, one_line(str(exc)))
                log.debug("traceback", exc_info=True)
                runs.fail_run(run_dir, meta, f"{type(exc).__name__}: {exc}")
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
            lambda _job: threading.Thread(target=self._watch, args=(active,), name=f"da3-run-{meta.run_id}", daemon=True).start()
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
            for meta in runs.list_session_runs(session_dir):
                run_dir = session_dir / meta.run_id
                if meta.status == "pending" and str(run_dir) not in owned:
                    try:
                        runs.fail_run(run_dir, meta, INTERRUPTED_CHUNKED if runs.is_chunked(run_dir) else INTERRUPTED)
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
            outcome = RunOutcome("failed", f"{kind}: {message}", isinstance(exc, ModelUnavailableError),
                                 getattr(exc, "remote_traceback", ""))
            self._settle(active, outcome, exc)
            return
        except BaseException as exc:  # noqa: BLE001 - whatever happens, the run must not stay pending
            log.error("run %s: reading the result failed: %s: %s", active.run_id, type(exc).__name__, one_line(str(exc)))
            log.debug("traceback", exc_info=True)
            self._settle(active, RunOutcome("failed", f"the result could not be read: {type(exc).__name__}: {exc}"), exc)
            return
        try:
            runs.finish_run(active.run_dir, active.meta, rec)
        except Exception as exc:  # noqa: BLE001 - disk full, permissions, a removed folder...
            log.error("run %s: saving the result failed: %s: %s", active.run_id, type(exc).__name__, one_line(str(exc)))
            log.debug("traceback", exc_info=True)
            self._settle(active, RunOutcome("failed", f"the result could not be saved: {type(exc).__name__}: {exc}"), exc)
            return
        self._calibrate(active, rec)
        active.result = rec
        active.images = ()
        log.info("run %s done in %.1f s (%d frame(s), %s%s on %s)", active.run_id, self._seconds(active), len(active.meta.names),
                 rec.preset or active.meta.model_ref, " untrained" if rec.untrained else "", rec.device)
        active.finished_at = time.monotonic()
        active.outcome = RunOutcome("done")  # last: the run reads as finished once its line is out

    def _calibrate(self, active: ActiveRun, rec: Reconstruction) -> None:
        """Teach the run guard this server's speed from a finished run's inference time."""
        preset = presets.preset_for(rec.preset or "") or preset_of(ModelSpec(active.meta.model_kind, active.meta.model_ref))
        inference = float(rec.timings.get("inference") or 0.0)
        if preset is None or inference <= 0 or not active.images or rec.params.get("infer_gs"):
            return
        try:
            self.calibration.record(rec.device, preset, [(im.shape[1], im.shape[0]) for im in active.images], int(rec.params["process_res"]),
                                    str(rec.params.get("process_res_method", "upper_bound_resize")), inference)
        except (KeyError, ValueError, TypeError) as exc:  # a guard model without this device: nothing to calibrate
            log.debug("no calibration from run %s: %s", active.run_id, exc)

    def _settle(self, active: ActiveRun, outcome: RunOutcome, exc: BaseException) -> None:
        """Write a run that did not finish as ``failed`` or ``cancelled``, then publish it."""
        # The run's one line (the error itself was logged where it happened, also one line).
        log.log(logging.WARNING if outcome.status == "failed" else logging.INFO, "run %s %s after %.1f s: %s",
                active.run_id, outcome.status, self._seconds(active), one_line(outcome.message))
        if outcome.traceback:
            log.debug("run %s worker traceback:\n%s", active.run_id, outcome.traceback)
        try:
            runs.fail_run(active.run_dir, active.meta, outcome.message, status=outcome.status)
        except Exception as exc:  # noqa: BLE001 - the page still learns the outcome from memory
            log.error("run %s: could not write its %s status: %s: %s", active.run_id, outcome.status, type(exc).__name__, one_line(str(exc)))
            log.debug("traceback", exc_info=True)
        if not outcome.model_unavailable:
            active.images = ()
        active.finished_at = time.monotonic()
        active.outcome = outcome

    @staticmethod
    def _seconds(active: ActiveRun) -> float:
        """Seconds from the run's submission (queue included) to now."""
        return time.monotonic() - active.job.submitted_at

    def close(self) -> None:
        """Stop the assembler child (the runner is closed by its owner)."""
        if self._assembler is not None:
            self._assembler.close()

    def _forget_old(self) -> None:
        now = time.monotonic()
        with self._lock:
            for key, run in list(self._runs.items()):
                if run.finished_at is not None and now - run.finished_at > self.keep_finished_s:
                    del self._runs[key]

    def mark_collected(self, active: ActiveRun) -> None:
        """A page showed the outcome: the in-memory result is no longer needed."""
        active.collected = True
        active.result = None

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

        meta = runs.read_meta(run_dir)
        frames = []
        for path in runs.input_paths(run_dir, meta):
            with Image.open(path) as im:
                frames.append(np.asarray(im.convert("RGB")))
        return frames, False
