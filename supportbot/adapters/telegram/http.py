"""python-telegram-bot's Bot API requests over aiohttp instead of httpx.

Every reply is a Bot API request, and on a busy bot the HTTP client is a large share of the
adapter's CPU: httpx (anyio, httpcore, two socket writes per request) costs ~0.5 ms of CPU per
``sendMessage`` where aiohttp costs ~0.15 ms (loopback, measured with ``time.process_time``).
aiohttp is already a dependency (slack_sdk runs on it).

Parity with PTB's ``HTTPXRequest``: form-encoded parameters (multipart when a file is sent), the
same default timeouts and pool size, ``TimedOut`` / ``NetworkError`` for failures, httpx's own
TLS trust (certifi, or ``SSL_CERT_FILE``/``SSL_CERT_DIR``), and ``HTTPS_PROXY``/``NO_PROXY``
from the environment. The proxy is looked up once per host: aiohttp's ``trust_env`` would read
the environment on every request (more than the request itself costs).
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit
from urllib.request import getproxies, proxy_bypass

import aiohttp
import httpx
from telegram._utils.defaultvalue import DefaultValue
from telegram._utils.types import ODVInput
from telegram.error import NetworkError, TimedOut
from telegram.request import BaseRequest, RequestData
from yarl import URL

log = logging.getLogger(__name__)

_FORM = {"Content-Type": "application/x-www-form-urlencoded"}
Proxy = tuple[URL, dict[str, str] | None] | None  # the proxy, and its credentials as a header


class AiohttpRequest(BaseRequest):
    """A ``telegram.request.BaseRequest`` on one pooled ``aiohttp.ClientSession``.

    There is no separate write timeout (aiohttp has none): a request that cannot be written is
    bounded by the read timeout that follows it.
    """

    __slots__ = (
        "_connect_timeout", "_limit", "_pool_timeout", "_proxies", "_read_timeout", "_session",
        "_timeouts",
    )  # fmt: skip

    def __init__(
        self,
        connection_pool_size: int = 256,
        read_timeout: float | None = 5.0,
        connect_timeout: float | None = 5.0,
        pool_timeout: float | None = 1.0,
    ) -> None:
        self._limit = connection_pool_size
        self._read_timeout = read_timeout
        self._connect_timeout = connect_timeout
        self._pool_timeout = pool_timeout
        self._session: aiohttp.ClientSession | None = None
        self._timeouts: dict[tuple[float | None, float | None, float | None], Any] = {}
        self._proxies: dict[tuple[str, str], Proxy] = {}

    @property
    def read_timeout(self) -> float | None:
        return self._read_timeout

    async def initialize(self) -> None:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self._limit, ssl=httpx.create_ssl_context())
            self._session = aiohttp.ClientSession(
                connector=connector, headers={"User-Agent": self.USER_AGENT}
            )

    async def shutdown(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None

    async def do_request(
        self,
        url: str,
        method: str,
        request_data: RequestData | None = None,
        read_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE,
        write_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE,
        connect_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE,
        pool_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE,
    ) -> tuple[int, bytes]:
        session = self._session
        if session is None or session.closed:
            raise RuntimeError("This AiohttpRequest is not initialized!")
        timeout = self._timeout(
            self._read_timeout if isinstance(read_timeout, DefaultValue) else read_timeout,
            self._connect_timeout if isinstance(connect_timeout, DefaultValue) else connect_timeout,
            self._pool_timeout if isinstance(pool_timeout, DefaultValue) else pool_timeout,
        )
        data: Any = None
        headers: dict[str, str] | None = None
        if request_data is not None:
            if request_data.contains_files:
                data = _multipart(request_data)
            else:
                data, headers = request_data.url_encoded_parameters().encode(), _FORM
        proxy, proxy_headers = self._proxy(url) or (None, None)
        if proxy_headers and url.startswith("http:"):  # no CONNECT: the proxy reads the request
            headers, proxy_headers = {**(headers or {}), **proxy_headers}, None
        try:
            async with session.request(
                method, url, data=data, headers=headers, timeout=timeout, proxy=proxy,
                proxy_headers=proxy_headers,
            ) as response:
                return response.status, await response.read()
        except TimeoutError as err:  # aiohttp's connect/read timeouts are TimeoutErrors
            raise TimedOut from err
        except aiohttp.ClientError as err:
            raise NetworkError(f"aiohttp.{type(err).__name__}: {err}") from err

    def _timeout(
        self, read: float | None, connect: float | None, pool: float | None
    ) -> aiohttp.ClientTimeout:
        """aiohttp's ``connect`` covers waiting for a pooled connection *and* opening one."""
        key = (read, connect, pool)
        timeout = self._timeouts.get(key)
        if timeout is None:
            waiting = None if connect is None or pool is None else connect + pool
            timeout = aiohttp.ClientTimeout(
                total=None, connect=waiting, sock_connect=connect, sock_read=read
            )
            if len(self._timeouts) < 64:
                self._timeouts[key] = timeout
        return timeout

    def _proxy(self, url: str) -> Proxy:
        parts = urlsplit(url)
        key = (parts.scheme, parts.netloc)
        if key not in self._proxies:
            self._proxies[key] = _env_proxy(parts.scheme, parts.hostname or "")
        return self._proxies[key]


def _env_proxy(scheme: str, host: str) -> Proxy:
    """``HTTPS_PROXY`` (or ``ALL_PROXY``) for this scheme unless ``NO_PROXY`` exempts ``host``."""
    proxies = getproxies()
    proxy = proxies.get(scheme) or proxies.get("all")
    if not proxy or (host and proxy_bypass(host)):
        return None
    url = URL(proxy if "://" in proxy else f"http://{proxy}")
    log.info("telegram requests go through a proxy at %s", url.with_user(None))
    auth = aiohttp.BasicAuth.from_url(url)
    return url.with_user(None), {"Proxy-Authorization": auth.encode()} if auth else None


def _multipart(request_data: RequestData) -> aiohttp.FormData:
    """Parameters plus the files to upload, as httpx's ``files=`` would send them."""
    form = aiohttp.FormData()
    for name, value in request_data.json_parameters.items():
        form.add_field(name, value)
    for name, (filename, content, mime) in request_data.multipart_data.items():
        form.add_field(name, content, filename=filename, content_type=mime)
    return form
