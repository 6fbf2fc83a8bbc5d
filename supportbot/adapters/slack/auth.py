"""Who the bot is in its one workspace: one ``auth.test``, fetched at start and cached.

Bolt needs an ``AuthorizeResult`` (bot id, bot user id, team) for every request. Given only a
token it calls ``auth.test`` on the first events itself (once per concurrent request until one
answer is cached), and a failed call is answered 200 with an apology, so Slack never sends the
message again. Through Bolt's public ``authorize=`` hook we answer from our own cache instead:

- the call is made at start, so no ack waits for it;
- concurrent first events share one call in flight; a failed call is retried on the next event;
- an event that cannot be authorized within :data:`AUTH_BUDGET` raises :class:`AuthUnavailable`
  (answered 503, the envelope not acked) so Slack delivers it again; the call in flight goes on
  for the events after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from slack_bolt.authorization import AuthorizeResult
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse

log = logging.getLogger(__name__)

# seconds an event waits for an auth.test in flight; Slack waits 3 s for the ack and the
# message still has to be stored (app.ACK_BUDGET) after this
AUTH_BUDGET = 1.0


class AuthUnavailable(Exception):
    """``auth.test`` failed or is too slow: the event must be refused (503), not acked."""


class BotAuth:
    """The cached ``auth.test`` answer for the bot token, as Bolt's ``authorize`` function."""

    def __init__(self, client: AsyncWebClient, *, budget: float = AUTH_BUDGET) -> None:
        self.client = client
        self.budget = budget
        self.response: AsyncSlackResponse | None = None
        self.in_flight: asyncio.Task[AsyncSlackResponse] | None = None

    async def warm(self) -> None:
        """Fetch at start (waiting as long as the client allows); a failure is only logged,
        the next event tries again."""
        if self.response is not None:
            return
        with contextlib.suppress(Exception):  # logged by _settled; the first event retries
            await asyncio.shield(self._call())

    async def authorize(self) -> AuthorizeResult:
        """Bolt's ``authorize=`` function (it passes only the arguments a function names).

        Raises :class:`AuthUnavailable` rather than returning ``None`` or letting a
        ``SlackApiError`` through: Bolt answers both with a 200 and the message would be lost.
        """
        response = self.response
        if response is None:
            try:
                response = await asyncio.wait_for(asyncio.shield(self._call()), self.budget)
            except TimeoutError as exc:
                raise AuthUnavailable(f"auth.test took over {self.budget} s") from exc
            except Exception as exc:
                raise AuthUnavailable(f"auth.test failed: {_reason(exc)}") from exc
        # a fresh result per request: Bolt keeps it in the request's context
        return AuthorizeResult.from_auth_test_response(
            auth_test_response=response,
            bot_token=self.client.token,
            bot_scopes=response.headers.get("x-oauth-scopes"),
        )

    def _call(self) -> asyncio.Task[AsyncSlackResponse]:
        """The one ``auth.test`` in flight, started if none is."""
        if self.in_flight is None:
            self.in_flight = asyncio.create_task(self.client.auth_test())
            self.in_flight.add_done_callback(self._settled)
        return self.in_flight

    def _settled(self, task: asyncio.Task[AsyncSlackResponse]) -> None:
        self.in_flight = None
        if task.cancelled():
            return
        exc = task.exception()  # retrieved here, so a failure is logged once, by us
        if exc is None:
            self.response = task.result()
        else:
            log.warning("slack auth.test failed: %s", _reason(exc))


def _reason(exc: BaseException) -> str:
    if isinstance(exc, SlackApiError):
        return str(exc.response.get("error"))
    return type(exc).__name__
