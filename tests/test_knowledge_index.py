"""The FTS5 index: column weights, answer-only credit, and live reloads that search exactly as
a fresh start over the same index."""

from __future__ import annotations

import dataclasses
import json
import os
import random
import sqlite3
from pathlib import Path

import pytest

from supportbot.knowledge import KnowledgeBase, scoring
from supportbot.knowledge.index import IndexStore
from supportbot.knowledge.lexical import LexicalIndex
from supportbot.knowledge.models import FaqEntry

VOCAB = [
    "refund", "password", "invoice", "account", "export", "team", "billing", "card", "phone",
    "email", "plan", "cancel", "reset", "delete", "upgrade", "travel", "backup", "folder",
    "退款", "密码", "账户",
]  # fmt: skip


def random_entries(rng: random.Random, n: int, prefix: str) -> list[FaqEntry]:
    """Entries from a tiny vocabulary, a third of them copies of another: many BM25 ties."""

    def words(lo: int, hi: int) -> str:
        return " ".join(rng.choice(VOCAB) for _ in range(rng.randint(lo, hi)))

    out: list[FaqEntry] = []
    for i in range(n):
        if out and rng.random() < 0.33:
            e = rng.choice(out)
        else:
            e = FaqEntry(
                id="",
                question=words(1, 4),
                answer=words(1, 8),
                alternatives=tuple(words(1, 3) for _ in range(rng.randint(0, 2))),
                tags=tuple(rng.sample(VOCAB[:6], rng.randint(0, 2))),
            )
        out.append(dataclasses.replace(e, id=f"{prefix}{i}"))
    return out


@pytest.fixture
def store(tmp_path: Path):
    s = IndexStore(tmp_path / "idx.sqlite3", tmp_path)
    yield s
    s.close()


def index_of(store: IndexStore, entries: list[FaqEntry]) -> tuple[LexicalIndex, dict[str, int]]:
    store.writer.execute("BEGIN")
    rows = store.insert_entries("f.jsonl", entries)
    store.writer.execute("COMMIT")
    return LexicalIndex.build(rows), {e.id: row[0] for e, row in zip(entries, rows, strict=True)}


def test_question_weighs_more_than_answer(store: IndexStore) -> None:
    index, by_id = index_of(
        store,
        [
            FaqEntry(id="a", question="invoice copy", answer="ask billing"),
            FaqEntry(id="b", question="billing address", answer="invoice settings page"),
            FaqEntry(id="c", question="team plan", answer="nothing"),
        ],
    )
    scores = index.top(["invoic"], 10)
    assert set(scores) == {by_id["a"], by_id["b"]}
    assert scores[by_id["a"]] > scores[by_id["b"]]
    assert index.df["invoic"] == 2 and index.df["team"] == 1 and "nope" not in index.df
    marks = index.docs[by_id["b"]]
    assert marks["address"] == 1 and marks["invoic"] == -1
    assert index.top([], 10) == {} and index.top(["nope"], 10) == {}
    assert list(index.top(["invoic", "team"], 1)) == [by_id["c"]]  # the rarer term


def test_rows_survive_a_restart(store: IndexStore) -> None:
    index, _ = index_of(store, random_entries(random.Random(5), 50, "r"))
    again = LexicalIndex.build(store.load_rows())
    assert again.rows == index.rows and again.df == index.df


def test_updated_equals_a_fresh_build(store: IndexStore) -> None:
    rng = random.Random(9)
    index, _ = index_of(store, random_entries(rng, 80, "a"))
    store.writer.execute("BEGIN")
    removed = store.delete_path("f.jsonl")[:30]
    added = store.insert_entries("g.jsonl", random_entries(rng, 40, "b"))
    store.writer.execute("ROLLBACK")
    new = index.updated(removed, added)
    fresh = LexicalIndex(
        {
            **{r: v for r, v in index.rows.items() if r not in removed},
            **{r: (q, a) for r, q, a in added},
        }
    )
    assert new.rows == fresh.rows and new.df == fresh.df and new.docs == fresh.docs
    for q in ["refund password", "invoic team", "退款 密码"]:
        assert new.top(q.split(), 10) == fresh.top(q.split(), 10)
    assert len(index) == 80  # the old one is untouched: a running search still sees it whole


def test_saved_bm25_matrix_is_loaded_only_for_the_same_rows(
    store: IndexStore, tmp_path: Path
) -> None:
    """A restart over an unchanged FAQ loads the BM25 matrix saved by bm25s instead of
    rebuilding it, and scores alike; other rows have another key and are never served from a
    stale matrix (issue 19: the 10,000-entry open)."""
    index, _ = index_of(store, random_entries(random.Random(3), 60, "s"))
    cache = tmp_path / "bm25"
    first = LexicalIndex.build(store.load_rows(), cache)
    assert not first.loaded and len(list(cache.iterdir())) == 1
    again = LexicalIndex.build(store.load_rows(), cache)
    assert again.loaded
    assert again.df == index.df and dict(again.docs) == dict(index.docs)
    for q in ["refund password", "invoic team", "退款 密码", "nope"]:
        assert again.top(q.split(), 10) == index.top(q.split(), 10)
    rid = store.load_rows()[0][0]
    changed = again.updated([rid], [])
    assert not changed.loaded and rid not in changed.rows
    assert len(list(cache.iterdir())) == 1  # the old key's folder is gone
    assert not LexicalIndex.build(store.load_rows(), cache).loaded  # that key was dropped


async def test_reopening_a_knowledge_base_loads_its_saved_bm25(tmp_path: Path) -> None:
    kdir = tmp_path / "k"
    kdir.mkdir()
    (kdir / "faq.jsonl").write_text(
        "\n".join(
            json.dumps({"id": f"e{i}", "question": f"{w} question {i}", "answer": "an answer"})
            for i, w in enumerate(VOCAB)
        ),
        encoding="utf-8",
    )
    kb = KnowledgeBase(kdir, tmp_path / "idx.sqlite3")
    await kb.refresh()
    before = [h.entry.id for h in await kb.search("refund password")]
    await kb.aclose()
    kb = KnowledgeBase(kdir, tmp_path / "idx.sqlite3")
    try:
        assert kb.lexical_index.loaded
        assert [h.entry.id for h in await kb.search("refund password")] == before
    finally:
        await kb.aclose()


async def test_answer_only_terms_earn_partial_credit(tmp_path: Path) -> None:
    kdir = tmp_path / "k"
    kdir.mkdir()
    lines = [
        {"id": "z", "question": "zebra stripes", "answer": "quokka smiles"},
        {"id": "q", "question": "quokka photos", "answer": "taken at dawn"},
        {"id": "o", "question": "other things", "answer": "nothing here"},
    ]
    (kdir / "faq.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    kb = KnowledgeBase(kdir, tmp_path / "idx.sqlite3")
    await kb.refresh()
    hits = {h.entry.id: h for h in await kb.search("zebra quokka", k=3)}
    await kb.aclose()
    w_zebra, w_quokka = scoring.idf(1, 3), scoring.idf(2, 3)
    want = (w_zebra + scoring.ANSWER_CREDIT * w_quokka) / (w_zebra + w_quokka)
    assert hits["z"].details["lexical"] == pytest.approx(want)
    assert hits["q"].details["lexical"] == pytest.approx(w_quokka / (w_zebra + w_quokka))
    assert "o" not in hits


def write_faq(path: Path, entries: list[FaqEntry], bump: int) -> None:
    rows = [
        {
            "id": e.id,
            "question": e.question,
            "answer": e.answer,
            "questions": list(e.alternatives),
            "tags": list(e.tags),
        }
        for e in entries
    ]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + bump * 1_000_000_000))


async def test_live_reloads_search_like_a_fresh_start(tmp_path: Path) -> None:
    """Edits, new and deleted files, a broken file: after each refresh the running knowledge
    base answers exactly as one opened afresh on the same index."""
    rng = random.Random(11)
    kdir = tmp_path / "k"
    kdir.mkdir()
    names = [f"f{i:02d}.jsonl" for i in range(20)]
    for name in names:
        write_faq(kdir / name, random_entries(rng, 30, name[:3]), 0)
    kb = KnowledgeBase(kdir, tmp_path / "idx.sqlite3")
    await kb.refresh()
    queries = [" ".join(rng.sample(VOCAB, rng.randint(1, 4))) for _ in range(60)]

    copies: list[Path] = []

    async def same_as_fresh() -> None:
        # the same index file, and a copy of it without the saved BM25 matrix: built afresh
        copies.append(tmp_path / f"copy-{len(copies)}.sqlite3")
        src, dst = sqlite3.connect(tmp_path / "idx.sqlite3"), sqlite3.connect(copies[-1])
        src.backup(dst)
        src.close()
        dst.close()
        for path in [tmp_path / "idx.sqlite3", copies[-1]]:
            fresh = KnowledgeBase(kdir, path)
            for q in queries:
                got = [(h.entry.id, h.score, h.details) for h in await kb.search(q, k=10)]
                want = [(h.entry.id, h.score, h.details) for h in await fresh.search(q, k=10)]
                assert got == want, q
            await fresh.aclose()
        assert not fresh.lexical_index.loaded

    await same_as_fresh()
    write_faq(kdir / names[3], random_entries(rng, 33, "f03"), 5)
    await kb.refresh()
    assert kb.last_reindexed == [names[3]]
    await same_as_fresh()
    (kdir / names[-1]).unlink()  # the highest rowids: the new file reuses them
    write_faq(kdir / "new.jsonl", random_entries(rng, 20, "new"), 5)
    await kb.refresh()
    assert kb.last_reindexed == [names[-1], "new.jsonl"]
    await same_as_fresh()
    (kdir / names[0]).write_text("{not json}\n")  # broken: the last good version stays
    for name in names[1:10]:
        write_faq(kdir / name, random_entries(rng, 25, name[:3]), 10)
    await kb.refresh()
    assert kb.problems and len(kb.last_reindexed) == 9
    await same_as_fresh()
    await kb.aclose()


def _same_search(a: LexicalIndex, b: LexicalIndex, queries: list[list[str]]) -> None:
    assert a.rows == b.rows and a.df == b.df
    for q in queries:
        assert a.top(q, 50) == b.top(q, 50), q


def test_chains_of_updates_equal_a_fresh_build(tmp_path: Path) -> None:
    """Issue 19's reload: an update counts only the added rows and carries the others' counts
    over, so it must stay exact through many edits: rowids reused below others, rows replaced
    in place, the vocabulary compacted once unused ids pile up, and counts read back from the
    saved cache after a restart. Each step is checked against a build from the rows alone
    (no cache, no carried counts)."""
    rng = random.Random(21)

    def row_text(vocab: list[str]) -> tuple[str, str]:
        q = " ".join(rng.choice(vocab) for _ in range(rng.randint(1, 5)))
        return q, " ".join(rng.choice(vocab) for _ in range(rng.randint(0, 20)))

    rare = [f"rare{i}" for i in range(2500)]  # gone after the first edits: compaction
    rows = {rid: row_text(rare if rid % 2 else VOCAB) for rid in range(1, 401)}
    queries = [rng.sample(VOCAB, rng.randint(1, 4)) for _ in range(40)] + [["rare7", "refund"]]
    cache = tmp_path / "bm25"
    index = LexicalIndex(rows, cache)
    for step in range(8):
        removed = rng.sample(sorted(rows), 60)
        if step < 2:
            removed += [r for r in rows if r % 2 and r not in removed]  # every rare row
        for rid in removed:
            del rows[rid]
        free = sorted(set(range(1, 600)) - set(rows))
        new_ids = rng.sample(free, 50) + rng.sample(sorted(rows), 5)  # reuse, and replace
        added = [(rid, *row_text(VOCAB)) for rid in new_ids]
        rows.update({rid: (q, a) for rid, q, a in added})
        index = index.updated(removed, added)
        assert not index.loaded
        _same_search(index, LexicalIndex(dict(rows)), queries)
    assert "rare7" not in index.df
    reopened = LexicalIndex(dict(rows), cache)  # matrix and counts from the cache
    assert reopened.loaded
    _same_search(reopened, LexicalIndex(dict(rows)), queries)
    rid = sorted(rows)[3]
    del rows[rid]
    _same_search(reopened.updated([rid], []), LexicalIndex(dict(rows)), queries)
