"""Ray for the tests: one local cluster for the whole session, shared by every Ray test.

Import the fixtures into a test module (``from tests.ray_support import ray_cluster``). The
cluster is a `ray.cluster_utils.Cluster`: a head node with CPUs only (the runners of the
contract tests get CPU actors), to which `gpu_nodes` adds two nodes of one fake GPU each for
the pool tests and removes them afterwards. It starts on first use and stops at the end of the
session (whichever module's copy of the fixture is torn down first stops it: session
fixtures are all torn down at the very end), leaving no Ray process behind.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from da3_core.runner import Runner

HEAD_CPUS = 4  # logical: room for the actors of a few runners alive at once
_state: dict[str, Any] = {}


def start_cluster() -> Any:
    """The session's cluster, started once; this process is connected to it."""
    if "cluster" not in _state:
        import ray
        from ray.cluster_utils import Cluster

        from da3_core.runner.backends import ray as ray_backend

        t0 = time.monotonic()
        # Its processes inherit this environment: the actors import the project from here.
        with ray_backend.project_on_pythonpath():
            cluster = Cluster(initialize_head=True, head_node_args={
                "num_cpus": HEAD_CPUS, "num_gpus": 0, "include_dashboard": False, "object_store_memory": 1024 * 2**20,
            })
        ray.init(address=cluster.address, include_dashboard=False)
        _state["cluster"] = cluster
        _state["started_s"] = time.monotonic() - t0
    return _state["cluster"]


def stop_cluster() -> None:
    cluster = _state.pop("cluster", None)
    if cluster is None:
        return
    import ray

    ray.shutdown()
    cluster.shutdown()


@pytest.fixture(scope="session")
def ray_cluster():
    """The session's Ray cluster (head node only: CPUs, no GPU); this process is its driver."""
    yield start_cluster()
    stop_cluster()


@pytest.fixture
def gpu_nodes(ray_cluster):
    """Two more nodes with one fake GPU each (Ray sets ``CUDA_VISIBLE_DEVICES`` for their actors)."""
    import ray

    nodes = [ray_cluster.add_node(num_cpus=0, num_gpus=1, include_dashboard=False, object_store_memory=256 * 2**20) for _ in range(2)]
    ray_cluster.wait_for_nodes()
    deadline = time.monotonic() + 30
    while ray.cluster_resources().get("GPU", 0) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ray.cluster_resources().get("GPU", 0) == 2
    yield nodes
    for node in nodes:
        ray_cluster.remove_node(node)
    ray_cluster.wait_for_nodes()
    deadline = time.monotonic() + 30
    while ray.cluster_resources().get("GPU", 0) > 0 and time.monotonic() < deadline:
        time.sleep(0.05)


def ray_runner(**kwargs: Any) -> Runner:
    """A Runner on the session's cluster (call with the `ray_cluster` fixture active)."""
    kwargs.setdefault("workers", 1)
    return Runner(isolation="ray", **kwargs)


def make_runner(backend: str, **kwargs: Any) -> Runner:
    """A runner of ``backend`` (``"process"`` or ``"ray"``)."""
    if backend == "ray":
        start_cluster()
        return ray_runner(**kwargs)
    return Runner(**kwargs)


@pytest.fixture(scope="module")
def ray_module_runner(ray_cluster):
    """One Ray runner (one CPU actor) for a module's tests that leave its actor healthy."""
    r = ray_runner(cancel_grace_s=1.0)
    yield r
    r.close()


@pytest.fixture(params=["process", "ray"])
def any_runner(request):
    """A fresh runner of each backend per test, closed afterwards."""
    if request.param == "ray":
        request.getfixturevalue("ray_cluster")
        r = ray_runner(cancel_grace_s=1.0)
    else:
        r = Runner(cancel_grace_s=1.0)
    yield r
    r.close()


@pytest.fixture(params=["process", "ray"])
def backend(request):
    """``"process"`` or ``"ray"``, for tests that build their own runner (with `make_runner`)."""
    if request.param == "ray":
        request.getfixturevalue("ray_cluster")
    return request.param


def is_ray(runner: Runner) -> bool:
    return runner.isolation == "ray"


def settled(runner: Runner, within_s: float = 2.0) -> Any:
    """The runner's status once its slots' threads have booked the calls that just ended: a
    caller wakes at `Job._finish`, a moment before the slot's thread counts the call and frees
    the slot."""
    deadline = time.monotonic() + within_s
    while runner.status().state == "busy" and time.monotonic() < deadline:
        time.sleep(0.005)
    return runner.status()
