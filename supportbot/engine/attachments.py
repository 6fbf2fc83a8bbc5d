"""Files customers send (photos, screenshots, documents): what the bot does with them.

A file is stored with its message before the platform is acknowledged (``Inbox.accept``); its
message's text is then a note such as ``[picture]`` followed by the caption, which is what
history, staff views and search see. When the message's turn comes, :class:`Files` decides:

- a person owns the thread: the message goes to staff as usual, and the files with it
  (the desk's ``relay_files``);
- vision is on (``SUPPORTBOT_LLM_VISION``): the picture is fetched through the platform's API
  and given to the model as an image part of this turn's user message only;
- vision is off: the bot says it cannot see pictures and offers a person;
- a file too big, of a kind the bot cannot open, or one the platform would not hand over:
  the customer is told so in their language, and the message stays stored.

A picture over ``vision_max_pixels`` (read from the image header) or ``vision_max_bytes`` is
downscaled to fit both with Pillow (the ``vision`` extra: ``pip install 'supportbot[vision]'``),
in a worker thread, and sent as JPEG (PNG when it has transparency). Without Pillow it is not
sent and the customer is asked for a smaller one, as for a decompression bomb (more than
``DECODE_MAX_PIXELS`` declared) or a picture that stays over the byte cap. A picture within the
caps is decoded once too (when Pillow is installed), so that a broken one never reaches the
model, which would refuse the whole turn. A picture that cannot be opened (corrupt, truncated,
not PNG/JPEG/GIF/WebP bytes) gets its own message (``picture_unreadable``: send it again, or
ask for a person); all are kept with their message, and none is a crash.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import io
import logging
import math
import struct
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from supportbot.engine.core import Core
from supportbot.engine.delivery import Delivery
from supportbot.engine.handoff import with_staff
from supportbot.engine.types import Attachment, FileFetcher, FileUnavailable, Outcome, Reply
from supportbot.storage import models

if TYPE_CHECKING:
    from supportbot.engine.turn import Turn

log = logging.getLogger("supportbot.engine")
T = TypeVar("T")

SUPPORTED_KINDS = frozenset({"image", "file"})
# what vision models accept (OpenAI: PNG, JPEG, WEBP, non-animated GIF)
VISION_MIMES = frozenset({"image/png", "image/jpeg", "image/webp", "image/gif"})
_NOTE_NAME_CHARS = 80
# the most pixels a picture may declare to be decoded for resizing (about 200 MB as RGBA; a
# JPEG decodes at a reduced scale, far less): beyond it, it is refused before any decoding
DECODE_MAX_PIXELS = 50_000_000
_DECODES_AT_ONCE = 2  # pictures decoded at the same time (memory), per engine
_ENCODE_TRIES = 6  # re-encodes, each smaller, before a picture that stays over the byte cap
_JPEG_QUALITY = 85
_PILLOW_FORMATS = ("PNG", "JPEG", "GIF", "WEBP")  # the VISION_MIMES; no other decoder runs


def note(attachment: Attachment) -> str:
    """How a file shows in the message's text (history, staff, search): ``[picture]``,
    ``[file: report.pdf]``, ``[sticker]``. The customer picks the file name: one short line,
    no brackets."""
    if attachment.kind == "image":
        return "[picture]"
    if attachment.kind == "file":
        name = " ".join(attachment.filename.replace("[", "(").replace("]", ")").split())
        return f"[file: {name[:_NOTE_NAME_CHARS]}]" if name else "[file]"
    return f"[{attachment.kind}]"


def with_notes(text: str, attachments: Sequence[Attachment]) -> str:
    """The stored text of a message with files: their notes, then what the customer wrote."""
    notes = " ".join(note(a) for a in attachments)
    return f"{notes} {text.strip()}".strip() if notes else text


def stored_rows(attachments: Sequence[Attachment], caption_limit: int) -> list[dict[str, Any]]:
    """Column values for the store (clipped to the columns' sizes)."""
    return [
        {"file_id": a.file_id[:255], "kind": a.kind[:32], "mime": a.mime[:255],
         "size": a.size if isinstance(a.size, int) and 0 <= a.size < 2**31 else None,
         "filename": a.filename[:255], "caption": a.caption[:caption_limit], "url": a.url}
        for a in attachments
    ]


def as_attachment(row: models.Attachment) -> Attachment:
    return Attachment(file_id=row.file_id, kind=row.kind, mime=row.mime, size=row.size,
                      filename=row.filename, caption=row.caption, url=row.url)


def sniff_image(data: bytes) -> tuple[str, tuple[int, int] | None] | None:
    """``(mime, (width, height))`` of a PNG, JPEG, GIF or WebP from its first bytes (size
    ``None`` when the header does not say); ``None`` for anything else. The bytes decide, not
    the name or the type the platform reported."""
    if data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) >= 24:
        return "image/png", struct.unpack(">II", data[16:24])
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        return "image/gif", struct.unpack("<HH", data[6:10])
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp", _webp_size(data)
    if data.startswith(b"\xff\xd8"):
        return "image/jpeg", _jpeg_size(data)
    return None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8X" and len(data) >= 30:
        return (int.from_bytes(data[24:27], "little") + 1,
                int.from_bytes(data[27:30], "little") + 1)
    if chunk == b"VP8 " and len(data) >= 30:
        w, h = struct.unpack("<HH", data[26:30])
        return w & 0x3FFF, h & 0x3FFF
    if chunk == b"VP8L" and len(data) >= 25:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """The frame size from the first SOF marker (walking the segments, not decoding)."""
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        length = int.from_bytes(data[i + 2:i + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack(">HH", data[i + 5:i + 9])
            return width, height
        i += 2 + length
    return None


class PictureUnreadable(Exception):
    """Pillow could not (or must not) decode a picture: corrupt, truncated, a decompression
    bomb (the :class:`PictureTooLarge` kind)."""


class PictureTooLarge(PictureUnreadable):
    """A picture that must not be decoded (too many pixels declared) or that stays over the
    byte cap: the customer is asked for a smaller one, not told it is broken."""


@functools.cache
def _pillow() -> tuple[Any, Any] | None:
    """Pillow's ``Image`` and ``ImageOps`` modules, or ``None`` when it is not installed;
    imported on first use, not at start-up."""
    try:
        from PIL import Image, ImageOps
    except ImportError:
        return None
    return Image, ImageOps


@functools.cache
def _say_no_pillow() -> None:
    log.warning("a picture over SUPPORTBOT_VISION_MAX_PIXELS / SUPPORTBOT_VISION_MAX_BYTES was "
                "not sent to the model: pip install 'supportbot[vision]' (Pillow) to resize such "
                "pictures")


def shrink(data: bytes, max_pixels: int, max_bytes: int) -> tuple[bytes, str] | None:
    """``(encoded, mime)``: the picture downscaled to at most ``max_pixels`` pixels and
    ``max_bytes`` bytes, upright (EXIF orientation applied, metadata dropped), as JPEG or, with
    transparency, PNG. ``None`` when Pillow is not installed. Blocking CPU work: run it in a
    thread. Raises :class:`PictureUnreadable` for a picture that cannot be read or resized
    within the caps, whatever the decoder raised (the bytes are the customer's: any of them)."""
    pillow = _pillow()
    if pillow is None:
        return None
    return _guarded(pillow, lambda: _shrink(pillow, data, max_pixels, max_bytes))


def check_readable(data: bytes) -> bool:
    """Decode the picture once (a JPEG at 1/8 scale: the whole file is still read), so that a
    corrupt or truncated one is caught here and not by the model. ``False`` when Pillow is not
    installed (not checked); raises :class:`PictureUnreadable` like :func:`shrink`. Blocking
    CPU work (up to about 60 ms for 4 MP): run it in a thread."""
    pillow = _pillow()
    if pillow is None:
        return False
    return _guarded(pillow, lambda: _decode(pillow[0], data))


def _decode(Image: Any, data: bytes) -> bool:
    with _opened(Image, data) as opened:
        if opened.format == "JPEG":
            width, height = opened.size
            opened.draft("RGB", (max(1, width // 8), max(1, height // 8)))
        opened.load()
    return True


def _guarded(pillow: tuple[Any, Any], work: Callable[[], T]) -> T:
    """``work()``, with whatever the decoder raises on a customer's bytes turned into
    :class:`PictureUnreadable` (the bytes are the customer's: any exception may come), and a
    decompression bomb into :class:`PictureTooLarge`."""
    Image = pillow[0]
    try:
        return work()
    except PictureUnreadable:
        raise
    except Image.DecompressionBombError as exc:
        raise PictureTooLarge(f"{type(exc).__name__}: {exc}") from exc
    except Exception as exc:  # OSError, SyntaxError, MemoryError, ValueError, ...
        raise PictureUnreadable(f"{type(exc).__name__}: {exc}") from exc


@contextlib.contextmanager
def _opened(Image: Any, data: bytes) -> Iterator[Any]:
    """The picture opened (its header read, nothing decoded yet), refused first if it declares
    more than ``DECODE_MAX_PIXELS`` pixels (the bytes' own header, then Pillow's reading);
    Pillow raises DecompressionBombError past 2 * ``MAX_IMAGE_PIXELS``."""
    sniffed = sniff_image(data)
    declared = sniffed[1] if sniffed else None
    if declared is not None and declared[0] * declared[1] > DECODE_MAX_PIXELS:
        raise PictureTooLarge(f"declares {declared[0]}x{declared[1]} pixels")
    with Image.open(io.BytesIO(data), formats=_PILLOW_FORMATS) as opened:
        width, height = opened.size
        if width * height > DECODE_MAX_PIXELS:
            raise PictureTooLarge(f"declares {width}x{height} pixels")
        if width < 1 or height < 1:
            raise PictureUnreadable(f"declares {width}x{height} pixels")
        yield opened


def _shrink(pillow: tuple[Any, Any], data: bytes, max_pixels: int,
            max_bytes: int) -> tuple[bytes, str]:
    Image, ImageOps = pillow
    with _opened(Image, data) as opened:
        width, height = opened.size
        picture: Any = opened
        # palette pictures resize only by nearest pixel; a transparent colour becomes alpha
        if opened.mode in ("1", "P", "PA") or "transparency" in opened.info:
            alpha = opened.mode in ("PA", "LA") or "transparency" in opened.info
            picture = opened.convert("RGBA" if alpha else "RGB")
        box = _fit(width, height, max_pixels)
        transparent: bool | None = None
        for _ in range(_ENCODE_TRIES):
            # a JPEG is decoded at the smallest scale at least twice the box (reducing_gap)
            picture.thumbnail(box, Image.Resampling.LANCZOS)
            if transparent is None:  # a screenshot's alpha is often all opaque: a photo then
                transparent = ("A" in picture.getbands()
                               and picture.getchannel("A").getextrema()[0] < 255)
            encoded, mime = _encode(ImageOps, picture, transparent)
            if len(encoded) <= max_bytes:
                return encoded, mime
            w, h = picture.size
            scale = min(0.9, 0.95 * math.sqrt(max_bytes / len(encoded)))
            box = (max(1, int(w * scale)), max(1, int(h * scale)))
    raise PictureTooLarge(f"still over {max_bytes} bytes after {_ENCODE_TRIES} re-encodes")


def _fit(width: int, height: int, max_pixels: int) -> tuple[int, int]:
    """The box ``thumbnail`` shrinks a ``width`` x ``height`` picture into so that it has at
    most ``max_pixels`` pixels (its own size when it has no more)."""
    if width * height <= max_pixels:
        return width, height
    scale = math.sqrt(max_pixels / (width * height))
    return max(1, math.floor(width * scale)), max(1, math.floor(height * scale))


def _encode(ImageOps: Any, picture: Any, transparent: bool) -> tuple[bytes, str]:
    """The picture upright (its EXIF orientation applied, on a copy), without its metadata."""
    upright = ImageOps.exif_transpose(picture)
    out = io.BytesIO()
    if transparent:
        upright.save(out, "PNG", optimize=False)
        return out.getvalue(), "image/png"
    if upright.mode not in ("RGB", "L"):
        upright = upright.convert("RGB")
    upright.save(out, "JPEG", quality=_JPEG_QUALITY)
    return out.getvalue(), "image/jpeg"


def image_part(data: bytes, mime: str) -> dict[str, Any]:
    """An OpenAI chat content part carrying a picture inline (a data URL)."""
    encoded = base64.b64encode(data).decode("ascii")
    return {"type": "image_url", "image_url": {"url": f"data:{mime};base64,{encoded}"}}


def user_content(text: str, images: Sequence[dict[str, Any]]) -> str | list[dict[str, Any]]:
    """The user message's content: plain text, or text and pictures as content parts."""
    if not images:
        return text
    return [{"type": "text", "text": text}, *images]


@dataclass(slots=True)
class _Findings:
    problems: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    images: list[dict[str, Any]] = field(default_factory=list)
    unseen_pictures: int = 0


class Files:
    """The step before a turn's answer when its message came with files (see the module)."""

    def __init__(self, core: Core, delivery: Delivery,
                 respond: Callable[[Turn], Awaitable[Reply]], *, vision: bool) -> None:
        self.core, self.delivery, self.next = core, delivery, respond
        self.vision = vision
        self.fetchers: dict[str, FileFetcher] = {}
        self.decoding = asyncio.Semaphore(_DECODES_AT_ONCE)

    def register(self, platform: str, fetcher: FileFetcher) -> None:
        self.fetchers[platform] = fetcher

    async def respond(self, turn: Turn) -> Reply:
        # a message with files always starts with a note: others cost no query
        if not turn.message.text.startswith("["):
            return await self.next(turn)
        rows = await self.core.store.attachments(turn.message.id)
        if not rows:
            return await self.next(turn)
        conv = turn.conv
        if with_staff(conv.status):
            reply = await self.next(turn)  # the text goes to staff
            await self._examine(conv.platform, rows, vision=False)  # keep bytes if configured
            if reply.outcome is Outcome.RELAYED:
                await self.core.desk_call(conv.platform, "relay_files", conv.id,
                                          [as_attachment(r) for r in rows])
            return reply
        found = await self._examine(conv.platform, rows, vision=self.vision)
        if found.unseen_pictures:
            found.problems.append(("picture_unseen", {}))
        notice = " ".join(self.core.words(name, turn.language, conv.customer_name, **values)
                          for name, values in found.problems)
        turn.note = "\n\n".join(part for part in (turn.note, notice) if part)
        words = _words_after_notes(turn.message.text, [as_attachment(r) for r in rows])
        if found.images:
            turn.images = tuple(found.images)
            return await self.next(turn)
        if words:  # no picture for the model, but a question to answer
            return await self.next(turn)
        if not turn.note:  # a document alone: kept for staff, nothing to answer yet
            turn.note = self.core.words("file_received", turn.language, conv.customer_name,
                                        filename=rows[0].filename)
        delivered = await self.delivery.deliver(conv.id, turn.message, turn.note, turn.sink,
                                                outcome=Outcome.DONT_KNOW)
        if delivered is None:
            return Reply(conv.id, Outcome.RELAYED, language=turn.language)
        return Reply(conv.id, Outcome.DONT_KNOW, text=turn.note, language=turn.language,
                     message_id=delivered)

    async def _examine(self, platform: str, rows: Sequence[models.Attachment], *,
                       vision: bool) -> _Findings:
        """Check each file against the limits, fetch what is needed (for the model, or to keep
        the bytes) and record what became of it."""
        settings = self.core.settings
        found = _Findings()
        fetcher = self.fetchers.get(platform)
        for row in rows:
            named = {"filename": row.filename}
            if row.kind not in SUPPORTED_KINDS:
                found.problems.append(("file_unsupported", {"kind": row.kind}))
                await self._status(row, "unsupported")
                continue
            if row.size is not None and row.size > settings.max_file_bytes:
                found.problems.append(("file_too_large", {**named,
                                                          "limit": _mb(settings.max_file_bytes)}))
                await self._status(row, "too_large")
                continue
            look = vision and row.kind == "image"
            if row.kind == "image" and (not vision or fetcher is None):
                found.unseen_pictures += 1
            if fetcher is None or not (look or settings.store_file_bytes):
                continue
            try:
                data = await fetcher.fetch(as_attachment(row), settings.max_file_bytes)
            except FileUnavailable as exc:
                log.warning("could not fetch a customer's file",
                            extra={"platform": platform, "attachment": row.id,
                                   "error": str(exc)})
                if exc.too_large:
                    found.problems.append(("file_too_large",
                                           {**named, "limit": _mb(settings.max_file_bytes)}))
                else:
                    found.problems.append(("file_download_failed", named))
                await self._status(row, "too_large" if exc.too_large else "failed")
                continue
            keep = settings.store_file_bytes
            await self._status(row, "stored" if keep else "fetched", data=data if keep else None)
            if look:
                part = await self._picture(data, platform, row.id)
                if isinstance(part, str):
                    found.problems.append((part, named))
                else:
                    found.images.append(part)
        return found

    async def _picture(self, data: bytes, platform: str,
                       attachment: int) -> dict[str, Any] | str:
        """The image part for the model, downscaled when over the caps; else the name of the
        message that says why not: ``file_too_large`` when it is over them and cannot be
        downscaled (no Pillow, a bomb), ``picture_unreadable`` when it cannot be opened
        (corrupt, truncated, not a picture a model reads)."""
        settings = self.core.settings
        sniffed = sniff_image(data)
        if sniffed is None or sniffed[0] not in VISION_MIMES:
            log.warning("could not open a customer's picture",
                        extra={"platform": platform, "attachment": attachment,
                               "error": "not PNG, JPEG, GIF or WebP bytes"})
            return "picture_unreadable"
        mime, size = sniffed
        within = len(data) <= settings.vision_max_bytes and (
            size is None or size[0] * size[1] <= settings.vision_max_pixels)
        try:
            async with self.decoding:
                if within:
                    await asyncio.to_thread(check_readable, data)
                    return image_part(data, mime)
                shrunk = await asyncio.to_thread(shrink, data, settings.vision_max_pixels,
                                                 settings.vision_max_bytes)
        except PictureUnreadable as exc:
            log.warning("could not open a customer's picture" if within
                        else "could not resize a customer's picture",
                        extra={"platform": platform, "attachment": attachment,
                               "error": str(exc)[:200]})
            return "file_too_large" if isinstance(exc, PictureTooLarge) else "picture_unreadable"
        if shrunk is None:
            _say_no_pillow()
            return "file_too_large"
        return image_part(*shrunk)

    async def _status(self, row: models.Attachment, status: str, **values: Any) -> None:
        await self.core.store.update_attachment(row.id, status=status, **values)


def _words_after_notes(text: str, attachments: Sequence[Attachment]) -> str:
    notes = " ".join(note(a) for a in attachments)
    return text[len(notes):].strip() if text.startswith(notes) else text.strip()


def _mb(size: int) -> str:
    return f"{size / 1_000_000:.0f}" if size >= 1_000_000 else f"{size / 1_000_000:.1f}"
