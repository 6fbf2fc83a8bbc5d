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
for a large FAQ) and swaps it in, so a search never sees a half-updated index. The new one is
exact, not patched: BM25's idf and length normalisation depend on the whole FAQ, so every
(term, entry) share is worked out again. What makes that cheap is that each entry's terms are
kept counted, as term ids (``_Counts``), so an edit re-counts only the entries it touched, and
the matrix is computed from those counts on whole arrays (``Bm25``): a one-file edit at 10,000
entries costs ~70 ms of CPU instead of ~0.45 s (BENCHMARKS.md, "Retrieval quality").

Counting 10,000 entries' terms and building their matrix still costs ~0.2 s of CPU, and every
start would pay it. With a ``cache_dir`` the matrix is saved through ``bm25s``'s own ``save`` /
``load`` under a key that hashes everything it depends on (the rows' terms in rowid order, the
BM25 parameters, the ``bm25s`` version), so a restart over an unchanged FAQ loads it instead,
and a stale one can never be used: a changed FAQ has another key. The entries' term counts are
saved beside it, so the first edit after a restart is as cheap as the next ones.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import math
import os
import shutil
import sys
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import bm25s
import numpy as np

# rowid, terms of question + alternatives + tags, terms of the answer (space-separated)
Row = tuple[int, str, str]

# chosen on the even-numbered queries of stackfaq and afqmc (BENCHMARKS.md, "Retrieval quality")
QUESTION_WEIGHT = 5
K1 = 2.0
B = 0.75

BUILDER = "counts-1"  # part of the saved matrix's key: bump when Bm25 or _Counts change
COUNTS_FILE = "supportbot-counts.npz"  # the entries' term counts, beside bm25s's files

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
    h = hashlib.sha256(
        f"{bm25s.__version__}|{np.__version__}|{BUILDER}|{K1}|{B}|{QUESTION_WEIGHT}|".encode()
    )
    for rid, (q, a) in rows.items():
        h.update(f"{rid}\x1f{q}\x1f{a}\x1e".encode())
    return h.hexdigest()[:32]


def _load(path: Path, n_rows: int) -> tuple[bm25s.BM25, _Counts] | None:
    """The matrix and the counts saved under ``path``; None (rebuild) when unreadable."""
    try:
        index = Bm25.load(path, mmap=False, show_progress=False)
        vocab = {t: i for t, i in index.vocab_dict.items() if t != ""}  # bm25s's own token
        with np.load(path / COUNTS_FILE, allow_pickle=False) as saved:
            counts = _Counts.from_arrays(vocab, {k: saved[k] for k in saved.files})
        if len(counts) != n_rows:
            raise ValueError(f"{len(counts)} counted entries for {n_rows}")
        return index, counts
    except (OSError, ValueError, KeyError) as exc:
        log.warning("knowledge: cannot load the saved BM25 index %s (%s); rebuilding", path, exc)
        return None


def _save(index: bm25s.BM25, counts: _Counts, cache_dir: Path, key: str) -> None:
    """Save under ``cache_dir/key`` atomically (a temporary folder renamed into place, so a
    concurrent reader never sees half a matrix), then drop the other keys' folders."""
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=cache_dir))
        index.save(tmp, show_progress=False)
        np.savez(tmp / COUNTS_FILE, **counts.arrays())
        try:
            os.replace(tmp, cache_dir / key)
        except OSError:  # another process saved the same key first
            shutil.rmtree(tmp, ignore_errors=True)
        for other in cache_dir.iterdir():
            if other.name != key and not other.name.startswith(".tmp-"):
                shutil.rmtree(other, ignore_errors=True)
    except OSError as exc:
        log.warning("knowledge: cannot save the BM25 index in %s: %s", cache_dir, exc)


class Bm25(bm25s.BM25):
    """``bm25s.BM25`` with a vectorised ``build_index_from_ids``, the hook bm25s documents
    for building its matrix another way ("You can override this function").

    bm25s counts each document's terms in a Python loop (a ``Counter`` and two small numpy
    arrays per document: ~0.35 s of CPU at 10,000 entries), which made a reload after editing
    one file cost ~0.5 s. This does the same arithmetic on whole arrays: the same Lucene idf
    (``math.log`` per distinct document frequency, stored as float32) and term-frequency
    part, in the precision NumPy gives bm25s's expressions, so the matrix is bit for bit the
    one bm25s builds (``tests/test_knowledge_index.py`` checks it); other BM25 variants go
    to bm25s's own builder.
    """

    def build_index_from_ids(
        self,
        unique_token_ids: list[int],
        corpus_token_ids: list[Sequence[int]],
        show_progress: bool = True,
        leave_progress: bool = False,
    ) -> dict:
        if self.method != "lucene" or self.idf_method != "lucene" or not corpus_token_ids:
            return super().build_index_from_ids(
                unique_token_ids, corpus_token_ids, show_progress, leave_progress
            )
        self.nonoccurrence_array = None  # as bm25s: only BM25L / BM25+ have one
        n_docs, n_vocab = len(corpus_token_ids), len(unique_token_ids)
        lengths = np.fromiter(map(len, corpus_token_ids), dtype=np.int64, count=n_docs)
        avg_doc_len = lengths.mean()
        flat = np.concatenate(corpus_token_ids)
        if flat.dtype.kind != "i":  # empty lists alone make floats; unsigned would wrap below
            flat = flat.astype(np.int64)
        size = len(flat)
        ends = np.cumsum(lengths)
        first = np.zeros(size, dtype=bool)  # where each (non-empty) document starts
        first[(ends - lengths)[lengths > 0]] = True
        step = np.diff(flat)
        if not bool(np.all((step >= 0) | first[1:])):  # terms not in id order: sort them
            doc = np.repeat(np.arange(n_docs, dtype=np.int64), lengths)
            flat = flat[np.lexsort((flat, doc))]
            step = np.diff(flat)
        new_pair = first
        new_pair[1:] |= step != 0  # runs of one term in one document
        starts = np.flatnonzero(new_pair)
        tf = np.diff(np.append(starts, size))
        rows = np.searchsorted(ends, starts, side="right").astype(self.int_dtype)
        cols = flat[starts].astype(np.int64)

        doc_freq = np.bincount(cols, minlength=n_vocab)
        distinct, inverse = np.unique(doc_freq, return_inverse=True)
        idf_of = np.array(
            [math.log(1 + (n_docs - d + 0.5) / (d + 0.5)) if d else 0.0 for d in distinct.tolist()]
        )
        idf = idf_of[inverse].astype(self.dtype)
        # bm25s: tf_array / (k1 * ((1 - b) + b * l_d / l_avg) + tf_array), per document, with
        # a float64 scalar: NumPy 2 computes it in float64, NumPy 1 in the array's float32
        wide = np.result_type(np.float64(1.0), np.ones(1, self.dtype)) == np.float64
        calc = np.float64 if wide else np.dtype(self.dtype)
        norm = self.k1 * ((1 - self.b) + self.b * lengths.astype(np.float64) / avg_doc_len)
        tfc = tf.astype(self.dtype).astype(calc)
        tfc = tfc / (norm.astype(calc)[rows] + tfc)
        scores = (idf[cols] * tfc).astype(self.dtype)

        order = np.argsort(cols, kind="stable")  # by term, then by document (CSC)
        indptr = np.zeros(n_vocab + 1, dtype=np.int64)
        np.cumsum(doc_freq, out=indptr[1:])
        return {
            "data": scores[order],
            "indices": rows[order],
            "indptr": indptr,
            "num_docs": n_docs,
        }


class _Counts:
    """Every entry's terms, counted: term ids (columns of the BM25 matrix) and weighted
    frequencies (question side ``QUESTION_WEIGHT`` times, answer once), flat in rowid order
    with each entry's terms in id order, ``offsets`` delimiting the entries (CSR layout).

    A few numpy arrays rather than a list per entry: ~8 bytes per distinct (entry, term), about
    1.6 MB at 10,000 entries. ``vocab`` only grows between updates (an id, once given, keeps
    its column), so unchanged entries need no re-counting; unused ids cost an empty column and
    are dropped once they outnumber the used ones.
    """

    __slots__ = ("ids", "offsets", "tf", "vocab")

    def __init__(
        self, vocab: dict[str, int], ids: np.ndarray, tf: np.ndarray, offsets: np.ndarray
    ) -> None:
        self.vocab = vocab  # term -> id; never changed once this object is built
        self.ids = ids  # int32, per (entry, term)
        self.tf = tf  # int32, per (entry, term)
        self.offsets = offsets  # int64, len(entries) + 1

    @classmethod
    def count(cls, texts: Iterable[tuple[str, str]], vocab: dict[str, int]) -> _Counts:
        """Count the (question terms, answer terms) of each entry, giving new terms new ids
        in ``vocab`` (which is updated in place)."""
        ids: list[int] = []
        weights: list[int] = []
        lens: list[int] = []
        for q, a in texts:
            qs, ans = q.split(), a.split()
            ids.extend([vocab.setdefault(t, len(vocab)) for t in qs])
            ids.extend([vocab.setdefault(t, len(vocab)) for t in ans])
            weights.extend([QUESTION_WEIGHT] * len(qs))
            weights.extend([1] * len(ans))
            lens.append(len(qs) + len(ans))
        n = len(lens)
        entry = np.repeat(np.arange(n, dtype=np.int64), lens)
        key = (entry << 32) | np.asarray(ids, dtype=np.int64)
        pairs, where = np.unique(key, return_inverse=True)
        tf = np.bincount(where, weights=np.asarray(weights, dtype=np.float64))
        offsets = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(np.bincount(pairs >> 32, minlength=n), out=offsets[1:])
        return cls(vocab, (pairs & 0xFFFFFFFF).astype(np.int32), tf.astype(np.int32), offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def corpus(self) -> list[np.ndarray]:
        """Each entry as the term ids bm25s counts (each repeated by its frequency)."""
        tokens = np.repeat(self.ids, self.tf)
        running = np.zeros(len(self.tf) + 1, dtype=np.int64)
        np.cumsum(self.tf, out=running[1:])
        bounds = running[self.offsets].tolist()
        return [tokens[a:b] for a, b in itertools.pairwise(bounds)]

    def updated(
        self, rowids: np.ndarray, gone: set[int], added: list[Row]
    ) -> tuple[_Counts, np.ndarray]:
        """Without the entries in ``gone``, with ``added`` counted: the new counts and their
        rowids, in rowid order. Only ``added`` is counted; the rest is moved as arrays."""
        vocab = dict(self.vocab)
        added = sorted(added)
        new = _Counts.count(((q, a) for _, q, a in added), vocab)
        new_rowids = np.fromiter((r for r, _, _ in added), dtype=np.int64, count=len(added))
        keep = ~np.isin(rowids, np.fromiter(gone, dtype=np.int64, count=len(gone)))
        sizes = np.diff(self.offsets)
        kept = np.repeat(keep, sizes)
        ids = np.concatenate([self.ids[kept], new.ids])
        tf = np.concatenate([self.tf[kept], new.tf])
        all_rowids = np.concatenate([rowids[keep], new_rowids])
        all_sizes = np.concatenate([sizes[keep], np.diff(new.offsets)])
        starts = np.zeros(len(all_sizes), dtype=np.int64)
        np.cumsum(all_sizes[:-1], out=starts[1:])
        order = np.argsort(all_rowids, kind="stable")
        offsets = np.zeros(len(order) + 1, dtype=np.int64)
        np.cumsum(all_sizes[order], out=offsets[1:])
        if not np.array_equal(order, np.arange(len(order))):  # a rowid reused below others
            take = np.repeat(starts[order] - offsets[:-1], all_sizes[order])
            take += np.arange(offsets[-1], dtype=np.int64)
            ids, tf = ids[take], tf[take]
        counts = _Counts(vocab, ids, tf, offsets)
        return counts.compacted(), all_rowids[order]

    def compacted(self) -> _Counts:
        """The same counts without unused ids, once those outnumber the used ones (after
        many edits), so the vocabulary and the matrix's columns do not grow for ever."""
        used = np.bincount(self.ids, minlength=len(self.vocab)) > 0
        n_used = int(used.sum())
        if len(self.vocab) - n_used <= max(n_used, 1000):
            return self
        new_id = np.cumsum(used) - 1
        keep = used.tolist()
        vocab = {t: int(new_id[i]) for t, i in self.vocab.items() if keep[i]}
        return _Counts(vocab, new_id[self.ids].astype(np.int32), self.tf, self.offsets)

    def arrays(self) -> dict[str, np.ndarray]:
        return {"ids": self.ids, "tf": self.tf, "offsets": self.offsets}

    @classmethod
    def from_arrays(cls, vocab: dict[str, int], arrays: Mapping[str, np.ndarray]) -> _Counts:
        return cls(vocab, arrays["ids"], arrays["tf"], arrays["offsets"])


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
    __slots__ = ("_bm25", "_counts", "_df", "_rowids", "cache_dir", "docs", "loaded", "rows")

    def __init__(
        self,
        rows: dict[int, tuple[str, str]],
        cache_dir: Path | None = None,
        _counted: tuple[_Counts, np.ndarray] | None = None,
    ) -> None:
        # rowid -> (qterms, aterms), what the index was built from; in rowid order, so that an
        # updated index and a fresh one over the same rows break ties alike
        rows = dict(sorted(rows.items()))
        self.rows = rows
        self.docs: Mapping[int, dict[str, int]] = _Marks(rows)  # rowid -> marks
        self._rowids = np.fromiter(rows, dtype=np.int64, count=len(rows))
        self._bm25: bm25s.BM25 | None = None
        self._counts: _Counts | None = None
        self.cache_dir = cache_dir
        self.loaded = False  # whether the BM25 matrix came from cache_dir
        if not rows:
            self._df = _DocFreq(None)
            return
        key = content_key(rows) if cache_dir is not None else ""
        if cache_dir is not None and (cache_dir / key).is_dir():
            got = _load(cache_dir / key, len(rows))
            if got is not None:
                self._bm25, self._counts = got
                self.loaded = True
        if self._bm25 is None:
            if _counted is not None:
                counts, rowids = _counted
                assert np.array_equal(rowids, self._rowids), "counts of other rows"
            else:
                counts = _Counts.count(rows.values(), {})
            self._counts = counts
            self._bm25 = Bm25(k1=K1, b=B)
            # the tuple form: bm25s takes the ids as they are (its vocabulary is a copy,
            # since it adds a token of its own to it)
            self._bm25.index((counts.corpus(), dict(counts.vocab)), show_progress=False)
            if cache_dir is not None:
                _save(self._bm25, counts, cache_dir, key)

        self._df = _DocFreq(self._bm25)

    @property
    def df(self) -> Mapping[str, int]:
        """term -> entries containing it (in their question side or answer)."""
        return self._df

    @classmethod
    def build(cls, rows: Iterable[Row], cache_dir: Path | None = None) -> LexicalIndex:
        return cls({rid: (q, a) for rid, q, a in rows}, cache_dir)

    def updated(self, removed: Iterable[int], added: Iterable[Row]) -> LexicalIndex:
        """A new index without the ``removed`` rowids, then with the ``added`` rows.

        Only the added rows are counted; the others' counts are carried over, and the matrix
        is computed from all the counts, exactly as a fresh build over the same rows."""
        rows = dict(self.rows)
        gone: set[int] = set()
        for rid in removed:
            if rows.pop(rid, None) is not None:
                gone.add(rid)
        added = list(added)
        for rid, q, a in added:
            if rid in rows:
                gone.add(rid)  # replaced
            rows[rid] = (q, a)
        if self._counts is None:
            return LexicalIndex(rows, self.cache_dir)
        counted = self._counts.updated(self._rowids, gone, added)
        return LexicalIndex(rows, self.cache_dir, counted)

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
