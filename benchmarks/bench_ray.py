"""The cost of the Ray backend (``DA3_RAY_ADDRESS``), with fake tasks (`benchmarks.sim_tasks`).

Run: ``.venv/bin/python -m benchmarks.bench_ray`` (prints JSON). Needs ``requirements-ray.txt``
and a process not yet connected to Ray: it starts its own local Ray instance, then a local
cluster, and stops both.

* ``ray_empty_call_ms``: an empty task's round trip through a Ray runner, median of 100.
* ``ray_gpu_sim_overhead_ratio_4``: the fake GPU task (DA3-SMALL on an H100: 4 frames of
  640x480 in, 95 ms of sleep, a reconstruction-sized result out) through a Ray runner,
  divided by the same function called directly inside the actor; medians of 5, warm,
  alternating the two. The arguments travel in the call, the result's arrays through Ray's
  object store (read-only views in the caller).
* ``ray_bare_overhead_ratio_4``: the same bytes in and arrays out through a bare Ray actor
  (a generator method, no runner): the part of the ratio above that is Ray's own.
* ``ray_pool_speedup_2_actors``: 16 tasks that sleep 0.5 s, wall on 1 actor / on 2 actors, on
  a `ray.cluster_utils.Cluster` with two nodes of one fake GPU each (one actor per GPU).
"""

from __future__ import annotations

import json
import pickle
import statistics
import time

import numpy as np

from benchmarks import bench_isolation
from benchmarks.bench_isolation import empty_call_ms, frames
from da3_core.runner import Runner

GOALS = {
    "ray_gpu_sim_overhead_ratio_4": 1.10,
    "ray_pool_speedup_2_actors": 1.8,
}

SIM = "benchmarks.sim_tasks"


def gpu_sim_ratio(runner: Runner, n: int = 4, rounds: int = 5) -> dict[str, float]:
    out = bench_isolation.gpu_sim_ratio(runner, n, rounds, prefix="ray")
    out.pop(f"ray_gpu_sim_{n}_payload_mb")
    return out


class BareActor:
    """Ray without the runner: the same bytes in and arrays out, through a plain generator method."""

    def direct(self, data: bytes, seconds: float) -> float:
        t = time.perf_counter()
        self.work(data, seconds)
        return time.perf_counter() - t

    def work(self, data: bytes, seconds: float) -> dict[str, np.ndarray]:
        n = len(pickle.loads(data))
        time.sleep(seconds)
        h, w = 378, 504  # as benchmarks.sim_tasks.gpu_sim
        return {
            "depth": np.ones((n, h, w), np.float32),
            "conf": np.ones((n, h, w), np.float32),
            "img": np.ones((n, h, w, 3), np.uint8),
        }

    def gen(self, data: bytes, seconds: float):  # noqa: ANN201 - a Ray streaming generator
        yield self.work(data, seconds)


def bare_ray_ratio(n: int = 4, sleep_s: float = 0.095, rounds: int = 5) -> dict[str, float]:
    """The floor: what Ray itself costs for the same transfer, with no runner around it."""
    import ray

    actor = ray.remote(num_cpus=1)(BareActor).remote()
    try:
        data = pickle.dumps(frames(n), protocol=5)
        ray.get(actor.direct.remote(data, 0.0))
        [ray.get(ref) for ref in actor.gen.remote(data, 0.0)]
        direct, through = [], []
        for _ in range(rounds):
            direct.append(ray.get(actor.direct.remote(data, sleep_s)))
            t = time.perf_counter()
            value = [ray.get(ref) for ref in actor.gen.remote(data, sleep_s)]
            through.append(time.perf_counter() - t)
            del value
    finally:
        ray.kill(actor)
    return {f"ray_bare_overhead_ratio_{n}": statistics.median(through) / statistics.median(direct)}


def pool_speedup(tasks: int = 16, seconds: float = 0.5) -> dict[str, float]:
    """On a fresh local cluster: a head without resources and two nodes of one fake GPU each."""
    import ray
    from ray.cluster_utils import Cluster

    from da3_core.runner.backends.ray_connect import project_on_pythonpath

    t = time.perf_counter()
    with project_on_pythonpath():
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
        for _ in range(2):
            cluster.add_node(num_cpus=1, num_gpus=1, include_dashboard=False)
    walls: dict[int, float] = {}
    try:
        cluster.wait_for_nodes()
        ray.init(address=cluster.address)
        while ray.cluster_resources().get("GPU", 0) < 2:
            time.sleep(0.05)
        cluster_s = time.perf_counter() - t
        for workers in (1, 2):
            runner = Runner(isolation="ray", workers=workers)
            try:
                walls[workers] = bench_isolation.time_sleepers(runner, workers, tasks, seconds)
            finally:
                runner.close()
    finally:
        ray.shutdown()
        cluster.shutdown()
    return {
        "ray_pool_speedup_2_actors": walls[1] / walls[2],
        "ray_pool_wall_1_actor_s": walls[1],
        "ray_pool_wall_2_actors_s": walls[2],
        "ray_cluster_start_s": cluster_s,
    }


def run() -> dict[str, float]:
    import ray

    from da3_core.runner.backends.ray_connect import connect

    if ray.is_initialized():
        raise RuntimeError(
            "benchmarks.bench_ray starts its own Ray instances: run it in a process not connected to Ray"
        )
    out: dict[str, float] = {}
    t = time.perf_counter()
    connect(None)  # a local instance, as Runner(isolation="ray") without an address starts one
    out["ray_local_start_s"] = time.perf_counter() - t
    try:
        runner = Runner(isolation="ray", workers=1)
        try:
            t = time.perf_counter()
            runner.call(f"{SIM}:empty")
            out["ray_actor_start_s"] = time.perf_counter() - t
            out["ray_empty_call_ms"] = empty_call_ms(runner)
            out.update(gpu_sim_ratio(runner))
            out.update(bare_ray_ratio())
        finally:
            runner.close()
    finally:
        ray.shutdown()
    out.update(pool_speedup())
    return out


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
