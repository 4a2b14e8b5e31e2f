"""Load through the real holder and worker: many sessions at once, FIFO, no crossed results,
bounded memory over many calls."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from benchmarks.bench_hardening import rss_growth_pct
from da3_core.contract import ModelSpec, ReconstructRequest
from da3_core.runner import Queued
from da3_core.runs import tasks

pytestmark = pytest.mark.slow

SESSIONS = 8
JOBS = 3


@pytest.fixture(scope="module")
def holder(workspace):
    """The app's own st.cache_resource holder (one runner, one worker), shared by this module.

    Both tests only run reconstructions, which leave the worker warm, so they share it: the
    DA3 import and the model load are paid once.
    """
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DA3_WORKSPACE", str(workspace))
        from da3_core.app import holder as holder_module

        holder_module.get_settings.clear()
        holder_module.get_holder.clear()
        h = holder_module.get_holder()
        try:
            yield h
        finally:
            h.runner.close()
            holder_module.get_holder.clear()
            holder_module.get_settings.clear()


def colour(session: int, job: int) -> tuple[int, int, int]:
    return (20 + 25 * session, 40 + 60 * job, 200 - 20 * session)


def test_eight_sessions_three_jobs_each(holder, workspace):
    demo = str(workspace / "demo-weights")
    tasks.build_demo_weights.call("da3-small", demo, runner=holder.runner)
    records: list[dict] = []
    lock = threading.Lock()
    errors: list[BaseException] = []
    start = threading.Barrier(SESSIONS)

    def session(i: int) -> None:
        try:
            start.wait()
            for j in range(JOBS):
                frames = tuple(np.full((84, 112, 3), colour(i, j), np.uint8) for _ in range(2))
                names = (f"s{i}-j{j}-a", f"s{i}-j{j}-b")
                req = ReconstructRequest(frames, names, ModelSpec("demo", "da3-small"), process_res=112)
                job = tasks.reconstruct.submit(req, demo, runner=holder.runner)
                first = next(iter(job.events()))
                rec = job.result(300)
                with lock:
                    records.append(
                        {
                            "session": i,
                            "job": j,
                            "names": rec.names,
                            "mean": rec.images.reshape(-1, 3).mean(0),
                            "submitted": job.submitted_at,
                            "started": job.started_at,
                            "first": first,
                        }
                    )
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=session, args=(i,)) for i in range(SESSIONS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    assert not errors, errors
    assert len(records) == SESSIONS * JOBS
    for r in records:
        # Delivered to the session that asked: its names and its colour.
        assert r["names"] == (f"s{r['session']}-j{r['job']}-a", f"s{r['session']}-j{r['job']}-b")
        np.testing.assert_allclose(r["mean"], colour(r["session"], r["job"]), atol=2.0)
        assert isinstance(r["first"], Queued) and r["first"].position >= 1
    by_submission = sorted(records, key=lambda r: r["submitted"])
    starts = [r["started"] for r in by_submission]
    assert starts == sorted(starts), "calls did not start in the order they were submitted"
    # While 8 sessions compete, someone waited behind others and was told so.
    assert max(r["first"].ahead for r in records) >= 1
    assert holder.runner.worker_starts == 1


def test_memory_growth_over_100_calls(holder, workspace):
    growth = rss_growth_pct(calls=100, warmup=10, workspace=workspace, runner=holder.runner, process_res=56)
    assert growth["parent_rss_growth_pct"] < 10.0, growth
    assert growth["worker_rss_growth_pct"] < 10.0, growth
