"""Embedders: turn FAQ texts and queries into unit vectors for hybrid retrieval.

Two backends share one interface (``Embedder``): ``HttpEmbedder``, a small client for any
OpenAI-compatible ``POST {base_url}/embeddings`` (OpenAI, Ollama, vLLM, ...), and
``supportbot.knowledge.local_embeddings.LocalEmbedder``, a model running in the bot's own
process (``pip install 'supportbot[local-embeddings]'``, ``SUPPORTBOT_EMBEDDINGS=local``).

Retrieval degrades to lexical search whenever embedding fails, so errors are one clear
exception type carrying the status and a short reason, never the API key.

Some models are trained with a prefix on each side ("query: " / "passage: " for E5); without
it they lose a few points of recall. ``prefixes_for`` knows the common families; other models
(OpenAI's, all-MiniLM-L6-v2) get none. Query vectors are kept in a small LRU, so a repeated
question costs no request.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence

import httpx

from supportbot.knowledge.vectors import Vector, as_vector

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


# Cosine levels of "unrelated" and "paraphrase" per model family (lower-cased name substring):
# they differ a lot (E5 puts unrelated texts near 0.75), and the confidence maps between them.
# Measured on the shared stackfaq and afqmc sets (BENCHMARKS.md, "Retrieval quality").
_COSINE_RANGES: tuple[tuple[str, tuple[float, float]], ...] = (("e5", (0.80, 0.92)),)
DEFAULT_COSINE_RANGE = (0.15, 0.65)  # all-MiniLM-L6-v2, OpenAI text-embedding-3


def cosine_range_for(model: str) -> tuple[float, float]:
    name = model.lower()
    for needle, levels in _COSINE_RANGES:
        if needle in name:
            return levels
    return DEFAULT_COSINE_RANGE


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
    """What the knowledge base needs from an embeddings backend; vectors are L2-normalised.

    ``embed`` takes FAQ texts as ``document_input`` made them; queries go through
    ``embed_queries``, which keeps recent query vectors in a small LRU so a repeated question
    costs nothing. ``model`` names the vectors in the cache: change it and entries are
    re-embedded.
    """

    model: str

    def __init__(self, model: str, *, query_cache_size: int = QUERY_CACHE_SIZE) -> None:
        self.model = model
        self.cosine_range = cosine_range_for(model)  # (unrelated, paraphrase) cosine levels
        self._query_cache: OrderedDict[str, Vector] = OrderedDict()
        self._query_cache_size = query_cache_size

    @classmethod
    def from_settings(cls, settings) -> Embedder | None:
        """The backend the settings ask for: local, an HTTP endpoint, or none (lexical only)."""
        choice = getattr(settings, "embeddings", "auto")
        if choice == "off":
            return None
        if choice == "local":
            from supportbot.knowledge.local_embeddings import LocalEmbedder

            return LocalEmbedder.from_settings(settings)
        if not settings.embeddings_base_url:
            return None
        return HttpEmbedder.from_settings(settings)

    async def embed_query(self, text: str) -> Vector:
        """The query's vector, from the LRU when the same text was embedded recently."""
        return (await self.embed_queries([text]))[0]

    async def embed_queries(self, texts: Sequence[str]) -> list[Vector]:
        """Query vectors through the LRU; the misses are embedded together."""
        cache = self._query_cache
        missing = list(dict.fromkeys(t for t in texts if t not in cache))
        vectors = await self._embed_query_texts(missing) if missing else []
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
        """What is embedded for an FAQ text (cache keys hash this, so a prefix change
        re-embeds)."""
        return text

    async def embed(self, texts: Sequence[str]) -> list[Vector]:
        """FAQ texts (``document_input``'s output) to normalised vectors."""
        raise NotImplementedError

    async def _embed_query_texts(self, texts: list[str]) -> list[Vector]:
        raise NotImplementedError

    async def aclose(self) -> None:
        return None


class HttpEmbedder(Embedder):
    """Embeds texts in batches through an OpenAI-compatible ``/embeddings`` endpoint."""

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
        super().__init__(model, query_cache_size=query_cache_size)
        self.base_url = base_url.rstrip("/")
        self.batch_size = batch_size
        auto_query, auto_doc = prefixes_for(model)
        self.query_prefix = auto_query if query_prefix is None else query_prefix
        self.document_prefix = auto_doc if document_prefix is None else document_prefix
        self._api_key = api_key
        self._timeout = timeout
        self._client = client
        self._own_client = client is None

    def __repr__(self) -> str:  # never show the key
        return f"HttpEmbedder(base_url={self.base_url!r}, model={self.model!r})"

    @classmethod
    def from_settings(cls, settings) -> HttpEmbedder:
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

    async def _embed_query_texts(self, texts: list[str]) -> list[Vector]:
        return await self.embed([self.query_prefix + t for t in texts])

    def document_input(self, text: str) -> str:
        return self.document_prefix + text

    async def embed(self, texts: Sequence[str]) -> list[Vector]:
        """Raw texts to normalised vectors, no prefixes added."""
        out: list[Vector] = []
        for start in range(0, len(texts), self.batch_size):
            out.extend(await self._embed_batch(list(texts[start : start + self.batch_size])))
        return out

    async def _embed_batch(self, texts: list[str]) -> list[Vector]:
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
            vectors = [as_vector(item["embedding"]) for item in items]
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
