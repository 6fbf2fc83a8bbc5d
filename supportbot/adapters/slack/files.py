"""Files on Slack: what a message event carries, reading a file, and sharing one into a thread.

Slack serves a file at its ``url_private`` to requests carrying the bot token (scope
``files:read``). The token goes only to Slack's own hosts (``*.slack.com``) or to the host of
``SUPPORTBOT_SLACK_API_URL`` (a loopback fake in tests), never to a URL an event merely names.
Files are shared with ``files_upload_v2`` (``files.getUploadURLExternal``, the upload, then
``files.completeUploadExternal``; scope ``files:write``): Slack has no call that puts one
conversation's file into another.
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

import httpx
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_client import AsyncWebClient

from supportbot.engine.types import Attachment, FileUnavailable

log = logging.getLogger(__name__)

DOWNLOAD_TIMEOUT = 30.0


def describe(attachment: Attachment) -> str:
    """A link-free line about a file (for staff when it could not be passed on)."""
    parts = [attachment.mime or attachment.kind]
    if attachment.size is not None:
        parts.append(f"{attachment.size / 1_000_000:.1f} MB")
    name = " ".join(attachment.filename.split())[:120] or "a file"
    return f"{name} ({', '.join(parts)})"


class SlackFiles:
    """The engine's ``FileFetcher`` for Slack, and the upload the desk uses."""

    def __init__(self, client: AsyncWebClient) -> None:
        self.client = client
        self._api_host = urlsplit(client.base_url).hostname or ""

    def _trusted(self, url: str) -> bool:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if host == self._api_host and parts.scheme in ("http", "https"):
            return True
        return parts.scheme == "https" and (host == "slack.com" or host.endswith(".slack.com"))

    async def fetch(self, attachment: Attachment, max_bytes: int) -> bytes:
        if attachment.size is not None and attachment.size > max_bytes:
            raise FileUnavailable("larger than the limit", too_large=True)
        if not attachment.url or not self._trusted(attachment.url):
            raise FileUnavailable("no Slack download address")
        headers = {"Authorization": f"Bearer {self.client.token}"}
        try:
            async with httpx.AsyncClient(timeout=DOWNLOAD_TIMEOUT) as http, http.stream(
                "GET", attachment.url, headers=headers
            ) as response:
                if response.status_code != 200:
                    raise FileUnavailable(f"download answered {response.status_code}")
                if response.headers.get("content-type", "").startswith("text/html"):
                    raise FileUnavailable("download answered a web page (no access)")
                length = response.headers.get("content-length")
                if length and length.isdigit() and int(length) > max_bytes:
                    raise FileUnavailable("larger than the limit", too_large=True)
                data = bytearray()
                async for chunk in response.aiter_bytes():
                    data += chunk
                    if len(data) > max_bytes:
                        raise FileUnavailable("larger than the limit", too_large=True)
        except httpx.HTTPError as exc:
            raise FileUnavailable(f"download failed: {type(exc).__name__}") from None
        return bytes(data)

    async def upload(self, channel: str, thread_ts: str | None, attachment: Attachment,
                     data: bytes, comment: str | None = None) -> bool:
        """Share ``data`` as a new file in ``channel`` (in ``thread_ts``); False when Slack
        refused it (logged)."""
        try:
            await self.client.files_upload_v2(
                channel=channel, thread_ts=thread_ts, file=data,
                filename=attachment.filename or _default_name(attachment),
                title=attachment.filename or None, initial_comment=comment or None,
            )
        except SlackClientError as exc:  # refused (SlackApiError) or the upload itself failed
            error = (exc.response.get("error") if isinstance(exc, SlackApiError)
                     else type(exc).__name__)
            log.warning("could not upload a file to slack: %s", error)
            return False
        return True


def _default_name(attachment: Attachment) -> str:
    subtype = attachment.mime.partition("/")[2] or "bin"
    return f"{attachment.kind}.{subtype}"
