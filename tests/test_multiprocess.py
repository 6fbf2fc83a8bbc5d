"""Three ``supportbot serve`` processes behind one URL, sharing one PostgreSQL database.

Telegram webhook updates for the same chats are posted to different processes, each one twice
(a redelivery to another process), while the previous message of the chat is still with the
LLM. Every message must get exactly one reply, in order, each answer seeing the ones before.

Skipped unless ``SUPPORTBOT_TEST_POSTGRES_URL`` is set (see tests/conftest.py)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from supportbot.testing.fake_llm import FakeLLM
from supportbot.testing.fake_telegram import FakeTelegram
from supportbot.testing.waiting import eventually_sync

pytestmark = pytest.mark.postgres_only
REPO = Path(__file__).resolve().parents[1]
SECRET = "multiprocess-webhook-secret"
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
PROCESSES = 3
CHATS = (5001, 5002, 5003, 5004)
MESSAGES_PER_CHAT = 4
WAIT = 30.0  # bound for any one step; the whole test takes a few seconds


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def answer(messages: list[dict[str, Any]]) -> str:
    """The fake model answers with the question's tag and how many turns it was shown, so the
    test can tell that each answer saw the ones before it."""
    tag = messages[-1]["content"].split()[-1]
    turns = sum(1 for m in messages if m["role"] in ("user", "assistant"))
    return f"answer {tag} after {turns} turns"


class Servers:
    def __init__(self, database_url: str, tmp_path: Path, telegram: FakeTelegram,
                 llm: FakeLLM, *, polling: bool = False) -> None:
        self.ports = [free_port() for _ in range(PROCESSES)]
        self.logs = [tmp_path / f"serve-{i}.log" for i in range(PROCESSES)]
        self.procs: list[subprocess.Popen[bytes]] = []
        base = {k: v for k, v in os.environ.items() if not k.startswith("SUPPORTBOT_")}
        self.env = base | {
            "SUPPORTBOT_DATABASE_URL": database_url,
            "SUPPORTBOT_TELEGRAM_BOT_TOKEN": telegram.token,
            "SUPPORTBOT_TELEGRAM_API_URL": telegram.url,
            "SUPPORTBOT_LLM_BASE_URL": llm.url,
            "SUPPORTBOT_LLM_API_KEY": "sk-test",
            "SUPPORTBOT_LLM_STREAM": "false",
            "SUPPORTBOT_LOG_LEVEL": "WARNING",
            "SUPPORTBOT_KNOWLEDGE_DIR": str(REPO / "supportbot/defaults/knowledge"),
            "SUPPORTBOT_PROMPTS_DIR": str(REPO / "supportbot/defaults/prompts"),
        }
        if not polling:
            self.env |= {
                "SUPPORTBOT_TELEGRAM_WEBHOOK_URL": "https://bot.example.com/telegram/webhook",
                "SUPPORTBOT_TELEGRAM_WEBHOOK_SECRET": SECRET,
            }
        self.tmp_path = tmp_path

    def start(self, index: int) -> subprocess.Popen[bytes]:
        env = self.env | {"SUPPORTBOT_DATA_DIR": str(self.tmp_path / f"data-{index}")}
        with self.logs[index].open("wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "supportbot", "serve", "--host", "127.0.0.1",
                 "--port", str(self.ports[index])],
                cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
            )
        self.procs.append(proc)
        return proc

    def wait_healthy(self, index: int) -> None:
        def healthy() -> bool:
            if self.procs[index].poll() is not None:
                raise AssertionError(f"serve {index} exited:\n{self.log(index)}")
            with contextlib.suppress(httpx.HTTPError, ValueError):
                health = httpx.get(f"http://127.0.0.1:{self.ports[index]}/healthz")
                # 200 while the engine still opens too: ready once it says so
                return health.status_code == 200 and health.json()["status"] != "starting"
            return False

        eventually_sync(healthy, within=3 * WAIT, interval=0.05,  # start-up on a busy box
                        what=lambda: f"serve {index} becoming healthy:\n{self.log(index)}")

    def log(self, index: int) -> str:
        return self.logs[index].read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


@pytest.fixture
def telegram() -> Iterator[FakeTelegram]:
    with FakeTelegram() as fake:
        yield fake


@pytest.fixture
def llm() -> Iterator[FakeLLM]:
    with FakeLLM(responder=answer, delay=0.3) as fake:
        yield fake


async def test_three_processes_one_reply_per_event_in_order(
    postgres_url: str, tmp_path: Path, telegram: FakeTelegram, llm: FakeLLM
) -> None:
    servers = Servers(postgres_url, tmp_path, telegram, llm)
    try:
        for i in range(PROCESSES):
            servers.start(i)
        for i in range(PROCESSES):
            servers.wait_healthy(i)
        async with httpx.AsyncClient(timeout=10) as client:

            async def post(index: int, update: dict[str, Any]) -> None:
                response = await client.post(
                    f"http://127.0.0.1:{servers.ports[index]}/telegram/webhook",
                    json=update, headers={SECRET_HEADER: SECRET},
                )
                assert response.status_code == 200

            def asked(tag: str) -> bool:
                return any(r.messages[-1]["content"].endswith(tag) for r in llm.chat_requests())

            async def converse(chat_number: int, chat_id: int) -> None:
                for n in range(MESSAGES_PER_CHAT):
                    tag = f"c{chat_id}m{n}"
                    update = telegram.private_message(f"question {tag}", user_id=chat_id)
                    first = (chat_number + n) % PROCESSES
                    # the event and its redelivery land on two different processes at once
                    await asyncio.gather(post(first, update),
                                         post((first + 1) % PROCESSES, update))
                    # the next message comes while this one is still with the model
                    await telegram.wait_for(lambda tag=tag: asked(tag), within=WAIT)

            await asyncio.wait_for(
                asyncio.gather(*(converse(i, chat) for i, chat in enumerate(CHATS))), WAIT * 2
            )
            total = len(CHATS) * MESSAGES_PER_CHAT
            await telegram.wait_for(lambda: len(telegram.sent()) >= total, within=WAIT)
            await asyncio.sleep(1.0)  # a duplicate reply would arrive about now
        for chat_id in CHATS:
            expected = [f"answer c{chat_id}m{n} after {2 * n + 1} turns"
                        for n in range(MESSAGES_PER_CHAT)]
            assert telegram.texts(chat_id=chat_id) == expected
        assert len(llm.chat_requests()) == len(CHATS) * MESSAGES_PER_CHAT
        for i in range(PROCESSES):
            assert servers.procs[i].poll() is None, servers.log(i)
    finally:
        servers.stop()
    for i in range(PROCESSES):
        assert "Traceback" not in servers.log(i), servers.log(i)


def test_a_second_telegram_poller_refuses_to_start(
    postgres_url: str, tmp_path: Path, telegram: FakeTelegram, llm: FakeLLM
) -> None:
    servers = Servers(postgres_url, tmp_path, telegram, llm, polling=True)
    try:
        servers.start(0)
        servers.wait_healthy(0)
        second = servers.start(1)
        assert second.wait(WAIT) != 0
        assert "webhook" in servers.log(1).lower()
        assert servers.procs[0].poll() is None
    finally:
        servers.stop()
