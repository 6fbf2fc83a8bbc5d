"""Polite HTTP for imports: robots.txt, a per-host rate, byte and redirect caps, all via httpx.

Redirects are followed here rather than by httpx so that every hop is checked: it must stay on
the site being imported (a help center that redirects to a login page on another host is
skipped, not crawled) and be allowed by robots.txt, and a loop is reported as such. Bodies are
streamed and abandoned past ``max_bytes``, and each response has an overall deadline, so a huge
or endlessly slow page costs at most that.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit

import httpx
from protego import Protego

log = logging.getLogger(__name__)

USER_AGENT = "supportbot-import/1.0 (+https://github.com/supportbot)"
ROBOTS_AGENT = "supportbot-import"
ROBOTS_EXCLUDED = "excluded by robots.txt"
MAX_CRAWL_DELAY = 60.0  # a robots.txt Crawl-delay above this is read as this


@dataclass(slots=True)
class Limits:
    max_pages: int = 500  # pages fetched per import, all sources together
    max_depth: int = 2  # links followed from a start page (0: the page only)
    sitemap_depth: int = 0  # from the pages a sitemap lists (0: those pages only)
    max_bytes: int = 10_000_000  # per document
    per_host_interval: float = 1.0  # seconds between two requests to one host
    timeout: float = 20.0  # connect/read timeout of one request
    document_seconds: float = 60.0  # deadline for one response, its whole body included
    max_redirects: int = 5


class FetchError(Exception):
    """A URL that could not be fetched; ``status`` is the HTTP status when there was one."""

    def __init__(self, reason: str, status: int | None = None) -> None:
        super().__init__(reason)
        self.status = status


@dataclass(slots=True)
class Page:
    url: str  # after redirects
    status: int  # 200, or 304 for a conditional request whose page did not change
    content: bytes = b""
    content_type: str = ""
    charset: str | None = None
    etag: str | None = None
    last_modified: str | None = None


def origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    return (parts.scheme, (parts.hostname or "").lower(), parts.port)


def same_site(a: str, b: str) -> bool:
    """Same scheme-less host and port: http->https upgrades on one host stay on the site."""
    return origin(a)[1:] == origin(b)[1:] or (
        origin(a)[1] == origin(b)[1] and {origin(a)[2], origin(b)[2]} <= {None, 80, 443}
    )


@dataclass
class Fetcher:
    client: httpx.AsyncClient
    limits: Limits = field(default_factory=Limits)
    _robots: dict[tuple, Protego | None] = field(default_factory=dict)
    _next_at: dict[tuple, float] = field(default_factory=dict)
    _host_locks: dict[tuple, asyncio.Lock] = field(default_factory=dict)

    @classmethod
    def open(cls, limits: Limits | None = None) -> Fetcher:
        limits = limits or Limits()
        client = httpx.AsyncClient(
            timeout=httpx.Timeout(limits.timeout),
            headers={"User-Agent": USER_AGENT},
            follow_redirects=False,
        )
        return cls(client, limits)

    async def aclose(self) -> None:
        await self.client.aclose()

    async def _wait_turn(self, url: str) -> None:
        key = origin(url)
        lock = self._host_locks.setdefault(key, asyncio.Lock())
        async with lock:
            delay = self._next_at.get(key, 0.0) - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            interval = self.limits.per_host_interval
            robots = self._robots.get(key)
            if robots is not None:
                delay = min(float(robots.crawl_delay(ROBOTS_AGENT) or 0.0), MAX_CRAWL_DELAY)
                interval = max(interval, delay)
            self._next_at[key] = time.monotonic() + interval

    async def allowed(self, url: str) -> bool:
        """robots.txt says yes (RFC 9309: missing = allowed, unreachable = disallowed)."""
        key = origin(url)
        if key not in self._robots:
            scheme, host, port = key
            robots_url = f"{scheme}://{host}{f':{port}' if port else ''}/robots.txt"
            await self._wait_turn(robots_url)
            try:
                resp = await self.client.get(robots_url, follow_redirects=True)
            except httpx.TimeoutException:
                raise FetchError(f"timed out after {self.limits.timeout:g} s") from None
            except httpx.HTTPError as exc:
                # the site is unreachable: say so (not "excluded by robots.txt"), and ask again
                # for the next page, as a network error may be transient
                raise FetchError(f"{type(exc).__name__}: {exc}"[:200]) from None
            else:
                if resp.status_code >= 500:
                    self._robots[key] = Protego.parse("User-agent: *\nDisallow: /")
                elif resp.status_code >= 400:
                    self._robots[key] = None  # no robots.txt: everything allowed
                else:
                    self._robots[key] = Protego.parse(resp.text[:500_000])
        robots = self._robots[key]
        return robots is None or robots.can_fetch(url, ROBOTS_AGENT)

    async def get(
        self, url: str, *, etag: str | None = None, last_modified: str | None = None
    ) -> Page:
        """Fetch one document (conditionally when ``etag``/``last_modified`` are given)."""
        try:
            return await self._get(url, etag, last_modified)
        except TimeoutError:
            raise FetchError(f"timed out after {self.limits.document_seconds:g} s") from None
        except httpx.TimeoutException:
            raise FetchError(f"timed out after {self.limits.timeout:g} s") from None
        except httpx.HTTPError as exc:
            raise FetchError(f"{type(exc).__name__}: {exc}"[:200]) from None

    async def _get(self, url: str, etag: str | None, last_modified: str | None) -> Page:
        start = url
        seen = {url}
        headers = {}
        if etag:
            headers["If-None-Match"] = etag
        if last_modified:
            headers["If-Modified-Since"] = last_modified
        for _ in range(self.limits.max_redirects + 1):
            if not await self.allowed(url):
                raise FetchError(ROBOTS_EXCLUDED)
            await self._wait_turn(url)
            # the deadline covers the request, not the polite wait before it
            async with (
                asyncio.timeout(self.limits.document_seconds),
                self.client.stream("GET", url, headers=headers) as resp,
            ):
                if resp.has_redirect_location:
                    target = urljoin(url, resp.headers.get("location", ""))
                    if not target.startswith(("http://", "https://")):
                        raise FetchError(f"redirect to {target[:100]!r}", resp.status_code)
                    if not same_site(start, target):
                        raise FetchError(
                            f"redirects to another site ({urlsplit(target).hostname})",
                            resp.status_code,
                        )
                    if target in seen:
                        raise FetchError("redirect loop", resp.status_code)
                    seen.add(target)
                    url = target
                    continue
                if resp.status_code == 304:
                    return Page(url, 304)
                if resp.status_code != 200:
                    raise FetchError(f"HTTP {resp.status_code}", resp.status_code)
                declared = resp.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > self.limits.max_bytes:
                    raise FetchError(f"larger than {self.limits.max_bytes} bytes")
                body = bytearray()
                async for part in resp.aiter_bytes():
                    body += part
                    if len(body) > self.limits.max_bytes:
                        raise FetchError(f"larger than {self.limits.max_bytes} bytes")
                ctype = resp.headers.get("content-type", "")
                return Page(
                    url,
                    200,
                    bytes(body),
                    ctype.split(";", 1)[0].strip().lower(),
                    resp.charset_encoding,
                    resp.headers.get("etag"),
                    resp.headers.get("last-modified"),
                )
        raise FetchError(f"more than {self.limits.max_redirects} redirects")
