"""The Telegram adapter end to end: real PTB Application, real engine and store, the loopback
FakeTelegram as Bot API and FakeLLM as the model."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from supportbot.adapters.telegram import TelegramAdapter
from supportbot.adapters.telegram.text import utf16_len
from supportbot.config import Settings
from supportbot.engine import Engine, Status
from supportbot.testing.fake_llm import FakeLLM
from supportbot.testing.fake_telegram import BOT_USERNAME, FakeTelegram

REPO = Path(__file__).resolve().parents[1]
STAFF = -1009999
ALICE = 111
GROUP = -1001234
STAFFER = 900


def answer(messages: list[dict[str, Any]]) -> str:
    question = messages[-1]["content"]
    if "essay" in question:
        return " ".join(f"w{i:04d}" for i in range(1666))  # 9,995 characters
    return f"**Answer:** {question}"


@pytest.fixture
def fake() -> Iterator[FakeTelegram]:
    with FakeTelegram(poll_wait=0.2) as f:
        f.add_chat(STAFF, "supergroup", "Support staff", forum=True)
        f.set_member(STAFF, STAFFER, "member")
        yield f


@pytest.fixture
def llm() -> Iterator[FakeLLM]:
    with FakeLLM(responder=answer) as f:
        yield f


def make_settings(tmp: Path, fake: FakeTelegram, llm: FakeLLM, **extra: Any) -> Settings:
    (tmp / "knowledge").mkdir(exist_ok=True)
    values: dict[str, Any] = {
        "data_dir": tmp,
        "prompts_dir": REPO / "supportbot/defaults/prompts",
        "knowledge_dir": tmp / "knowledge",
        "llm_base_url": llm.url,
        "llm_api_key": "sk-test",
        "telegram_bot_token": fake.token,
        "telegram_api_url": fake.url,
        "telegram_staff_chat_id": STAFF,
        **extra,
    }
    return Settings(_env_file=None, **values)


@contextlib.asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[tuple[Engine, TelegramAdapter]]:
    engine = await Engine.open(settings)
    adapter = TelegramAdapter(engine, settings)
    await adapter.start()
    try:
        yield engine, adapter
    finally:
        await adapter.stop()
        await engine.aclose()


@pytest.fixture
async def bot(tmp_path, fake, llm) -> AsyncIterator[tuple[Engine, TelegramAdapter]]:
    async with running(make_settings(tmp_path, fake, llm)) as pair:
        yield pair


async def test_polling_private_question_gets_an_answer(fake: FakeTelegram, bot, llm) -> None:
    assert [c.method for c in fake.calls()][:2] == ["getMe", "deleteWebhook"]
    fake.push(fake.private_message("How do I reset my password?"))
    expected = ["Answer: How do I reset my password?"]  # **bold** rendered as HTML
    await fake.wait_for(lambda: fake.texts(ALICE) == expected)
    assert fake.sent(ALICE)[0]["raw_text"].startswith("<b>Answer:</b>")
    assert fake.calls("getUpdates")


async def test_a_quick_answer_costs_one_bot_api_call(tmp_path, fake: FakeTelegram, llm) -> None:
    """No "typing…" for an answer that comes at once, and the 👍/👎 buttons go out with it
    rather than in an edit afterwards."""
    async with running(make_settings(tmp_path, fake, llm, llm_stream=False)) as (_, adapter):
        adapter.router.typing_after = 30  # however loaded the test machine: this one is quick
        fake.push(fake.private_message("How do I reset my password?"))
        await fake.wait_for(lambda: fake.sent(ALICE))
        await asyncio.sleep(0.3)  # anything that would follow the answer
        api = [c.method for c in fake.calls() if c.method not in ("getUpdates", "getMe",
                                                                   "deleteWebhook")]
        assert api == ["sendMessage"]
        [msg] = fake.sent(ALICE)
        assert fake.keyboard(ALICE, msg["message_id"])


async def test_a_slow_answer_shows_typing(tmp_path, fake: FakeTelegram, llm: FakeLLM) -> None:
    llm.delay = 0.6
    async with running(make_settings(tmp_path, fake, llm, llm_stream=False)) as (_, adapter):
        adapter.router.typing_after = 0.2
        fake.push(fake.private_message("How do I reset my password?"))
        await fake.wait_for(lambda: fake.sent(ALICE))
        typing = fake.calls("sendChatAction")
        assert [c.params["action"] for c in typing] == ["typing"]
        assert typing[0].at < fake.calls("sendMessage")[0].at


async def test_group_answers_only_when_addressed(fake: FakeTelegram, bot, llm) -> None:
    fake.push(fake.group_message("anyone know how billing works?"))
    mention = fake.group_message("how does billing work?", mention=True)
    fake.push(mention)
    await fake.wait_for(lambda: fake.texts(GROUP) == ["Answer: how does billing work?"])
    replied = fake.group_message("and refunds?", reply_to_bot=True)
    fake.push(replied)
    await fake.wait_for(
        lambda: fake.texts(GROUP) == ["Answer: how does billing work?", "Answer: and refunds?"]
    )
    assert fake.sent(GROUP)[0]["reply_to_message_id"] == mention["message"]["message_id"]
    asked = [r.messages[-1]["content"] for r in llm.chat_requests()]
    assert asked == ["how does billing work?", "and refunds?"]  # mention stripped, nothing else
    assert BOT_USERNAME not in asked[0]


async def test_forum_topic_in_customer_group_is_its_own_conversation(
    fake: FakeTelegram, bot
) -> None:
    engine, _ = bot
    fake.push(fake.group_message("question in a topic", mention=True, thread_id=77))
    await fake.wait_for(lambda: fake.texts(GROUP, thread_id=77))
    conv = await engine.find_conversation("telegram", f"{GROUP}:77")
    assert conv is not None and await engine.find_conversation("telegram", str(GROUP)) is None


async def test_duplicate_update_is_answered_once(fake: FakeTelegram, bot, llm) -> None:
    update = fake.private_message("first question")
    fake.push(update)
    await fake.wait_for(lambda: fake.texts(ALICE) == ["Answer: first question"])
    fake.push(update)  # Telegram redelivers the same update_id
    fake.push(fake.private_message("second question"))
    await fake.wait_for(lambda: fake.texts(ALICE)[-1] == "Answer: second question")
    assert fake.texts(ALICE) == ["Answer: first question", "Answer: second question"]
    assert len(llm.chat_requests()) == 2


async def test_restart_never_answers_a_redelivered_update_again(tmp_path, fake, llm) -> None:
    settings = make_settings(tmp_path, fake, llm)
    update = fake.private_message("once only")
    async with running(settings):
        fake.push(update)
        await fake.wait_for(lambda: fake.texts(ALICE) == ["Answer: once only"])
    async with running(settings):
        fake.push(update, fake.private_message("after restart"))
        await fake.wait_for(lambda: fake.texts(ALICE)[-1] == "Answer: after restart")
    assert fake.texts(ALICE) == ["Answer: once only", "Answer: after restart"]


async def test_commands(fake: FakeTelegram, bot) -> None:
    engine, _ = bot
    fake.push(fake.private_message("/start"))
    await fake.wait_for(lambda: fake.texts(ALICE))
    fake.push(fake.private_message("/help"))
    await fake.wait_for(lambda: len(fake.texts(ALICE)) == 2)
    fake.push(fake.private_message("hello"))
    await fake.wait_for(lambda: fake.texts(ALICE)[-1] == "Answer: hello")
    first = await engine.find_conversation("telegram", str(ALICE))
    fake.push(fake.private_message("/new"))
    await fake.wait_for(lambda: len(fake.texts(ALICE)) == 4)
    greeting, help_text, _, fresh = fake.texts(ALICE)
    assert "Alice" in greeting and "/human" in greeting
    assert "/new" in help_text and "fresh" in fresh.lower()
    assert await engine.find_conversation("telegram", str(ALICE)) is None
    assert (await engine.get_conversation(first.id)).status is Status.CLOSED


async def test_chinese_speaker_gets_chinese_words(fake: FakeTelegram, bot) -> None:
    fake.push(fake.private_message("/start", user_id=333, language_code="zh-hans"))
    texts = await fake.wait_for(lambda: fake.texts(333))
    assert any("\u4e00" <= ch <= "\u9fff" for ch in texts[0])


async def test_webhook_checks_the_secret(tmp_path, fake, llm) -> None:
    settings = make_settings(
        tmp_path, fake, llm,
        telegram_webhook_url="https://bot.example.com/telegram/webhook",
        telegram_webhook_secret="s3cret-token",
    )  # fmt: skip
    async with running(settings) as (_, adapter):
        assert fake.webhook == {
            "url": "https://bot.example.com/telegram/webhook",
            "secret_token": "s3cret-token",
            "allowed_updates": ["message", "edited_message", "callback_query"],
        }
        assert not fake.calls("getUpdates")
        app = Starlette(routes=adapter.routes())
        update = fake.private_message("via webhook")
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://bot"
        ) as client:
            missing = await client.post("/telegram/webhook", json=update)
            wrong = await client.post(
                "/telegram/webhook", json=update,
                headers={"X-Telegram-Bot-Api-Secret-Token": "nope"},
            )  # fmt: skip
            headers = {"X-Telegram-Bot-Api-Secret-Token": "s3cret-token"}
            ok = await client.post("/telegram/webhook", json=update, headers=headers)
            await fake.wait_for(lambda: fake.texts(ALICE) == ["Answer: via webhook"])
            again = await client.post("/telegram/webhook", json=update, headers=headers)
            bad = await client.post("/telegram/webhook", content=b"{not json", headers=headers)
            follow = fake.private_message("second via webhook")
            await client.post("/telegram/webhook", json=follow, headers=headers)
            await fake.wait_for(lambda: fake.texts(ALICE)[-1] == "Answer: second via webhook")
    assert (missing.status_code, wrong.status_code, ok.status_code) == (403, 403, 200)
    assert (again.status_code, bad.status_code) == (200, 400)
    assert fake.texts(ALICE) == ["Answer: via webhook", "Answer: second via webhook"]


async def start_handoff(fake: FakeTelegram, engine: Engine) -> tuple[int, int]:
    fake.push(fake.private_message("my server is broken"))
    await fake.wait_for(lambda: fake.texts(ALICE)[-1:] == ["Answer: my server is broken"])
    fake.push(fake.private_message("/human"))
    await fake.wait_for(lambda: fake.topics(STAFF))
    conv = await engine.find_conversation("telegram", str(ALICE))
    topic = await fake.wait_for(lambda: fake.texts(STAFF) and next(iter(fake.topics(STAFF))))
    return conv.id, topic


async def test_handoff_round_trip_through_a_staff_topic(fake: FakeTelegram, bot) -> None:
    engine, _ = bot
    conv_id, topic = await start_handoff(fake, engine)
    conv = await engine.get_conversation(conv_id)
    assert conv.status is Status.WAITING and conv.staff_ref == str(topic)
    summary = fake.texts(STAFF, thread_id=topic)[0]
    assert "Alice" in summary and "my server is broken" in summary and "/bot" in summary
    assert "person" in fake.texts(ALICE)[-1]  # the engine's handoff notice

    fake.push(fake.staff_message("Hi Alice, Sam here. Rebooting it now.", chat_id=STAFF,
                                 thread_id=topic, user_id=STAFFER))  # fmt: skip
    await fake.wait_for(lambda: "Sam here" in fake.texts(ALICE)[-1])
    conv = await engine.get_conversation(conv_id)
    assert conv.status is Status.HUMAN and conv.assignee == f"telegram:{STAFFER}"
    assert conv.recent[-1].role == "staff"

    customer = fake.private_message("thanks, it works now")
    fake.push(customer)
    relayed = await fake.wait_for(
        lambda: [m for m in fake.sent(STAFF, topic) if "it works now" in m.get("text", "")]
    )
    assert len(fake.texts(ALICE)) == 3  # the bot itself said nothing

    # staff reply to the relayed message lands as a reply to the customer's own message
    fake.push(fake.staff_message("Great!", chat_id=STAFF, thread_id=topic, user_id=STAFFER,
                                 reply_to_message_id=relayed[0]["message_id"]))  # fmt: skip
    await fake.wait_for(lambda: fake.texts(ALICE)[-1] == "Great!")
    assert fake.sent(ALICE)[-1]["reply_to_message_id"] == customer["message"]["message_id"]

    fake.push(fake.staff_message("/bot", chat_id=STAFF, thread_id=topic, user_id=STAFFER))
    await fake.wait_for(lambda: len(fake.texts(ALICE)) == 5)
    assert (await engine.get_conversation(conv_id)).status is Status.BOT
    assert "again" in fake.texts(ALICE)[-1]  # handed_back notice via the sink factory
    fake.push(fake.private_message("one more question"))
    await fake.wait_for(lambda: fake.texts(ALICE)[-1] == "Answer: one more question")


async def test_no_typing_while_staff_own_the_thread(fake: FakeTelegram, bot) -> None:
    engine, adapter = bot
    _, topic = await start_handoff(fake, engine)
    adapter.router.typing_after = 0.1  # it would show while the relay is slow to go out
    fake.slow("sendMessage", 0.5)
    before = len(fake.calls("sendChatAction"))
    fake.push(fake.private_message("still there?"))
    await fake.wait_for(lambda: any("still there?" in t for t in fake.texts(STAFF, topic)))
    await asyncio.sleep(0.2)
    assert len(fake.calls("sendChatAction")) == before


async def test_staff_close_and_edits_are_mirrored(fake: FakeTelegram, bot) -> None:
    engine, _ = bot
    conv_id, topic = await start_handoff(fake, engine)
    staff = fake.staff_message("typo hree", chat_id=STAFF, thread_id=topic, user_id=STAFFER)
    fake.push(staff)
    await fake.wait_for(lambda: fake.texts(ALICE)[-1] == "typo hree")
    fake.push(fake.edited(staff, "typo here"))
    await fake.wait_for(lambda: fake.texts(ALICE)[-1] == "typo here")
    fake.push(fake.staff_message("/close", chat_id=STAFF, thread_id=topic, user_id=STAFFER))
    await fake.wait_for(lambda: "closed" in fake.texts(ALICE)[-1].lower())
    assert (await engine.get_conversation(conv_id)).status is Status.CLOSED


async def test_deleted_staff_topic_is_recreated(fake: FakeTelegram, bot) -> None:
    engine, _ = bot
    conv_id, topic = await start_handoff(fake, engine)
    fake.delete_topic(STAFF, topic)
    fake.push(fake.private_message("hello? anyone?"))
    new_topic = await fake.wait_for(lambda: next(iter(fake.topics(STAFF)), None))
    await fake.wait_for(lambda: len(fake.texts(STAFF, thread_id=new_topic)) >= 2)
    assert new_topic != topic
    assert (await engine.get_conversation(conv_id)).staff_ref == str(new_topic)
    texts = fake.texts(STAFF, thread_id=new_topic)
    assert "my server is broken" in texts[0] and "hello? anyone?" in texts[-1]
    assert len(fake.calls("createForumTopic")) == 2


async def test_non_staff_cannot_answer_from_the_staff_group(fake: FakeTelegram, bot) -> None:
    engine, _ = bot
    conv_id, topic = await start_handoff(fake, engine)
    before = len(fake.texts(ALICE))
    fake.set_member(STAFF, 666, "left")
    fake.push(fake.staff_message("I am not staff", chat_id=STAFF, thread_id=topic, user_id=666))
    fake.push(fake.staff_message("/bot", chat_id=STAFF, thread_id=topic, user_id=666))
    channel = {"id": -100777, "type": "channel", "title": "Some channel"}
    fake.push(fake.staff_message("as a channel", chat_id=STAFF, thread_id=topic,
                                 sender_chat=channel))  # fmt: skip
    await fake.wait_for(lambda: len(fake.calls("getChatMember")) >= 1)
    await fake.wait_for(lambda: fake.pending_updates() == 0)
    # a real staffer afterwards still works, proving the updates above were processed
    fake.push(fake.staff_message("real staff", chat_id=STAFF, thread_id=topic, user_id=STAFFER))
    await fake.wait_for(lambda: fake.texts(ALICE)[-1] == "real staff")
    assert len(fake.texts(ALICE)) == before + 1
    assert (await engine.get_conversation(conv_id)).assignee == f"telegram:{STAFFER}"


async def test_media_gets_text_only_or_goes_to_staff(fake: FakeTelegram, bot) -> None:
    engine, _ = bot
    fake.push(fake.media_message("sticker"))
    texts = await fake.wait_for(lambda: fake.texts(ALICE))
    assert "text" in texts[0].lower()
    _, topic = await start_handoff(fake, engine)
    photo = fake.media_message("photo", caption="screenshot of the error")
    fake.push(photo)
    copied = await fake.wait_for(lambda: [m for m in fake.sent(STAFF, topic) if m.get("photo")])
    assert copied[0]["copied_from"] == (ALICE, photo["message"]["message_id"])


async def test_flood_control_during_a_reply_loses_nothing(fake: FakeTelegram, bot) -> None:
    fake.fail("sendMessage", retry_after=1, match=lambda p: p["chat_id"] == ALICE)
    fake.push(fake.private_message("are you there?"))
    await fake.wait_for(lambda: fake.texts(ALICE) == ["Answer: are you there?"], within=10)
    failed, sent = fake.calls("sendMessage")
    assert failed.error.startswith("Too Many Requests") and sent.error is None
    assert sent.at - failed.at >= 1.0  # waited as long as Telegram asked


async def test_ten_thousand_character_answer_is_split(fake: FakeTelegram, bot) -> None:
    fake.push(fake.private_message("write me an essay"))
    await fake.wait_for(lambda: fake.texts(ALICE) and fake.texts(ALICE)[-1].endswith("w1665"))
    texts = fake.texts(ALICE)
    assert len(texts) == 3 and all(utf16_len(t) <= 4096 for t in texts)
    assert " ".join(texts).split() == [f"w{i:04d}" for i in range(1666)]


async def test_bot_token_never_reaches_the_logs(fake: FakeTelegram, bot, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    fake.push(fake.private_message("hello"))
    await fake.wait_for(lambda: fake.texts(ALICE) == ["Answer: hello"])
    assert caplog.records and fake.token not in caplog.text
    assert fake.token.split(":")[1] not in caplog.text
