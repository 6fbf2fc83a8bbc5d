"""Answers being streamed right now, so a takeover can stop them at once.

In this process a transition out of ``bot`` calls :meth:`Streams.interrupt` right after it
commits. Another process (several processes on one PostgreSQL database) cannot reach that
call, so a stream also re-reads its conversation's status every ``poll`` seconds while it runs
(:meth:`Streams.watch`): an interruption is noticed within that interval.

It also keeps the :class:`Journal` of where replies went on the platform, written before
anything else can run, so a crash right after a platform accepted a reply is finished in place
by recovery instead of being written twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from pathlib import Path

from supportbot.storage.models import Message

log = logging.getLogger("supportbot.engine")

#: how often a stream re-reads its conversation's status (a takeover in another process)
POLL_SECONDS = 0.5
#: how long a stream's end waits for a status read in flight before cancelling it
STOP_GRACE = 5.0
#: a process's own reply journal is emptied once all its replies are finished and it is this big
COMPACT_BYTES = 64 * 1024


class Streams:
    def __init__(self, poll: float = POLL_SECONDS) -> None:
        self.poll = poll
        self._live: dict[int, set[asyncio.Event]] = {}
        self.journal: Journal | None = None  # opened by a serving engine (Engine.start)

    def open_journal(self, data_dir: Path) -> None:
        if self.journal is None:
            self.journal = Journal(data_dir / "journal")

    def sent(self, message: Message, platform_id: str) -> None:
        """The reply to ``message`` is (being) written into ``platform_id``: journal it now."""
        if self.journal is not None:
            self.journal.record(message, platform_id)

    def sent_into(self, message: Message) -> str | None:
        return self.journal.lookup(message) if self.journal is not None else None

    def done(self, message: Message) -> None:
        if self.journal is not None:
            self.journal.done(message)

    def close(self) -> None:
        if self.journal is not None:
            self.journal.close()
            self.journal = None

    def interrupt(self, conversation_id: int) -> bool:
        """Stop every answer streaming in this conversation; True if there was one."""
        events = self._live.get(conversation_id, set())
        for event in events:
            event.set()
        return bool(events)

    @contextlib.asynccontextmanager
    async def watch(
        self, conversation_id: int, bot_owns: Callable[[], Awaitable[bool]]
    ) -> AsyncIterator[asyncio.Event]:
        """An event set when this conversation's answer must stop: an in-process interrupt, or
        the status seen changed (``bot_owns`` false) by the poll."""
        stop = asyncio.Event()
        ended = asyncio.Event()
        self._live.setdefault(conversation_id, set()).add(stop)

        async def poll() -> None:
            while not stop.is_set():
                try:
                    await asyncio.wait_for(ended.wait(), self.poll)
                    return  # the stream is over
                except TimeoutError:
                    pass
                try:
                    if not await bot_owns():
                        stop.set()
                except Exception as exc:  # a failed read is not a takeover
                    log.warning("stream status check failed: %s", type(exc).__name__)

        poller = asyncio.create_task(poll())
        try:
            yield stop
        finally:
            # Let a status read in flight finish rather than cancel it: a query cancelled
            # mid-flight makes SQLAlchemy close its asyncpg connection under it, and asyncpg
            # then leaves a "Future exception was never retrieved ... connection_lost" behind.
            ended.set()
            try:
                await asyncio.wait_for(asyncio.shield(poller), STOP_GRACE)
            except TimeoutError:  # a read stuck (database gone): cancel it after all
                poller.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await poller
            live = self._live.get(conversation_id)
            if live is not None:
                live.discard(stop)
                if not live:
                    del self._live[conversation_id]



class Journal:
    """Where each reply went on the platform, written the instant the platform says so.

    A reply's first message (Slack's placeholder, Telegram's first words, or a whole reply
    sent at once) exists on the platform from the moment the platform accepts it; until its id
    is stored, a crash leaves a message nobody knows about and recovery would write a second
    one. Storing the id in the database means waiting for a connection (on SQLite the one
    connection, behind every turn's queries: hundreds of milliseconds under load), so the id is
    first appended here, synchronously, in the same step of the event loop that reads the
    platform's answer: one ``write(2)`` to a file of the data folder, which a ``kill -9``
    cannot undo (the page cache outlives the process). Recovery reads it back
    (:meth:`lookup`) and finishes that message in place.

    The window left is the platform's own: a message it accepted whose answer never reached
    this process (killed while the response was on the wire). Neither platform can be asked
    which messages a bot sent without reading the channel's history (rate-limited on Slack,
    impossible on Telegram), so that window stays at-least-once.

    Each process start writes a file of its own (``<data dir>/journal/<random>.journal``),
    locked while it lives. Recovery (:meth:`inherit`) takes over the files of processes that
    died on this host (their lock is free): the lines of messages still unanswered move into
    this process's file, the dead file goes. A process's own file is emptied whenever every
    reply it journaled has been finished, so it stays small. A line names the message by id
    and a digest of its conversation and time of arrival, so a database recreated beside an
    old journal never matches a stale line.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.path = folder / f"{uuid.uuid4().hex}.journal"
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX)  # held for life: "this process is alive"
        self._entries: dict[str, str] = {}
        self._size = 0

    @staticmethod
    def key(message: Message) -> str:
        stamp = f"{message.conversation_id}\0{message.created_at.isoformat()}"
        digest = hashlib.blake2b(stamp.encode(), digest_size=6).hexdigest()
        return f"{message.id}:{digest}"

    def record(self, message: Message, platform_id: str) -> None:
        """The reply to ``message`` went (or began going) into platform message
        ``platform_id``. Synchronous on purpose: nothing else runs before it is written."""
        self._write(self.key(message), platform_id)

    def _write(self, key: str, platform_id: str) -> None:
        line = f"{key} {json.dumps(platform_id)}\n".encode()
        try:
            os.write(self._fd, line)
        except OSError as exc:  # disk full: the database row, written next, still covers it
            log.warning("reply journal write failed: %s", type(exc).__name__)
            return
        self._size += len(line)
        self._entries[key] = platform_id

    def lookup(self, message: Message) -> str | None:
        """The platform message the reply to ``message`` went into, if one was journaled."""
        return self._entries.get(self.key(message))

    def done(self, message: Message) -> None:
        """``message`` was answered (or handed on): its line is no longer needed."""
        self._entries.pop(self.key(message), None)
        if not self._entries and self._size > COMPACT_BYTES:
            os.ftruncate(self._fd, 0)
            self._size = 0

    def inherit(self, unanswered: Collection[Message]) -> int:
        """Take over the journals of processes that died (their lock is free), keeping the
        lines of ``unanswered`` messages; returns how many lines were kept."""
        keep = {self.key(m) for m in unanswered}
        kept = 0
        for path in sorted(self.folder.glob("*.journal")):
            if path == self.path:
                continue
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue  # another process took it over meanwhile
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    continue  # its process is alive
                with os.fdopen(os.dup(fd), encoding="utf-8", errors="replace") as f:
                    lines = f.read().splitlines()
                for line in lines:
                    key, _, value = line.partition(" ")
                    if key not in keep:
                        continue
                    try:
                        platform_id = json.loads(value)
                    except ValueError:
                        continue  # a line cut short by a full disk
                    self._write(key, str(platform_id))
                    kept += 1
                path.unlink(missing_ok=True)
            finally:
                os.close(fd)
        return kept

    def close(self) -> None:
        """Release the file; it stays for the next start only if a line is still needed."""
        if not self._entries:
            self.path.unlink(missing_ok=True)
        os.close(self._fd)
