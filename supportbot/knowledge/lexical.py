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

Building the BM25 matrix costs about half a second of CPU at 10,000 entries, and every start
would pay it. With a ``cache_dir`` the matrix is saved through ``bm25s``'s own ``save`` /
``load`` under a key that hashes everything it depends on (the rows' terms in rowid order, the
BM25 parameters, the ``bm25s`` version), so a restart over an unchanged FAQ loads it instead,
and a stale one can never be used: a changed FAQ has another key.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import bm25s
import numpy as np

# rowid, terms of question + alternatives + tags, terms of the answer (space-separated)
Row = tuple[int, str, str]

# chosen on the even-numbered queries of stackfaq and afqmc (BENCHMARKS.md, "Retrieval quality")
QUESTION_WEIGHT = 5
K1 = 2.0
B = 0.75

log = logging.getLogger(__name__)
logging.getLogger("bm25s").setLevel(logging.WARNING)


def marks(qterms: str, aterms: str) -> dict[str, int]:
    """An entry's terms: 1 when in its question, alternatives or tags, -1 when only in its
    answer."""
    d = {sys.intern(t): -1 for t in aterms.split()}
    d.update((sys.intern(t), 1) for t in qterms.split())
    return d


def content_key(rows: dict[int, tuple[str, str]]) -> str:
    """What a saved BM25 matrix depends on, hashed: the rows in order and the parameters."""
    h = hashlib.sha256(f"{bm25s.__version__}|{K1}|{B}|{QUESTION_WEIGHT}|".encode())
    for rid, (q, a) in rows.items():
        h.update(f"{rid}\x1f{q}\x1f{a}\x1e".encode())
    return h.hexdigest()[:32]


def _load(path: Path) -> bm25s.BM25 | None:
    try:
        return bm25s.BM25.load(path, mmap=False, show_progress=False)
    except (OSError, ValueError, KeyError) as exc:
        log.warning("knowledge: cannot load the saved BM25 index %s (%s); rebuilding", path, exc)
        return None


def _save(index: bm25s.BM25, cache_dir: Path, key: str) -> None:
    """Save under ``cache_dir/key`` atomically (a temporary folder renamed into place, so a
    concurrent reader never sees half a matrix), then drop the other keys' folders."""
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=cache_dir))
        index.save(tmp, show_progress=False)
        try:
            os.replace(tmp, cache_dir / key)
        except OSError:  # another process saved the same key first
            shutil.rmtree(tmp, ignore_errors=True)
        for other in cache_dir.iterdir():
            if other.name != key and not other.name.startswith(".tmp-"):
                shutil.rmtree(other, ignore_errors=True)
    except OSError as exc:
        log.warning("knowledge: cannot save the BM25 index in %s: %s", cache_dir, exc)


class _Marks(Mapping[int, dict[str, int]]):
    """rowid -> ``marks``, worked out on first use: a search reads those of its ~50
    candidates, so a start need not split the terms of all entries."""

    __slots__ = ("_cache", "_rows")

    def __init__(self, rows: dict[int, tuple[str, str]]) -> None:
        self._rows = rows
        self._cache: dict[int, dict[str, int]] = {}

    def __getitem__(self, rid: int) -> dict[str, int]:
        got = self._cache.get(rid)
        if got is None:
            q, a = self._rows[rid]  # KeyError for an unknown rowid, as a dict
            got = self._cache[rid] = marks(q, a)
        return got

    def __iter__(self) -> Iterator[int]:
        return iter(self._rows)

    def __len__(self) -> int:
        return len(self._rows)


class _DocFreq(Mapping[str, int]):
    """term -> number of entries containing it, read off the BM25 matrix (a term's column
    holds one value per entry that has it), so it costs nothing to build or load."""

    __slots__ = ("_indptr", "_vocab")

    def __init__(self, index: bm25s.BM25 | None) -> None:
        self._vocab: dict[str, int] = {}
        self._indptr = np.zeros(1, dtype=np.int64)
        if index is not None:
            self._indptr = np.asarray(index.scores["indptr"])
            self._vocab = index.vocab_dict

    def _count(self, term: object) -> int:
        i = self._vocab.get(term) if isinstance(term, str) else None
        # bm25s adds an empty token of its own, past the matrix's columns: not a term
        if i is None or i + 1 >= len(self._indptr):
            return 0
        return int(self._indptr[i + 1] - self._indptr[i])

    def __getitem__(self, term: str) -> int:
        n = self._count(term)
        if n == 0:
            raise KeyError(term)
        return n

    def __contains__(self, term: object) -> bool:
        return self._count(term) > 0

    def __iter__(self) -> Iterator[str]:
        return (t for t in self._vocab if t in self)

    def __len__(self) -> int:
        return sum(1 for _ in self)


class LexicalIndex:
    __slots__ = ("_bm25", "_df", "_rowids", "cache_dir", "docs", "loaded", "rows")

    def __init__(self, rows: dict[int, tuple[str, str]], cache_dir: Path | None = None) -> None:
        # rowid -> (qterms, aterms), what the index was built from; in rowid order, so that an
        # updated index and a fresh one over the same rows break ties alike
        rows = dict(sorted(rows.items()))
        self.rows = rows
        self.docs: Mapping[int, dict[str, int]] = _Marks(rows)  # rowid -> marks
        self._rowids = np.fromiter(rows, dtype=np.int64, count=len(rows))
        self._bm25: bm25s.BM25 | None = None
        self.cache_dir = cache_dir
        self.loaded = False  # whether the BM25 matrix came from cache_dir
        if not rows:
            self._df = _DocFreq(None)
            return
        key = content_key(rows) if cache_dir is not None else ""
        if cache_dir is not None and (cache_dir / key).is_dir():
            self._bm25 = _load(cache_dir / key)
            self.loaded = self._bm25 is not None
        if self._bm25 is None:
            corpus = [q.split() * QUESTION_WEIGHT + a.split() for q, a in rows.values()]
            self._bm25 = bm25s.BM25(k1=K1, b=B)
            self._bm25.index(corpus, show_progress=False)
            if cache_dir is not None:
                _save(self._bm25, cache_dir, key)

        self._df = _DocFreq(self._bm25)

    @property
    def df(self) -> Mapping[str, int]:
        """term -> entries containing it (in their question side or answer)."""
        return self._df

    @classmethod
    def build(cls, rows: Iterable[Row], cache_dir: Path | None = None) -> LexicalIndex:
        return cls({rid: (q, a) for rid, q, a in rows}, cache_dir)

    def updated(self, removed: Iterable[int], added: Iterable[Row]) -> LexicalIndex:
        """A new index without the ``removed`` rowids, then with the ``added`` rows."""
        rows = dict(self.rows)
        for rid in removed:
            rows.pop(rid, None)
        for rid, q, a in added:
            rows[rid] = (q, a)
        return LexicalIndex(rows, self.cache_dir)

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
