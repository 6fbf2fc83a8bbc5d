"""Loopback fakes and a conversation harness, for supportbot's tests and yours.

- :class:`OfflineBot` runs the real engine on a temp database (``supportbot.testing.bot``).
- ``fake_llm.FakeLLM``, ``fake_slack.FakeSlack``, ``fake_telegram.FakeTelegram``: real HTTP
  servers on 127.0.0.1 speaking each platform's protocol, with fault injection.

``OfflineBot`` and ``RecordingSink`` are imported on first use: a fake started as a process of
its own (the benchmarks, the crash tests) imports only aiohttp, not the engine (~1 s of CPU).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from supportbot.testing.bot import OfflineBot, RecordingSink

__all__ = ["OfflineBot", "RecordingSink"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from supportbot.testing import bot

        return getattr(bot, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
