"""KnowledgeBase: the FAQ as the engine sees it, kept in sync with the knowledge directory.

``refresh()`` is cheap when nothing changed (one ``stat`` per file) and re-indexes only the
files whose content changed. A file that breaks keeps serving its last good version until it
is fixed; its problems are logged and listed in ``kb.problems``. Nothing here raises for bad
FAQ content.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from array import array
from operator import itemgetter
from pathlib import Path
from typing import NamedTuple

from supportbot.knowledge import scoring
from supportbot.knowledge.embeddings import Embedder, EmbeddingsError
from supportbot.knowledge.index import IndexStore
from supportbot.knowledge.lexicon import Lexicon, Row, match_terms
from supportbot.knowledge.loader import drop_duplicates, iter_knowledge_files, parse_file
from supportbot.knowledge.models import FaqEntry, Hit
from supportbot.knowledge.text import terms
from supportbot.knowledge.vectors import DenseIndex
from supportbot.problems import Problem

log = logging.getLogger(__name__)

CANDIDATES = 50  # lexical/dense candidates re-scored per query
_BY_RANK = itemgetter(0, 1)  # (-rank, rowid)
THREAD_THRESHOLD = 20  # re-index this many files or more in a worker thread
EMBED_RETRY_SECONDS = 30.0

Stat = tuple[int, int]  # mtime_ns, size


class _Snapshot(NamedTuple):
    """What a search reads, replaced as a whole by a refresh (which may run in a thread)."""

    by_rowid: dict[int, tuple[FaqEntry, str]]  # rowid -> (entry, content hash)
    lexicon: Lexicon


class KnowledgeBase:
    def __init__(
        self, knowledge_dir: Path | str, index_path: Path | str, embedder: Embedder | None = None
    ) -> None:
        self.knowledge_dir = Path(knowledge_dir)
        self.index_path = Path(index_path)
        self.embedder = embedder
        self._store = IndexStore(self.index_path, self.knowledge_dir)
        self._lock = asyncio.Lock()
        files = self._store.load_files()
        self._seen: dict[str, Stat] = {rel: (m, s) for rel, (m, s, _, _) in files.items()}
        self._indexed: dict[str, str] = {rel: sha for rel, (_, _, sha, _) in files.items()}
        self._file_problems: dict[str, list[Problem]] = {
            rel: [Problem(self.knowledge_dir / rel, line, msg) for line, msg in probs]
            for rel, (_, _, _, probs) in files.items()
            if probs
        }
        self._snap = _Snapshot(self._store.load_entries(), Lexicon.build(self._store.load_rows()))
        self._rebuild_maps()
        self._dense = DenseIndex([])
        self._vec_by_hash: dict[str, array] = {}
        self._vec_loaded = False
        self._embed_retry_at = 0.0
        self._embed_dirty = embedder is not None
        self.last_reindexed: list[str] = []  # relative paths re-indexed by the last refresh

    @classmethod
    def from_settings(cls, settings) -> KnowledgeBase:
        return cls(
            settings.knowledge_dir,
            Path(settings.data_dir) / "knowledge-index.sqlite3",
            Embedder.from_settings(settings),
        )

    @property
    def _by_rowid(self) -> dict[int, tuple[FaqEntry, str]]:
        return self._snap.by_rowid

    def _rebuild_maps(self) -> None:
        self.entries: dict[str, FaqEntry] = {e.id: e for e, _ in self._by_rowid.values()}

    @property
    def problems(self) -> list[Problem]:
        return [p for rel in sorted(self._file_problems) for p in self._file_problems[rel]]

    # --- refresh -------------------------------------------------------------------------------

    def _scan(self) -> dict[str, Stat]:
        out = {}
        for path in iter_knowledge_files(self.knowledge_dir):
            try:
                st = path.stat()
            except OSError:
                continue
            out[path.relative_to(self.knowledge_dir).as_posix()] = (st.st_mtime_ns, st.st_size)
        return out

    async def refresh(self) -> None:
        """Pick up edits: re-index changed files, drop deleted ones, embed new entries."""
        async with self._lock:
            stats = await asyncio.to_thread(self._scan) if len(self._seen) > 200 else self._scan()
            changed = sorted(rel for rel, st in stats.items() if self._seen.get(rel) != st)
            deleted = sorted(rel for rel in self._seen if rel not in stats)
            if changed or deleted:
                # files with problems may be fixed by a change elsewhere (e.g. a duplicate id)
                changed = sorted(set(changed) | (set(self._file_problems) & set(stats)))
                if len(changed) >= THREAD_THRESHOLD:
                    await asyncio.to_thread(self._apply, stats, changed, deleted)
                else:
                    self._apply(stats, changed, deleted)
            else:
                self.last_reindexed = []
            if self.embedder is not None and self._embed_dirty:
                await self._embed_missing()

    def _apply(self, stats: dict[str, Stat], changed: list[str], deleted: list[str]) -> None:
        store = self._store
        reindexed: list[str] = []
        by_rowid = dict(self._by_rowid)
        removed: list[int] = []  # index rows, for the lexicon
        added: list[Row] = []
        with store.write_lock:
            w = store.writer
            w.execute("BEGIN IMMEDIATE")
            try:
                for rel in deleted:
                    for rid in store.delete_path(rel):
                        by_rowid.pop(rid, None)
                        removed.append(rid)
                    self._indexed.pop(rel, None)
                    self._file_problems.pop(rel, None)
                    self._seen.pop(rel, None)
                    reindexed.append(rel)
                for rel in changed:
                    if self._reindex_file(rel, stats[rel], by_rowid, removed, added):
                        reindexed.append(rel)
                w.execute("COMMIT")
            except BaseException:
                w.execute("ROLLBACK")
                raise
        lexicon = self._snap.lexicon
        if removed or added:
            # all removals come first there: a rowid freed here may be reused by an insert
            lexicon = lexicon.updated(removed, added)
        self._snap = _Snapshot(by_rowid, lexicon)
        self._rebuild_maps()
        self._embed_dirty = self.embedder is not None
        self.last_reindexed = reindexed
        if reindexed:
            log.info("knowledge: re-indexed %s (%d entries)", ", ".join(reindexed), len(by_rowid))

    def _reindex_file(
        self,
        rel: str,
        stat: Stat,
        by_rowid: dict[int, tuple[FaqEntry, str]],
        removed: list[int],
        added: list[Row],
    ) -> bool:
        """Returns True when the index changed for this file."""
        store = self._store
        path = self.knowledge_dir / rel
        self._seen[rel] = stat
        try:
            data = path.read_bytes()
        except OSError as exc:
            self._file_problems[rel] = [Problem(path, 1, f"cannot read: {exc}")]
            log.error("knowledge: %s", self._file_problems[rel][0])
            return False
        sha = hashlib.sha1(data).hexdigest()
        if self._indexed.get(rel) == sha and rel not in self._file_problems:
            store.touch_file(rel, *stat)
            return False
        parsed = parse_file(self.knowledge_dir, path, data)
        taken = {e.id: e for e, _ in by_rowid.values() if e.path != path}
        drop_duplicates(parsed, taken)
        if parsed.problems:
            for p in parsed.problems:
                log.error("knowledge: %s", p)
            self._file_problems[rel] = parsed.problems
            if rel in self._indexed and self._indexed[rel] != sha:
                log.warning("knowledge: keeping the last good version of %s", rel)
                return False
        else:
            self._file_problems.pop(rel, None)
        if self._indexed.get(rel) == sha:
            return False
        for rid in store.delete_path(rel):
            by_rowid.pop(rid, None)
            removed.append(rid)
        for row, e in zip(store.insert_entries(rel, parsed.entries), parsed.entries, strict=True):
            by_rowid[row[0]] = (e, e.content_hash)
            added.append(row)
        store.set_file(rel, *stat, sha, parsed.problems)
        self._indexed[rel] = sha
        return True

    def _embedding_keys(self, entry: FaqEntry) -> tuple[list[tuple[str, str]], tuple[str, str]]:
        """(text hash, text sent) for each phrasing and for the whole entry."""
        assert self.embedder is not None
        doc = self.embedder.document_input
        phrasings = [(_text_hash(t), t) for t in map(doc, entry.phrasings)]
        whole = doc(entry.document_text)
        return phrasings, (_text_hash(whole), whole)

    async def _embed_missing(self) -> None:
        """Embed texts that have no cached vector; on failure retry later.

        Vectors are cached per text (hash of what is sent), so editing an answer re-embeds the
        whole-entry text only, and a question shared by two entries is embedded once.
        """
        embedder = self.embedder
        assert embedder is not None
        if time.monotonic() < self._embed_retry_at:
            return
        if not self._vec_loaded:
            self._vec_by_hash = await asyncio.to_thread(self._store.load_vectors, embedder.model)
            self._vec_loaded = True
        keys = {rid: self._embedding_keys(e) for rid, (e, _) in self._by_rowid.items()}
        todo: dict[str, str] = {}
        for phrasings, whole in keys.values():
            for h, text in [*phrasings, whole]:
                if h not in self._vec_by_hash:
                    todo[h] = text
        if todo:
            hashes = list(todo)
            try:
                vecs = await embedder.embed([todo[h] for h in hashes])
            except EmbeddingsError as exc:
                self._embed_retry_at = time.monotonic() + EMBED_RETRY_SECONDS
                log.warning("knowledge: embeddings unavailable, lexical search only: %s", exc)
                return
            new = list(zip(hashes, vecs, strict=True))
            await asyncio.to_thread(self._store.save_vectors, embedder.model, new)
            self._vec_by_hash.update(new)
            log.info("knowledge: embedded %d texts", len(new))
        live = {h for phrasings, whole in keys.values() for h, _ in [*phrasings, whole]}
        if len(self._vec_by_hash) > len(live):
            self._vec_by_hash = {h: v for h, v in self._vec_by_hash.items() if h in live}
            await asyncio.to_thread(self._store.prune_vectors, embedder.model, live)
        vec = self._vec_by_hash
        items = [
            (rid, [vec[h] for h, _ in phrasings], vec[whole[0]])
            for rid, (phrasings, whole) in sorted(keys.items())
        ]
        if len(items) > 500:
            self._dense = await asyncio.to_thread(DenseIndex, items)
        else:
            self._dense = DenseIndex(items)
        self._embed_dirty = False

    # --- search --------------------------------------------------------------------------------

    async def search(self, query: str, k: int = 5) -> list[Hit]:
        """Best entries for ``query``, best first; ``Hit.score`` is a confidence in [0, 1]."""
        qvec = None
        if self.embedder is not None and len(self._dense) and query.strip():
            try:
                qvec = await self.embedder.embed_query(query)
            except EmbeddingsError as exc:
                log.warning("knowledge: embeddings unavailable, lexical search only: %s", exc)
        if qvec is not None and not self._dense.use_numpy and len(self._dense) > 2000:
            return await asyncio.to_thread(self.search_sync, query, k, qvec)
        return self.search_sync(query, k, qvec)

    def search_sync(self, query: str, k: int = 5, qvec: array | None = None) -> list[Hit]:
        by_rowid, lexicon = self._snap
        qterms = terms(query)
        n = len(lexicon)
        uniq = list(dict.fromkeys(qterms))
        dfs = {t: lexicon.doc_freq(t) for t in uniq}
        bm25 = lexicon.top(match_terms(uniq, dfs, n), CANDIDATES)
        index = self._dense
        dense = index.top(qvec, CANDIDATES) if qvec is not None else {}
        pool = list(dict.fromkeys([*bm25, *dense]))
        if not pool:
            return []
        confidence = scoring.lexical_confidence(scoring.term_weights(uniq, dfs, n))
        docs = lexicon.docs
        top_bm25 = max(bm25.values(), default=0.0) or 1.0
        # (-rank, rowid, score, details): ties by rowid; details built for the hits returned
        scored: list[tuple[float, int, float, dict[str, float] | None]] = []
        for rid in pool:
            doc = docs.get(rid)
            if doc is None or rid not in by_rowid:
                continue  # the dense index is older than the last refresh
            lex = confidence(doc)
            if qvec is None:
                rank = scoring.lexical_rank(lex, bm25.get(rid, 0.0) / top_bm25)
                scored.append((-rank, rid, lex, None))
                continue
            cos = dense.get(rid)
            if cos is None:
                cos = index.cosine(rid, qvec)
            d = scoring.dense_confidence(cos or 0.0)
            details = {"lexical": lex, "bm25": bm25.get(rid, 0.0), "cosine": cos or 0.0, "dense": d}
            rank = scoring.hybrid_rank(lex, cos or 0.0)
            scored.append((-rank, rid, scoring.hybrid_score(lex, d), details))
        scored.sort(key=_BY_RANK)
        return [
            Hit(
                by_rowid[rid][0],
                round(score, 4),
                details if details is not None else {"lexical": score, "bm25": bm25.get(rid, 0.0)},
            )
            for _, rid, score, details in scored[:k]
        ]

    @property
    def dense_backend(self) -> str:
        """ "numpy" or "python": how dense scores are computed (numpy is the optional extra)."""
        return "numpy" if self._dense.use_numpy else "python"

    async def aclose(self) -> None:
        if self.embedder is not None:
            await self.embedder.aclose()
        self._store.close()


def _text_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
