"""Start and stop the real Streamlit app for browser tests.

`AppServer` runs ``python -m streamlit run streamlit_app.py`` from the repo root on a free
port, with its own workspace, waits for ``/_stcore/health`` to answer ``ok``, and on
`stop` terminates it and reports any child process (the DA3 worker) that outlived it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class AppServer:
    """One Streamlit server process; ``url`` is its base address."""

    def __init__(
        self, workspace: Path, log_path: Path, env_extra: dict[str, str] | None = None, port: int | None = None
    ):
        self.workspace = Path(workspace)
        self.log_path = Path(log_path)
        self.env_extra = dict(env_extra or {})
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self._log = None

    # ---------------------------------------------------------------------------------
    def start(self, timeout: float = 60.0) -> AppServer:
        env = dict(os.environ)
        env.update({"DA3_WORKSPACE": str(self.workspace), "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"})
        env.update(self.env_extra)
        cmd = [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            "streamlit_app.py",
            "--server.port",
            str(self.port),
            "--server.address",
            "127.0.0.1",
            "--server.headless",
            "true",
            "--browser.gatherUsageStats",
            "false",
        ]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"Streamlit exited with {self.proc.returncode} before it was healthy:\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=2) as r:
                    body = r.read().decode("utf-8", "replace").strip()
                    if r.status == 200 and body == "ok":
                        return self
                    last = f"{r.status} {body!r}"
            except (urllib.error.URLError, ConnectionError, OSError) as exc:
                last = repr(exc)
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"Streamlit was not healthy within {timeout:.0f} s (last: {last}):\n{self.log_tail()}")

    # ---------------------------------------------------------------------------------
    def children(self) -> list[psutil.Process]:
        if self.proc is None or self.proc.poll() is not None:
            return []
        try:
            return psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def stop(self, grace: float = 10.0, children_grace: float = 5.0) -> list[str]:
        """Terminate the server; return a description of every child still alive ``children_grace`` s after it exited.

        Survivors are killed afterwards (so a failing test leaves nothing behind), but they
        are still reported.
        """
        if self.proc is None:
            return []
        kids = self.children()  # collected before terminating: once the parent is gone they are re-parented
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        _, alive = psutil.wait_procs(kids, timeout=children_grace)
        survivors = []
        for p in alive:
            try:
                survivors.append(f"pid {p.pid}: {' '.join(p.cmdline())[:200]}")
            except psutil.Error:
                survivors.append(f"pid {p.pid}")
        for p in alive:
            try:
                p.kill()
            except psutil.Error:
                pass
        if self._log is not None:
            self._log.close()
            self._log = None
        self.proc = None
        return survivors

    def log_tail(self, n: int = 6000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""
