"""Run the whole bot inside a test, offline, so users' own tests read like a conversation::

    async with OfflineBot(tmp_path) as bot:
        reply = await bot.ask("How long do refunds take?")
        assert "business days" in reply.text

Real engine, real store (SQLite in ``data_dir``, or ``SUPPORTBOT_DATABASE_URL`` such as a
PostgreSQL database), your ``knowledge/`` and ``prompts/``; point ``llm_base_url`` at a
:class:`~supportbot.testing.fake_llm.FakeLLM` to exercise the LLM path.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from supportbot.config import Settings
from supportbot.engine import Engine, IncomingMessage, Reply, ReplySink

REPO = Path(__file__).resolve().parents[2]


class OfflineBot:
    def __init__(self, data_dir: Path, *, platform: str = "test", **settings: Any) -> None:
        self.settings = Settings(_env_file=None, data_dir=Path(data_dir), **settings)
        self.platform = platform
        self.engine: Engine | None = None
        self._ids = itertools.count(1)

    async def __aenter__(self) -> OfflineBot:
        self.engine = await Engine.open(self.settings)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.engine is not None:
            await self.engine.aclose()

    async def ask(
        self,
        text: str,
        *,
        thread: str = "thread-1",
        customer: str = "customer-1",
        message_id: str | None = None,
        sink: ReplySink | None = None,
        language: str | None = None,
    ) -> Reply:
        assert self.engine is not None, "use 'async with OfflineBot(...)'"
        return await self.engine.handle(
            IncomingMessage(
                platform=self.platform,
                thread_key=thread,
                customer_id=customer,
                customer_name=customer,
                text=text,
                message_id=message_id or f"m{next(self._ids)}",
                language=language,
            ),
            sink,
        )


class RecordingSink:
    """A ReplySink that keeps what the bot sent (and the streamed chunks) for assertions.

    ``feedback_ids`` runs parallel to ``sent``: the ``feedback_id`` each reply came with (the
    stored reply's id when the customer may rate it), ``None`` for the rest and for streams.
    """

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.chunks: list[list[str]] = []
        self.feedback_ids: list[int | None] = []
        self.replaced: list[tuple[str, str]] = []  # (message id, new text)

    async def send(self, text: str, *, feedback_id: int | None = None) -> str | None:
        self.sent.append(text)
        self.feedback_ids.append(feedback_id)
        return f"sent-{len(self.sent)}"

    async def send_stream(self, chunks: Any, *, started: Any = None) -> str | None:
        parts: list[str] = []
        async for chunk in chunks:
            if not parts and started is not None:
                await started(f"sent-{len(self.sent) + 1}")
            parts.append(chunk)
        self.chunks.append(parts)
        self.sent.append("".join(parts))
        self.feedback_ids.append(None)
        return f"sent-{len(self.sent)}"

    async def replace(self, message_id: str, text: str, *,
                      feedback_id: int | None = None) -> str:
        """Edit an earlier message (recovery finishing a reply a crash cut short)."""
        self.replaced.append((message_id, text))
        return message_id
