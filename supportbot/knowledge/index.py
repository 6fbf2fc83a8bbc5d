"""The index file: the parsed entries with their index terms, file stamps, cached embeddings.

It is a cache of the knowledge directory (delete it and it is rebuilt), kept in its own SQLite
file through the stdlib driver because the main database may be PostgreSQL. Each entry is
stored with its terms (``supportbot.knowledge.text``: stemming, Chinese segmentation), so a
restart rebuilds the in-memory BM25 index (``supportbot.knowledge.lexical``) without parsing or
tokenising anything, and only changed files are parsed again.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

from supportbot.knowledge import chinese
from supportbot.knowledge.lexical import Row
from supportbot.knowledge.models import FaqEntry
from supportbot.knowledge.text import language_of, terms
from supportbot.knowledge.vectors import Vector, from_bytes

SCHEMA_VERSION = "6"  # bump when the terms change: the index is rebuilt

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files (
    path TEXT PRIMARY KEY, mtime_ns INTEGER NOT NULL, size INTEGER NOT NULL,
    sha TEXT NOT NULL, problems TEXT NOT NULL DEFAULT '[]'
);
CREATE TABLE IF NOT EXISTS entries (
    rowid INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, path TEXT NOT NULL,
    data TEXT NOT NULL, hash TEXT NOT NULL, qterms TEXT NOT NULL, aterms TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS entries_path ON entries(path);
DROP TABLE IF EXISTS vocab;
DROP TABLE IF EXISTS fts;
CREATE TABLE IF NOT EXISTS embeddings (
    hash TEXT NOT NULL, model TEXT NOT NULL, vec BLOB NOT NULL, PRIMARY KEY (hash, model)
);
"""


def entry_to_json(entry: FaqEntry, rel: str) -> str:
    return json.dumps(
        {
            "id": entry.id,
            "question": entry.question,
            "answer": entry.answer,
            "alternatives": list(entry.alternatives),
            "tags": list(entry.tags),
            "lang": entry.lang,
            "url": entry.url,
            "kind": entry.kind,
            "path": rel,
            "line": entry.line,
        },
        ensure_ascii=False,
    )


def entry_from_json(data: str, root: Path) -> FaqEntry:
    d = json.loads(data)
    return FaqEntry(
        id=d["id"],
        question=d["question"],
        answer=d["answer"],
        alternatives=tuple(d["alternatives"]),
        tags=tuple(d["tags"]),
        lang=d["lang"],
        url=d["url"],
        kind=d.get("kind", "faq"),
        path=root / d["path"],
        line=d["line"],
    )


class IndexStore:
    """Owns the index file (WAL mode): one connection, used by refresh under ``write_lock``."""

    def __init__(self, path: Path, root: Path, vocab_digest: str | None = None) -> None:
        self.path = Path(path)
        self.root = Path(root)
        # chinese.Vocabulary.digest (the one in use by default): it shapes the stored terms
        self.vocab_digest = chinese.vocabulary().digest if vocab_digest is None else vocab_digest
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.write_lock = threading.Lock()
        self.writer = self._connect()
        self._ensure_schema()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    def _ensure_schema(self) -> None:
        w = self.writer
        w.executescript(_SCHEMA)
        row = w.execute("SELECT value FROM meta WHERE key='stamp'").fetchone()
        if row is None or row[0] != self._stamp():
            # another tokenizer version, vocabulary or knowledge dir: this cache is useless,
            # start over
            self.restamp(self.vocab_digest)

    def _stamp(self) -> str:
        return f"{SCHEMA_VERSION}:{self.vocab_digest}:{self.root.resolve()}"

    def restamp(self, vocab_digest: str) -> None:
        """Forget every entry and file (their terms are stale) and record the new vocabulary."""
        with self.write_lock:
            self.writer.executescript("BEGIN; DELETE FROM files; DELETE FROM entries; COMMIT;")
        self.set_stamp(vocab_digest)

    def set_stamp(self, vocab_digest: str) -> None:
        """Record the vocabulary the stored terms were made with."""
        self.vocab_digest = vocab_digest
        with self.write_lock:
            self.writer.execute("INSERT OR REPLACE INTO meta VALUES ('stamp', ?)", (self._stamp(),))

    def close(self) -> None:
        self.writer.close()

    # --- reads used at startup -------------------------------------------------------------

    def load_files(self) -> dict[str, tuple[int, int, str, list[tuple[int, str]]]]:
        rows = self.writer.execute("SELECT path, mtime_ns, size, sha, problems FROM files")
        return {p: (m, s, sha, [tuple(x) for x in json.loads(pr)]) for p, m, s, sha, pr in rows}

    def load_entries(self) -> dict[int, tuple[FaqEntry, str]]:
        rows = self.writer.execute("SELECT rowid, data, hash FROM entries")
        return {rid: (entry_from_json(data, self.root), h) for rid, data, h in rows}

    # --- writes (call inside a transaction) ---------------------------------------------------

    def delete_path(self, rel: str) -> list[int]:
        w = self.writer
        rowids = [r[0] for r in w.execute("SELECT rowid FROM entries WHERE path=?", (rel,))]
        w.execute("DELETE FROM entries WHERE path=?", (rel,))
        w.execute("DELETE FROM files WHERE path=?", (rel,))
        return rowids

    def load_rows(self) -> list[Row]:
        """Every entry's terms as indexed, for ``TermStats``."""
        return self.writer.execute("SELECT rowid, qterms, aterms FROM entries").fetchall()

    def insert_entries(self, rel: str, entries: list[FaqEntry]) -> list[Row]:
        """Index ``entries``; returns their rows (rowid and terms), in the order given."""
        w = self.writer
        rows: list[Row] = []
        for e in entries:
            lang = language_of(f"{e.question}\n{e.answer}", e.lang)  # one stemmer per entry
            q = " ".join(terms(e.question, lang))
            alts = " ".join(t for a in e.alternatives for t in terms(a, lang))
            ans = " ".join(terms(e.answer, lang))
            tags = " ".join(t for tag in e.tags for t in terms(tag, lang))
            qterms = f"{q} {alts} {tags}"
            cur = w.execute(
                "INSERT INTO entries (id, path, data, hash, qterms, aterms) VALUES (?,?,?,?,?,?)",
                (e.id, rel, entry_to_json(e, rel), e.content_hash, qterms, ans),
            )
            rowid = cur.lastrowid
            assert rowid is not None
            rows.append((rowid, qterms, ans))
        return rows

    def set_file(self, rel: str, mtime_ns: int, size: int, sha: str, problems: list) -> None:
        self.writer.execute(
            "INSERT OR REPLACE INTO files VALUES (?,?,?,?,?)",
            (rel, mtime_ns, size, sha, json.dumps([[p.line, p.message] for p in problems])),
        )

    def touch_file(self, rel: str, mtime_ns: int, size: int) -> None:
        self.writer.execute(
            "UPDATE files SET mtime_ns=?, size=? WHERE path=?", (mtime_ns, size, rel)
        )

    # --- embeddings ---------------------------------------------------------------------------

    def load_vectors(self, model: str) -> dict[str, Vector]:
        rows = self.writer.execute("SELECT hash, vec FROM embeddings WHERE model=?", (model,))
        return {h: from_bytes(blob) for h, blob in rows}

    def save_vectors(self, model: str, items: list[tuple[str, Vector]]) -> None:
        with self.write_lock:
            self.writer.executemany(
                "INSERT OR REPLACE INTO embeddings VALUES (?,?,?)",
                [(h, model, v.tobytes()) for h, v in items],
            )

    def prune_vectors(self, model: str, keep: set[str]) -> None:
        with self.write_lock:
            have = [
                r[0]
                for r in self.writer.execute("SELECT hash FROM embeddings WHERE model=?", (model,))
            ]
            gone = [(h, model) for h in have if h not in keep]
            self.writer.executemany("DELETE FROM embeddings WHERE hash=? AND model=?", gone)
