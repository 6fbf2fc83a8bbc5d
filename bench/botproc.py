"""Run ``supportbot serve`` (the real Starlette app under uvicorn) as a subprocess on loopback,
with settings from the environment as in production, and wait until ``/healthz`` says it is
ready (it answers ``"status": "starting"`` while the engine opens)."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.common import PYTHON, ROOT, bench_env


@dataclass
class BotProcess:
    url: str
    pid: int
    proc: subprocess.Popen[bytes]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serve_process(settings_env: dict[str, str], log_path: Path,
                  ready_within: float = 90.0, port: int | None = None) -> Iterator[BotProcess]:
    """``settings_env`` holds SUPPORTBOT_* variables; the bot's log goes to ``log_path``."""
    port = port or free_port()
    env = bench_env(**settings_env, SUPPORTBOT_HOST="127.0.0.1", PORT=str(port))
    with log_path.open("wb") as log:
        proc = subprocess.Popen([PYTHON, "-m", "supportbot", "serve", "--port", str(port),
                                 "--host", "127.0.0.1"], cwd=log_path.parent, env=env,
                                stdout=log, stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + ready_within
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"supportbot serve exited: see {log_path}")
                with contextlib.suppress(httpx.HTTPError, ValueError):
                    health = httpx.get(url + "/healthz", timeout=1)
                    # the server answers while the engine still opens: wait until it is ready
                    if health.status_code == 200 and health.json().get("status") != "starting":
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError("supportbot serve did not become healthy")
                time.sleep(0.05)
            yield BotProcess(url, proc.pid, proc)
        finally:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def repo_path(*parts: str) -> str:
    return str(ROOT.joinpath(*parts))
