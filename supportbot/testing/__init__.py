"""Loopback fakes and a conversation harness, for supportbot's tests and yours.

- :class:`OfflineBot` runs the real engine on a temp database (``supportbot.testing.bot``).
- ``fake_llm.FakeLLM``, ``fake_slack.FakeSlack``, ``fake_telegram.FakeTelegram``: real HTTP
  servers on 127.0.0.1 speaking each platform's protocol, with fault injection.
"""

from supportbot.testing.bot import OfflineBot, RecordingSink

__all__ = ["OfflineBot", "RecordingSink"]
