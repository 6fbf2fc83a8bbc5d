"""``TelegramAdapter``: long polling, or a webhook on ``supportbot serve``'s own HTTP server.

Either way an update is confirmed to Telegram (the webhook's 200, the next polling offset) only
after :meth:`UpdateRouter.accept` stored it; if the store fails the webhook answers 503 and the
polling loop keeps the offset, so Telegram delivers the update again.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from telegram import Update

from supportbot.adapters.telegram.app import ALLOWED_UPDATES, UpdateRouter, build_application
from supportbot.adapters.telegram.desk import TelegramDesk, parse_thread_key
from supportbot.adapters.telegram.files import TelegramFiles
from supportbot.adapters.telegram.polling import StoreFirstPolling, StoreUnavailable, parse_update
from supportbot.adapters.telegram.sink import EditThrottle, TelegramSink
from supportbot.config import Settings
from supportbot.engine import ConversationView, Engine
from supportbot.storage.store import SingletonLock

log = logging.getLogger(__name__)

WEBHOOK_PATH = "/telegram/webhook"
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"


def webhook_secret(settings: Settings) -> str:
    """The configured secret, or one derived from the bot token (stable across restarts, and
    only Telegram learns it through setWebhook)."""
    if settings.telegram_webhook_secret is not None:
        return settings.telegram_webhook_secret.get_secret_value()
    assert settings.telegram_bot_token is not None
    token = settings.telegram_bot_token.get_secret_value()
    return hashlib.sha256(f"supportbot-webhook:{token}".encode()).hexdigest()


class TelegramAdapter:
    name = "telegram"

    def __init__(self, engine: Engine, settings: Settings) -> None:
        if settings.telegram_bot_token is None:
            raise ValueError("SUPPORTBOT_TELEGRAM_BOT_TOKEN is not set")
        self.engine, self.settings = engine, settings
        self.application = build_application(settings)
        self.bot = self.application.bot
        self.throttle = EditThrottle()
        self.desk: TelegramDesk | None = None
        if settings.telegram_staff_chat_id is not None:
            self.desk = TelegramDesk(self.bot, engine, settings.telegram_staff_chat_id)
            engine.register_desk(self.name, self.desk)
        engine.register_sink_factory(self.name, self.sink_for)
        engine.register_file_fetcher(self.name, TelegramFiles(self.bot))
        self.router = UpdateRouter(engine, self.bot, self.desk, self.throttle)
        self._secret = webhook_secret(settings)
        self._running = False
        self._poll_lock: SingletonLock | None = None
        self._polling: StoreFirstPolling | None = None
        _quiet_http_logs()

    @property
    def webhook_mode(self) -> bool:
        return bool(self.settings.telegram_webhook_url)

    def sink_for(self, conversation: ConversationView) -> TelegramSink:
        """How the engine reaches a customer unprompted (hand-back notices, recovery); an
        answer recovery streams is drafted like any other."""
        chat_id, thread_id = parse_thread_key(conversation.thread_key)
        return TelegramSink(self.bot, chat_id, thread_id=thread_id, throttle=self.throttle,
                            drafts=self.router.drafts)

    def routes(self) -> list[BaseRoute]:
        return [Route(WEBHOOK_PATH, self._webhook, methods=["POST"])]

    async def start(self) -> None:
        await self.application.initialize()
        if self.webhook_mode:
            await self.bot.set_webhook(
                self.settings.telegram_webhook_url or "",
                secret_token=self._secret,
                allowed_updates=ALLOWED_UPDATES,
            )
        else:
            # Telegram serves getUpdates to one poller per token: fail loudly, not silently
            self._poll_lock = self.engine.store.try_singleton_lock("telegram-polling")
            if not await self._poll_lock.acquire():
                raise RuntimeError(
                    "another supportbot process is already polling Telegram (Telegram allows one "
                    "poller per bot); to run several processes use webhook mode: set "
                    "SUPPORTBOT_TELEGRAM_WEBHOOK_URL"
                )
            # not PTB's Updater: it confirms a batch when it fetches the next one, stored or not
            await self.bot.delete_webhook()
            self._polling = StoreFirstPolling(
                self.bot, self._accept_polled, allowed_updates=ALLOWED_UPDATES
            )
        self._running = True
        if self._polling is not None:
            self._polling.start()
        log.info("telegram adapter started", extra={"mode": self.mode})

    @property
    def mode(self) -> str:
        return "webhook" if self.webhook_mode else "polling"

    async def stop(self) -> None:
        if not self._running:
            return
        self._running = False
        if self._polling is not None:
            await self._polling.stop()
            self._polling = None
        await self.router.drain(within=10)
        await self.application.shutdown()
        if self._poll_lock is not None:
            await self._poll_lock.release()
            self._poll_lock = None

    async def _webhook(self, request: Request) -> Response:
        given = request.headers.get(SECRET_HEADER, "")
        if not hmac.compare_digest(given.encode(), self._secret.encode()):
            return Response(status_code=403)
        if not self._running:
            return Response(status_code=503, headers={"Retry-After": "5"})  # Telegram retries
        try:
            data = json.loads(await request.body())
        except (ValueError, RecursionError):
            return Response(status_code=400)  # not JSON: not from Telegram
        if not isinstance(data, dict):
            return Response(status_code=400)
        update = parse_update(data, self.bot)
        if update is None:
            return Response(status_code=200)  # unreadable (logged): a retry would not help
        try:
            await self.router.accept(update)
        except StoreUnavailable as exc:
            log.warning("could not store a telegram update; asking Telegram to retry: %s", exc)
            return Response(status_code=503, headers={"Retry-After": "5"})
        except Exception:  # a bug or a shape we do not handle: retrying would not help
            log.exception("telegram update could not be handled")
        # Stored (or nothing to store): the answer follows in the background.
        return Response(status_code=200)

    async def _accept_polled(self, update: Update) -> None:
        if self._running:
            await self.router.accept(update)
        else:
            raise StoreUnavailable("shutting down")

    async def drain(self, within: float = 10.0) -> None:
        """Wait for answers being written (tests)."""
        await self.router.drain(within)


def _quiet_http_logs() -> None:
    """httpx logs every request URL at INFO, and Bot API URLs contain the token."""
    for name in ("httpx", "httpcore"):
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.WARNING)
