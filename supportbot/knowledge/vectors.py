"""Dense scores for every FAQ entry at once.

Each entry has one vector per phrasing (its question and each alternative) and one for the
whole entry (question and answer). Its dense cosine for a query is::

    (max over phrasings of cos(q, p) + DOC_WEIGHT * cos(q, doc)) / (1 + DOC_WEIGHT)

The max matches a query to the phrasing it paraphrases instead of to a blur of all of them;
the document vector adds what the answer says (see ``scoring.DOC_WEIGHT`` for the figures).

With numpy installed (``pip install supportbot[embeddings]``) the vectors sit in float32
matrices and one query costs two matrix-vector products: ~2 ms at 10,000 entries. Without it a
pure-Python loop gives the same numbers, fine for a few hundred entries but ~1 s at 10,000.
"""

from __future__ import annotations

import heapq
from array import array
from collections.abc import Sequence

from supportbot.knowledge import scoring
from supportbot.knowledge.embeddings import dot

try:  # optional: the `embeddings` extra
    import numpy as np
except ImportError:  # pragma: no cover - exercised by the pure-Python tests via use_numpy=False
    np = None  # type: ignore[assignment]

HAVE_NUMPY = np is not None


class DenseIndex:
    """Immutable snapshot of the entry vectors; rebuilt when the FAQ or its vectors change."""

    def __init__(
        self,
        items: Sequence[tuple[int, Sequence[array], array]],
        *,
        use_numpy: bool | None = None,
    ) -> None:
        """``items``: (rowid, phrasing vectors (at least one), document vector), normalised."""
        self.use_numpy = HAVE_NUMPY if use_numpy is None else (use_numpy and HAVE_NUMPY)
        self.rowids = [rid for rid, _, _ in items]
        self._pos = {rid: i for i, rid in enumerate(self.rowids)}
        self.doc_weight = scoring.DOC_WEIGHT
        if self.use_numpy:
            dim = len(items[0][2]) if items else 0
            phr = [v for _, ps, _ in items for v in ps]
            self._p = _matrix(phr, dim)
            self._d = _matrix([d for _, _, d in items], dim)
            counts = np.fromiter((len(ps) for _, ps, _ in items), dtype=np.int64, count=len(items))
            self._starts = np.concatenate(([0], np.cumsum(counts)[:-1])) if len(items) else counts
            self._rowids = np.asarray(self.rowids, dtype=np.int64)
        else:
            self._items = [(list(ps), d) for _, ps, d in items]

    def __len__(self) -> int:
        return len(self.rowids)

    def __contains__(self, rowid: int) -> bool:
        return rowid in self._pos

    def _combine(self, phr: float, doc: float) -> float:
        return (phr + self.doc_weight * doc) / (1.0 + self.doc_weight)

    def top(self, qvec: array, k: int) -> dict[int, float]:
        """The ``k`` best entries by dense cosine: {rowid: cosine}."""
        if not self.rowids or k <= 0:
            return {}
        if self.use_numpy:
            scores = self._all_numpy(qvec)
            k = min(k, len(scores))
            idx = np.argpartition(-scores, k - 1)[:k]
            return {int(self._rowids[i]): float(scores[i]) for i in idx}
        best = heapq.nlargest(
            k,
            (
                (self._combine(max(dot(qvec, p) for p in ps), dot(qvec, d)), i)
                for i, (ps, d) in enumerate(self._items)
            ),
        )
        return {self.rowids[i]: s for s, i in best}

    def cosine(self, rowid: int, qvec: array) -> float | None:
        i = self._pos.get(rowid)
        if i is None:
            return None
        if self.use_numpy:
            q = _query(qvec)
            end = self._starts[i + 1] if i + 1 < len(self._starts) else len(self._p)
            phr = float((self._p[self._starts[i] : end] @ q).max())
            return self._combine(phr, float(self._d[i] @ q))
        ps, d = self._items[i]
        return self._combine(max(dot(qvec, p) for p in ps), dot(qvec, d))

    def _all_numpy(self, qvec: array):
        # einsum, not ``@``: BLAS matrix-vector products start a thread pool that, on a busy
        # 2-CPU host, made this 15 ms instead of 1-2 ms at 10,000 x 384
        q = _query(qvec)
        phr = np.maximum.reduceat(np.einsum("ij,j->i", self._p, q), self._starts)
        doc = np.einsum("ij,j->i", self._d, q)
        return (phr + self.doc_weight * doc) / (1.0 + self.doc_weight)


def _matrix(vectors: Sequence[array], dim: int):
    buf = b"".join(
        v.tobytes() if isinstance(v, array) else array("f", v).tobytes() for v in vectors
    )
    return np.frombuffer(buf, dtype=np.float32).reshape(len(vectors), dim)


def _query(qvec: array):
    if isinstance(qvec, array) and qvec.typecode == "f":
        return np.frombuffer(qvec, dtype=np.float32)
    return np.asarray(qvec, dtype=np.float32)
