"""``supportbot serve`` binds its port first: /healthz answers while it starts (and with
nothing configured, says why), webhooks wait for start-up or get 503."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from supportbot.testing.fake_llm import FakeLLM
from supportbot.testing.fake_telegram import FakeTelegram
from supportbot.testing.serve import ServeProcess

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
                response = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10)
            except httpx.TransportError:
                time.sleep(0.1)
                continue
            assert response.status_code == 200  # bound and answering, starting or not
            if response.json()["status"] == "ok":
                break
            assert response.json() == {"status": "starting", "adapters": [], "backlog": None}
            assert httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=10).status_code in (
                200, 503)
            time.sleep(0.1)
        assert response is not None, "server never answered"
        assert response.status_code == 200
        assert response.json() == {"status": "ok", "adapters": [], "backlog": 0}
    finally:
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=30)
    assert "no platform adapter configured" in output
    assert proc.returncode == 0, output


def test_serve_binds_before_the_platforms_answer_and_webhooks_wait_or_get_503(tmp_path):
    """Start-up never keeps the port closed: with Telegram slow to answer getMe, /healthz says
    "starting", /readyz 503, and a webhook update gets 503 (not stored, so not acknowledged:
    Telegram delivers it again) until the adapter is connected; then it is answered."""
    with FakeTelegram() as tg, FakeLLM() as llm:
        tg.slow("getMe", 3.5)  # under PTB's 5 s read timeout
        env = {
            "SUPPORTBOT_TELEGRAM_BOT_TOKEN": tg.token,
            "SUPPORTBOT_TELEGRAM_API_URL": tg.url,
            "SUPPORTBOT_TELEGRAM_WEBHOOK_URL": "https://bot.example.com/telegram/webhook",
            "SUPPORTBOT_TELEGRAM_WEBHOOK_SECRET": "s3cret",
            "SUPPORTBOT_LLM_BASE_URL": llm.url,
            "SUPPORTBOT_LLM_API_KEY": "sk-test",
        }
        with ServeProcess(tmp_path, env) as serve:
            serve.start(ready=False)
            update = tg.private_message("hello while starting", user_id=321)
            headers = {"X-Telegram-Bot-Api-Secret-Token": "s3cret"}
            with httpx.Client(base_url=serve.url, timeout=10) as http:
                early = http.post("/telegram/webhook", json=update, headers=headers)
                health, ready = http.get("/healthz").json(), http.get("/readyz").status_code
                tg.slow("getMe", 0)
                deadline = time.monotonic() + 60
                while http.get("/healthz").json()["status"] != "ok":
                    assert time.monotonic() < deadline, serve.logs()
                    time.sleep(0.05)
                again = http.post("/telegram/webhook", json=update, headers=headers)
                late_ready = http.get("/readyz").status_code
            deadline = time.monotonic() + 30
            while not tg.texts(321):
                assert time.monotonic() < deadline, serve.logs()
                time.sleep(0.05)
    assert serve.starts[0].health == {"status": "starting", "adapters": [], "backlog": None}
    assert (early.status_code, health["status"], ready) == (503, "starting", 503)
    assert (again.status_code, late_ready) == (200, 200)
    assert tg.texts(321) == ["Thanks for reaching out! You asked: hello while starting"]
