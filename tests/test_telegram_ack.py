"""Telegram hears "OK" once an update is stored, never before and never waiting for the answer:
updates POSTed into ``supportbot serve``'s Starlette app (uvicorn on loopback) while the FakeLLM
is held, so no reply can exist until the test lets go; an update that cannot be stored gets 503
(webhook) or is not confirmed (long polling), so Telegram delivers it again."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from supportbot.adapters.telegram import TelegramAdapter
from supportbot.config import Settings
from supportbot.engine import Engine
from supportbot.server import create_app
from supportbot.testing.fake_llm import FakeLLM, Gate
from supportbot.testing.fake_telegram import FakeTelegram
from supportbot.testing.outage import store_outage
from supportbot.testing.serve import bundled_dir

REPO = Path(__file__).resolve().parents[1]
SECRET = "s3cret-token"
HEADERS = {"X-Telegram-Bot-Api-Secret-Token": SECRET}
ALICE = 111


Served = tuple[FakeTelegram, FakeLLM, "Gate", httpx.AsyncClient, Engine]


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    gate = Gate()
    (tmp_path / "knowledge").mkdir()
    with FakeTelegram(poll_wait=0.2) as fake, FakeLLM(responder=gate) as llm:
        settings = Settings(
            _env_file=None, data_dir=tmp_path, prompts_dir=REPO / "supportbot/defaults/prompts",
            knowledge_dir=tmp_path / "knowledge", llm_base_url=llm.url, llm_api_key="sk-test",
            llm_max_retries=0, llm_stream=False, telegram_bot_token=fake.token,
            telegram_api_url=fake.url, telegram_webhook_secret=SECRET,
            telegram_webhook_url="https://bot.example.com/telegram/webhook",
        )  # fmt: skip
        engine = await Engine.open(settings)
        adapter = TelegramAdapter(engine, settings)
        server = uvicorn.Server(uvicorn.Config(create_app(engine, [adapter]), port=0,
                                               host="127.0.0.1", log_config=None))
        task = asyncio.create_task(server.serve())
        try:
            await fake.wait_for(lambda: server.started, within=10)
            port = server.servers[0].sockets[0].getsockname()[1]
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
                yield fake, llm, gate, http, engine
        finally:
            gate.opened.set()
            server.should_exit = True
            await asyncio.wait_for(task, 15)
            await engine.aclose()


async def test_webhook_acks_before_the_answer_and_redelivery_is_answered_once(served) -> None:
    fake, llm, gate, http, _ = served
    update = fake.private_message("tell me something about zebras")
    # if the webhook waited for the held engine this would time out (the gate holds for 10 s)
    r = await http.post("/telegram/webhook", json=update, headers=HEADERS, timeout=5)
    assert r.status_code == 200  # acknowledged ...
    await fake.wait_for(lambda: llm.chat_requests())  # ... while the engine is mid-answer
    assert fake.texts(ALICE) == []

    again = await http.post("/telegram/webhook", json=update, headers=HEADERS, timeout=5)
    assert again.status_code == 200  # Telegram redelivers; acknowledged again
    gate.opened.set()
    await fake.wait_for(lambda: fake.texts(ALICE))
    follow = fake.private_message("and giraffes?")
    await http.post("/telegram/webhook", json=follow, headers=HEADERS, timeout=5)
    await fake.wait_for(lambda: len(fake.texts(ALICE)) == 2)
    assert fake.texts(ALICE) == ["Answer: tell me something about zebras", "Answer: and giraffes?"]
    assert len(llm.chat_requests()) == 2


async def test_webhook_answers_503_for_an_update_it_cannot_store(served) -> None:
    fake, _, gate, http, engine = served
    update = fake.private_message("tell me about giraffes")
    async with store_outage(engine.store):
        r = await http.post("/telegram/webhook", json=update, headers=HEADERS, timeout=5)
    assert r.status_code == 503  # Telegram delivers it again
    gate.opened.set()
    again = await http.post("/telegram/webhook", json=update, headers=HEADERS, timeout=5)
    assert again.status_code == 200
    await fake.wait_for(lambda: fake.texts(ALICE))
    assert fake.texts(ALICE) == ["Answer: tell me about giraffes"]


async def test_polling_confirms_an_update_only_once_it_is_stored(tmp_path: Path) -> None:
    gate = Gate()
    (tmp_path / "knowledge").mkdir()
    with FakeTelegram(poll_wait=0.2) as fake, FakeLLM(responder=gate) as llm:
        settings = Settings(
            _env_file=None, data_dir=tmp_path, prompts_dir=bundled_dir("prompts"),
            knowledge_dir=tmp_path / "knowledge", llm_base_url=llm.url, llm_api_key="sk-test",
            llm_max_retries=0, llm_stream=False, telegram_bot_token=fake.token,
            telegram_api_url=fake.url,
        )  # fmt: skip
        engine = await Engine.open(settings)
        adapter = TelegramAdapter(engine, settings)
        await adapter.start()
        try:
            async with store_outage(engine.store):
                fake.push(fake.private_message("stored first, confirmed after"))
                # fetched again and again, never confirmed while it cannot be stored
                await fake.wait_for(lambda: len(fake.calls("getUpdates")) >= 4, within=15)
                assert fake.pending_updates() == 1
            gate.opened.set()
            await fake.wait_for(lambda: fake.texts(ALICE), within=15)
            await fake.wait_for(lambda: fake.pending_updates() == 0)  # confirmed now
            assert fake.texts(ALICE) == ["Answer: stored first, confirmed after"]
            # confirmed, so a restart is not handed it again
            assert len(llm.chat_requests()) == 1
        finally:
            gate.opened.set()
            await adapter.stop()
            await engine.aclose()
