"""Long polling that confirms an update to Telegram only once it is stored.

Telegram forgets every update below the ``offset`` of the next ``getUpdates`` call. PTB's
``Updater`` asks for the next batch (confirming the previous one) while that batch's handlers
may still be running, so a crash right then loses the updates it had fetched. Here one loop
fetches a batch, hands each update to ``accept`` in order (which returns once what must
survive a crash is stored), and only then passes the next offset. If ``accept`` raises
:class:`StoreUnavailable`, the update and every one after it stay unconfirmed: the loop waits
and asks again from the same offset, so Telegram delivers them again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from telegram import Bot, Update
from telegram.error import InvalidToken, NetworkError, RetryAfter, TelegramError

log = logging.getLogger(__name__)

Accept = Callable[[Update], Awaitable[None]]


class StoreUnavailable(Exception):
    """What must be stored before Telegram hears "OK" could not be: do not confirm it."""


class StoreFirstPolling:
    """``start()`` runs the loop as a task; ``stop()`` ends it (an update being stored finishes
    first, so nothing is stored twice or half)."""

    def __init__(
        self,
        bot: Bot,
        accept: Accept,
        *,
        allowed_updates: Sequence[str],
        poll_timeout: int = 30,
        retry_delay: float = 1.0,
        max_retry_delay: float = 30.0,
    ) -> None:
        self.bot, self.accept = bot, accept
        self.allowed_updates = list(allowed_updates)
        self.poll_timeout = poll_timeout
        self.retry_delay, self.max_retry_delay = retry_delay, max_retry_delay
        self.offset: int | None = None  # the next update_id wanted (all below are confirmed)
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._busy = asyncio.Lock()  # held while a batch is being stored

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        if self.running:
            return
        self._stopping.clear()
        self._task = asyncio.create_task(self._run(), name="telegram-polling")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping.set()
        async with self._busy:  # let the update being stored finish
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        if self.offset is not None:  # confirm what is stored, so no next poller sees it again
            try:
                await self.bot.get_updates(offset=self.offset, timeout=0, limit=1)
            except Exception as exc:  # it only saves a deduplicated redelivery
                log.info("could not confirm the last telegram updates: %s", type(exc).__name__)

    async def _run(self) -> None:
        delay = self.retry_delay
        while not self._stopping.is_set():
            try:
                updates = await self._fetch()
            except asyncio.CancelledError:
                raise
            except InvalidToken:
                log.error("telegram rejected the bot token; polling stops")
                return
            except RetryAfter as exc:
                await self._pause(float(_seconds(exc.retry_after)))
                continue
            except (NetworkError, TelegramError) as exc:
                log.warning("telegram polling error: %s", type(exc).__name__)
                await self._pause(delay)
                delay = min(delay * 2, self.max_retry_delay)
                continue
            delay = self.retry_delay
            async with self._busy:
                stored = await self._store_batch(updates)
            if not stored:
                await self._pause(delay)
                delay = min(delay * 2, self.max_retry_delay)

    async def _fetch(self) -> list[tuple[int, Update | None]]:
        """One ``getUpdates`` call, confirming everything below ``offset``.

        An update PTB cannot parse (a hostile or future shape) must not stall the loop: the
        batch is then fetched again as plain JSON and parsed one update at a time."""
        kwargs: dict[str, Any] = {
            "offset": self.offset,
            "timeout": self.poll_timeout,
            "allowed_updates": self.allowed_updates,
        }
        try:
            return [(u.update_id, u) for u in await self.bot.get_updates(**kwargs)]
        except TelegramError:
            raise
        except Exception as exc:  # a batch PTB could not parse
            log.warning("telegram sent an update that could not be read: %s",
                        type(exc).__name__)
        raw = await self.bot.do_api_request(
            "getUpdates",
            api_kwargs={"offset": self.offset, "timeout": 0, "allowed_updates":
                        self.allowed_updates},
        )
        if not isinstance(raw, list):
            return []
        return [
            (item["update_id"], parse_update(item, self.bot)) for item in raw
            if isinstance(item, dict) and isinstance(item.get("update_id"), int)
        ]

    async def _store_batch(self, updates: list[tuple[int, Update | None]]) -> bool:
        """Accept each update in order; ``False`` when one could not be stored (the offset
        then stays at it, so Telegram sends it and the rest again)."""
        for update_id, update in updates:
            if update is None:  # unreadable (logged): confirmed, never retried
                self.offset = update_id + 1
                continue
            try:
                await self.accept(update)
            except StoreUnavailable as exc:
                log.warning("could not store a telegram update; it will be fetched again: %s",
                            exc)
                return False
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug, or a shape we do not handle: skip it, loudly once
                log.exception("telegram update could not be handled; skipped")
            self.offset = update.update_id + 1
        return True

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)


def parse_update(data: object, bot: Bot) -> Update | None:
    """An ``Update`` from JSON, or ``None`` (with one log line) for anything that is not one:
    not an object, wrong types, a date no clock can hold."""
    if not isinstance(data, dict) or not isinstance(data.get("update_id"), int):
        log.warning("ignored a telegram update without an update_id")
        return None
    try:
        return Update.de_json(data, bot)
    except Exception as exc:
        log.warning("ignored a telegram update that could not be read: %s",
                    type(exc).__name__, extra={"update_id": data.get("update_id")})
        return None


def _seconds(value: object) -> float:
    total = getattr(value, "total_seconds", None)
    return float(total()) if callable(total) else float(value)  # type: ignore[arg-type]
