"""Data rights: ``supportbot export --customer`` and ``supportbot purge`` (by age, by customer),
through the real CLI on a real database."""

from __future__ import annotations

import asyncio
import json
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import update

from supportbot.cli import cli
from supportbot.config import Settings
from supportbot.engine import Engine, IncomingMessage, Outcome
from supportbot.engine.types import Attachment
from supportbot.storage import Store
from supportbot.storage.models import Conversation, HandledEvent, Message, Transition
from supportbot.testing.fake_llm import FakeLLM

REPO = Path(__file__).resolve().parents[1]


def settings(tmp: Path) -> Settings:
    return Settings(_env_file=None, data_dir=tmp, prompts_dir=REPO / "supportbot/defaults/prompts",
                    knowledge_dir=REPO / "supportbot/defaults/knowledge")


def env(tmp: Path) -> dict[str, str]:
    return {"SUPPORTBOT_DATA_DIR": str(tmp),
            "SUPPORTBOT_PROMPTS_DIR": str(REPO / "supportbot/defaults/prompts"),
            "SUPPORTBOT_KNOWLEDGE_DIR": str(REPO / "supportbot/defaults/knowledge"),
            "SUPPORTBOT_LOG_LEVEL": "WARNING"}


async def seed(tmp: Path) -> None:
    """Alice on Slack (an old closed thread and a current one), Alice's namesake id on Telegram,
    Bob on Slack, and Alice writing in Bob's channel thread."""
    engine = await Engine.open(settings(tmp))
    try:
        def msg(platform: str, thread: str, who: str, text: str, mid: str) -> IncomingMessage:
            return IncomingMessage(platform, thread, who, text, mid, customer_name=who)

        await engine.handle(msg("slack", "T:D1", "alice", "my invoice is wrong", "a1"))
        old = await engine.find_conversation("slack", "T:D1")
        assert old is not None
        await engine.close(old.id, "cli:staff", notify=False)
        await engine.handle(msg("slack", "T:D1", "alice", "how do refunds work?", "a2"))
        await engine.handle(msg("telegram", "55", "alice", "hello from telegram", "t1"))
        await engine.handle(msg("slack", "T:C1:9.1", "bob", "bob's private question", "b1"))
        await engine.handle(msg("slack", "T:C1:9.1", "alice", "alice chimes in", "a3"))
        async with engine.store.sessions.begin() as session:  # the first thread is 100 days old
            long_ago = datetime.now(UTC) - timedelta(days=100)
            await session.execute(update(Conversation).where(Conversation.id == old.id)
                                  .values(updated_at=long_ago, created_at=long_ago))
            await session.execute(update(Message).where(Message.conversation_id == old.id)
                                  .values(created_at=long_ago))
            await session.execute(update(HandledEvent).where(HandledEvent.event_id == "a1")
                                  .values(created_at=long_ago))
    finally:
        await engine.aclose()


async def counts(tmp: Path) -> dict[str, int]:
    engine = await Engine.open(settings(tmp))
    try:
        async with engine.store.sessions() as session:
            from sqlalchemy import func, select

            return {
                model.__tablename__: int(
                    await session.scalar(select(func.count()).select_from(model)) or 0
                )
                for model in (Conversation, Message, Transition, HandledEvent)
            }
    finally:
        await engine.aclose()


def run(tmp: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args), env=env(tmp))
    return result.exit_code, result.output


async def test_export_gives_one_customers_data_as_json(tmp_path: Path) -> None:
    await seed(tmp_path)
    code, out = await asyncio.to_thread(run, tmp_path, "export", "--customer", "alice")
    assert code == 0, out
    data = json.loads(out)
    assert data["customer_id"] == "alice"
    texts = [m["text"] for c in data["conversations"] for m in c["messages"] if m["role"] == "user"]
    assert texts == ["my invoice is wrong", "how do refunds work?", "hello from telegram"]
    assert all(c["transitions"] for c in data["conversations"])
    assert [m["text"] for m in data["messages_in_other_threads"]] == ["alice chimes in"]
    assert "bob's private question" not in out  # never another customer's data

    code, out = await asyncio.to_thread(
        run, tmp_path, "export", "--customer", "alice", "--platform", "telegram"
    )
    data = json.loads(out)
    assert [c["platform"] for c in data["conversations"]] == ["telegram"]
    assert data["messages_in_other_threads"] == []
    code, out = await asyncio.to_thread(run, tmp_path, "export", "--customer", "nobody")
    assert code == 0 and json.loads(out)["conversations"] == []


async def test_export_lists_each_messages_attachments_without_their_bytes(
    tmp_path: Path,
) -> None:
    screenshot = b"\x89PNG\r\n\x1a\n" + b"secret pixels " * 100
    engine = await Engine.open(settings(tmp_path))
    try:
        await engine.handle(IncomingMessage(
            "slack", "T:D7", "carol", "", "c1", customer_name="carol", attachments=(
                Attachment("F0001", "image", "image/png", len(screenshot), "error.png",
                           url="https://files.slack.com/files-pri/T-F0001/error.png"),
                Attachment("F0002", "file", "application/pdf", 2048, "invoice.pdf"),
            )))
        await engine.handle(IncomingMessage("slack", "T:C1:9.1", "bob", "bob's thread", "b1",
                                            customer_name="bob"))
        await engine.handle(IncomingMessage(
            "slack", "T:C1:9.1", "carol", "me too", "c2", customer_name="carol",
            attachments=(Attachment("F0003", "image", "image/jpeg", 999, caption="me too"),)))
        conv = await engine.find_conversation("slack", "T:D7")
        assert conv is not None
        [first] = [m for m in await engine.store.messages(conv.id) if m.role == "user"]
        png = (await engine.store.attachments(first.id))[0]
        await engine.store.update_attachment(png.id, status="stored", data=screenshot)
    finally:
        await engine.aclose()
    code, out = await asyncio.to_thread(run, tmp_path, "export", "--customer", "carol")
    assert code == 0, out
    data = json.loads(out)
    [conversation] = data["conversations"]
    [asked, *answers] = conversation["messages"]
    assert [(a["file_id"], a["name"], a["kind"], a["mime"], a["size"], a["bytes_stored"])
            for a in asked["attachments"]] == [
        ("F0001", "error.png", "image", "image/png", len(screenshot), True),
        ("F0002", "invoice.pdf", "file", "application/pdf", 2048, False)]
    assert asked["attachments"][0]["platform"] == "slack"
    assert asked["attachments"][0]["status"] == "stored"
    assert asked["attachments"][0]["url"].endswith("/error.png")
    assert all(m["attachments"] == [] for m in answers)
    [elsewhere] = data["messages_in_other_threads"]
    assert [(a["file_id"], a["caption"]) for a in elsewhere["attachments"]] == [
        ("F0003", "me too")]
    assert "secret pixels" not in out and "c2VjcmV0" not in out  # bytes never inlined
    assert "bob's thread" not in out


async def test_purge_older_than_deletes_only_old_conversations(tmp_path: Path) -> None:
    await seed(tmp_path)
    before = await counts(tmp_path)
    code, out = await asyncio.to_thread(
        run, tmp_path, "purge", "--older-than", "30", "--dry-run", "--json"
    )
    assert code == 0, out
    planned = json.loads(out)
    assert planned["dry_run"] and planned["conversations"] == 1
    assert planned["messages"] == 2 and planned["handled_events"] == 1
    assert await counts(tmp_path) == before  # a dry run changes nothing

    code, out = await asyncio.to_thread(run, tmp_path, "purge", "--older-than", "30")
    assert code == 0 and out.startswith("deleted: 1 conversations, 2 messages")
    after = await counts(tmp_path)
    assert after["conversations"] == before["conversations"] - 1
    assert after["messages"] == before["messages"] - 2
    assert after["transitions"] == before["transitions"] - planned["transitions"]
    assert after["handled_events"] == before["handled_events"] - 1
    code, out = await asyncio.to_thread(run, tmp_path, "export", "--customer", "alice")
    assert "my invoice is wrong" not in out and "how do refunds work?" in out


async def test_purge_customer_deletes_everything_about_them_and_nothing_else(
    tmp_path: Path,
) -> None:
    await seed(tmp_path)
    code, out = await asyncio.to_thread(run, tmp_path, "purge", "--customer", "alice",
                                        "--platform", "slack", "--dry-run", "--json")
    assert json.loads(out)["conversations"] == 2
    code, out = await asyncio.to_thread(run, tmp_path, "purge", "--customer", "alice")
    assert code == 0, out
    code, out = await asyncio.to_thread(run, tmp_path, "export", "--customer", "alice")
    data = json.loads(out)
    assert data["conversations"] == [] and data["messages_in_other_threads"] == []
    code, out = await asyncio.to_thread(run, tmp_path, "export", "--customer", "bob")
    bob = json.loads(out)
    texts = [m["text"] for c in bob["conversations"] for m in c["messages"]]
    assert "bob's private question" in texts and "alice chimes in" not in texts
    left = await counts(tmp_path)
    # the event ids stay as tombstones (they carry no text): a redelivery stays a no-op
    assert left["conversations"] == 1 and left["handled_events"] == 5


def test_purge_needs_exactly_one_selector(tmp_path: Path) -> None:
    assert run(tmp_path, "purge")[0] == 2
    assert run(tmp_path, "purge", "--older-than", "1", "--customer", "x")[0] == 2
    assert run(tmp_path, "purge", "--older-than", "1", "--platform", "slack")[0] == 2


# --- purge that really erases (issue 23, finding 6) -------------------------------------------

SECRET_TEXT = "ORDER-7731 alice.private@example.com"


def _file_bytes(tmp: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in tmp.glob("supportbot.db*") if p.is_file()}


@pytest.mark.sqlite_only
async def test_purge_leaves_the_text_in_neither_the_database_nor_its_wal(
    tmp_path: Path, fake_llm: FakeLLM
) -> None:
    cfg = Settings(_env_file=None, data_dir=tmp_path, llm_base_url=fake_llm.url,
                   rate_limit_per_minute=0, daily_token_budget=0)
    engine = await Engine.open(cfg)  # stays open: the purge runs beside a serving bot
    try:
        for i in range(40):
            await engine.handle(IncomingMessage("telegram", "77", "alice",
                                                f"{SECRET_TEXT} #{i} " + "x" * 300, f"u{i}"))
        await engine.handle(IncomingMessage("telegram", "88", "bob", "bob stays here", "b1"))
        before = b"".join(_file_bytes(tmp_path).values())
        assert SECRET_TEXT.encode() in before  # it is really there to begin with
        code, out = await asyncio.to_thread(run, tmp_path, "purge", "--customer", "alice")
        assert code == 0, out
        files = _file_bytes(tmp_path)
        assert files["supportbot.db"] and b"bob stays here" in b"".join(files.values())
        for name, data in files.items():
            assert SECRET_TEXT.encode() not in data, name
            assert b"ORDER-7731" not in data, name
        assert len(files.get("supportbot.db-wal", b"")) == 0  # checkpointed and truncated
    finally:
        await engine.aclose()
    for name, data in _file_bytes(tmp_path).items():
        assert b"ORDER-7731" not in data, name


async def test_redelivery_after_purge_is_neither_stored_nor_answered(
    tmp_path: Path, fake_llm: FakeLLM
) -> None:
    cfg = Settings(_env_file=None, data_dir=tmp_path, llm_base_url=fake_llm.url,
                   rate_limit_per_minute=0, daily_token_budget=0)
    update = IncomingMessage("telegram", "77", "alice", f"{SECRET_TEXT} please", "4242")
    engine = await Engine.open(cfg)
    try:
        first = await engine.handle(update)
        assert first.outcome is Outcome.LLM
        asked = len(fake_llm.chat_requests())
        code, out = await asyncio.to_thread(run, tmp_path, "purge", "--customer", "alice")
        assert code == 0, out
        again = await engine.handle(update)  # the platform redelivers the same update
        assert again.outcome is Outcome.DUPLICATE and again.text is None
        assert len(fake_llm.chat_requests()) == asked  # not answered again
        assert await engine.store.count_messages() == 0  # not stored again
    finally:
        await engine.aclose()


@pytest.mark.sqlite_only
async def test_database_and_data_folder_are_private(tmp_path: Path) -> None:
    data = tmp_path / "new" / "data"
    store = await Store.open(Settings(_env_file=None, data_dir=data).resolved_database_url)
    try:
        await store.count_messages()
    finally:
        await store.close()
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    for path in data.glob("supportbot.db*"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name
