"""The in-memory lexicon against FTS5 itself: same BM25 scores, same top rows, same counts.

Search ranks in Python (``supportbot.knowledge.lexicon``) instead of asking FTS5; these tests
hold it to FTS5's ``ORDER BY rank LIMIT`` on small-vocabulary corpora where most scores tie, and
check that live reloads keep the lexicon equal to one built from the index from scratch.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
from pathlib import Path

import pytest

from supportbot.knowledge import KnowledgeBase, scoring
from supportbot.knowledge.index import IndexStore
from supportbot.knowledge.lexicon import Lexicon, doc_terms
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


def lexicon_state(lex: Lexicon) -> tuple:
    postings = {t: (list(r), list(f)) for t, (r, f) in lex.postings.items()}
    return lex.docs, lex.sizes, postings, lex.total


@pytest.fixture
def store(tmp_path: Path):
    s = IndexStore(tmp_path / "idx.sqlite3", tmp_path)
    yield s
    s.close()


def insert(store: IndexStore, rel: str, entries: list[FaqEntry]) -> list:
    store.writer.execute("BEGIN")
    rows = store.insert_entries(rel, entries)
    store.writer.execute("COMMIT")
    return rows


def assert_same_as_fts5(store: IndexStore, lex: Lexicon, rng: random.Random) -> int:
    """Compares for random queries; returns how many had ties right at the cut."""
    vocab = store.reader.execute("SELECT term, doc FROM vocab").fetchall()
    assert vocab and all(lex.doc_freq(t) == df for t, df in vocab)
    assert len(lex.postings) == len(vocab)
    tied_cuts = 0
    for _ in range(300):
        index_terms = [t for t, _ in vocab]
        terms = list(dict.fromkeys(rng.sample([*index_terms, "unknown"], rng.randint(1, 4))))
        limit = rng.choice([1, 3, 10, 50])
        want = store.match(terms, limit)
        got = lex.top(terms, limit)
        assert got == dict(want), terms  # the same rows with bit-identical scores
        everything = sorted(lex.top(terms, 10**6).values(), reverse=True)
        if len(everything) > limit and everything[limit] == everything[limit - 1]:
            tied_cuts += 1
    return tied_cuts


def test_ranking_is_fts5s_own(store: IndexStore) -> None:
    rng = random.Random(3)
    insert(store, "a.jsonl", random_entries(rng, 400, "a"))
    lex = Lexicon.build(store.load_rows())
    assert len(lex) == 400
    # the tie rule (lowest rowid first) is what decides most of these
    assert assert_same_as_fts5(store, lex, rng) > 50


@pytest.mark.parametrize(
    ("before", "after"), [(10, 8), (100, 300)], ids=["edit-in-place", "rebuild"]
)
def test_updated_equals_a_fresh_build(store: IndexStore, before: int, after: int) -> None:
    rng = random.Random(before)
    insert(store, "a.jsonl", random_entries(rng, 400, "a"))
    insert(store, "b.jsonl", random_entries(rng, before, "b"))
    lex = Lexicon.build(store.load_rows())
    store.writer.execute("BEGIN")
    removed = store.delete_path("b.jsonl")
    added = store.insert_entries("b.jsonl", random_entries(rng, after, "b"))
    store.writer.execute("COMMIT")
    assert set(removed) & {row[0] for row in added}  # rowids are reused
    new = lex.updated(removed, added)
    assert lexicon_state(new) == lexicon_state(Lexicon.build(store.load_rows()))
    assert_same_as_fts5(store, new, rng)
    # the old one is untouched: a search running during the refresh still sees it whole
    assert len(lex) == 400 + before and sum(lex.sizes.values()) == lex.total
    assert all(len(r) == lex.doc_freq(t) for t, (r, _) in lex.postings.items())


def test_doc_terms_weights_and_answer_only_marks() -> None:
    d, size = doc_terms("refund card", "refund", "refund email email", "card")
    assert size == 7
    # question 4 + alternative 3 + answer 1; tags 2 + question 4; answer only: negative
    assert d == {"refund": 8, "card": 6, "email": -2}


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
    base answers exactly as one opened afresh on the same index. One-file edits update the
    lexicon in place; editing half the files rebuilds it."""
    rng = random.Random(11)
    kdir = tmp_path / "k"
    kdir.mkdir()
    names = [f"f{i:02d}.jsonl" for i in range(20)]
    for name in names:
        write_faq(kdir / name, random_entries(rng, 30, name[:3]), 0)
    kb = KnowledgeBase(kdir, tmp_path / "idx.sqlite3")
    await kb.refresh()
    queries = [" ".join(rng.sample(VOCAB, rng.randint(1, 4))) for _ in range(60)]

    async def same_as_fresh() -> None:
        fresh = KnowledgeBase(kdir, tmp_path / "idx.sqlite3")
        for q in queries:
            got = [(h.entry.id, h.score, h.details) for h in await kb.search(q, k=10)]
            want = [(h.entry.id, h.score, h.details) for h in await fresh.search(q, k=10)]
            assert got == want, q
        await fresh.aclose()

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
