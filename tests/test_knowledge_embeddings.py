"""Hybrid retrieval through the real Embedder against the FakeLLM's /v1/embeddings."""

from __future__ import annotations

import logging
import os
import random
from pathlib import Path

import numpy as np
import pytest

from supportbot.config import Settings
from supportbot.knowledge import EmbeddingsError, HttpEmbedder, KnowledgeBase, scoring
from supportbot.knowledge.embeddings import prefixes_for
from supportbot.knowledge.vectors import DenseIndex, as_vector
from supportbot.testing.fake_llm import FakeLLM

KEY = "sk-test-embeddings-secret-123"


def md(id_: str, question: str, answer: str) -> str:
    return f"---\nid: {id_}\ntitle: {question}\n---\n{answer}\n"


@pytest.fixture
def kdir(tmp_path: Path) -> Path:
    d = tmp_path / "knowledge"
    d.mkdir()
    (d / "refunds.md").write_text(md("refunds", "How long do refunds take?", "5-10 days."))
    (d / "password.md").write_text(md("password", "How do I reset my password?", "Use the link."))
    (d / "export.md").write_text(md("export", "How do I export my data?", "Settings, Export."))
    return d


def embedded_inputs(fake: FakeLLM) -> list[str]:
    out: list[str] = []
    for r in fake.requests:
        if r.path.endswith("/embeddings"):
            inp = r.json["input"]
            out.extend([inp] if isinstance(inp, str) else inp)
    return out


async def test_embedder_batches_and_normalises(fake_llm: FakeLLM) -> None:
    emb = HttpEmbedder(fake_llm.url, "m", KEY, batch_size=2)
    vecs = await emb.embed(["a b", "c", "d e f"])
    await emb.aclose()
    assert len(vecs) == 3
    assert all(abs(float(v @ v) - 1.0) < 1e-4 for v in vecs)
    calls = [r for r in fake_llm.requests if r.path.endswith("/embeddings")]
    assert [len(r.json["input"]) for r in calls] == [2, 1]
    assert calls[0].headers["authorization"] == f"Bearer {KEY}"
    assert calls[0].json["model"] == "m"


async def test_embedder_errors_are_clear_and_keyless(fake_llm: FakeLLM) -> None:
    emb = HttpEmbedder(fake_llm.url, "m", KEY)
    fake_llm.fail_next("401", endpoint="embeddings")  # echoes the key in its body
    with pytest.raises(EmbeddingsError) as info:
        await emb.embed(["x"])
    assert "401" in str(info.value) and KEY not in str(info.value)
    fake_llm.fail_next("bad_json", endpoint="embeddings")
    with pytest.raises(EmbeddingsError, match="unexpected payload"):
        await emb.embed(["x"])
    await emb.aclose()
    assert KEY not in repr(emb)


async def test_embedder_timeout_and_unreachable() -> None:
    with FakeLLM() as fake:
        fake.fail_next("slow", endpoint="embeddings", seconds=5)
        emb = HttpEmbedder(fake.url, "m", timeout=0.3)
        with pytest.raises(EmbeddingsError, match="timed out"):
            await emb.embed(["x"])
        await emb.aclose()
        url = fake.url
    emb = HttpEmbedder(url, "m", timeout=2)
    with pytest.raises(EmbeddingsError, match="failed"):
        await emb.embed(["x"])
    await emb.aclose()


def touch_later(p: Path) -> None:
    st = p.stat()
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))


async def test_hybrid_search_and_embedding_cache(
    fake_llm: FakeLLM, kdir: Path, tmp_path: Path
) -> None:
    index = tmp_path / "idx.sqlite3"
    kb = KnowledgeBase(kdir, index, HttpEmbedder(fake_llm.url, "m", KEY))
    await kb.refresh()
    # each phrasing, and each whole entry (question + answer)
    assert sorted(embedded_inputs(fake_llm)) == sorted(
        [
            "How long do refunds take?",
            "How long do refunds take?\n5-10 days.",
            "How do I reset my password?",
            "How do I reset my password?\nUse the link.",
            "How do I export my data?",
            "How do I export my data?\nSettings, Export.",
        ]
    )
    hits = await kb.search("How long do refunds take?")
    assert hits[0].entry.id == "refunds"
    assert hits[0].details["dense"] == pytest.approx(1.0)
    assert hits[0].score >= 0.5
    assert embedded_inputs(fake_llm)[-1] == "How long do refunds take?"  # the query
    await kb.aclose()

    # a new instance reuses the cached vectors; an edit re-embeds only the texts that changed
    fake_llm.reset()
    kb = KnowledgeBase(kdir, index, HttpEmbedder(fake_llm.url, "m", KEY))
    await kb.refresh()
    assert embedded_inputs(fake_llm) == []
    p = kdir / "export.md"
    p.write_text(md("export", "How can I download all my files?", "Settings, Export."))
    touch_later(p)
    await kb.refresh()
    assert sorted(embedded_inputs(fake_llm)) == [
        "How can I download all my files?",
        "How can I download all my files?\nSettings, Export.",
    ]
    fake_llm.reset()
    p.write_text(md("export", "How can I download all my files?", "Use Settings, Export."))
    touch_later(p)
    await kb.refresh()
    assert embedded_inputs(fake_llm) == ["How can I download all my files?\nUse Settings, Export."]
    hits = await kb.search("download all my files")
    assert hits[0].entry.id == "export"
    await kb.aclose()


async def test_repeated_queries_use_the_lru(fake_llm: FakeLLM, kdir: Path, tmp_path: Path) -> None:
    kb = KnowledgeBase(kdir, tmp_path / "idx.sqlite3", HttpEmbedder(fake_llm.url, "m"))
    await kb.refresh()
    fake_llm.reset()
    first = await kb.search("refunds take long?")
    again = await kb.search("refunds take long?")
    assert [h.entry.id for h in again] == [h.entry.id for h in first]
    assert again[0].details["cosine"] == first[0].details["cosine"]
    assert embedded_inputs(fake_llm) == ["refunds take long?"]
    await kb.search("reset my password")
    assert embedded_inputs(fake_llm) == ["refunds take long?", "reset my password"]
    await kb.aclose()


async def test_query_lru_evicts_the_oldest(fake_llm: FakeLLM) -> None:
    emb = HttpEmbedder(fake_llm.url, "m", query_cache_size=2)
    for q in ["a", "b", "a", "c", "b", "a"]:
        await emb.embed_query(q)
    # a, b miss; a hits; c evicts b; b misses and evicts a; a misses
    assert embedded_inputs(fake_llm) == ["a", "b", "c", "b", "a"]
    await emb.aclose()


async def test_query_matches_the_alternative_it_paraphrases(
    fake_llm: FakeLLM, tmp_path: Path
) -> None:
    d = tmp_path / "k"
    d.mkdir()
    (d / "faq.yaml").write_text(
        "- id: refunds\n"
        "  question: How long do refunds take?\n"
        "  questions: [Where is my money back, Can I cancel a payment]\n"
        "  answer: Five to ten days.\n"
        "- id: export\n"
        "  question: How do I export my data?\n"
        "  answer: Settings, Export.\n"
    )
    kb = KnowledgeBase(d, tmp_path / "idx.sqlite3", HttpEmbedder(fake_llm.url, "m"))
    await kb.refresh()
    assert not kb.problems
    hits = await kb.search("where is my money back")
    assert hits[0].entry.id == "refunds"
    # max over phrasings: the alternative matches exactly (cosine 1); one vector for all the
    # phrasings joined would be far from it. The whole-entry vector weighs DOC_WEIGHT.
    assert hits[0].details["cosine"] > 0.75
    await kb.aclose()


async def test_model_prefixes_are_sent(fake_llm: FakeLLM, kdir: Path, tmp_path: Path) -> None:
    emb = HttpEmbedder(fake_llm.url, "intfloat/e5-small-v2")
    kb = KnowledgeBase(kdir, tmp_path / "idx.sqlite3", emb)
    await kb.refresh()
    sent = embedded_inputs(fake_llm)
    assert "passage: How do I export my data?" in sent
    assert all(t.startswith("passage: ") for t in sent)
    await kb.search("export my data")
    assert embedded_inputs(fake_llm)[-1] == "query: export my data"
    await kb.aclose()


def test_prefixes_for_known_families() -> None:
    assert prefixes_for("all-MiniLM-L6-v2") == ("", "")
    assert prefixes_for("text-embedding-3-small") == ("", "")
    assert prefixes_for("intfloat/multilingual-e5-base") == ("query: ", "passage: ")
    assert prefixes_for("nomic-embed-text-v1.5") == ("search_query: ", "search_document: ")
    assert prefixes_for("BAAI/bge-small-en-v1.5")[0].startswith("Represent this sentence")
    assert prefixes_for("BAAI/bge-large-zh-v1.5")[0].startswith("为这个句子")
    assert prefixes_for("BAAI/bge-m3") == ("", "")
    emb = HttpEmbedder("http://127.0.0.1:9", "e5-large", query_prefix="", document_prefix="doc: ")
    assert (emb.query_prefix, emb.document_input("x")) == ("", "doc: x")


def _random_items(rng: random.Random, n: int, dim: int) -> list:
    def unit():
        return as_vector([rng.gauss(0, 1) for _ in range(dim)])

    return [(100 + i, [unit() for _ in range(1 + i % 3)], unit()) for i in range(n)]


def test_dense_index_scores() -> None:
    rng = random.Random(3)
    items = _random_items(rng, 60, 16)
    index = DenseIndex(items)
    assert len(index) == 60
    q = items[7][1][1]  # entry 107's second phrasing
    w = scoring.DOC_WEIGHT

    def expected(rid: int) -> float:
        _, phr, doc = items[rid - 100]
        return (max(float(np.dot(q, p)) for p in phr) + w * float(np.dot(q, doc))) / (1 + w)

    want = sorted(range(100, 160), key=expected, reverse=True)[:5]
    top = index.top(q, 5)
    assert sorted(top, key=top.__getitem__, reverse=True) == want
    assert want[0] == 107
    for rid in [*want, 159]:
        assert index.cosine(rid, q) == pytest.approx(expected(rid), abs=1e-5)
    assert index.cosine(999, q) is None
    assert len(index.top(q, 500)) == 60
    assert DenseIndex([]).top(q, 5) == {}


async def test_endpoint_down_falls_back_to_lexical(
    fake_llm: FakeLLM, kdir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    kb = KnowledgeBase(kdir, tmp_path / "idx.sqlite3", HttpEmbedder(fake_llm.url, "m", KEY))
    await kb.refresh()
    fake_llm.fail_next("500", endpoint="embeddings", times=3)
    with caplog.at_level(logging.WARNING, logger="supportbot.knowledge"):
        hits = await kb.search("reset my password")
    assert hits[0].entry.id == "password"
    assert "dense" not in hits[0].details
    assert "lexical search only" in caplog.text
    assert KEY not in caplog.text
    await kb.aclose()


async def test_endpoint_down_at_startup_serves_lexical(kdir: Path, tmp_path: Path) -> None:
    with FakeLLM() as fake:
        url = fake.url
    kb = KnowledgeBase(kdir, tmp_path / "idx.sqlite3", HttpEmbedder(url, "m", timeout=2))
    await kb.refresh()  # must not raise
    hits = await kb.search("export my data")
    assert hits[0].entry.id == "export"
    await kb.aclose()


def test_from_settings(tmp_path: Path, fake_llm: FakeLLM) -> None:
    (tmp_path / "k").mkdir()
    s = Settings(_env_file=None, knowledge_dir=tmp_path / "k", data_dir=tmp_path / "d")
    kb = KnowledgeBase.from_settings(s)
    assert kb.embedder is None
    assert kb.index_path.parent == tmp_path / "d"
    kb._store.close()
    s = Settings(
        _env_file=None,
        knowledge_dir=tmp_path / "k",
        data_dir=tmp_path / "d",
        embeddings_base_url=fake_llm.url,
        embeddings_api_key=KEY,
    )
    kb = KnowledgeBase.from_settings(s)
    assert isinstance(kb.embedder, HttpEmbedder) and kb.embedder.base_url == fake_llm.url
    kb._store.close()
