"""FAQ entries and search hits."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True, slots=True)
class FaqEntry:
    id: str
    question: str
    answer: str
    alternatives: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    lang: str | None = None
    url: str | None = None
    path: Path | None = None
    line: int = 1
    # "faq" (written by staff, a complete answer) or "passage" (part of an imported document,
    # supportbot.knowledge.importing: context for the LLM, only an excerpt without one)
    kind: str = "faq"

    @property
    def content_hash(self) -> str:
        """Hash of what retrieval sees, so embeddings are recomputed only when it changes."""
        payload = json.dumps(
            [self.question, list(self.alternatives), self.answer, list(self.tags), self.lang],
            ensure_ascii=False,
        )
        return hashlib.sha256(payload.encode()).hexdigest()

    @property
    def phrasings(self) -> tuple[str, ...]:
        """Texts embedded one by one: a query is matched to the phrasing it paraphrases."""
        return (self.question, *self.alternatives)

    @property
    def document_text(self) -> str:
        """The whole entry as one text, so what only the answer says still counts."""
        return "\n".join([self.question, self.answer])


@dataclass(frozen=True, slots=True)
class Hit:
    entry: FaqEntry
    score: float  # calibrated confidence in [0, 1]; see supportbot.knowledge.search
    details: dict[str, float] = field(default_factory=dict, compare=False)
