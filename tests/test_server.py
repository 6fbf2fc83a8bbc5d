"""``supportbot serve`` with nothing configured still serves /healthz and says why."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_without_adapters_serves_healthz(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("SUPPORTBOT_") or k == "SUPPORTBOT_DATABASE_URL"}
    env |= {"SUPPORTBOT_DATA_DIR": str(tmp_path), "SUPPORTBOT_LOG_FORMAT": "text",
            "PORT": str(port)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "supportbot", "serve", "--host", "127.0.0.1"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        deadline = time.monotonic() + 60
        response = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        assert response is not None, "server never answered"
        assert response.status_code == 200
        assert response.json() == {"status": "ok", "adapters": [], "backlog": 0}
    finally:
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=30)
    assert "no platform adapter configured" in output
    assert proc.returncode == 0, output
