"""Connecting to Ray: a local cluster or ``DA3_RAY_ADDRESS``, bounded in time, with errors that
say what to do (an unreachable address, a cluster that wants a token), and the project put on
the actors' Python path.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from da3_core.runner.protocol import (
    WorkerStartError,
)

# The folder that holds the da3_core package: on the actors' Python path, so they import the
# project (and the tasks named by import path) as the server does.
PROJECT_ROOT = str(Path(__file__).resolve().parents[3])


CONNECT_TIMEOUT_S = 30.0  # ray.init to a reachable address that never answers as Ray would hang for minutes


PORT_CHECK_TIMEOUT_S = 3.0


_RAY_HINT = "Ray is not installed: `pip install -r requirements-ray.txt` (or unset DA3_RAY_ADDRESS to run without Ray)"


_init_lock = threading.Lock()


log = logging.getLogger(__name__)

_runtime_env_cache: dict[str, dict[str, Any] | None] = {}


def connect(address: str | None) -> bool:
    """Connect this process to Ray unless it already is; True if this call connected it.

    ``None`` starts a local instance; ``"auto"`` and ``"host:port"`` (or ``ray://host:port``)
    connect to a running cluster, failing within seconds, never hanging, when it cannot be
    reached. A cluster that requires a token (Ray's token authentication) gets this machine's
    token when it runs on this machine or was found with ``"auto"``, as ``ray.init()`` does;
    otherwise the error says how to pass it (see `_settle_token`).

    Raises:
        WorkerStartError: Ray is missing or the cluster cannot be reached; says what to check.
    """
    try:
        import ray
    except ImportError as exc:
        raise WorkerStartError(_RAY_HINT) from exc
    with _init_lock:
        if ray.is_initialized():
            return False
        t0 = time.monotonic()
        if address is None:
            # The local instance's processes inherit this environment: with the project on
            # PYTHONPATH, its actors start from Ray's pool of ready workers, without the
            # second or so that a per-actor runtime_env costs.
            with project_on_pythonpath():
                ray.init(include_dashboard=False)
            log.info(
                "started a local Ray instance in %.1f s (%g CPU, %g GPU)",
                time.monotonic() - t0,
                ray.cluster_resources().get("CPU", 0),
                ray.cluster_resources().get("GPU", 0),
            )
            return True
        target = _resolve_address(address)
        _check_reachable(address, target)
        deadline = time.monotonic() + CONNECT_TIMEOUT_S
        _settle_token(address, target, deadline)
        _init_bounded(address, target, deadline)
        log.info(
            "connected to the Ray cluster at %s in %.1f s (%g CPU, %g GPU)",
            target,
            time.monotonic() - t0,
            ray.cluster_resources().get("CPU", 0),
            ray.cluster_resources().get("GPU", 0),
        )
        return True


def _cannot_connect(address: str, why: str) -> WorkerStartError:
    return WorkerStartError(
        f"cannot connect to the Ray cluster at DA3_RAY_ADDRESS={address!r}: {why}. Check that the cluster runs "
        "(`ray status` on its head node; `RAY_AUTH_MODE=token ray status` where it uses a Ray token), that this "
        "machine reaches the head's GCS port (6379 unless `ray start --head --port` said otherwise), and that both "
        "run Ray 2.60; or unset DA3_RAY_ADDRESS to run without Ray"
    )


def _resolve_address(address: str) -> str:
    """``host:port`` that ``ray.init(address)`` would dial (``auto``: the local cluster's)."""
    text = address.strip()
    if text.startswith("ray://"):
        return text
    if text == "auto":
        try:
            from ray._private.services import canonicalize_bootstrap_address_or_die

            return canonicalize_bootstrap_address_or_die("auto")
        except ConnectionError as exc:
            raise _cannot_connect(address, f"no running Ray cluster found on this machine ({exc})") from None
        except Exception:  # noqa: BLE001 - a private helper: if it moved, let ray.init resolve "auto"
            return text
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise _cannot_connect(address, "expected 'auto' or host:port, e.g. 10.0.0.5:6379")
    try:
        from ray._private.services import canonicalize_bootstrap_address

        return canonicalize_bootstrap_address(text) or text  # localhost becomes the node's IP, as Ray dials it
    except Exception:  # noqa: BLE001 - a private helper: if it moved, dial the address as given
        return text


def _check_reachable(address: str, target: str) -> None:
    if target == "auto":
        return
    hostport = target[len("ray://") :] if target.startswith("ray://") else target
    host, _, port = hostport.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=PORT_CHECK_TIMEOUT_S):
            pass
    except (OSError, ValueError) as exc:
        raise _cannot_connect(address, f"nothing answers at {hostport} ({exc})") from None


def _init_bounded(address: str, target: str, deadline: float | None = None) -> None:
    """``ray.init(target)`` in a helper thread, given up at ``deadline`` (default: in
    `CONNECT_TIMEOUT_S`; Ray's own client retries for many minutes when the port answers but
    is not a Ray head)."""
    import ray

    if deadline is None:
        deadline = time.monotonic() + CONNECT_TIMEOUT_S

    outcome: dict[str, BaseException | None] = {}

    def init() -> None:
        try:
            ray.init(address=target, runtime_env={"env_vars": {"PYTHONPATH": _pythonpath()}})
            outcome["error"] = None
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            outcome["error"] = exc

    thread = threading.Thread(target=init, name="da3-ray-connect", daemon=True)
    thread.start()
    thread.join(max(0.0, deadline - time.monotonic()))
    if "error" not in outcome:
        raise _no_answer(address, target)
    if outcome["error"] is not None:
        exc = outcome["error"]
        if _is_auth_error(exc):
            raise _token_error(address, target, str(exc)) from exc
        raise _cannot_connect(
            address, f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
        ) from exc


def _no_answer(address: str, target: str) -> WorkerStartError:
    return _cannot_connect(
        address,
        f"{target} did not answer as a Ray cluster within {CONNECT_TIMEOUT_S:.0f} s (restart the server after fixing it)",
    )


AUTH_MODE_VAR = "RAY_AUTH_MODE"


def _settle_token(address: str, target: str, deadline: float) -> None:
    """Before `ray.init`: ask the cluster's GCS whether it accepts this process without a
    token (an answer in milliseconds, where `ray.init` takes 20 s to fail). If it wants one,
    send this machine's token when the cluster runs on this machine or was found with
    ``auto`` and ``RAY_AUTH_MODE`` is unset (what `ray.init("auto")` does); otherwise raise an
    error that says how to pass the token.

    Raises:
        WorkerStartError: The cluster refuses this process (says why and what to set), or
            does not answer as a Ray cluster before ``deadline``.
    """
    if target.startswith("ray://"):
        return  # Ray Client: its server checks the token; ray.init reports a refusal
    refusal = _refusal(address, target, deadline)
    if refusal is None:
        return
    token = _token_source()
    if (
        os.environ.get(AUTH_MODE_VAR) is None
        and token is not None
        and (address.strip() == "auto" or _on_this_machine(target))
    ):
        _enable_token_mode()
        log.info(
            "the Ray cluster at %s requires a token: sending this machine's (%s), as `ray.init()` does for a cluster "
            "on this machine; %s=token is set in this process",
            target,
            token,
            AUTH_MODE_VAR,
        )
        refusal = _refusal(address, target, deadline)
        if refusal is None:
            return
    raise _token_error(address, target, refusal)


def _refusal(address: str, target: str, deadline: float) -> str | None:
    """Ray's message when the GCS at ``target`` refuses this process's credentials; None when
    it accepts them, or when the question cannot be asked (`ray.init` then reports)."""
    try:
        from ray._raylet import GcsClient  # type: ignore[attr-defined]  # private, not in Ray's stubs (hence the try)
    except Exception:  # noqa: BLE001 - a private class: if it moved, let ray.init find out
        return None
    outcome: dict[str, BaseException | None] = {}

    def probe() -> None:
        try:
            GcsClient(address=target)
            outcome["error"] = None
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            outcome["error"] = exc

    thread = threading.Thread(target=probe, name="da3-ray-probe", daemon=True)
    thread.start()
    thread.join(max(0.0, deadline - time.monotonic()))
    if "error" not in outcome:
        raise _no_answer(address, target)  # a Ray GCS answers in milliseconds
    exc = outcome["error"]
    if exc is None or not _is_auth_error(exc):
        if exc is not None:
            log.debug("Ray GCS probe of %s: %r (ray.init decides)", target, exc)
        return None
    return str(exc).strip() or type(exc).__name__


def _is_auth_error(exc: BaseException) -> bool:
    text = f"{type(exc).__name__} {exc}"
    return "AuthenticationError" in text or "InvalidAuthToken" in text or "Unauthenticated" in text


def _token_source() -> str | None:
    """Where Ray would read a token in this process (as its loader looks), or None."""
    if os.environ.get("RAY_AUTH_TOKEN", "").strip():
        return "RAY_AUTH_TOKEN"
    path = os.environ.get("RAY_AUTH_TOKEN_PATH", "").strip()
    if path:
        return f"RAY_AUTH_TOKEN_PATH={path}" if Path(path).expanduser().is_file() else None
    default = Path.home() / ".ray" / "auth_token"
    return str(default) if default.is_file() else None


def _on_this_machine(target: str) -> bool:
    """``host:port`` names an address of this machine (loopback or one of its interfaces)."""
    import ipaddress

    import psutil

    host = target.rpartition(":")[0].strip("[]")
    try:
        addresses = {str(info[4][0]) for info in socket.getaddrinfo(host, None)}
    except OSError:
        return False
    mine = {a.address.split("%")[0] for nics in psutil.net_if_addrs().values() for a in nics}
    for text in addresses:
        try:
            if ipaddress.ip_address(text.split("%")[0]).is_loopback or text in mine:
                return True
        except ValueError:
            continue
    return False


def _enable_token_mode() -> None:
    """``RAY_AUTH_MODE=token`` for this process (and what it starts), as Ray sets it itself."""
    try:
        from ray._private.authentication.authentication_token_setup import _enable_token_auth

        _enable_token_auth()  # sets the variable and refreshes Ray's cached config
    except Exception:  # noqa: BLE001 - a private helper: set the variable and refresh by hand
        os.environ[AUTH_MODE_VAR] = "token"
        with contextlib.suppress(Exception):
            from ray._raylet import Config  # type: ignore[attr-defined]  # private, not in Ray's stubs (hence the suppress)

            Config.initialize("")


def _token_error(address: str, target: str, refusal: str) -> WorkerStartError:
    """The error for a cluster that refused this process's token (or its lack of one)."""
    mode = os.environ.get(AUTH_MODE_VAR)
    token = _token_source()
    where = "~/.ray/auth_token, RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH"
    copy = (
        "put the cluster's token (`ray get-auth-token` on its head prints it) in ~/.ray/auth_token here, or pass "
        "it as RAY_AUTH_TOKEN=<token> or RAY_AUTH_TOKEN_PATH=<file>"
    )
    run = f"e.g. `RAY_AUTH_MODE=token DA3_RAY_ADDRESS={address.strip()} make run`"
    if mode is not None and mode.lower() != "token":
        why = f"this process has {AUTH_MODE_VAR}={mode}, which sends no token"
        how = f"set {AUTH_MODE_VAR}=token with the cluster's token in {where} (or unset it: a cluster on this machine then gets this machine's token)"
    elif mode is None and token is None:
        why = "no Ray token is found here"
        how = f"{copy}, and set {AUTH_MODE_VAR}=token"
    elif mode is None:
        why = (
            f"{AUTH_MODE_VAR} is not set, and the token found here ({token}) is sent unasked only to a cluster on this "
            "machine or found with DA3_RAY_ADDRESS=auto"
        )
        how = f"if it is this cluster's token, set {AUTH_MODE_VAR}=token; else {copy} and set {AUTH_MODE_VAR}=token"
    elif token is None:
        why = f"{AUTH_MODE_VAR}=token is set but no token is found here ({where})"
        how = copy
    else:
        why = f"it refused the token found here ({token}): it is not this cluster's"
        how = copy.replace("put", "use", 1) + " instead"
    first = refusal.strip().splitlines()[0] if refusal.strip() else ""
    return WorkerStartError(
        f"cannot connect to the Ray cluster at DA3_RAY_ADDRESS={address!r} ({target}): the cluster requires a Ray token "
        f"(token authentication, which `ray start --head` turns on where a token exists) and {why}. To connect: {how}; "
        f"{run}. Ray said: {first[:200]}"
    )


def _pythonpath() -> str:
    existing = os.environ.get("PYTHONPATH", "")
    parts = [PROJECT_ROOT] + [p for p in existing.split(os.pathsep) if p and p != PROJECT_ROOT]
    return os.pathsep.join(parts)


@contextlib.contextmanager
def project_on_pythonpath() -> Iterator[None]:
    """Put the project on ``PYTHONPATH`` while Ray processes are started from here (a local
    instance, `ray.cluster_utils.Cluster` nodes): their workers then import it as we do."""
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = _pythonpath()
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old


def _actor_runtime_env() -> dict[str, Any] | None:
    """None when Ray's workers already import this project from here, else a runtime_env
    that puts it on their path (costs about a second per actor start). Probed once per job."""
    import importlib.util

    import ray

    context = ray.get_runtime_context()
    key = f"{context.gcs_address}/{context.get_job_id()}"
    if key in _runtime_env_cache:
        return _runtime_env_cache[key]
    job_env = context.runtime_env or {}
    needed: dict[str, Any] | None = {"env_vars": {"PYTHONPATH": _pythonpath()}}
    if PROJECT_ROOT in str((job_env.get("env_vars") or {}).get("PYTHONPATH", "")).split(os.pathsep):
        needed = None
    else:
        ours = str(Path(PROJECT_ROOT) / "da3_core" / "__init__.py")
        try:
            probe = ray.remote(num_cpus=0, max_retries=0)(importlib.util.find_spec)
            spec = ray.get(probe.remote("da3_core"), timeout=10)
            if spec is not None and spec.origin == ours:
                needed = None
        except Exception as exc:  # noqa: BLE001 - any doubt: give the actors the path explicitly
            log.debug("Ray probe for da3_core failed (%r); actors get PYTHONPATH in their runtime_env", exc)
    _runtime_env_cache[key] = needed
    return needed
