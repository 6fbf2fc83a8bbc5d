"""The on-disk index: a SQLite file with an FTS5 table, file stamps and cached embeddings.

It is a cache of the knowledge directory (delete it and it is rebuilt), kept in its own SQLite
file through the stdlib driver because the main database may be PostgreSQL. Text is
pre-tokenised in Python (``supportbot.knowledge.text``) and FTS5 uses the ``ascii`` tokenizer,
which splits on ASCII spaces only, so the index terms are exactly Python's terms. Search does
not query it: its rows are loaded once into ``supportbot.knowledge.lexicon``, which ranks as
FTS5 does, in memory.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from array import array
from pathlib import Path

from supportbot.knowledge import lexicon
from supportbot.knowledge.lexicon import Row, match_terms
from supportbot.knowledge.models import FaqEntry
from supportbot.knowledge.text import terms

SCHEMA_VERSION = "3"

# Column weights for BM25: the question and its alternative phrasings say what an entry is
# about; the answer mostly says other things. Search ranks in memory with the same weights
# (supportbot.knowledge.lexicon); FTS5's own ranking is the reference it is tested against.
WEIGHTS = {
    "question": float(lexicon.WEIGHT_QUESTION),
    "alts": float(lexicon.WEIGHT_ALTS),
    "answer": float(lexicon.WEIGHT_ANSWER),
    "tags": float(lexicon.WEIGHT_TAGS),
}

_SCHEMA = f"""
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
CREATE VIRTUAL TABLE IF NOT EXISTS fts USING fts5(
    question, alts, answer, tags, tokenize = 'ascii'
);
CREATE VIRTUAL TABLE IF NOT EXISTS vocab USING fts5vocab(fts, 'row');
CREATE TABLE IF NOT EXISTS embeddings (
    hash TEXT NOT NULL, model TEXT NOT NULL, vec BLOB NOT NULL, PRIMARY KEY (hash, model)
);
INSERT OR REPLACE INTO fts(fts, rank) VALUES (
    'rank', 'bm25({WEIGHTS["question"]}, {WEIGHTS["alts"]}, {WEIGHTS["answer"]}, {WEIGHTS["tags"]})'
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
        path=root / d["path"],
        line=d["line"],
    )


class IndexStore:
    """Owns the index file: one writer connection (refresh) and one reader (search), WAL mode."""

    def __init__(self, path: Path, root: Path) -> None:
        self.path = Path(path)
        self.root = Path(root)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.write_lock = threading.Lock()
        self.writer = self._connect()
        self._ensure_schema()
        self.reader = self._connect()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    def _ensure_schema(self) -> None:
        w = self.writer
        w.executescript(_SCHEMA)
        stamp = f"{SCHEMA_VERSION}:{self.root.resolve()}"
        row = w.execute("SELECT value FROM meta WHERE key='stamp'").fetchone()
        if row is None or row[0] != stamp:
            # another tokenizer version or knowledge dir: this cache is useless, start over
            w.executescript(
                "BEGIN; DELETE FROM files; DELETE FROM entries; DELETE FROM fts; COMMIT;"
            )
            w.execute("INSERT OR REPLACE INTO meta VALUES ('stamp', ?)", (stamp,))

    def close(self) -> None:
        self.reader.close()
        self.writer.close()

    # --- reads used at startup -------------------------------------------------------------

    def load_files(self) -> dict[str, tuple[int, int, str, list[tuple[int, str]]]]:
        rows = self.writer.execute("SELECT path, mtime_ns, size, sha, problems FROM files")
        return {p: (m, s, sha, [tuple(x) for x in json.loads(pr)]) for p, m, s, sha, pr in rows}

    def load_entries(self) -> dict[int, tuple[FaqEntry, str]]:
        rows = self.writer.execute("SELECT rowid, data, hash FROM entries")
        return {rid: (entry_from_json(data, self.root), h) for rid, data, h in rows}

    def load_rows(self) -> list[Row]:
        """Every FTS5 row as indexed (the terms of each column), for the in-memory lexicon."""
        return self.writer.execute("SELECT rowid, question, alts, answer, tags FROM fts").fetchall()

    # --- writes (call inside a transaction) ---------------------------------------------------

    def delete_path(self, rel: str) -> list[int]:
        w = self.writer
        rowids = [r[0] for r in w.execute("SELECT rowid FROM entries WHERE path=?", (rel,))]
        w.executemany("DELETE FROM fts WHERE rowid=?", [(r,) for r in rowids])
        w.execute("DELETE FROM entries WHERE path=?", (rel,))
        w.execute("DELETE FROM files WHERE path=?", (rel,))
        return rowids

    def insert_entries(self, rel: str, entries: list[FaqEntry]) -> list[Row]:
        """Index ``entries``; returns their FTS5 rows, in the order given."""
        w = self.writer
        rows: list[Row] = []
        for e in entries:
            q = " ".join(terms(e.question))
            alts = " ".join(t for a in e.alternatives for t in terms(a))
            ans = " ".join(terms(e.answer))
            tags = " ".join(t for tag in e.tags for t in terms(tag))
            cur = w.execute(
                "INSERT INTO entries (id, path, data, hash, qterms, aterms) VALUES (?,?,?,?,?,?)",
                (e.id, rel, entry_to_json(e, rel), e.content_hash, f"{q} {alts} {tags}", ans),
            )
            rowid = cur.lastrowid
            w.execute(
                "INSERT INTO fts (rowid, question, alts, answer, tags) VALUES (?,?,?,?,?)",
                (rowid, q, alts, ans, tags),
            )
            rows.append((rowid, q, alts, ans, tags))
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

    def load_vectors(self, model: str) -> dict[str, array]:
        out = {}
        for h, blob in self.writer.execute(
            "SELECT hash, vec FROM embeddings WHERE model=?", (model,)
        ):
            vec = array("f")
            vec.frombytes(blob)
            out[h] = vec
        return out

    def save_vectors(self, model: str, items: list[tuple[str, array]]) -> None:
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

    # --- FTS5's own ranking: the reference for supportbot.knowledge.lexicon (tests) ---------

    def match(
        self, query_terms: list[str], limit: int, dfs: dict[str, int] | None = None, n: int = 0
    ) -> list[tuple[int, float]]:
        """Top entries by weighted BM25 for the OR of the terms (``match_terms`` picks them)."""
        uniq = list(dict.fromkeys(query_terms))
        if dfs is not None:
            uniq = match_terms(uniq, dfs, n)
        if not uniq:
            return []
        expr = " OR ".join(f'"{t}"' for t in uniq)
        rows = self.reader.execute(
            "SELECT rowid, rank FROM fts WHERE fts MATCH ? ORDER BY rank LIMIT ?", (expr, limit)
        )
        return [(rid, -rank) for rid, rank in rows]

    def doc_freqs(self, query_terms: list[str]) -> dict[str, int]:
        uniq = list(dict.fromkeys(query_terms))
        if not uniq:
            return {}
        marks = ",".join("?" * len(uniq))
        rows = self.reader.execute(f"SELECT term, doc FROM vocab WHERE term IN ({marks})", uniq)
        return dict(rows)
