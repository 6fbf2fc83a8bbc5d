"""The index's term statistics in memory, so a query costs no SQL.

Ranking used to be an FTS5 ``MATCH ... ORDER BY rank LIMIT`` plus two more statements (document
frequencies from ``fts5vocab``, answer terms of the candidates): ~0.9 ms of CPU per query at
10,000 entries, most of it FTS5 scoring every row that contains a query term. The same numbers
come from a few dictionary lookups when the per-row terms are kept in memory.

``Lexicon.top`` is FTS5's ``bm25()`` (``fts5Bm25Function`` in SQLite's ``fts5_aux.c``: k1 1.2,
b 0.75, the weighted term frequency summed over columns, the row's total length over the
table's average, idf floored at 1e-6) with the same column weights and the same floating-point
operations in the same order, so scores are bit-identical to the ``rank`` column. FTS5 sorts the
rows it scanned in ascending rowid with a stable sort, so among equal scores the lower rowid
wins the last places; ``top`` keeps exactly that set. ``tests/test_knowledge_lexicon.py`` holds
it to FTS5 on corpora full of ties.

A ``Lexicon`` is never changed once built: ``updated`` returns a new one that shares what did
not change, so a refresh in a worker thread never disturbs a search on the event loop.
"""

from __future__ import annotations

import math
import sys
from array import array
from bisect import bisect_left
from collections.abc import Iterable

K1 = 1.2  # fts5_aux.c
B = 0.75
WEIGHT_QUESTION = 4
WEIGHT_ALTS = 3
WEIGHT_ANSWER = 1
WEIGHT_TAGS = 2
COMMON_SHARE = 0.05
COMMON_MIN_ENTRIES = 2000

# (rowid, question, alts, answer, tags): one FTS5 row, each column space-separated index terms
Row = tuple[int, str, str, str, str]
Postings = tuple[array, array]  # rowids ascending ('q'), weighted term frequencies ('l')


def match_terms(uniq: list[str], dfs: dict[str, int], n: int) -> list[str]:
    """The distinct query terms that BM25 ranks by.

    In a large FAQ, terms found in more than ``COMMON_SHARE`` of the entries are left out (they
    still count in the confidence): they hardly change the ranking but make every row that
    contains them a candidate, which is what costs time at 10,000 entries.
    """
    if n >= COMMON_MIN_ENTRIES:
        rare = [t for t in uniq if dfs.get(t, 0) <= n * COMMON_SHARE]
        return rare or sorted(uniq, key=lambda t: dfs.get(t, 0))[:2]
    return uniq


def doc_terms(question: str, alts: str, answer: str, tags: str) -> tuple[dict[str, int], int]:
    """One row's terms -> weighted frequency (negative when the term is only in the answer),
    and the row's length in tokens (what FTS5's ``xColumnSize(-1)`` counts)."""
    d: dict[str, int] = {}
    ans = answer.split()
    for t in ans:
        d[t] = d.get(t, 0) - WEIGHT_ANSWER
    size = len(ans)
    for text, w in ((question, WEIGHT_QUESTION), (alts, WEIGHT_ALTS), (tags, WEIGHT_TAGS)):
        toks = text.split()
        size += len(toks)
        for t in toks:
            v = d.get(t, 0)
            d[t] = (-v if v < 0 else v) + w
    return {sys.intern(t): v for t, v in d.items()}, size


class Lexicon:
    """Per-row terms, postings and lengths of the FTS5 table; BM25 top rows from them."""

    __slots__ = ("_norm", "_scores", "docs", "postings", "sizes", "total")

    def __init__(
        self,
        docs: dict[int, dict[str, int]],
        sizes: dict[int, int],
        postings: dict[str, Postings],
        total: int,
    ) -> None:
        self.docs = docs  # rowid -> {term: weighted tf, < 0 when only in the answer}
        self.sizes = sizes  # rowid -> tokens in the row
        self.postings = postings  # term -> rows containing it
        self.total = total  # tokens in all rows
        self._scores: dict[str, tuple[array, array]] = {}  # term -> rowids, BM25 share
        n = len(docs)
        if n and total:
            avgdl = total / n
            # the row-length part of bm25's denominator, as fts5_aux.c computes it
            self._norm = {rid: K1 * (1 - B + B * size / avgdl) for rid, size in sizes.items()}
        else:
            self._norm = {}

    @classmethod
    def build(cls, rows: Iterable[Row]) -> Lexicon:
        docs: dict[int, dict[str, int]] = {}
        sizes: dict[int, int] = {}
        for rid, q, alts, ans, tags in rows:
            docs[rid], sizes[rid] = doc_terms(q, alts, ans, tags)
        return cls._from_docs(docs, sizes)

    @classmethod
    def _from_docs(cls, docs: dict[int, dict[str, int]], sizes: dict[int, int]) -> Lexicon:
        postings: dict[str, Postings] = {}
        for rid in sorted(docs):
            for t, v in docs[rid].items():
                p = postings.get(t)
                if p is None:
                    p = postings[t] = (array("q"), array("l"))
                p[0].append(rid)
                p[1].append(-v if v < 0 else v)
        return cls(docs, sizes, postings, sum(sizes.values()))

    def updated(self, removed: list[int], added: list[Row]) -> Lexicon:
        """A new Lexicon without the ``removed`` rowids, then with the ``added`` rows."""
        if (len(removed) + len(added)) * 8 > len(self.docs):
            # many rows: rebuilding the postings costs less than editing them one row at a time
            gone = set(removed)
            docs = {rid: d for rid, d in self.docs.items() if rid not in gone}
            sizes = {rid: n for rid, n in self.sizes.items() if rid not in gone}
            for rid, q, alts, ans, tags in added:
                docs[rid], sizes[rid] = doc_terms(q, alts, ans, tags)
            return self._from_docs(docs, sizes)
        docs = dict(self.docs)
        sizes = dict(self.sizes)
        postings = dict(self.postings)
        total = self.total
        copied: set[str] = set()

        def own(t: str) -> Postings:
            if t in copied:
                return postings[t]
            copied.add(t)
            old = postings.get(t)
            p = postings[t] = (old[0][:], old[1][:]) if old else (array("q"), array("l"))
            return p

        for rid in removed:
            d = docs.pop(rid, None)
            if d is None:
                continue
            total -= sizes.pop(rid)
            for t in d:
                rids, freqs = own(t)
                i = bisect_left(rids, rid)
                del rids[i], freqs[i]
        for rid, q, alts, ans, tags in added:
            d, size = doc_terms(q, alts, ans, tags)
            docs[rid], sizes[rid] = d, size
            total += size
            for t, v in d.items():
                rids, freqs = own(t)
                i = bisect_left(rids, rid)
                rids.insert(i, rid)
                freqs.insert(i, -v if v < 0 else v)
        for t in copied:
            if not postings[t][0]:
                del postings[t]
        return Lexicon(docs, sizes, postings, total)

    def __len__(self) -> int:
        return len(self.docs)

    def doc_freq(self, term: str) -> int:
        p = self.postings.get(term)
        return len(p[0]) if p is not None else 0

    def top(self, terms: list[str], limit: int) -> dict[int, float]:
        """The ``limit`` best rows by weighted BM25 for the OR of ``terms`` (distinct, in query
        order), as FTS5's ``ORDER BY rank LIMIT`` picks them; rowid -> score (= -rank)."""
        acc: dict[int, float] = {}
        for t in terms:
            p = self._scores.get(t) or self._term_scores(t)
            if p is None:
                continue
            if not acc:
                acc = dict(zip(*p, strict=True))
                continue
            get = acc.get
            for rid, score in zip(*p, strict=True):
                # summed term by term in query order, as fts5_aux.c does: the same float
                acc[rid] = get(rid, 0.0) + score
        if len(acc) <= limit:
            return acc
        cut = sorted(acc.values(), reverse=True)[limit - 1]
        out = {rid: s for rid, s in acc.items() if s > cut}
        if len(out) < limit:  # ties at the cut: the lowest rowids, as FTS5's stable sort
            tied = sorted([rid for rid, s in acc.items() if s == cut])
            for rid in tied[: limit - len(out)]:
                out[rid] = cut
        return out

    def _term_scores(self, term: str) -> tuple[array, array] | None:
        """Each row's BM25 share for ``term``, cached: it depends only on this Lexicon."""
        p = self.postings.get(term)
        if p is None:
            return None
        rids, freqs = p
        n = len(self.docs)
        nhit = len(rids)
        idf = math.log((n - nhit + 0.5) / (nhit + 0.5))
        if idf <= 0.0:
            idf = 1e-6
        norm = self._norm
        k1p1 = K1 + 1.0
        scores = array(
            "d", [idf * ((f * k1p1) / (f + norm[r])) for r, f in zip(rids, freqs, strict=True)]
        )
        self._scores[term] = out = (rids, scores)
        return out
