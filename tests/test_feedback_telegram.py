"""👍/👎 on Telegram: the real PTB Application (polling and webhook) against FakeTelegram, the
real engine and store, FakeLLM as the model. The vote is read back from the database."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from supportbot import metrics
from supportbot.adapters.telegram import TelegramAdapter
from supportbot.adapters.telegram.app import ALLOWED_UPDATES
from supportbot.config import Settings
from supportbot.engine import Engine
from supportbot.storage.reports import feedback_for, feedback_target
from supportbot.testing.fake_llm import FakeLLM
from supportbot.testing.fake_telegram import FakeTelegram

REPO = Path(__file__).resolve().parents[1]
ALICE, BOB, STRANGER, GROUP = 111, 222, 333, -1001234
SECRET = "s3cret-token"
THANKS = "Thanks for the feedback!"
REFUSED = "Only the person who asked can rate this answer."


def answer(messages: list[dict[str, Any]]) -> str:
    return f"**Answer:** {messages[-1]['content']}"


class Env:
    def __init__(self, fake: FakeTelegram, engine: Engine, adapter: TelegramAdapter,
                 http: httpx.AsyncClient | None) -> None:
        self.fake, self.engine, self.adapter, self.http = fake, engine, adapter, http

    async def deliver(self, update: dict[str, Any]) -> None:
        """Polling: queue it for getUpdates; webhook: POST it like Telegram does."""
        if self.http is None:
            self.fake.push(update)
            return
        r = await self.http.post("/telegram/webhook", json=update,
                                 headers={"X-Telegram-Bot-Api-Secret-Token": SECRET})
        assert r.status_code == 200

    async def answered(self, update: dict[str, Any]) -> dict[str, Any]:
        """Wait for the bot's answerCallbackQuery to this callback update."""
        query_id = update["callback_query"]["id"]
        return await self.fake.wait_for(lambda: self.fake.callback_answers().get(query_id))

    async def ask(self, update: dict[str, Any]) -> tuple[dict[str, Any], int]:
        """Deliver a question; wait for the answer with its keyboard; return it and the id."""
        chat = update["message"]["chat"]["id"]
        await self.deliver(update)

        def rated() -> dict[str, Any] | None:
            sent = self.fake.sent(chat)
            return sent[-1] if sent and sent[-1].get("reply_markup") else None

        msg = await self.fake.wait_for(rated)
        [[up, down]] = self.fake.keyboard(chat, msg["message_id"])
        assert (up["text"], down["text"]) == ("👍", "👎")
        kind, vote, ident = up["callback_data"].split(":")
        assert (kind, vote) == ("fb", "1") and down["callback_data"] == f"fb:0:{ident}"
        return msg, int(ident)


@contextlib.asynccontextmanager
async def running(tmp: Path, fake: FakeTelegram, llm: FakeLLM, *, webhook: bool,
                  stream: bool = False) -> AsyncIterator[Env]:
    (tmp / "knowledge").mkdir(exist_ok=True)
    extra: dict[str, Any] = {}
    if webhook:
        extra = {"telegram_webhook_url": "https://bot.example.com/telegram/webhook",
                 "telegram_webhook_secret": SECRET}
    settings = Settings(
        _env_file=None, data_dir=tmp, prompts_dir=REPO / "supportbot/defaults/prompts",
        knowledge_dir=tmp / "knowledge",
        llm_base_url=llm.url, llm_api_key="sk-test", llm_stream=stream, llm_max_retries=0,
        telegram_bot_token=fake.token, telegram_api_url=fake.url, **extra,
    )
    engine = await Engine.open(settings)
    adapter = TelegramAdapter(engine, settings)
    await adapter.start()
    try:
        if not webhook:
            yield Env(fake, engine, adapter, None)
            return
        app = Starlette(routes=adapter.routes())
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://bot", timeout=10) as http:
            yield Env(fake, engine, adapter, http)
    finally:
        await adapter.stop()
        await engine.aclose()


@pytest.fixture
def fake() -> Iterator[FakeTelegram]:
    with FakeTelegram(poll_wait=0.2) as f:
        yield f


@pytest.fixture
def llm() -> Iterator[FakeLLM]:
    with FakeLLM(responder=answer) as f:
        yield f


@pytest.fixture(params=["polling", "webhook-streaming"])
async def env(request, tmp_path, fake, llm) -> AsyncIterator[Env]:
    webhook = request.param != "polling"
    async with running(tmp_path, fake, llm, webhook=webhook, stream=webhook) as e:
        yield e


def votes(helpful: str) -> float:
    return metrics.value("supportbot_feedback_total", {"platform": "telegram", "helpful": helpful})


async def test_answer_gets_buttons_and_the_vote_is_stored(env: Env) -> None:
    assert "callback_query" in ALLOWED_UPDATES
    msg, message_id = await env.ask(env.fake.private_message("How do refunds work?"))
    assert msg["text"] == "Answer: How do refunds work?"  # the answer itself is unchanged
    found = await feedback_target(env.engine.store, message_id)
    assert found is not None and found[1].customer_id == str(ALICE)  # our stored answer's id

    up = env.fake.callback_query(msg, f"fb:1:{message_id}", user_id=ALICE)
    await env.deliver(up)
    assert (await env.answered(up)).get("text") == THANKS
    vote = await feedback_for(env.engine.store, message_id)
    assert vote is not None and vote.helpful is True and vote.actor == f"telegram:{ALICE}"

    down = env.fake.callback_query(msg, f"fb:0:{message_id}", user_id=ALICE)
    await env.deliver(down)
    await env.answered(down)
    assert (await feedback_for(env.engine.store, message_id)).helpful is False  # latest wins


async def test_a_strangers_vote_is_refused(env: Env) -> None:
    question = env.fake.group_message("How do refunds work?", user_id=BOB, mention=True)
    msg, message_id = await env.ask(question)
    assert msg["chat"]["id"] == GROUP

    stranger = env.fake.callback_query(msg, f"fb:0:{message_id}", user_id=STRANGER)
    await env.deliver(stranger)
    refusal = await env.answered(stranger)
    assert refusal.get("text") == REFUSED and refusal.get("show_alert") is True
    assert await feedback_for(env.engine.store, message_id) is None

    forged = env.fake.callback_query(msg, "fb:1:not-a-number", user_id=BOB)
    foreign = env.fake.callback_query(msg, "some-other-button", user_id=BOB)
    for update in (forged, foreign):
        await env.deliver(update)
        assert (await env.answered(update)).get("text") is None  # spinner stopped, nothing said
    assert await feedback_for(env.engine.store, message_id) is None

    own = env.fake.callback_query(msg, f"fb:1:{message_id}", user_id=BOB)
    await env.deliver(own)
    assert (await env.answered(own)).get("text") == THANKS
    vote = await feedback_for(env.engine.store, message_id)
    assert vote is not None and vote.helpful is True and vote.actor == f"telegram:{BOB}"


async def test_a_redelivered_callback_counts_once(tmp_path, fake, llm) -> None:
    async with running(tmp_path, fake, llm, webhook=True) as env:
        msg, message_id = await env.ask(env.fake.private_message("How do refunds work?"))
        yes, no = votes("yes"), votes("no")
        up = env.fake.callback_query(msg, f"fb:1:{message_id}", user_id=ALICE)
        await env.deliver(up)
        await env.answered(up)
        down = env.fake.callback_query(msg, f"fb:0:{message_id}", user_id=ALICE)
        await env.deliver(down)
        await env.answered(down)

        await env.deliver(up)  # Telegram redelivers the 👍 (same update_id)
        # Votes in one chat are handled in delivery order: once this later one is answered,
        # the redelivery has been dealt with.
        later = env.fake.callback_query(msg, f"fb:1:{message_id}", user_id=STRANGER)
        await env.deliver(later)
        assert (await env.answered(later)).get("text") == REFUSED

        vote = await feedback_for(env.engine.store, message_id)
        assert vote is not None and vote.helpful is False  # the old 👍 did not come back
        assert (votes("yes") - yes, votes("no") - no) == (1, 1)
        assert len(env.fake.calls("answerCallbackQuery")) == 3  # up, down, later


async def test_no_buttons_when_the_bot_did_not_answer(tmp_path, fake, llm) -> None:
    llm.fail_next("500", times=10)
    async with running(tmp_path, fake, llm, webhook=False) as env:
        await env.deliver(env.fake.private_message("How do refunds work?"))
        await env.fake.wait_for(lambda: env.fake.sent(ALICE))  # the apology
        await env.deliver(env.fake.private_message("/help"))
        await env.fake.wait_for(lambda: len(env.fake.sent(ALICE)) == 2)
        assert all("reply_markup" not in m for m in env.fake.sent(ALICE))
        assert not env.fake.calls("editMessageReplyMarkup")


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_buttons_come_with_a_whole_answer_and_after_a_streamed_one(
    tmp_path, fake, llm, stream: bool
) -> None:
    """A whole answer is sent with its keyboard; a streamed one gets it in an edit at the end
    (its stored id exists only once the stream is done)."""
    async with running(tmp_path, fake, llm, webhook=True, stream=stream) as env:
        msg, _ = await env.ask(env.fake.private_message("How do refunds work?"))
        edits = env.fake.calls("editMessageReplyMarkup")
        assert [c.params["message_id"] for c in edits] == ([msg["message_id"]] if stream else [])
