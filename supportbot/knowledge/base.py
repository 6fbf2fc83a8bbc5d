"""KnowledgeBase: the FAQ as the engine sees it, kept in sync with the knowledge directory.

``refresh()`` is cheap when nothing changed (one ``stat`` per file) and re-indexes only the
files whose content changed. A file that breaks keeps serving its last good version until it
is fixed; its problems are logged and listed in ``kb.problems``. Nothing here raises for bad
FAQ content.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import time
from operator import itemgetter
from pathlib import Path
from typing import NamedTuple

import yaml

from supportbot.knowledge import chinese, scoring
from supportbot.knowledge.embeddings import Embedder, EmbeddingsError
from supportbot.knowledge.index import IndexStore
from supportbot.knowledge.lexical import LexicalIndex, Row
from supportbot.knowledge.loader import drop_duplicates, iter_knowledge_files, parse_file
from supportbot.knowledge.models import FaqEntry, Hit
from supportbot.knowledge.text import language_of, terms
from supportbot.knowledge.vectors import DenseIndex, Vector
from supportbot.problems import Problem

log = logging.getLogger(__name__)

CANDIDATES = 50  # lexical/dense candidates re-scored per query
_BY_RANK = itemgetter(0, 1)  # (-rank, rowid)
THREAD_THRESHOLD = 20  # re-index this many files or more in a worker thread
THREAD_ENTRIES = 1000  # ... or any file once the FAQ has this many entries (index rebuild)
EMBED_RETRY_SECONDS = 30.0
EMBED_CHUNK = 256  # texts embedded (and saved) per step; progress is logged per step

Stat = tuple[int, int]  # mtime_ns, size


class _Snapshot(NamedTuple):
    """What a search reads, replaced as a whole by a refresh (which may run in a thread)."""

    by_rowid: dict[int, tuple[FaqEntry, str]]  # rowid -> (entry, content hash)
    lexical: LexicalIndex


class KnowledgeBase:
    def __init__(
        self, knowledge_dir: Path | str, index_path: Path | str, embedder: Embedder | None = None
    ) -> None:
        self.knowledge_dir = Path(knowledge_dir)
        self.index_path = Path(index_path)
        self.embedder = embedder
        # the Chinese vocabulary (chinese.Vocabulary) shapes the stored terms: its digest is
        # part of the index stamp, so an edited _synonyms.yaml re-indexes everything
        self._vocab_problems: list[Problem] = []
        self._vocab_stat = self._vocab_file_stat()
        vocab = self._load_vocabulary()
        self._store = IndexStore(self.index_path, self.knowledge_dir, vocab.digest)
        self._lock = asyncio.Lock()
        files = self._store.load_files()
        self._seen: dict[str, Stat] = {rel: (m, s) for rel, (m, s, _, _) in files.items()}
        self._indexed: dict[str, str] = {rel: sha for rel, (_, _, sha, _) in files.items()}
        self._file_problems: dict[str, list[Problem]] = {
            rel: [Problem(self.knowledge_dir / rel, line, msg) for line, msg in probs]
            for rel, (_, _, _, probs) in files.items()
            if probs
        }
        # the BM25 matrix saved beside the index file, keyed by its content (lexical.py)
        bm25_dir = self.index_path.with_name(self.index_path.name + ".bm25")
        self._snap = _Snapshot(
            self._store.load_entries(), LexicalIndex.build(self._store.load_rows(), bm25_dir)
        )
        self._rebuild_maps()
        self._dense = DenseIndex([])
        self._vec_by_hash: dict[str, Vector] = {}
        self._vec_loaded = False
        self._embed_retry_at = 0.0
        self._embed_dirty = embedder is not None
        self._embed_task: asyncio.Task[None] | None = None
        self.last_reindexed: list[str] = []  # relative paths re-indexed by the last refresh

    @property
    def lexical_index(self) -> LexicalIndex:
        """The BM25 index searches use now (replaced as a whole by a refresh)."""
        return self._snap.lexical

    @property
    def _by_rowid(self) -> dict[int, tuple[FaqEntry, str]]:
        return self._snap.by_rowid

    @classmethod
    def from_settings(cls, settings) -> KnowledgeBase:
        return cls(
            settings.knowledge_dir,
            Path(settings.data_dir) / "knowledge-index.sqlite3",
            Embedder.from_settings(settings),
        )

    def _rebuild_maps(self) -> None:
        self.entries: dict[str, FaqEntry] = {e.id: e for e, _ in self._by_rowid.values()}

    @property
    def problems(self) -> list[Problem]:
        files = [p for rel in sorted(self._file_problems) for p in self._file_problems[rel]]
        return [*self._vocab_problems, *files]

    def _vocab_file_stat(self) -> Stat | None:
        try:
            st = (self.knowledge_dir / chinese.STAFF_VOCABULARY).stat()
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size

    def _load_vocabulary(self) -> chinese.Vocabulary:
        """The shipped vocabulary plus the staff's; a broken staff file is a problem (the
        shipped vocabulary serves meanwhile), like a broken FAQ file."""
        try:
            vocab = chinese.use_vocabulary(self.knowledge_dir)
            self._vocab_problems = []
        except (OSError, ValueError, yaml.YAMLError) as exc:
            path = self.knowledge_dir / chinese.STAFF_VOCABULARY
            self._vocab_problems = [Problem(path, 1, f"not used: {exc}")]
            log.error("knowledge: %s", self._vocab_problems[0])
            vocab = chinese.vocabulary()
        return vocab

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
            digest = self._store.vocab_digest
            vocab_stat = self._vocab_file_stat()
            if vocab_stat != self._vocab_stat:
                self._vocab_stat = vocab_stat
                digest = self._load_vocabulary().digest
                if digest != self._store.vocab_digest:
                    # every file's terms are stale: all of them out, then in again
                    log.info("knowledge: %s changed, re-indexing", chinese.STAFF_VOCABULARY)
                    deleted, changed = sorted(self._seen), sorted(stats)
            if changed or deleted:
                # files with problems may be fixed by a change elsewhere (e.g. a duplicate id)
                changed = sorted(set(changed) | (set(self._file_problems) & set(stats)))
                if len(changed) >= THREAD_THRESHOLD or len(self._by_rowid) >= THREAD_ENTRIES:
                    await asyncio.to_thread(self._apply, stats, changed, deleted)
                else:
                    self._apply(stats, changed, deleted)
            else:
                self.last_reindexed = []
            if digest != self._store.vocab_digest:
                self._store.set_stamp(digest)
        embedder = self.embedder
        if embedder is None or not self._embed_dirty:
            return
        if self._embed_task is not None and not self._embed_task.done():
            return  # the run in progress picks this up when it is done (dirty again)
        if time.monotonic() < self._embed_retry_at:
            return
        if not self._vec_loaded:
            self._vec_by_hash = await asyncio.to_thread(self._store.load_vectors, embedder.model)
            self._vec_loaded = True
        self._embed_dirty = False  # an edit during this run sets it again
        keys = {rid: self._embedding_keys(e) for rid, (e, _) in self._by_rowid.items()}
        todo: dict[str, str] = {}
        for phrasings, whole in keys.values():
            for h, text in [*phrasings, whole]:
                if h not in self._vec_by_hash:
                    todo[h] = text
        # thousands of texts (a first start, a bulk import) are embedded in the background
        # while lexical search serves; a few edited entries are waited for
        task = self._embed_task = asyncio.create_task(self._embed_missing(keys, todo))
        if len(todo) <= EMBED_CHUNK:
            await asyncio.shield(task)

    @property
    def dense_ready(self) -> bool:
        """Whether searches currently use embeddings (some entries have vectors)."""
        return len(self._dense) > 0

    async def embeddings_ready(self) -> None:
        """Wait until the entries known at the last refresh are embedded (or embedding failed)."""
        while self._embed_task is not None and not self._embed_task.done():
            await asyncio.shield(self._embed_task)

    def _apply(self, stats: dict[str, Stat], changed: list[str], deleted: list[str]) -> None:
        store = self._store
        reindexed: list[str] = []
        by_rowid = dict(self._by_rowid)
        removed: list[int] = []
        added: list[Row] = []
        taken = {e.id: e for e, _ in by_rowid.values()}  # kept up to date file by file
        with store.write_lock:
            w = store.writer
            w.execute("BEGIN IMMEDIATE")
            try:
                for rel in deleted:
                    for rid in store.delete_path(rel):
                        _forget(by_rowid.pop(rid, None), taken)
                        removed.append(rid)
                    self._indexed.pop(rel, None)
                    self._file_problems.pop(rel, None)
                    self._seen.pop(rel, None)
                    reindexed.append(rel)
                for rel in changed:
                    if self._reindex_file(rel, stats[rel], by_rowid, taken, removed, added):
                        reindexed.append(rel)
                w.execute("COMMIT")
            except BaseException:
                w.execute("ROLLBACK")
                raise
        # removals first: a rowid freed here may be reused by an insert
        lexical = self._snap.lexical
        if removed or added:
            lexical = lexical.updated(removed, added)
        self._snap = _Snapshot(by_rowid, lexical)
        self._rebuild_maps()
        self._embed_dirty = self.embedder is not None

        self.last_reindexed = list(dict.fromkeys(reindexed))  # out and in again: once
        if reindexed:
            log.info("knowledge: re-indexed %s (%d entries)", ", ".join(reindexed), len(by_rowid))

    def _reindex_file(
        self,
        rel: str,
        stat: Stat,
        by_rowid: dict[int, tuple[FaqEntry, str]],
        taken: dict[str, FaqEntry],
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
        drop_duplicates(parsed, taken)  # ids that another file serves
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
            _forget(by_rowid.pop(rid, None), taken)
            removed.append(rid)
        for row, e in zip(store.insert_entries(rel, parsed.entries), parsed.entries, strict=True):
            by_rowid[row[0]] = (e, e.content_hash)
            taken.setdefault(e.id, e)
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

    async def _embed_missing(
        self, keys: dict[int, tuple[list[tuple[str, str]], tuple[str, str]]], todo: dict[str, str]
    ) -> None:
        """Embed texts that have no cached vector, then rebuild the dense index; on failure
        retry later.

        Vectors are cached per text (hash of what is sent), so editing an answer re-embeds the
        whole-entry text only, and a question shared by two entries is embedded once.
        """
        embedder = self.embedder
        assert embedder is not None
        if todo and not await self._embed_texts(embedder, todo):
            return
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

    async def _embed_texts(self, embedder: Embedder, todo: dict[str, str]) -> bool:
        """Embed ``todo`` (hash -> text) in chunks, saving each chunk, logging progress for a
        large FAQ; False when the backend failed (retried after EMBED_RETRY_SECONDS)."""
        hashes = list(todo)
        total = len(hashes)
        started = time.monotonic()
        for start in range(0, total, EMBED_CHUNK):
            chunk = hashes[start : start + EMBED_CHUNK]
            try:
                vecs = await embedder.embed([todo[h] for h in chunk])
            except EmbeddingsError as exc:
                self._embed_retry_at = time.monotonic() + EMBED_RETRY_SECONDS
                self._embed_dirty = True
                log.warning("knowledge: embeddings unavailable, lexical search only: %s", exc)
                return False
            new = list(zip(chunk, vecs, strict=True))
            await asyncio.to_thread(self._store.save_vectors, embedder.model, new)
            self._vec_by_hash.update(new)
            done = start + len(chunk)
            if total > EMBED_CHUNK:
                log.info(
                    "knowledge: embedded %d/%d texts (%.0f s)",
                    done,
                    total,
                    time.monotonic() - started,
                )
        log.info("knowledge: embedded %d texts with %s", total, embedder.model)
        return True

    # --- search --------------------------------------------------------------------------------

    async def search(self, query: str, k: int = 5) -> list[Hit]:
        """Best entries for ``query``, best first; ``Hit.score`` is a confidence in [0, 1]."""
        qvec = None
        if self.embedder is not None and len(self._dense) and query.strip():
            try:
                qvec = await self.embedder.embed_query(query)
            except EmbeddingsError as exc:
                log.warning("knowledge: embeddings unavailable, lexical search only: %s", exc)
        return self.search_sync(query, k, qvec)

    def search_sync(self, query: str, k: int = 5, qvec: Vector | None = None) -> list[Hit]:
        by_rowid, lexical = self._snap
        uniq = list(dict.fromkeys(terms(query)))
        n = len(lexical)
        df = lexical.df
        dfs = {t: df[t] for t in uniq if t in df}
        bm25 = lexical.top(uniq, CANDIDATES)
        index = self._dense
        dense = index.top(qvec, CANDIDATES) if qvec is not None else {}
        pool = [rid for rid in dict.fromkeys([*bm25, *dense]) if rid in by_rowid]
        if not pool:
            return []
        confidence = scoring.lexical_confidence(scoring.term_weights(uniq, dfs, n))
        docs = lexical.docs
        vocab = chinese.vocabulary()
        names = _names(vocab)
        named = [t for t in uniq if t in names]
        top_bm25 = max(bm25.values(), default=0.0) or 1.0
        floor, ceil = self.embedder.cosine_range if self.embedder is not None else (0.0, 1.0)
        # (-rank, rowid, score, details): ties by rowid
        scored: list[tuple[float, int, float, dict[str, float]]] = []
        for rid in pool:
            lex = confidence(docs.get(rid, {}))
            b = bm25.get(rid, 0.0)
            if qvec is None:
                rank = scoring.lexical_rank(lex, b / top_bm25)
                scored.append((-rank, rid, lex, {"lexical": lex, "bm25": b}))
                continue
            cos = dense.get(rid)
            if cos is None:
                cos = index.cosine(rid, qvec)
            cos = cos or 0.0
            d = scoring.dense_confidence(cos, floor, ceil)
            details = {"lexical": lex, "bm25": b, "cosine": cos, "dense": d}
            rank = scoring.hybrid_rank(lex, cos, b / top_bm25, floor, ceil)
            scored.append((-rank, rid, scoring.hybrid_score(lex, d), details))
        scored.sort(key=_BY_RANK)
        raw = sorted((score for _, _, score, _ in scored), reverse=True)
        best, second = raw[0], (raw[1] if len(raw) > 1 else 0.0)
        hits = []
        for _, rid, score, details in scored[:k]:
            details["match"] = score  # how well the entry matches, before the margin
            rival = second if score == best else best
            confidence = scoring.margin(score, rival, hybrid=qvec is not None)
            if named and not scoring.names_match(named, docs.get(rid, {})):
                confidence = 0.0
            entry = by_rowid[rid][0]
            specific = confidence > 0 and qvec is None
            if specific and scoring.asks_more(_sizes(entry, vocab), len(uniq)):
                confidence = 0.0
            hits.append(Hit(entry, round(confidence, 4), details))
        return hits

    async def aclose(self) -> None:
        task = self._embed_task
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.embedder is not None:
            await self.embedder.aclose()
        self._store.close()


@functools.lru_cache(maxsize=4)
def _names(vocab: chinese.Vocabulary) -> frozenset[str]:
    """The vocabulary's words as index terms: the names a confident hit must share with the
    question (``scoring.names_match``). One set per vocabulary in use (it changes only when
    staff edit ``_synonyms.yaml``)."""
    return frozenset(w for w in vocab.words if len(w) > 1 and w in terms(w))


@functools.lru_cache(maxsize=1024)
def _sizes(entry: FaqEntry, vocab: chinese.Vocabulary) -> tuple[int, ...]:
    """Distinct index terms of each phrasing of ``entry`` (``scoring.asks_more``) with the
    vocabulary in use; worked out for the few hits that could be answered alone, and kept."""
    lang = language_of(f"{entry.question}\n{entry.answer}", entry.lang)
    return tuple(len(set(terms(p, lang))) for p in entry.phrasings)


def _forget(item: tuple[FaqEntry, str] | None, taken: dict[str, FaqEntry]) -> None:
    if item is not None and taken.get(item[0].id) is item[0]:
        del taken[item[0].id]


def _text_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
