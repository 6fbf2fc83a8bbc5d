"""``supportbot serve`` as a child process, for tests that kill it (SIGKILL) and start it again.

It runs the real command line in a fresh interpreter with its own environment and log file, on
a free loopback port, and pointed at the loopback fakes through the ``SUPPORTBOT_*_URL``
settings. :meth:`ServeProcess.start` returns once ``/healthz`` answers and records how long that
took and what ``/healthz`` said first (``backlog``), so a test can tell that serving did not
wait for recovery.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

import supportbot


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bundled_dir(name: str) -> Path:
    """The prompts or knowledge folder shipped with the package (or the repository's)."""
    package = Path(supportbot.__file__).resolve().parent
    for candidate in (package / "defaults" / name, package.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"no bundled {name} folder")


@dataclass(slots=True)
class Start:
    """One start: seconds from spawn to the first ``/healthz`` 200 and that answer; then
    seconds from spawn to ``"status": "ok"`` (engine open, adapters connected) and that one."""

    seconds: float
    health: dict[str, Any]
    ready_seconds: float | None = None
    ready_health: dict[str, Any] | None = None


class ServeProcess:
    """``supportbot serve`` with a data directory of its own; ``env`` adds settings."""

    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.env = {
            **os.environ,
            "SUPPORTBOT_DATA_DIR": str(workdir / "data"),
            "SUPPORTBOT_PROMPTS_DIR": str(bundled_dir("prompts")),
            "SUPPORTBOT_KNOWLEDGE_DIR": str(bundled_dir("knowledge")),
            "SUPPORTBOT_LOG_FORMAT": "json",
            "SUPPORTBOT_RATE_LIMIT_PER_MINUTE": "0",
            "SUPPORTBOT_DAILY_TOKEN_BUDGET": "0",
            **env,
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.runs = 0
        self.starts: list[Start] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_path(self, run: int | None = None) -> Path:
        return self.workdir / f"serve-{self.runs if run is None else run}.log"

    def start(self, *, within: float = 60.0, ready: bool = True, **env: str) -> ServeProcess:
        """Spawn and wait until the port answers ``/healthz``, and with ``ready`` (the
        default) until it says ``"ok"``."""
        self.runs += 1
        self.port = free_port()
        with self.log_path().open("wb") as log:
            began = time.monotonic()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "supportbot", "serve", "--host", "127.0.0.1",
                 "--port", str(self.port)],
                cwd=self.workdir, env={**self.env, **env}, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = began + within
        with httpx.Client(timeout=1) as http:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"serve exited early:\n{self.log_path().read_text()}")
                try:
                    r = http.get(self.url + "/healthz")
                except httpx.HTTPError:
                    time.sleep(0.02)
                    continue
                if r.status_code == 200:
                    self.starts.append(Start(time.monotonic() - began, r.json()))
                    break
                time.sleep(0.02)
            else:
                raise RuntimeError(f"serve did not come up:\n{self.log_path().read_text()}")
            health: dict[str, Any] = r.json()
            while ready and health.get("status") != "ok":
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError(f"serve did not get ready:\n{self.log_path().read_text()}")
                time.sleep(0.02)
                try:  # the loop may be busy opening the engine: a slow answer is no answer yet
                    health = http.get(self.url + "/healthz", timeout=5).json()
                except httpx.HTTPError:
                    continue
            if ready:
                self.starts[-1].ready_seconds = time.monotonic() - began
                self.starts[-1].ready_health = health
        return self

    def health(self) -> dict[str, Any]:
        return dict(httpx.get(self.url + "/healthz", timeout=5).json())

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, like a crash or an OOM kill."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def logs(self) -> str:
        return "".join(
            self.log_path(i).read_text(errors="replace") for i in range(1, self.runs + 1)
        )

    def log_records(self) -> list[dict[str, Any]]:
        """The JSON log lines of every run (other lines, e.g. a crash's stderr, as ``raw``)."""
        records = []
        for line in self.logs().splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:
                records.append({"raw": line})
        return records

    def tracebacks(self) -> list[str]:
        """Log lines carrying a traceback or at level error (a worker that failed)."""
        return [
            line for line in self.logs().splitlines()
            if "Traceback" in line or '"level": "error"' in line or '"level": "critical"' in line
        ]

    def __enter__(self) -> ServeProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
