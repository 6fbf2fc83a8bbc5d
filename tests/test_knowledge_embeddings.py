"""Hybrid retrieval through the real Embedder against the FakeLLM's /v1/embeddings."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from supportbot.config import Settings
from supportbot.knowledge import Embedder, EmbeddingsError, KnowledgeBase
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
    emb = Embedder(fake_llm.url, "m", KEY, batch_size=2)
    vecs = await emb.embed(["a b", "c", "d e f"])
    await emb.aclose()
    assert len(vecs) == 3
    assert all(abs(sum(x * x for x in v) - 1.0) < 1e-4 for v in vecs)
    calls = [r for r in fake_llm.requests if r.path.endswith("/embeddings")]
    assert [len(r.json["input"]) for r in calls] == [2, 1]
    assert calls[0].headers["authorization"] == f"Bearer {KEY}"
    assert calls[0].json["model"] == "m"


async def test_embedder_errors_are_clear_and_keyless(fake_llm: FakeLLM) -> None:
    emb = Embedder(fake_llm.url, "m", KEY)
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
        emb = Embedder(fake.url, "m", timeout=0.3)
        with pytest.raises(EmbeddingsError, match="timed out"):
            await emb.embed(["x"])
        await emb.aclose()
        url = fake.url
    emb = Embedder(url, "m", timeout=2)
    with pytest.raises(EmbeddingsError, match="failed"):
        await emb.embed(["x"])
    await emb.aclose()


async def test_hybrid_search_and_embedding_cache(
    fake_llm: FakeLLM, kdir: Path, tmp_path: Path
) -> None:
    index = tmp_path / "idx.sqlite3"
    kb = KnowledgeBase(kdir, index, Embedder(fake_llm.url, "m", KEY))
    await kb.refresh()
    assert sorted(embedded_inputs(fake_llm)) == sorted(
        ["How long do refunds take?", "How do I reset my password?", "How do I export my data?"]
    )
    hits = await kb.search("How long do refunds take?")
    assert hits[0].entry.id == "refunds"
    assert hits[0].details["dense"] == pytest.approx(1.0)
    assert hits[0].score >= 0.5
    assert embedded_inputs(fake_llm)[-1] == "How long do refunds take?"  # the query
    await kb.aclose()

    # a new instance reuses the cached vectors; an edit re-embeds only that entry
    fake_llm.reset()
    kb = KnowledgeBase(kdir, index, Embedder(fake_llm.url, "m", KEY))
    await kb.refresh()
    assert embedded_inputs(fake_llm) == []
    p = kdir / "export.md"
    p.write_text(md("export", "How can I download all my files?", "Settings, Export."))
    st = p.stat()
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    await kb.refresh()
    assert embedded_inputs(fake_llm) == ["How can I download all my files?"]
    await kb.aclose()


async def test_endpoint_down_falls_back_to_lexical(
    fake_llm: FakeLLM, kdir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    kb = KnowledgeBase(kdir, tmp_path / "idx.sqlite3", Embedder(fake_llm.url, "m", KEY))
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
    kb = KnowledgeBase(kdir, tmp_path / "idx.sqlite3", Embedder(url, "m", timeout=2))
    await kb.refresh()  # must not raise
    hits = await kb.search("export my data")
    assert hits[0].entry.id == "export"
    await kb.aclose()


def test_from_settings(tmp_path: Path, fake_llm: FakeLLM) -> None:
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
    assert isinstance(kb.embedder, Embedder) and kb.embedder.base_url == fake_llm.url
    kb._store.close()
