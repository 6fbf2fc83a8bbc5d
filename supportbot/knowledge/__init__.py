"""The FAQ: loading staff-edited files, a BM25 index with optional embeddings, retrieval."""

from supportbot.knowledge.base import KnowledgeBase
from supportbot.knowledge.embeddings import Embedder, EmbeddingsError, HttpEmbedder
from supportbot.knowledge.loader import check_knowledge, load_directory
from supportbot.knowledge.models import FaqEntry, Hit

__all__ = [
    "Embedder",
    "EmbeddingsError",
    "FaqEntry",
    "Hit",
    "HttpEmbedder",
    "KnowledgeBase",
    "check_knowledge",
    "load_directory",
]
