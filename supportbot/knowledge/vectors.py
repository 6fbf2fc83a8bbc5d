"""Dense scores for every FAQ entry at once (numpy).

Each entry has one vector per phrasing (its question and each alternative) and one for the
whole entry (question and answer). Its dense cosine for a query is::

    (max over phrasings of cos(q, p) + DOC_WEIGHT * cos(q, doc)) / (1 + DOC_WEIGHT)

The max matches a query to the phrasing it paraphrases instead of to a blur of all of them;
the document vector adds what the answer says (see ``scoring.DOC_WEIGHT``). The vectors sit in
float32 matrices, so one query costs two matrix-vector products.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from supportbot.knowledge import scoring

Vector = npt.NDArray[np.float32]  # one L2-normalised embedding


def as_vector(values: Sequence[float] | npt.ArrayLike) -> Vector:
    """``values`` as a float32 vector scaled to unit length (a zero vector stays zero)."""
    vec = np.asarray(values, dtype=np.float32).reshape(-1)
    norm = float(np.linalg.norm(vec))
    return vec / norm if norm > 0 else vec


def from_bytes(blob: bytes) -> Vector:
    return np.frombuffer(blob, dtype=np.float32)


class DenseIndex:
    """Immutable snapshot of the entry vectors; rebuilt when the FAQ or its vectors change."""

    def __init__(self, items: Sequence[tuple[int, Sequence[Vector], Vector]]) -> None:
        """``items``: (rowid, phrasing vectors (at least one), document vector), normalised."""
        self.rowids = [rid for rid, _, _ in items]
        self._pos = {rid: i for i, rid in enumerate(self.rowids)}
        self.doc_weight = scoring.DOC_WEIGHT
        dim = len(items[0][2]) if items else 0
        self._p = _matrix([v for _, ps, _ in items for v in ps], dim)
        self._d = _matrix([d for _, _, d in items], dim)
        counts = np.fromiter((len(ps) for _, ps, _ in items), dtype=np.int64, count=len(items))
        self._starts = np.concatenate(([0], np.cumsum(counts)[:-1])) if len(items) else counts
        self._rowids = np.asarray(self.rowids, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.rowids)

    def __contains__(self, rowid: int) -> bool:
        return rowid in self._pos

    def _combine(self, phr, doc):
        return (phr + self.doc_weight * doc) / (1.0 + self.doc_weight)

    def top(self, qvec: Vector, k: int) -> dict[int, float]:
        """The ``k`` best entries by dense cosine: {rowid: cosine}."""
        if not self.rowids or k <= 0:
            return {}
        scores = self.scores(qvec)
        k = min(k, len(scores))
        idx = np.argpartition(-scores, k - 1)[:k]
        return {int(self._rowids[i]): float(scores[i]) for i in idx}

    def cosine(self, rowid: int, qvec: Vector) -> float | None:
        i = self._pos.get(rowid)
        if i is None:
            return None
        q = np.asarray(qvec, dtype=np.float32)
        end = self._starts[i + 1] if i + 1 < len(self._starts) else len(self._p)
        phr = float((self._p[self._starts[i] : end] @ q).max())
        return float(self._combine(phr, float(self._d[i] @ q)))

    def scores(self, qvec: Vector) -> npt.NDArray[np.float32]:
        """Every entry's dense cosine, in ``rowids`` order."""
        # einsum, not ``@``: BLAS matrix-vector products start a thread pool, which on a busy
        # 2-CPU host costs more than the product itself
        q = np.asarray(qvec, dtype=np.float32)
        phr = np.maximum.reduceat(np.einsum("ij,j->i", self._p, q), self._starts)
        doc = np.einsum("ij,j->i", self._d, q)
        return self._combine(phr, doc)


def _matrix(vectors: Sequence[Vector], dim: int) -> npt.NDArray[np.float32]:
    if not vectors:
        return np.zeros((0, dim), dtype=np.float32)
    return np.ascontiguousarray(np.stack([np.asarray(v, dtype=np.float32) for v in vectors]))
