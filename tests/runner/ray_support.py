"""Ray for the tests: one local cluster for the whole session, shared by every Ray test.

tests/runner/conftest.py imports the fixtures, so every test module of this folder has them. The
cluster is a `ray.cluster_utils.Cluster`: a head node with CPUs only (the runners of the
contract tests get CPU actors), to which `gpu_nodes` adds two nodes of one fake GPU each for
the pool tests and removes them afterwards. It starts on first use and stops at the end of the
session (session fixtures are torn down at the very end), leaving no Ray process behind.

`token_head` starts another cluster as docs/RAY.md does (``ray start --head``), on a machine
where a Ray token exists (a private home folder holds it), for the token tests; it stops it
and checks that none of its processes is left.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
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

        from da3_core.runner.backends import ray_connect

        t0 = time.monotonic()
        # Its processes inherit this environment: the actors import the project from here.
        with ray_connect.project_on_pythonpath():
            cluster = Cluster(
                initialize_head=True,
                head_node_args={
                    "num_cpus": HEAD_CPUS,
                    "num_gpus": 0,
                    "include_dashboard": False,
                    "object_store_memory": 1024 * 2**20,
                },
            )
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

    nodes = [
        ray_cluster.add_node(num_cpus=0, num_gpus=1, include_dashboard=False, object_store_memory=256 * 2**20)
        for _ in range(2)
    ]
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


# -- a head started with `ray start --head` where a Ray token exists --------------------------
@dataclass
class TokenHead:
    """A running head: its address (``host:port``), the token file, and the environment of a
    process on its machine (that home folder, Ray's temp folder; ``RAY_AUTH_MODE`` unset)."""

    address: str
    token_file: Path
    env: dict[str, str]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def token_head():
    """``ray start --head`` (Ray 2.60) with a token in ``~/.ray/auth_token``: Ray turns token
    authentication on. One CPU, no dashboard; ``--block`` keeps the command in the foreground,
    so that stopping it (SIGTERM: Ray ends the node's processes) ends this cluster only, where
    ``ray stop`` would end every Ray cluster of this machine (the session's too)."""
    from da3_core.runner.backends.ray_connect import PROJECT_ROOT

    home = Path(tempfile.mkdtemp(prefix="da3-ray-home-"))
    ray_tmp = Path(tempfile.mkdtemp(prefix="da3r", dir="/tmp"))  # short: Ray's socket paths must fit in 107 bytes
    token_file = home / ".ray" / "auth_token"
    token_file.parent.mkdir()
    token_file.write_text(uuid.uuid4().hex)
    token_file.chmod(0o600)
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS")
    }
    env.update(
        HOME=str(home),
        RAY_TMPDIR=str(ray_tmp),
        PYTHONPATH=os.pathsep.join(p for p in (PROJECT_ROOT, env.get("PYTHONPATH")) if p),
    )
    port = _free_port()
    command = [
        str(Path(sys.executable).with_name("ray")),
        "start",
        "--head",
        f"--port={port}",
        "--num-cpus=1",
        "--num-gpus=0",
        "--include-dashboard=false",
        "--disable-usage-stats",
        f"--object-store-memory={100 * 2**20}",
        f"--dashboard-agent-listen-port={_free_port()}",
        "--block",
    ]
    log_path = ray_tmp / "ray-start.log"
    with open(log_path, "w") as log_file:
        head = subprocess.Popen(command, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
    current = ray_tmp / "ray" / "ray_current_cluster"  # written once the head is up
    try:
        deadline = time.monotonic() + 120
        while not (current.is_file() and current.read_text().strip()):
            assert head.poll() is None, f"`ray start --head` exited {head.returncode}:\n{log_path.read_text()[-3000:]}"
            assert time.monotonic() < deadline, (
                f"`ray start --head` not up after 120 s:\n{log_path.read_text()[-3000:]}"
            )
            time.sleep(0.1)
        assert "Token authentication is enabled" in log_path.read_text(), log_path.read_text()[-3000:]
        yield TokenHead(current.read_text().strip(), token_file, env)
    finally:
        _stop_head(head, ray_tmp)
        shutil.rmtree(home, ignore_errors=True)
        shutil.rmtree(ray_tmp, ignore_errors=True)


def _stop_head(head: subprocess.Popen, ray_tmp: Path) -> None:
    """End the ``ray start --block`` process (it ends its node's processes), then anything of
    this cluster still running (found by its private temp folder, ended by pid)."""
    import psutil

    head.send_signal(signal.SIGTERM)
    try:
        head.wait(60)
    except subprocess.TimeoutExpired:
        head.kill()
        head.wait(10)

    def leftovers() -> list[psutil.Process]:
        found = []
        for proc in psutil.process_iter(["cmdline"]):
            try:
                if str(ray_tmp) in " ".join(proc.info["cmdline"] or ()) and proc.status() != psutil.STATUS_ZOMBIE:
                    found.append(proc)
            except psutil.Error:
                continue
        return found

    deadline = time.monotonic() + 20
    while leftovers() and time.monotonic() < deadline:
        time.sleep(0.2)
    left = leftovers()
    for proc in left:
        try:
            proc.kill()
        except psutil.Error:
            pass
    assert not left, f"the token cluster left {[(p.pid, p.name()) for p in left]} running (killed now)"
