"""Pictures and files, both ways, on both platforms (issue 20).

End to end through the real adapters: FakeTelegram / FakeSlack serve the files over their real
download routes (``getFile`` + ``/file/bot<token>/…``; ``url_private`` with the bot token) and
take uploads the way ``files_upload_v2`` makes them; FakeLLM's vision responder answers from
the image part it was given. Customers' files are stored with their message (id, type, size),
pictures reach a vision model only on their own turn, and every failure is told to the customer
in their language with the message kept.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import io
import random
import struct
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.config import Config
from PIL import Image
from slack_sdk.web.async_client import AsyncWebClient
from sqlalchemy import inspect, text
from test_slack_adapter import HUMAN_PLEASE, STAFF, STAFF_CHANNEL, Env, serving, texts
from test_slack_adapter import make_settings as slack_settings
from test_telegram_adapter import ALICE, STAFFER, running, start_handoff
from test_telegram_adapter import STAFF as TG_STAFF
from test_telegram_adapter import fake as fake
from test_telegram_adapter import make_settings as telegram_settings

from supportbot.adapters.slack.files import SlackFiles
from supportbot.engine import Engine, Status
from supportbot.engine import attachments as attachments
from supportbot.engine.attachments import sniff_image
from supportbot.engine.types import Attachment, FileUnavailable
from supportbot.storage import Store
from supportbot.storage.db import MIGRATIONS, create_engine
from supportbot.testing.fake_llm import FakeLLM, vision_responder
from supportbot.testing.fake_slack import FakeSlack
from supportbot.testing.fake_telegram import FakeTelegram

ERROR_TEXT = "Error 42: disk quota exceeded"


def png(width: int = 64, height: int = 48, words: str = ERROR_TEXT) -> bytes:
    """A real PNG (grey pixels) whose tEXt chunk carries ``words``: the fake vision model
    "reads" them, standing in for the text on a screenshot."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))
    rows = b"".join(b"\x00" + b"\x80" * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"tEXt", b"Comment\x00" + words.encode("latin-1"))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def screenshot(width: int = 4000, height: int = 3000) -> bytes:
    """A PNG screenshot made with Pillow: a light page with lines of dark "text"."""
    picture = Image.new("RGB", (width, height), (246, 246, 246))
    for top in range(40, height - 40, 60):
        picture.paste((30, 30, 30), (40, top, width - 40 - top % 400, top + 24))
    out = io.BytesIO()
    picture.save(out, "PNG")
    return out.getvalue()


def header_only_png(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` pixels over a few bytes of data: what a
    decompression bomb looks like before it is decoded."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))
    return (b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 4096)) + chunk(b"IEND", b""))


def picture_in(url: str) -> tuple[str, tuple[int, int], int]:
    """The type, size in pixels and length in bytes of the picture in a data URL."""
    header, _, encoded = url.partition(",")
    data = base64.b64decode(encoded)
    with Image.open(io.BytesIO(data)) as picture:
        return header.removeprefix("data:").removesuffix(";base64"), picture.size, len(data)


async def stored_attachments(engine: Engine, conversation_id: int) -> list[Any]:
    rows = []
    for message in await engine.store.messages(conversation_id):
        rows += await engine.store.attachments(message.id)
    return rows


def see(messages: list[dict[str, Any]]) -> str:
    """A vision model for the pictures; text gets the Telegram tests' "Answer: …"."""
    if isinstance(messages[-1]["content"], list):
        return vision_responder(messages)
    return f"Answer: {messages[-1]['content']}"


# --- Telegram ------------------------------------------------------------------------------

@contextlib.asynccontextmanager
async def telegram(tmp_path: Path, fake: FakeTelegram, **settings: Any
                   ) -> AsyncIterator[tuple[Engine, FakeLLM]]:
    with FakeLLM(responder=see) as llm:
        async with running(telegram_settings(tmp_path, fake, llm, llm_stream=False,
                                             **settings)) as (engine, _):
            yield engine, llm


async def test_telegram_photo_is_stored_and_without_vision_the_bot_says_so(
    tmp_path: Path, fake: FakeTelegram
) -> None:
    picture = png()
    async with telegram(tmp_path, fake) as (engine, llm):
        fake.push(fake.photo_message(picture, language_code="de"))
        [reply] = await fake.wait_for(lambda: fake.texts(ALICE))
        conv = await engine.find_conversation("telegram", str(ALICE))
        [row] = await stored_attachments(engine, conv.id)
        messages = await engine.store.messages(conv.id)
    # in the customer's language, offering a person
    assert reply.startswith("Bilder kann ich leider nicht sehen") and "/human" in reply
    assert not llm.chat_requests()  # nothing to ask a model that cannot see
    assert messages[0].text == "[picture]" and messages[0].state == "answered"
    assert (row.platform, row.kind, row.mime, row.size) == ("telegram", "image", "image/jpeg",
                                                            len(picture))
    assert fake.files[row.file_id] == picture  # the largest size, not the thumbnail
    assert row.status == "received" and row.data is None  # nothing fetched: not needed
    assert not fake.calls("getFile")


async def test_telegram_screenshot_is_answered_by_a_vision_model(
    tmp_path: Path, fake: FakeTelegram
) -> None:
    async with telegram(tmp_path, fake, llm_vision=True) as (engine, llm):
        fake.push(fake.photo_message(png(), caption="what does this error mean?"))
        [reply] = await fake.wait_for(lambda: fake.texts(ALICE))
        [asked] = llm.chat_requests()
        fake.push(fake.private_message("thanks, and how do I free space?"))
        await fake.wait_for(lambda: len(fake.texts(ALICE)) == 2)
        later = llm.chat_requests()[-1]
        conv = await engine.find_conversation("telegram", str(ALICE))
        [row] = await stored_attachments(engine, conv.id)
    assert ERROR_TEXT in reply  # the answer came from the picture
    [url] = asked.image_urls
    assert url.startswith("data:image/png;base64,")
    assert asked.messages[-1]["content"][0] == {"type": "text",
                                                "text": "[picture] what does this error mean?"}
    assert [c.method for c in fake.calls() if c.method in ("getFile", "download")] == [
        "getFile", "download"]
    # the next turn: the picture is a note in history, not sent again
    assert later.image_urls == []
    assert {"role": "user", "content": "[picture] what does this error mean?"} in later.messages
    assert row.status == "fetched" and row.data is None  # read for the model, not kept


async def test_telegram_oversize_and_failing_downloads_are_told_and_kept(
    tmp_path: Path, fake: FakeTelegram, caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(attachments, "_pillow", lambda: None)  # no resizing: as without Pillow
    attachments._say_no_pillow.cache_clear()
    async with telegram(tmp_path, fake, llm_vision=True, max_file_bytes=1_000_000,
                        vision_max_pixels=64 * 48 - 1) as (engine, llm):
        fake.push(fake.photo_message(png(), file_size=30_000_000))  # over max_file_bytes
        await fake.wait_for(lambda: len(fake.texts(ALICE)) == 1)
        broken = fake.photo_message(png(), caption="look")
        fake.file_failures[broken["message"]["photo"][-1]["file_id"]] = 502
        fake.push(broken)
        await fake.wait_for(lambda: len(fake.texts(ALICE)) == 2)
        fake.push(fake.photo_message(png()))  # over vision_max_pixels by one pixel
        await fake.wait_for(lambda: len(fake.texts(ALICE)) == 3)
        fake.push(fake.media_message("voice"))
        await fake.wait_for(lambda: len(fake.texts(ALICE)) == 4)
        conv = await engine.find_conversation("telegram", str(ALICE))
        rows = await stored_attachments(engine, conv.id)
        messages = await engine.store.messages(conv.id)
    too_big, failed, too_many_pixels, voice = fake.texts(ALICE)[:4]
    assert "too big" in too_big and "10" not in too_big and "1 MB" in too_big
    assert failed.startswith("Sorry, I couldn't download") and failed.endswith(
        "Answer: [picture] look")  # the caption is still answered
    assert "too big" in too_many_pixels
    assert "can't open this kind of message" in voice
    assert [r.status for r in rows] == ["too_large", "failed", "fetched", "unsupported"]
    assert [m.text for m in messages if m.role == "user"] == [
        "[picture]", "[picture] look", "[picture]", "[voice]"]
    assert all(m.state == "answered" for m in messages if m.role == "user")
    # the model saw no picture at all: one call, for the caption
    assert [r.image_urls for r in llm.chat_requests()] == [[]]
    assert "could not fetch a customer's file" in caplog.text
    assert caplog.text.count("pip install 'supportbot[vision]'") == 1
    assert fake.token not in caplog.text and fake.token.split(":")[1] not in caplog.text


async def test_telegram_oversize_screenshot_is_downscaled_for_the_model(
    tmp_path: Path, fake: FakeTelegram
) -> None:
    shot = screenshot(4000, 3000)
    assert len(shot) < 5_000_000  # over the pixel cap only
    async with telegram(tmp_path, fake, llm_vision=True, vision_max_pixels=4_000_000,
                        vision_max_bytes=5_000_000) as (engine, llm):
        fake.push(fake.photo_message(shot, caption="what does this error mean?"))
        [reply] = await fake.wait_for(lambda: fake.texts(ALICE))
        [asked] = llm.chat_requests()
        conv = await engine.find_conversation("telegram", str(ALICE))
        [row] = await stored_attachments(engine, conv.id)
    [url] = asked.image_urls
    mime, (width, height), size = picture_in(url)
    assert mime == "image/jpeg" and size <= 5_000_000
    assert 3_900_000 < width * height <= 4_000_000 and abs(width / height - 4 / 3) < 0.01
    assert reply.startswith("In your screenshot I can see: a picture of")
    assert asked.messages[-1]["content"][0] == {"type": "text",
                                                "text": "[picture] what does this error mean?"}
    assert row.status == "fetched" and row.size == len(shot)


async def test_telegram_unreadable_pictures_are_told_and_the_next_one_is_still_resized(
    tmp_path: Path, fake: FakeTelegram, caplog: pytest.LogCaptureFixture
) -> None:
    shot = screenshot(3000, 2000)
    small = png(64, 48)
    async with telegram(tmp_path, fake, llm_vision=True, vision_max_pixels=1_000_000) as (
            engine, llm):
        fake.push(fake.photo_message(header_only_png(100_000, 100_000)))  # a bomb
        await fake.wait_for(lambda: len(fake.texts(ALICE)) == 1)
        fake.push(fake.photo_message(shot[:len(shot) // 2]))  # cut off halfway, over the cap
        await fake.wait_for(lambda: len(fake.texts(ALICE)) == 2)
        fake.push(fake.photo_message(small[:len(small) - 30]))  # cut off, under the caps
        await fake.wait_for(lambda: len(fake.texts(ALICE)) == 3)
        fake.push(fake.photo_message(b"<html>not a picture</html>" * 4, caption="see?"))
        await fake.wait_for(lambda: len(fake.texts(ALICE)) == 4)
        fake.push(fake.photo_message(shot, caption="and this one?"))
        await fake.wait_for(lambda: len(fake.texts(ALICE)) == 5)
        conv = await engine.find_conversation("telegram", str(ALICE))
        rows = await stored_attachments(engine, conv.id)
        messages = await engine.store.messages(conv.id)
    bomb, cut, cut_small, html, fine = fake.texts(ALICE)[:5]
    assert "too big" in bomb
    # a picture that cannot be opened says so (not "too big"), is kept and offers a person
    for told in (cut, cut_small, html):
        assert told.startswith("Sorry, I couldn't open this picture"), told
        assert "too big" not in told and "saved for our team" in told and "/human" in told
    assert html.endswith("Answer: [picture] see?")  # the caption is still answered
    assert fine.startswith("In your screenshot I can see: a picture of")
    asked = llm.chat_requests()  # only the last picture reached the model
    assert [len(r.image_urls) for r in asked] == [0, 1]
    _, (width, height), _ = picture_in(asked[-1].image_urls[0])
    assert width * height <= 1_000_000 and width > height
    assert [r.status for r in rows] == ["fetched"] * 5
    assert [m.text for m in messages if m.role == "user"] == [
        "[picture]", "[picture]", "[picture]", "[picture] see?", "[picture] and this one?"]
    assert all(m.state == "answered" for m in messages if m.role == "user")
    assert caplog.text.count("could not resize a customer's picture") == 2
    assert caplog.text.count("could not open a customer's picture") == 2


async def test_telegram_document_bytes_are_kept_when_configured(
    tmp_path: Path, fake: FakeTelegram
) -> None:
    data = b"%PDF-1.4 invoice 2026-0042"
    async with telegram(tmp_path, fake, store_file_bytes=True) as (engine, _):
        fake.push(fake.document_message(data, file_name="invoice.pdf", language_code="fr"))
        [reply] = await fake.wait_for(lambda: fake.texts(ALICE))
        conv = await engine.find_conversation("telegram", str(ALICE))
        [row] = await stored_attachments(engine, conv.id)
    assert reply.startswith("Merci, j'ai bien reçu « invoice.pdf »")
    assert (row.kind, row.mime, row.filename, row.size) == ("file", "application/pdf",
                                                            "invoice.pdf", len(data))
    assert row.status == "stored" and row.data == data


async def test_telegram_staff_photo_reaches_the_customer_and_customer_photo_reaches_staff(
    tmp_path: Path, fake: FakeTelegram
) -> None:
    async with telegram(tmp_path, fake) as (engine, _):
        conv_id, topic = await start_handoff(fake, engine)
        customer_photo = fake.photo_message(png(), caption="here it is")
        fake.push(customer_photo)
        relayed = await fake.wait_for(
            lambda: [m for m in fake.sent(TG_STAFF, topic) if m.get("photo")])
        before = len(fake.sent(ALICE))
        fake.push(fake.staff_message(None, chat_id=TG_STAFF, thread_id=topic, user_id=STAFFER,
                                     photo=True))
        [copied] = await fake.wait_for(lambda: fake.sent(ALICE)[before:])
        view = await engine.get_conversation(conv_id)
    assert relayed[0]["copied_from"] == (ALICE, customer_photo["message"]["message_id"])
    assert copied.get("photo") and copied["copied_from"][0] == TG_STAFF
    assert view.status is Status.HUMAN and view.assignee == f"telegram:{STAFFER}"


async def test_telegram_files_reach_staff_by_id_when_no_update_is_being_handled(
    tmp_path: Path, fake: FakeTelegram
) -> None:
    """After a restart (recovery answers a stored message: no customer message to copy) the
    files are sent into the topic again by their file ids; what Telegram cannot send by id is
    named in a line of text."""
    with FakeLLM(responder=see) as llm:
        async with running(telegram_settings(tmp_path, fake, llm)) as (engine, adapter):
            conv_id, topic = await start_handoff(fake, engine)
            photo = fake.add_file(png())
            document = fake.add_file(b"%PDF-1.4", file_id="doc1")
            view = await engine.get_conversation(conv_id)
            assert adapter.desk is not None and view is not None
            await adapter.desk.relay_files(view, [
                Attachment(photo, "image", "image/jpeg", caption="the error"),
                Attachment(document, "file", "application/pdf", filename="log.pdf"),
                Attachment("stk", "sticker"),
            ])
    sent = fake.sent(TG_STAFF, topic)[-3:]
    assert sent[0]["sent_file"] == photo and sent[0]["caption"] == "the error"
    assert sent[0].get("photo")
    assert sent[1]["sent_file"] == "doc1" and sent[1].get("document")
    assert "[sticker]" in sent[2]["text"]


# --- Slack ---------------------------------------------------------------------------------

@contextlib.asynccontextmanager
async def slack_env(tmp_path: Path, **settings: Any) -> AsyncIterator[Env]:
    with FakeSlack() as slack, FakeLLM(responder=vision_responder) as llm:
        async with serving(slack, llm, slack_settings(slack, llm, tmp_path, **settings)) as env:
            yield env


async def test_slack_screenshot_in_a_dm_is_answered_by_a_vision_model(tmp_path: Path) -> None:
    async with slack_env(tmp_path, llm_vision=True) as env:
        shot = env.slack.add_file(png(), name="error.png")
        await env.post_event(env.slack.file_share_event("what is this?", [shot], channel="D5"))
        # streamed (the default): placeholder, edits, then the answer
        [reply] = await env.wait(lambda: [t for t in texts(env.slack, "D5") if ERROR_TEXT in t])
        await env.settle()
        [asked] = env.llm.chat_requests()
        [download] = env.slack.calls("files.download")
        conv = await env.engine.find_conversation("slack", "T0001:D5")
        [row] = await stored_attachments(env.engine, conv.id)
    assert ERROR_TEXT in reply
    assert asked.image_urls[0].startswith("data:image/png;base64,")
    assert download.authorized  # url_private with the bot token
    assert (row.file_id, row.kind, row.mime, row.filename, row.size) == (
        shot["id"], "image", "image/png", "error.png", len(png()))


async def test_slack_photo_over_the_byte_cap_is_shrunk_and_turned_upright(
    tmp_path: Path
) -> None:
    """A camera photo (noise: it compresses badly) stored sideways with an EXIF orientation:
    it reaches the model within the byte cap, upright, and without its EXIF."""
    noise = random.Random(20).randbytes(1600 * 1200 * 3)
    photo = Image.frombytes("RGB", (1600, 1200), noise)
    exif = photo.getexif()
    exif[0x0112] = 6  # rotate 90° clockwise to show
    out = io.BytesIO()
    photo.save(out, "JPEG", quality=95, exif=exif)
    data = out.getvalue()
    assert len(data) > 1_000_000
    async with slack_env(tmp_path, llm_vision=True, vision_max_bytes=250_000) as env:
        shot = env.slack.add_file(data, name="photo.jpg", mimetype="image/jpeg")
        await env.post_event(env.slack.file_share_event("why is it red?", [shot], channel="D5"))
        await env.wait(lambda: [t for t in texts(env.slack, "D5") if "a picture of" in t])
        await env.settle()
        [asked] = env.llm.chat_requests()
    [url] = asked.image_urls
    mime, (width, height), size = picture_in(url)
    assert mime == "image/jpeg" and size <= 250_000
    assert height > width and abs(height / width - 4 / 3) < 0.01  # upright
    with Image.open(io.BytesIO(base64.b64decode(url.partition(",")[2]))) as sent:
        assert not sent.getexif()


async def test_slack_without_vision_the_bot_cannot_see_and_offers_a_person(
    tmp_path: Path
) -> None:
    async with slack_env(tmp_path) as env:
        shot = env.slack.add_file(png())
        await env.post_event(env.slack.file_share_event("", [shot], channel="D5"))
        [reply] = await env.wait(lambda: texts(env.slack, "D5"))
    assert reply.startswith("I can't see pictures") and "human" in reply
    assert not env.llm.chat_requests() and not env.slack.calls("files.download")


async def test_slack_corrupt_picture_is_told_kept_and_offered_a_person(tmp_path: Path) -> None:
    shot = screenshot(1200, 900)
    async with slack_env(tmp_path, llm_vision=True, store_file_bytes=True) as env:
        file = env.slack.add_file(shot[: len(shot) // 3], name="error.png", mimetype="image/png")
        await env.post_event(env.slack.file_share_event("", [file], channel="D1"))
        [told] = await env.wait(lambda: texts(env.slack, "D1"))
        conv = await env.engine.find_conversation("slack", "T0001:D1")
        [row] = await stored_attachments(env.engine, conv.id)
    assert told.startswith("Sorry, I couldn't open this picture (\"error.png\")")
    assert "/human" in told
    assert not env.llm.chat_requests()
    assert row.status == "stored" and row.data == shot[: len(shot) // 3]  # kept for staff


async def test_slack_files_cross_between_a_dm_customer_and_the_staff_thread(
    tmp_path: Path
) -> None:
    async with slack_env(tmp_path) as env:
        await env.post_event(env.slack.message_event(HUMAN_PLEASE, channel="D8"))
        [note] = await env.wait(lambda: env.slack.messages(channel=STAFF_CHANNEL,
                                                           top_level=True))
        # the customer's screenshot during the handoff: shared again in the staff thread
        shot = env.slack.add_file(png(), name="error.png")
        await env.post_event(env.slack.file_share_event("see", [shot], channel="D8"))
        [to_staff] = await env.wait(lambda: env.slack.uploads)
        # one Slack would not give: described to staff, without a link
        gone = env.slack.add_file(b"x" * 10, name="gone.pdf", mimetype="application/pdf")
        env.slack.file_failures[gone["id"]] = 404
        await env.post_event(env.slack.file_share_event("", [gone], channel="D8"))
        await env.wait(lambda: any("could not be passed on" in t for t in texts(
            env.slack, STAFF_CHANNEL, thread_ts=note.ts)))
        # staff answer with a file in the notification's thread: it reaches the DM
        fix = env.slack.add_file(b"step 1: restart", name="fix.txt", mimetype="text/plain")
        await env.post_event(env.slack.file_share_event(
            "here is the fix", [fix], user=STAFF, channel=STAFF_CHANNEL, channel_type="channel",
            thread_ts=note.ts))
        await env.wait(lambda: len(env.slack.uploads) == 2)
        await env.settle()
        conv = await env.engine.find_conversation("slack", "T0001:D8")
        stored = await env.engine.store.messages(conv.id)
    assert (to_staff["channel"], to_staff["thread_ts"], to_staff["data"]) == (
        STAFF_CHANNEL, note.ts, png())
    [described] = [t for t in texts(env.slack, STAFF_CHANNEL, thread_ts=note.ts)
                   if "could not be passed on" in t]
    assert "gone.pdf (application/pdf" in described and "http" not in described
    to_customer = env.slack.uploads[1]
    assert (to_customer["channel"], to_customer["thread_ts"]) == ("D8", None)
    assert (to_customer["data"], to_customer["filename"]) == (b"step 1: restart", "fix.txt")
    assert to_customer["initial_comment"] == "here is the fix"
    assert conv.status is Status.HUMAN and conv.assignee == f"slack:{STAFF}"
    assert any(m.role == "staff" and m.text == "[file: fix.txt] here is the fix" for m in stored)
    assert [m.text for m in stored if m.role == "user"][-2:] == ["[picture] see",
                                                                 "[file: gone.pdf]"]


async def test_slack_bot_token_goes_only_to_slack_hosts() -> None:
    """A signed event still names its own ``url_private``: the token goes only to Slack's
    hosts or the configured API's, never to another server (nothing is requested there)."""
    with FakeSlack() as slack, FakeSlack() as elsewhere:
        files = SlackFiles(AsyncWebClient(token=slack.bot_token, base_url=slack.api_url))
        planted = elsewhere.add_file(png())["url_private"].replace("127.0.0.1", "localhost")
        for url in (planted, "http://files.slack.com/F1/a.png", ""):
            with pytest.raises(FileUnavailable):
                await files.fetch(Attachment("F1", "image", url=url), 1_000_000)
        shot = slack.add_file(png())
        fetched = await files.fetch(Attachment(shot["id"], "image", url=shot["url_private"]),
                                    1_000_000)
    assert fetched == png()
    assert not elsewhere.calls()  # the planted server never heard from the bot


# --- pieces --------------------------------------------------------------------------------

def test_picture_sizes_are_read_from_headers() -> None:
    jpeg = (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
            b"\xff\xc0\x00\x11\x08\x02\x58\x03\x20\x03\x01\x22\x00\x02\x11\x01\x03\x11\x01")
    assert sniff_image(png(640, 480)) == ("image/png", (640, 480))
    assert sniff_image(jpeg) == ("image/jpeg", (800, 600))
    assert sniff_image(b"GIF89a\x10\x00\x20\x00") == ("image/gif", (16, 32))
    assert sniff_image(b"%PDF-1.4") is None


def test_a_decoder_error_or_a_bomb_is_an_unreadable_picture(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever Pillow raises on a customer's bytes becomes ``PictureUnreadable``: its own
    DecompressionBombError (past 2 * ``Image.MAX_IMAGE_PIXELS``, here with our lower cap
    lifted), the hard cap on declared pixels, a file that is not a picture, one that cannot be
    brought under the byte cap."""
    unreadable = attachments.PictureUnreadable
    with pytest.raises(unreadable, match="declares 100000x100000"):
        attachments.shrink(header_only_png(100_000, 100_000), 1_000_000, 1_000_000)
    with pytest.raises(unreadable, match="declares 8000x7000"):  # under Pillow's own limit
        attachments.shrink(header_only_png(8000, 7000), 1_000_000, 1_000_000)
    with pytest.raises(unreadable):
        attachments.shrink(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, 1_000_000, 1_000_000)
    with pytest.raises(unreadable, match="still over 10 bytes"):
        attachments.shrink(screenshot(400, 300), 10_000, 10)
    monkeypatch.setattr(attachments, "DECODE_MAX_PIXELS", 10**12)
    with pytest.raises(unreadable, match="DecompressionBombError"):
        attachments.shrink(header_only_png(100_000, 100_000), 1_000_000, 1_000_000)


def test_a_broken_picture_is_told_apart_from_one_too_big() -> None:
    """Bombs and pictures that stay over the byte cap are "too big" (send a smaller one); a
    corrupt or truncated one is not, whether it is resized or only checked."""
    too_large, unreadable = attachments.PictureTooLarge, attachments.PictureUnreadable
    shot = screenshot(400, 300)
    for bad in (shot[: len(shot) // 2], b"\x89PNG\r\n\x1a\n" + b"\x00" * 64):
        for work in (functools.partial(attachments.shrink, bad, 10_000, 1_000_000),
                     functools.partial(attachments.check_readable, bad)):
            with pytest.raises(unreadable) as caught:
                work()
            assert not isinstance(caught.value, too_large)
    with pytest.raises(too_large):
        attachments.check_readable(header_only_png(100_000, 100_000))
    with pytest.raises(too_large):
        attachments.shrink(shot, 10_000, 10)
    assert attachments.check_readable(shot) is True
    jpeg = io.BytesIO()
    Image.open(io.BytesIO(shot)).save(jpeg, "JPEG")
    assert attachments.check_readable(jpeg.getvalue()) is True
    with pytest.raises(unreadable):
        attachments.check_readable(jpeg.getvalue()[:-400])


# --- migration 0005 on both databases --------------------------------------------------------

def _alembic(connection: Any, verb: str, target: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    getattr(command, verb)(config, target)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_migration_0005_adds_attachments_and_keeps_messages(
    tmp_path: Path, database_url: str | None, backend: str
) -> None:
    if backend == "postgresql" and database_url is None:
        pytest.skip("PostgreSQL pass only (SUPPORTBOT_TEST_POSTGRES_URL)")
    if backend == "sqlite" and database_url is not None:
        pytest.skip("SQLite pass only")
    url = database_url or f"sqlite+aiosqlite:///{tmp_path / 'old.db'}"
    engine = create_engine(url)
    async with engine.begin() as conn:
        # a database as release 0004 left it (PostgreSQL's clone starts at head)
        if database_url is not None:
            await conn.run_sync(_alembic, "downgrade", "0004")
        else:
            await conn.run_sync(_alembic, "upgrade", "0004")
        await conn.execute(text(
            "INSERT INTO conversations (platform, thread_key, customer_id, customer_name, status,"
            " language, failures, bot_failed, wait_notices, created_at, updated_at) VALUES"
            " ('slack', 'T:D1', 'U1', 'Ann', 'bot', 'en', 0, false, 0, CURRENT_TIMESTAMP,"
            " CURRENT_TIMESTAMP)"))
        await conn.execute(text(
            "INSERT INTO messages (conversation_id, role, text, state, usage_estimated,"
            " created_at) VALUES (1, 'user', 'old question', 'answered', false,"
            " CURRENT_TIMESTAMP)"))
        tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
    await engine.dispose()
    assert "attachments" not in tables

    store = await Store.open(url)  # migrates to head on start
    try:
        fields = dict(platform="slack", thread_key="T:D1", customer_id="U1", customer_name="Ann",
                      language="en", text="[picture]")
        _, message = await store.accept(event_id="e1", attachments=[
            {"file_id": "F1", "kind": "image", "mime": "image/png", "size": 123,
             "filename": "a.png", "url": "https://files.slack.com/x"}], **fields)
        [row] = await store.attachments(message.id)
        await store.update_attachment(row.id, status="stored", data=b"\x89PNG")
        [kept] = await store.attachments(message.id)
        old = await store.messages(1)
    finally:
        await store.close()
    assert [m.text for m in old] == ["old question", "[picture]"]
    assert (kept.file_id, kept.size, kept.status, kept.data) == ("F1", 123, "stored", b"\x89PNG")


def test_manifest_asks_for_the_file_scopes() -> None:
    """Reading customers' files (``url_private``) and sharing them (``files_upload_v2``)."""
    import yaml

    manifest = yaml.safe_load((Path(__file__).resolve().parents[1] / "slack" / "manifest.yml")
                              .read_text())
    assert {"files:read", "files:write"} <= set(manifest["oauth_config"]["scopes"]["bot"])
