"""A small client for OpenAI-compatible ``POST {base_url}/embeddings``.

Retrieval degrades to lexical search whenever this fails, so errors are one clear exception
type carrying the status and a short reason, never the API key.

Some models are trained with a prefix on each side ("query: " / "passage: " for E5); without
it they lose a few points of recall. ``prefixes_for`` knows the common families; other models
(OpenAI's, all-MiniLM-L6-v2) get none. Query vectors are kept in a small LRU, so a repeated
question costs no request.
"""

from __future__ import annotations

import logging
import math
import operator
from array import array
from collections import OrderedDict
from collections.abc import Sequence

import httpx

log = logging.getLogger(__name__)


QUERY_CACHE_SIZE = 1024

# (substring of the lower-cased model name, query prefix, document prefix); first match wins
_PREFIXES: tuple[tuple[str, str, str], ...] = (
    ("bge-m3", "", ""),
    ("bge-", "Represent this sentence for searching relevant passages: ", ""),
    ("e5-", "query: ", "passage: "),
    ("nomic-embed-text", "search_query: ", "search_document: "),
)
_BGE_ZH_QUERY = "为这个句子生成表示以用于检索相关文章："


def prefixes_for(model: str) -> tuple[str, str]:
    """(query prefix, document prefix) the model was trained with; ("", "") if none/unknown."""
    name = model.lower()
    if "e5-mistral" in name:  # instruction-tuned: needs a task-specific instruction, not a prefix
        return "", ""
    for needle, query, doc in _PREFIXES:
        if needle in name:
            if needle == "bge-" and "-zh" in name:
                return _BGE_ZH_QUERY, doc
            return query, doc
    return "", ""


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
        query_prefix: str | None = None,
        document_prefix: str | None = None,
        query_cache_size: int = QUERY_CACHE_SIZE,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.batch_size = batch_size
        auto_query, auto_doc = prefixes_for(model)
        self.query_prefix = auto_query if query_prefix is None else query_prefix
        self.document_prefix = auto_doc if document_prefix is None else document_prefix
        self._query_cache: OrderedDict[str, array] = OrderedDict()
        self._query_cache_size = query_cache_size
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

    async def embed_query(self, text: str) -> array:
        """The query's vector, from the LRU when the same text was embedded recently."""
        return (await self.embed_queries([text]))[0]

    async def embed_queries(self, texts: Sequence[str]) -> list[array]:
        """Query vectors through the LRU; the misses go out in batches."""
        cache = self._query_cache
        missing = list(dict.fromkeys(t for t in texts if t not in cache))
        vectors = await self.embed([self.query_prefix + t for t in missing]) if missing else []
        fresh = dict(zip(missing, vectors, strict=True))
        out = []
        for t in texts:
            vec = fresh[t] if t in fresh else cache[t]
            out.append(vec)
            cache[t] = vec
            cache.move_to_end(t)
        while len(cache) > self._query_cache_size:
            cache.popitem(last=False)
        return out

    def document_input(self, text: str) -> str:
        """What is sent for an FAQ text (cache keys hash this, so a prefix change re-embeds)."""
        return self.document_prefix + text

    async def embed(self, texts: Sequence[str]) -> list[array]:
        """Raw texts to normalised vectors, no prefixes added."""
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


def dot(a: Sequence[float], b: Sequence[float]) -> float:
    return sum(map(operator.mul, a, b))
