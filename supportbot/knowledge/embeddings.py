"""A small client for OpenAI-compatible ``POST {base_url}/embeddings``.

Retrieval degrades to lexical search whenever this fails, so errors are one clear exception
type carrying the status and a short reason, never the API key.
"""

from __future__ import annotations

import logging
import math
import operator
from array import array
from collections.abc import Sequence

import httpx

log = logging.getLogger(__name__)


class EmbeddingsError(Exception):
    """The embeddings endpoint failed (unreachable, timed out, bad status or payload)."""


class Embedder:
    """Embeds texts in batches; vectors come back L2-normalised so cosine is a dot product."""

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        *,
        batch_size: int = 64,
        timeout: float = 20.0,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.batch_size = batch_size
        self._api_key = api_key
        self._timeout = timeout
        self._client = client
        self._own_client = client is None

    def __repr__(self) -> str:  # never show the key
        return f"Embedder(base_url={self.base_url!r}, model={self.model!r})"

    @classmethod
    def from_settings(cls, settings) -> Embedder | None:
        if not settings.embeddings_base_url:
            return None
        key = settings.embeddings_api_key
        return cls(
            settings.embeddings_base_url,
            settings.embeddings_model,
            key.get_secret_value() if key is not None else None,
        )

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
            self._client = httpx.AsyncClient(headers=headers, timeout=self._timeout)
        return self._client

    async def embed(self, texts: Sequence[str]) -> list[array]:
        out: list[array] = []
        for start in range(0, len(texts), self.batch_size):
            out.extend(await self._embed_batch(list(texts[start : start + self.batch_size])))
        return out

    async def _embed_batch(self, texts: list[str]) -> list[array]:
        url = f"{self.base_url}/embeddings"
        try:
            resp = await self._http().post(url, json={"model": self.model, "input": texts})
        except httpx.TimeoutException as exc:
            raise EmbeddingsError(f"embeddings request to {url} timed out") from exc
        except httpx.HTTPError as exc:
            raise EmbeddingsError(
                f"embeddings request to {url} failed: {type(exc).__name__}"
            ) from exc
        if resp.status_code != 200:
            reason = resp.reason_phrase or ""
            raise EmbeddingsError(f"embeddings endpoint {url} returned {resp.status_code} {reason}")
        try:
            data = resp.json()["data"]
            items = sorted(data, key=lambda d: d.get("index", 0))
            vectors = [_normalise(item["embedding"]) for item in items]
        except (ValueError, KeyError, TypeError) as exc:
            raise EmbeddingsError(f"embeddings endpoint {url} sent an unexpected payload") from exc
        if len(vectors) != len(texts):
            raise EmbeddingsError(
                f"embeddings endpoint {url} returned {len(vectors)} vectors for {len(texts)} inputs"
            )
        return vectors

    async def aclose(self) -> None:
        if self._client is not None and self._own_client:
            await self._client.aclose()
            self._client = None


def _normalise(values: Sequence[float]) -> array:
    vec = array("f", (float(v) for v in values))
    norm = math.sqrt(sum(v * v for v in vec))
    if norm > 0:
        vec = array("f", (v / norm for v in vec))
    return vec


def dot(a: array, b: array) -> float:
    return sum(map(operator.mul, a, b))
