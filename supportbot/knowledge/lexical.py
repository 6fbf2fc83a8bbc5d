"""The lexical index: BM25 over the FAQ entries' terms (``bm25s``), with what the confidence
score needs beside it.

``bm25s`` precomputes every (term, entry) BM25 share into a sparse matrix, so a query costs one
sparse row sum, also for Chinese queries whose dozens of n-grams each hit hundreds of entries
(SQLite FTS5, used before, scores every matching row through its ``bm25()`` function and was
several times slower on those).

Fields are weighted the BM25F way, by weighting term frequencies: the terms of an entry's
question, alternative phrasings and tags count ``QUESTION_WEIGHT`` times, its answer's once.
The calibrated confidence (``supportbot.knowledge.scoring``) also needs each entry's terms
(question side or answer only) and each term's document frequency: both are kept here.

A ``LexicalIndex`` is never changed once built; a refresh builds a new one (in a worker thread
for a large FAQ) and swaps it in, so a search never sees a half-updated index.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable

import bm25s
import numpy as np

# rowid, terms of question + alternatives + tags, terms of the answer (space-separated)
Row = tuple[int, str, str]

# chosen on the even-numbered queries of stackfaq and afqmc (BENCHMARKS.md, "Retrieval quality")
QUESTION_WEIGHT = 5
K1 = 2.0
B = 0.75

logging.getLogger("bm25s").setLevel(logging.WARNING)


def marks(qterms: str, aterms: str) -> dict[str, int]:
    """An entry's terms: 1 when in its question, alternatives or tags, -1 when only in its
    answer."""
    d = {sys.intern(t): -1 for t in aterms.split()}
    d.update((sys.intern(t), 1) for t in qterms.split())
    return d


class LexicalIndex:
    __slots__ = ("_bm25", "_rowids", "df", "docs", "rows")

    def __init__(self, rows: dict[int, tuple[str, str]]) -> None:
        # rowid -> (qterms, aterms), what the index was built from; in rowid order, so that an
        # updated index and a fresh one over the same rows break ties alike
        rows = dict(sorted(rows.items()))
        self.rows = rows
        self.docs = {rid: marks(q, a) for rid, (q, a) in rows.items()}  # rowid -> marks
        df: dict[str, int] = {}
        for d in self.docs.values():
            for t in d:
                df[t] = df.get(t, 0) + 1
        self.df = df  # term -> entries containing it
        self._rowids = np.fromiter(rows, dtype=np.int64, count=len(rows))
        self._bm25: bm25s.BM25 | None = None
        if rows:
            corpus = [q.split() * QUESTION_WEIGHT + a.split() for q, a in rows.values()]
            self._bm25 = bm25s.BM25(k1=K1, b=B)
            self._bm25.index(corpus, show_progress=False)

    @classmethod
    def build(cls, rows: Iterable[Row]) -> LexicalIndex:
        return cls({rid: (q, a) for rid, q, a in rows})

    def updated(self, removed: Iterable[int], added: Iterable[Row]) -> LexicalIndex:
        """A new index without the ``removed`` rowids, then with the ``added`` rows."""
        rows = dict(self.rows)
        for rid in removed:
            rows.pop(rid, None)
        for rid, q, a in added:
            rows[rid] = (q, a)
        return LexicalIndex(rows)

    def __len__(self) -> int:
        return len(self.rows)

    def top(self, uniq: list[str], limit: int) -> dict[int, float]:
        """The ``limit`` best entries by BM25 for the OR of the (distinct) query terms:
        rowid -> score, higher is better; entries that share no term are left out."""
        index = self._bm25
        if index is None or not uniq:
            return {}
        ids = index.get_tokens_ids([t for t in uniq if t in self.df])
        if not ids:
            return {}
        scores = index.get_scores_from_ids(ids)
        k = min(limit, len(scores))
        best = np.argpartition(-scores, k - 1)[:k]
        return {int(self._rowids[i]): float(scores[i]) for i in best if scores[i] > 0}
