"""A chunked run's life in the server: its chunks queued on the runner, saved as they land,
assembled in a child process, loops closed, resumable.

`ChunkedRun` is what `da3_core.runs.service.RunService` holds for a chunked run; it reads
like a one-call `ActiveRun` to the pages (status line, progress, cancel, outcome), so the
Reconstruct page and the sidebar need no second code path.

* One thread per run (`ChunkedRun._main`) keeps at most one chunk per worker slot in flight
  (plus one waiting, so a slot never idles), so the frames in memory stay bounded whatever
  the run's length: each chunk's frames are read from the run folder when it is submitted.
* A chunk that lands is saved (`da3_core.chunks.store.save_chunk`) before anything else;
  the child process (`Assembler`) then aligns it and writes its frames into the result, so
  the pages can show the frames so far.
* Cancel, a failed chunk, a crashed worker or a server restart leave the finished chunks on
  disk; `RunService.resume` starts a new `ChunkedRun` on the same folder that computes only
  the missing chunks.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import multiprocessing
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from da3_core.chunks import store
from da3_core.chunks.plan import ChunkPlan
from da3_core.contract import ChunkRequest, ReconstructRequest
from da3_core.logs import one_line
from da3_core.runner import Job, Progress, Queued
from da3_core.runner.protocol import GPUError, TaskCancelledError, TaskError
from da3_core.runs import records

log = logging.getLogger(__name__)


def _in_child(step: str, *args: Any) -> Any:
    """Run `da3_core.chunks.assemble`'s ``step`` (in the child: the server never imports it,
    nor the scipy it needs)."""
    from da3_core.chunks import assemble

    return getattr(assemble, step)(*args)


class Assembler:
    """One spawned child process that runs `da3_core.chunks.assemble` for every chunked run
    of the server, one step at a time (numpy and scipy only: the Streamlit process never
    does the heavy maths). A crashed child is replaced on the next call."""

    def __init__(self) -> None:
        self._pool: cf.ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def submit(self, step: str, *args: Any) -> cf.Future:
        """Queue `da3_core.chunks.assemble`'s ``step(*args)`` in the child."""
        from da3_core.runner.backends.process import _spawn_without_main_module

        # The child is spawned inside submit(). Without the main module trimmed it would re-run
        # the parent's __main__: in the Streamlit server that is the page script being run (seen:
        # the child ran the page in bare mode and tried to start a runner of its own).
        with self._lock, _spawn_without_main_module():
            if self._pool is None:
                self._pool = cf.ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
            try:
                return self._pool.submit(_in_child, step, *args)
            except cf.process.BrokenProcessPool:
                self._pool = cf.ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
                return self._pool.submit(_in_child, step, *args)

    def call(self, step: str, *args: Any) -> Any:
        """Run ``step(*args)`` in the child and wait; a dead child is replaced and the call
        retried once (the steps are idempotent)."""
        try:
            return self.submit(step, *args).result()
        except cf.process.BrokenProcessPool:
            with self._lock:
                self._pool = None
            return self.submit(step, *args).result()

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool = None


class ChunkedRunCancelled(Exception):
    pass


class ChunkedRun:
    """A chunked run this server drives (see the module doc).

    Attributes:
        run_dir / meta: The run folder and its metadata.
        plan: Its chunks.
        stage / fraction / position: What the page shows.
        outcome: Set when the run ended (a `da3_core.runs.service.RunOutcome`).
    """

    def __init__(
        self,
        service: Any,
        run_dir: Path,
        meta: records.RunMeta,
        plan: ChunkPlan,
        options: dict[str, Any],
        task: Any,
        on_end: Callable[[ChunkedRun], None],
    ) -> None:
        self.service = service
        self.run_dir = Path(run_dir)
        self.meta = meta
        self.plan = plan
        self.options = options
        self.task = task
        self._on_end = on_end
        self.submitted_at = time.monotonic()
        self.started_at: float | None = None
        self.stage = "queued"
        self.fraction = 0.0
        self.position: int | None = None
        self.outcome: Any = None
        self.result = None
        self.finished_at: float | None = None
        self.collected = False
        self.images: tuple[np.ndarray, ...] = ()
        self.cancel_requested = False
        self.resumed_from = len(store.done_chunks(self.run_dir, plan))
        self.chunks_done = self.resumed_from
        self.computed: list[int] = []  # chunks this run computed (a resumed run skips the saved ones)
        self.frames_ready = store.frames_ready(self.run_dir)
        self.earlier_s = float((meta.timings or {}).get("attempts_s", 0.0)) if self.resumed_from else 0.0
        self.loops_found = 0
        self._chunk_seconds: list[float] = []
        self._inflight: dict[int, Job] = {}
        self._progress: dict[int, float] = {}
        self._positions: dict[int, int] = {}
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._main, name=f"da3-chunked-{meta.run_id}", daemon=True)

    # -- what pages read --------------------------------------------------------------------
    chunked = True

    @property
    def run_id(self) -> str:
        return self.meta.run_id

    @property
    def session_id(self) -> str:
        return self.run_dir.parent.name

    @property
    def finished(self) -> bool:
        return self.outcome is not None

    @property
    def elapsed_s(self) -> float:
        return time.monotonic() - self.submitted_at

    def cancel(self) -> None:
        """Stop the run: chunks in flight are cancelled, finished chunks stay for a resume."""
        self.cancel_requested = True
        with self._lock:
            jobs = list(self._inflight.values())
        for job in jobs:
            job.cancel()

    def pump(self) -> None:
        """Read the chunk jobs' events into the display fields."""
        with self._lock:
            jobs = dict(self._inflight)
        for k, job in jobs.items():
            for event in job.poll_events():
                if isinstance(event, Queued):
                    self._positions[k] = event.position
                elif isinstance(event, Progress) and event.fraction is not None:
                    self._progress[k] = event.fraction
            if job.started_at is not None:
                self.started_at = self.started_at or job.started_at
        # "Queued" only until the run's first chunk starts: afterwards it is running, even
        # while its next chunk waits for a free worker (no flicker between the two).
        known = [self._positions[k] for k in jobs if k in self._positions and jobs[k].started_at is None]
        self.position = min(known) if known and self.started_at is None else None
        running = sum(min(1.0, self._progress.get(k, 0.0)) for k, j in jobs.items() if j.started_at is not None)
        self.fraction = min(0.99, 0.95 * (self.chunks_done + running) / max(1, self.plan.n_chunks))

    def eta_s(self) -> float | None:
        """Seconds left, from the mean time per chunk so far (None before the first lands)."""
        if not self._chunk_seconds:
            return None
        per = float(np.mean(self._chunk_seconds))
        left = self.plan.n_chunks - self.chunks_done
        slots = max(1, min(self.parallel, left)) if left else 1
        return per * left / slots

    @property
    def parallel(self) -> int:
        return max(1, int(self.options.get("parallel", 1)))

    def status_line(self) -> str:
        """E.g. ``Running chunk 3 of 9 · 40 of 128 frames ready · ETA 2 min``."""
        n = self.plan.n_frames
        if self.position is not None and self.started_at is None:
            return f"Queued (position {self.position}) · {n} frames in {self.plan.n_chunks} chunks · waiting {self.elapsed_s:.0f} s"
        eta = self.eta_s()
        current = min(self.plan.n_chunks, self.chunks_done + 1)
        parts = [
            f"{self.stage}"
            if self.stage.startswith(("closing", "writing", "assembling"))
            else f"Running chunk {current} of {self.plan.n_chunks}",
            f"{self.frames_ready} of {n} frames ready",
        ]
        if eta is not None and self.chunks_done < self.plan.n_chunks:
            parts.append(f"ETA {_duration(eta)}")
        parts.append(f"{self.elapsed_s:.0f} s")
        return " · ".join(parts)

    # -- the run ------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def _frames(self, ids: list[int]) -> tuple[np.ndarray, ...]:
        paths = records.input_paths(self.run_dir, self.meta)
        out = []
        for i in ids:
            with Image.open(paths[i]) as im:
                out.append(np.asarray(im.convert("RGB")))
        return tuple(out)

    def _request(self, ids: list[int], chunk: int) -> ChunkRequest:
        p = self.meta.params
        cams = records.load_cameras(self.run_dir, self.meta)
        request = ReconstructRequest(
            images=self._frames(ids),
            names=tuple(self.meta.names[i] for i in ids),
            model=self.meta.model,
            process_res=int(p["process_res"]),
            process_res_method=str(p.get("process_res_method", "upper_bound_resize")),
            ref_view_strategy=str(p.get("ref_view_strategy", "saddle_balanced")),
            device=str(p.get("device", "auto")),
            use_ray_pose=bool(p.get("use_ray_pose", False)),
            extrinsics=None if cams is None else cams[0][ids],
            intrinsics=None if cams is None else cams[1][ids],
            align_to_input_ext_scale=True,
            camera_source="" if cams is None else cams[2],
        )
        return ChunkRequest(request, chunk, tuple(ids), descriptors=bool(self.options.get("loop_closure", True)))

    def _submit(self, ids: list[int], chunk: int) -> Job:
        s = self.service.settings
        job = self.task.submit(
            self._request(ids, chunk),
            str(s.demo_weights_dir),
            s.cpu_threads,
            s.cpu_precision,
            runner=self.service.runner,
        )
        return job

    def _run_chunks(self, todo: list[tuple[int, list[int], bool]]) -> None:
        """Compute ``todo`` ((index, frame ids, is_loop)) with one chunk per slot in flight,
        saving each as it lands and assembling in order."""
        landed: queue.Queue[int] = queue.Queue()
        pending = list(todo)
        by_index = {k: (ids, loop) for k, ids, loop in todo}
        inflight_start: dict[int, float] = {}
        while pending or self._inflight:
            if self.cancel_requested:
                raise ChunkedRunCancelled()
            while pending and len(self._inflight) < self.parallel + 1:
                k, ids, loop = pending.pop(0)
                job = self._submit(ids, -1 if loop else k)
                with self._lock:
                    self._inflight[k] = job
                inflight_start[k] = time.monotonic()

                def on_done(_job: Job, k: int = k) -> None:  # k bound now, not at call time
                    landed.put(k)

                job.add_done_callback(on_done)
            try:
                k = landed.get(timeout=0.2)
            except queue.Empty:
                continue
            with self._lock:
                job = self._inflight.pop(k)
            self._progress.pop(k, None)
            result = job.result()  # raises: cancelled, failed, crashed, timed out
            ids, loop = by_index[k]
            store.save_chunk(self.run_dir, k, result, loop=loop)
            self.computed.append(k if not loop else -1 - k)
            began = job.started_at or inflight_start[k]
            self._chunk_seconds.append(time.monotonic() - began)
            if not loop:
                self.chunks_done += 1
                self._assemble_soon()

    def _assemble_soon(self) -> None:
        """Queue an assembly step in the child; its figures update `frames_ready` when done."""
        future = self.service.assembler.submit("advance", str(self.run_dir))

        def done(f: cf.Future) -> None:
            try:
                self.frames_ready = int(f.result().get("frames_ready", 0))
            except Exception as exc:  # noqa: BLE001 - reported when the run finalises
                log.debug("run %s: assembling failed: %s", self.run_id, exc)

        future.add_done_callback(done)

    def _main(self) -> None:
        from da3_core.runs.jobs import RunOutcome

        try:
            self.stage = "running"
            todo = [
                (k, list(range(s, e)), False)
                for k, (s, e) in enumerate(self.plan.spans)
                if not store.chunk_done(self.run_dir, k)
            ]
            if self.resumed_from:
                log.info(
                    "run %s resumed: %d of %d chunk(s) already saved",
                    self.run_id,
                    self.resumed_from,
                    self.plan.n_chunks,
                )
                self._assemble_soon()
            self._run_chunks(todo)
            self._check_cancel()
            self.stage = "assembling"
            state = self.service.assembler.call("advance", str(self.run_dir))
            self._check_cancel()
            self.frames_ready = int(state.get("frames_ready", 0))
            if self.options.get("loop_closure", True):
                self.stage = "closing loops: looking for places seen twice"
                loops = self.service.assembler.call("loop_frames", str(self.run_dir))
                self._check_cancel()
                self.loops_found = len(loops)
                todo = [
                    (n, loop["frames_i"] + loop["frames_j"], True)
                    for n, loop in enumerate(loops)
                    if not store.chunk_done(self.run_dir, n, loop=True)
                ]
                if todo:
                    self.stage = f"closing loops: {len(loops)} loop chunk(s)"
                    self._run_chunks(todo)
                self._check_cancel()
                self.stage = "closing loops: optimising the chunks' poses"
                self.service.assembler.call("close_loops", str(self.run_dir), loops)
                self._check_cancel()
            self.stage = "writing the result"
            self.service.assembler.call("finalize", str(self.run_dir))
            self._check_cancel()
            if self.meta.source == "video" and self.options.get("depth_video", True):
                self.stage = "writing the depth video"
                fps = float(self.options.get("fps") or 10.0)
                try:
                    self.service.assembler.call("depth_video", str(self.run_dir), fps)
                except Exception as exc:  # noqa: BLE001 - the run's result stands without its video
                    log.warning(
                        "run %s: the depth video could not be written: %s",
                        self.run_id,
                        one_line(f"{type(exc).__name__}: {exc}"),
                    )
                    self.options["depth_video_error"] = f"{type(exc).__name__}: {exc}"
                self._check_cancel()
            self.meta = records.finish_chunked(self.run_dir, self.meta, self._summary())
            self.frames_ready = self.plan.n_frames
            self.fraction = 1.0
            self.finished_at = time.monotonic()
            log.info(
                "run %s done in %.1f s (%d frame(s) in %d chunk(s), %d computed here, %d loop(s))",
                self.run_id,
                self.elapsed_s,
                self.plan.n_frames,
                self.plan.n_chunks,
                len([c for c in self.computed if c >= 0]),
                self.loops_found,
            )
            self.outcome = RunOutcome("done")
        except (ChunkedRunCancelled, TaskCancelledError) as exc:
            self._stop_all()
            self._end(RunOutcome("cancelled", "cancelled by the user; " + self._resume_hint()), exc)
        except GPUError as exc:
            self._stop_all()
            kind = getattr(exc, "type_name", type(exc).__name__)
            message = exc.message if isinstance(exc, TaskError) else str(exc)
            self._end(
                RunOutcome(
                    "failed",
                    f"{kind}: {message} ({self._resume_hint()})",
                    kind == "ModelUnavailableError",
                    getattr(exc, "remote_traceback", ""),
                ),
                exc,
            )
        except BaseException as exc:  # noqa: BLE001 - whatever happens, the run must not stay pending
            self._stop_all()
            log.debug("traceback", exc_info=True)
            self._end(RunOutcome("failed", f"{type(exc).__name__}: {exc} ({self._resume_hint()})"), exc)
        finally:
            self._on_end(self)

    def _check_cancel(self) -> None:
        """A cancel is honoured between every step, not only while chunks run."""
        if self.cancel_requested:
            raise ChunkedRunCancelled()

    def _resume_hint(self) -> str:
        done = len(store.done_chunks(self.run_dir, self.plan))
        return f"{done} of {self.plan.n_chunks} chunks are saved: Resume continues from there"

    def _stop_all(self) -> None:
        with self._lock:
            jobs = list(self._inflight.values())
            self._inflight.clear()
        for job in jobs:
            job.cancel()

    def _end(self, outcome: Any, exc: BaseException) -> None:
        log.log(
            logging.WARNING if outcome.status == "failed" else logging.INFO,
            "run %s %s after %.1f s: %s",
            self.run_id,
            outcome.status,
            self.elapsed_s,
            one_line(outcome.message),
        )
        try:
            from dataclasses import replace

            spent = {**self.meta.timings, "attempts_s": self.earlier_s + self.elapsed_s}
            self.meta = records.fail_run(
                self.run_dir, replace(self.meta, timings=spent), outcome.message, status=outcome.status
            )
        except Exception as write_exc:  # noqa: BLE001 - the page still learns the outcome from memory
            log.error("run %s: could not write its %s status: %s", self.run_id, outcome.status, write_exc)
        self.finished_at = time.monotonic()
        self.outcome = outcome

    def _summary(self) -> dict[str, Any]:
        state = store.read_state(self.run_dir)
        graph = store.chunks_dir(self.run_dir) / store.GRAPH_FILE
        loops = len(store.read_json(graph).get("loops", [])) if graph.is_file() else 0
        return {
            "preset": state.get("preset", ""),
            "device": state.get("device", ""),
            "is_metric": bool(state.get("is_metric")),
            "scale_factor": state.get("scale_factor"),
            # The time of every attempt: a resumed run adds what the earlier ones took.
            "timings": {"total": self.earlier_s + self.elapsed_s, "this_attempt": self.elapsed_s},
            "chunked": {
                **self.options,
                "chunks": self.plan.n_chunks,
                "chunk": self.plan.chunk,
                "overlap": self.plan.overlap,
                "alignment": state.get("mode", ""),
                "loops_closed": loops,
                "computed_here": len([c for c in self.computed if c >= 0]),
                "resumed_from": self.resumed_from,
            },
        }


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min"
