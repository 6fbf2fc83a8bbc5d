"""Imported documents on disk: one Markdown file each, with front matter saying where it came from.

Layout under the knowledge folder::

    imported/<host>/<slug>.md           a web page (https://<host>/<path>)
    imported/files/<folder>/<slug>.md   a local file (Markdown, HTML, text, PDF)
    imported/<name>.yaml                a CSV of questions and answers, as ordinary FAQ entries

The front matter (``kind: imported``, title, source, fetched_at, content_hash, etag,
last_modified) is what ``--refresh`` needs to re-fetch a document conditionally and what the
loader needs to recognise it. Staff may edit the body: a refresh overwrites it only when the
source changed.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from supportbot.knowledge.importing.passages import KIND, is_imported

IMPORTED_DIR = "imported"
SOURCES_FILE = "_sources.yaml"  # "_": the loader skips it, it is not knowledge
FILES_DIR = "files"
_FRONT_MATTER = re.compile(r"\A---[ \t]*\r?\n(.*?)^---[ \t]*\r?\n?", re.S | re.M)
_SLUG_CHARS = re.compile(r"[^a-z0-9]+")
MAX_SLUG = 80


@dataclass(slots=True)
class Document:
    """Text extracted from one source, ready to be written as a knowledge file."""

    source: str  # URL, or file:// URL of a local file
    title: str
    body: str  # Markdown
    content_type: str = "text/markdown"
    etag: str | None = None
    last_modified: str | None = None
    lang: str | None = None
    fetched_at: str = field(default_factory=lambda: now_iso())

    @property
    def content_hash(self) -> str:
        """Of title and body: what a refresh compares to decide whether the page changed."""
        digest = hashlib.sha256(f"{self.title}\n{self.body}".encode()).hexdigest()
        return f"sha256:{digest}"


def now_iso() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def slug(text: str, default: str = "index") -> str:
    s = _SLUG_CHARS.sub("-", text.lower()).strip("-")
    if len(s) > MAX_SLUG:
        s = s[:MAX_SLUG].rstrip("-") + "-" + hashlib.sha1(text.encode()).hexdigest()[:8]
    return s or default


def relative_path_for(source: str, *, base: str | None = None) -> Path:
    """Where a document from ``source`` lives, relative to the knowledge folder.

    ``base`` is the folder a local file was imported from (its name is kept as a sub-folder)."""
    parts = urlsplit(source)
    if parts.scheme in ("http", "https"):
        host = slug(parts.hostname or "site", "site")
        if parts.port:
            host = f"{host}-{parts.port}"
        name = slug(parts.path.removesuffix(".html").removesuffix(".htm"))
        if parts.query:
            name += "-" + hashlib.sha1(parts.query.encode()).hexdigest()[:8]
        return Path(IMPORTED_DIR, host, f"{name}.md")
    local = Path(parts.path)
    folder = slug(Path(base).name if base else "", "documents")
    try:
        rel = local.relative_to(base) if base else Path(local.name)
    except ValueError:
        rel = Path(local.name)
    name = slug(rel.with_suffix("").as_posix())
    return Path(IMPORTED_DIR, FILES_DIR, folder, f"{name}.md")


def render(doc: Document) -> str:
    meta = {
        "kind": KIND,
        "title": doc.title,
        "source": doc.source,
        "fetched_at": doc.fetched_at,
        "content_hash": doc.content_hash,
        "content_type": doc.content_type,
    }
    if doc.etag:
        meta["etag"] = doc.etag
    if doc.last_modified:
        meta["last_modified"] = doc.last_modified
    if doc.lang:
        meta["lang"] = doc.lang
    front = yaml.safe_dump(meta, allow_unicode=True, sort_keys=False, width=1000)
    return f"---\n{front}---\n{doc.body.strip()}\n"


def write_atomic(path: Path, text: str) -> None:
    """Write through a temporary file and a rename, so the bot never reads half a page."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclass(slots=True)
class Stored:
    """An imported document as found on disk."""

    path: Path
    meta: dict
    body: str

    @property
    def source(self) -> str:
        return str(self.meta.get("source", ""))


def read_stored(path: Path) -> Stored | None:
    """The front matter and body of an imported document; None for anything else."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError):
        return None
    m = _FRONT_MATTER.match(text)
    if not m:
        return None
    try:
        meta = yaml.safe_load(m.group(1))
    except yaml.YAMLError:
        return None
    if not is_imported(meta) or not isinstance(meta.get("source"), str):
        return None
    return Stored(path, meta, text[m.end() :])


def iter_stored(knowledge_dir: Path) -> list[Stored]:
    root = knowledge_dir / IMPORTED_DIR
    if not root.is_dir():
        return []
    found = []
    for path in sorted(root.rglob("*.md")):
        if any(p.startswith((".", "_")) for p in path.relative_to(root).parts):
            continue
        stored = read_stored(path)
        if stored is not None:
            found.append(stored)
    return found


def save(knowledge_dir: Path, doc: Document, *, base: str | None = None) -> tuple[Path, bool]:
    """Write ``doc`` to its place; returns (path, changed). Unchanged content is not rewritten,
    so the knowledge base does not re-index it."""
    rel = relative_path_for(doc.source, base=base)
    path = knowledge_dir / rel
    existing = read_stored(path) if path.exists() else None
    if existing is not None and existing.source != doc.source:
        # two sources with the same slug: keep both
        digest = hashlib.sha1(doc.source.encode()).hexdigest()[:8]
        path = path.with_name(f"{path.stem}-{digest}.md")
        existing = read_stored(path) if path.exists() else None
    if existing is not None and existing.meta.get("content_hash") == doc.content_hash:
        return path, False
    write_atomic(path, render(doc))
    return path, True


def _source_items(knowledge_dir: Path) -> list[dict]:
    """Every well-formed item of ``imported/_sources.yaml`` (web and local), in file order."""
    path = knowledge_dir / IMPORTED_DIR / SOURCES_FILE
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return []
    if not isinstance(data, list):
        return []
    out: list[dict] = []
    for item in data:
        if not isinstance(item, dict):
            continue
        if isinstance(item.get("url"), str):
            depth = item.get("depth")
            out.append({"url": item["url"], "depth": depth if isinstance(depth, int) else None})
        elif isinstance(item.get("path"), str):
            out.append({"path": item["path"]})
    return out


def read_sources(knowledge_dir: Path) -> list[dict]:
    """Web sources imported before (URL and link depth), for ``--refresh`` to crawl again."""
    return [s for s in _source_items(knowledge_dir) if "url" in s]


def read_local_sources(knowledge_dir: Path) -> list[Path]:
    """Local files and folders imported before: the only places ``--refresh`` reads from.

    Why: an imported document's front matter names its ``file://`` source, and anyone who can
    edit ``knowledge/`` could point it at ``/etc/passwd`` or a secrets file; refresh would then
    copy that file into the knowledge the bot answers customers from. Only paths recorded by an
    import that staff ran on purpose are trusted."""
    return [Path(s["path"]) for s in _source_items(knowledge_dir) if "path" in s]


def _write_sources(knowledge_dir: Path, items: list[dict]) -> None:
    header = ("# Sources of `supportbot knowledge import`: `--refresh` crawls the web ones again\n"
              "# to find new pages and re-reads only local files inside the listed paths.\n"
              "# Edit or delete freely.\n")
    write_atomic(knowledge_dir / IMPORTED_DIR / SOURCES_FILE,
                 header + yaml.safe_dump(items, sort_keys=False, allow_unicode=True))


def record_source(knowledge_dir: Path, url: str, depth: int) -> None:
    items = [s for s in _source_items(knowledge_dir) if s.get("url") != url]
    items.append({"url": url, "depth": depth})
    _write_sources(knowledge_dir, items)


def record_local_source(knowledge_dir: Path, path: Path) -> None:
    """Remember an imported local file or folder (absolute, resolved) for ``--refresh``."""
    resolved = str(path.resolve())
    items = [s for s in _source_items(knowledge_dir) if s.get("path") != resolved]
    items.append({"path": resolved})
    _write_sources(knowledge_dir, items)
