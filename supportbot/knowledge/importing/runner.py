"""``supportbot knowledge import``: sources in, knowledge files out, one report line per document.

A source is a URL (a page, whose same-site links are followed to ``max_depth``), a sitemap
(``sitemap.xml`` or any XML ``urlset``/``sitemapindex``: its pages, links followed only to
``sitemap_depth``, 0 by default, as a sitemap already lists what the site wants found), a folder
(Markdown, HTML, text, PDF and CSV files in it, recursively) or one such file. Nothing a source
contains stops the import: each document that cannot be imported is reported with its reason and
the rest goes on.

``refresh`` crawls the recorded web sources again (``imported/_sources.yaml``: new pages are
imported) and re-fetches every imported document: conditionally (ETag/Last-Modified) for web
pages, so an unchanged page costs a 304 and its file is not touched; a page that is gone (404,
410) or now excluded by robots.txt is deleted, and so are local files that no longer exist.
The knowledge base then re-indexes only the files that changed (it watches files, not imports).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

import yaml
from lxml import etree

from supportbot.knowledge.importing import extract
from supportbot.knowledge.importing.documents import (
    IMPORTED_DIR,
    Document,
    Stored,
    iter_stored,
    now_iso,
    read_local_sources,
    read_sources,
    record_local_source,
    record_source,
    relative_path_for,
    render,
    save,
    slug,
    write_atomic,
)
from supportbot.knowledge.importing.extract import Extracted, ExtractError
from supportbot.knowledge.importing.fetch import (
    ROBOTS_EXCLUDED,
    Fetcher,
    FetchError,
    Limits,
    Page,
    same_site,
)
from supportbot.knowledge.importing.passages import split

log = logging.getLogger(__name__)

HTML_TYPES = ("text/html", "application/xhtml+xml")
XML_TYPES = ("application/xml", "text/xml")
FILE_SUFFIXES = {".md": "markdown", ".markdown": "markdown", ".txt": "text", ".html": "html",
                 ".htm": "html", ".pdf": "pdf", ".csv": "csv"}
# links to these are not pages: not worth a request
_SKIP_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".svg", ".webp", ".ico", ".css", ".js",
                  ".zip", ".gz", ".tar", ".mp4", ".mp3", ".woff", ".woff2", ".ttf", ".exe")
MAX_SITEMAPS = 50


@dataclass(slots=True)
class Item:
    """What happened to one document."""

    source: str
    status: str  # added, updated, unchanged, removed, skipped
    reason: str = ""
    path: Path | None = None
    passages: int = 0

    def __str__(self) -> str:
        where = f" -> {self.path}" if self.path else ""
        why = f": {self.reason}" if self.reason else ""
        return f"{self.status:9} {self.source}{where}{why}"


@dataclass
class Report:
    items: list[Item] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(1 for i in self.items if i.status == status)

    @property
    def passages(self) -> int:
        return sum(i.passages for i in self.items if i.status in ("added", "updated"))

    def summary(self) -> str:
        parts = [f"{self.count(s)} {s}" for s in ("added", "updated", "unchanged", "removed",
                                                   "skipped")]
        return ", ".join(parts) + f"; {self.passages} passages indexed"


Progress = Callable[[Item], None]


class Importer:
    def __init__(
        self,
        knowledge_dir: Path,
        *,
        limits: Limits | None = None,
        fetcher: Fetcher | None = None,
        progress: Progress | None = None,
    ) -> None:
        self.knowledge_dir = Path(knowledge_dir)
        self.limits = limits or (fetcher.limits if fetcher else Limits())
        self._fetcher = fetcher
        self._own_fetcher = fetcher is None
        self.progress = progress
        self.report = Report()
        self._pages_fetched = 0
        self._known: dict[str, Stored] = {}  # source URL -> imported copy (refresh)
        self._visited: set[str] = set()  # known sources a crawl has dealt with

    @property
    def fetcher(self) -> Fetcher:
        if self._fetcher is None:
            self._fetcher = Fetcher.open(self.limits)
        return self._fetcher

    async def aclose(self) -> None:
        if self._fetcher is not None and self._own_fetcher:
            await self._fetcher.aclose()

    async def __aenter__(self) -> Importer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def _record(self, item: Item) -> Item:
        self.report.items.append(item)
        log.info("import: %s", item)  # the report lists skipped documents with their reasons
        if self.progress is not None:
            self.progress(item)
        return item

    def _skip(self, source: str, reason: str) -> Item:
        return self._record(Item(source, "skipped", reason))

    def _store(self, doc: Document, *, base: str | None = None, existed: bool) -> Item:
        path, changed = save(self.knowledge_dir, doc, base=base)
        rel = path.relative_to(self.knowledge_dir)
        n = len(split(doc.body))
        status = ("updated" if existed else "added") if changed else "unchanged"
        return self._record(Item(doc.source, status, path=rel, passages=n if changed else 0))

    # --- sources -------------------------------------------------------------------------

    async def run(self, sources: list[str]) -> Report:
        for source in sources:
            try:
                if source.startswith(("http://", "https://")):
                    depth = await self.import_site(source)
                    if depth is not None:
                        record_source(self.knowledge_dir, source, depth)
                else:
                    if await self.import_path(Path(source)):
                        record_local_source(self.knowledge_dir, Path(source))
            except Exception as exc:  # a bug or an OS error on one source: report, go on
                log.exception("import: %s failed", source)
                self._skip(source, f"{type(exc).__name__}: {exc}")
        return self.report

    # --- the web -------------------------------------------------------------------------

    def _budget_left(self) -> bool:
        return self._pages_fetched < self.limits.max_pages

    async def _fetch(self, url: str, **conditional: str | None) -> Page:
        self._pages_fetched += 1
        return await self.fetcher.get(url, **conditional)

    async def import_site(self, start: str, depth: int | None = None) -> int | None:
        """A page and what it links to on the same site, or every page of a sitemap.

        Pages imported before (``self._known``, set by ``refresh``) are fetched conditionally:
        a 304 is "unchanged" and its links are not followed again (a page that gained a link
        changed, so new pages are still found through the pages that link to them).

        Returns the link depth used (to crawl the same way on refresh), None when the start
        could not be fetched."""
        if not self._budget_left():
            self._skip(start, f"page limit ({self.limits.max_pages}) reached")
            return None
        try:
            first = await self._fetch_known(start)
        except FetchError as exc:
            self._fetch_failed(start, exc)
            return None
        queue: deque[tuple[str, int, Page | None]] = deque()
        seen: set[str] = {start, first.url}
        imported: set[str] = set()  # final URLs, after redirects
        sitemap = first.status == 200 and _is_sitemap(first)
        default = self.limits.sitemap_depth if sitemap else self.limits.max_depth
        max_depth = default if depth is None else depth
        if sitemap:
            urls = await self._sitemap_urls(start, first)
            if not urls and not any(i.source == start for i in self.report.items):
                self._skip(start, "sitemap lists no page of this site")
            for u in urls:
                if u not in seen:
                    seen.add(u)
                    queue.append((u, 0, None))
        else:
            queue.append((start, 0, first))
        while queue:
            url, level, page = queue.popleft()
            if page is None:
                if not self._budget_left():
                    left = len(queue) + 1
                    self._skip(start, f"page limit ({self.limits.max_pages}) reached, "
                                      f"{left} more pages not fetched")
                    break
                try:
                    page = await self._fetch_known(url)
                except FetchError as exc:
                    self._fetch_failed(url, exc)
                    continue
                seen.add(page.url)
            known = self._known.get(url)
            self._visited.add(url)
            if page.status == 304 and known is not None:
                self._record(Item(url, "unchanged", "not modified", self._rel(known.path)))
                continue
            if page.url in imported:
                continue  # an old URL redirecting to a page imported already
            imported.add(page.url)
            try:
                doc, links = await asyncio.to_thread(
                    _document_from_page, url if known else page.url, page
                )
            except ExtractError as exc:
                kept = " (kept the last version)" if known else ""
                self._skip(url, f"{exc}{kept}")
                continue
            if known is not None:
                self._replace(known.path, self._rel(known.path), known.meta, doc)
            else:
                self._store(doc, existed=_exists(self.knowledge_dir, doc))
            if level >= max_depth:
                continue
            for link in links:
                if link in seen or not same_site(start, link):
                    continue
                if urlsplit(link).path.lower().endswith(_SKIP_SUFFIXES):
                    continue
                seen.add(link)
                queue.append((link, level + 1, None))
        return max_depth

    def _rel(self, path: Path) -> Path:
        return path.relative_to(self.knowledge_dir)

    async def _fetch_known(self, url: str) -> Page:
        """GET, conditional on what the stored copy says when ``url`` was imported before."""
        known = self._known.get(url)
        if known is None:
            return await self._fetch(url)
        etag, modified = known.meta.get("etag"), known.meta.get("last_modified")
        return await self._fetch(
            url,
            etag=etag if isinstance(etag, str) else None,
            last_modified=modified if isinstance(modified, str) else None,
        )

    def _fetch_failed(self, url: str, exc: FetchError) -> None:
        known = self._known.get(url)
        if known is None:
            self._skip(url, str(exc))
            return
        self._visited.add(url)
        rel = self._rel(known.path)
        if exc.status in (404, 410) or str(exc) == ROBOTS_EXCLUDED:
            self._remove(known.path, rel, url, f"HTTP {exc.status}" if exc.status else str(exc))
        else:
            self._record(Item(url, "skipped", f"{exc} (kept the last version)", rel))

    async def _sitemap_urls(self, start: str, first: Page) -> list[str]:
        """Page URLs of a sitemap (and of the sitemaps a sitemap index lists), same site only."""
        urls: list[str] = []
        todo: deque[tuple[str, Page | None]] = deque([(start, first)])
        done: set[str] = set()
        while todo and len(done) < MAX_SITEMAPS:
            url, page = todo.popleft()
            done.add(url)
            if page is None:
                try:
                    page = await self._fetch(url)
                except FetchError as exc:
                    self._skip(url, f"sitemap: {exc}")
                    continue
            try:
                kind, locs = _parse_sitemap(page.content)
            except ExtractError as exc:
                self._skip(url, f"sitemap: {exc}")
                continue
            for loc in locs:
                if not same_site(start, loc):
                    continue
                if kind == "sitemapindex":
                    if loc not in done:
                        todo.append((loc, None))
                else:
                    urls.append(loc)
        return list(dict.fromkeys(urls))

    # --- files ---------------------------------------------------------------------------

    async def import_path(self, path: Path) -> bool:
        """Import a file or every supported file of a folder; False when none could be read."""
        listed = await asyncio.to_thread(_list_files, path)
        for f, base, reason in listed:
            if reason:
                self._skip(str(f), reason)
            else:
                await self.import_file(f, base=base)
        return any(not reason for _, _, reason in listed)

    async def import_file(self, path: Path, *, base: Path | None) -> None:
        kind = FILE_SUFFIXES[path.suffix.lower()]
        try:
            source, extracted = await asyncio.to_thread(
                _read_file, path, kind, self.limits.max_bytes
            )
        except (ExtractError, OSError) as exc:
            self._skip(str(path), str(exc))
            return
        if isinstance(extracted, list):
            self._store_csv(path, extracted)
            return
        doc = Document(source, extracted.title, extracted.body, _FILE_TYPES[kind],
                       lang=extracted.lang)
        base_s = str(base) if base else None
        self._store(doc, base=base_s, existed=_exists(self.knowledge_dir, doc, base=base_s))

    def _store_csv(self, path: Path, rows: list[dict[str, str]]) -> None:
        """Questions and answers become an ordinary YAML FAQ file: they are complete answers."""
        rel = Path(IMPORTED_DIR, f"{slug(path.stem, 'faq')}.yaml")
        entries = []
        for row in rows:
            entry: dict[str, object] = {"question": row["question"], "answer": row["answer"]}
            if row.get("url"):
                entry["url"] = row["url"]
            if row.get("tags"):
                entry["tags"] = [t.strip() for t in row["tags"].split(",") if t.strip()]
            entries.append(entry)
        header = f"# Imported from {path.resolve().as_uri()} on {now_iso()}; edit freely.\n"
        text = header + yaml.safe_dump(entries, allow_unicode=True, sort_keys=False, width=100)
        target = self.knowledge_dir / rel
        old = target.read_text(encoding="utf-8") if target.exists() else None
        same = old is not None and old.split("\n", 1)[-1] == text.split("\n", 1)[-1]
        if not same:
            write_atomic(target, text)
        status = "unchanged" if same else ("updated" if old is not None else "added")
        self._record(Item(str(path), status, path=rel, passages=0 if same else len(entries)))

    # --- refresh -------------------------------------------------------------------------

    async def refresh(self) -> Report:
        """Re-fetch every imported document; see the module docstring.

        The web sources recorded by earlier imports (``imported/_sources.yaml``) are crawled
        again first, so pages added to a sitemap or newly linked are imported too; documents
        those crawls did not reach are then re-fetched one by one."""
        self._known = {s.source: s for s in iter_stored(self.knowledge_dir)}
        for source in read_sources(self.knowledge_dir):
            try:
                await self.import_site(source["url"], depth=source.get("depth"))
            except Exception as exc:  # never stop a refresh for one source
                log.exception("import: refreshing %s failed", source["url"])
                self._skip(source["url"], f"{type(exc).__name__}: {exc}")
        for stored in self._known.values():
            if stored.source in self._visited or not stored.path.exists():
                continue
            rel = self._rel(stored.path)
            source = stored.source
            try:
                if source.startswith(("http://", "https://")):
                    await self._refresh_url(stored)
                elif source.startswith("file://"):
                    await self._refresh_file(stored.path, rel, stored.meta)
                else:
                    self._record(Item(source, "skipped", "unknown source", rel))
            except Exception as exc:  # never stop a refresh for one document
                log.exception("import: refreshing %s failed", source)
                self._record(Item(source, "skipped", f"{type(exc).__name__}: {exc}", rel))
        return self.report

    def _remove(self, path: Path, rel: Path, source: str, reason: str) -> None:
        path.unlink(missing_ok=True)
        self._record(Item(source, "removed", reason, rel))

    async def _refresh_url(self, stored: Stored) -> None:
        source = stored.source
        try:
            page = await self._fetch_known(source)
        except FetchError as exc:
            self._fetch_failed(source, exc)
            return
        rel = self._rel(stored.path)
        if page.status == 304:
            self._record(Item(source, "unchanged", "not modified", rel))
            return
        try:
            doc, _ = await asyncio.to_thread(_document_from_page, source, page)
        except ExtractError as exc:
            self._record(Item(source, "skipped", f"{exc} (kept the last version)", rel))
            return
        self._replace(stored.path, rel, stored.meta, doc)

    async def _refresh_file(self, path: Path, rel: Path, meta: dict) -> None:
        source = meta["source"]
        local = Path(unquote(urlsplit(source).path))
        if not _inside_any(local, read_local_sources(self.knowledge_dir)):
            self._record(Item(source, "skipped", "not inside a file or folder imported with "
                              "`supportbot knowledge import` (import it again to refresh it)",
                              rel))
            return
        kind = FILE_SUFFIXES.get(local.suffix.lower())
        if kind is None or kind == "csv":
            self._record(Item(source, "skipped", "unsupported file type", rel))
            return
        try:
            _, extracted = await asyncio.to_thread(_read_file, local, kind, self.limits.max_bytes)
        except FileNotFoundError:
            self._remove(path, rel, source, "file no longer exists")
            return
        except (ExtractError, OSError) as exc:
            self._record(Item(source, "skipped", f"{exc} (kept the last version)", rel))
            return
        assert isinstance(extracted, Extracted)
        doc = Document(source, extracted.title, extracted.body, _FILE_TYPES[kind],
                       lang=extracted.lang)
        self._replace(path, rel, meta, doc)

    def _replace(self, path: Path, rel: Path, meta: dict, doc: Document) -> None:
        """Rewrite the file in place (same path) only when the source's content changed."""
        if meta.get("content_hash") == doc.content_hash:
            self._record(Item(doc.source, "unchanged", "same content", rel))
            return
        write_atomic(path, render(doc))
        self._record(Item(doc.source, "updated", path=rel, passages=len(split(doc.body))))


_FILE_TYPES = {"markdown": "text/markdown", "text": "text/plain", "html": "text/html",
               "pdf": "application/pdf"}


def _inside_any(local: Path, roots: list[Path]) -> bool:
    """True when ``local`` (symlinks resolved) is one of ``roots`` or lies under one."""
    try:
        target = local.resolve()
    except (OSError, RuntimeError):
        return False
    return any(target == root or target.is_relative_to(root) for root in roots)


def _exists(knowledge_dir: Path, doc: Document, *, base: str | None = None) -> bool:
    return (knowledge_dir / relative_path_for(doc.source, base=base)).exists()


def _list_files(path: Path) -> list[tuple[Path, Path | None, str]]:
    """(file, folder it was found in, reason to skip it or "") for a file or folder source."""
    if not path.exists():
        return [(path, None, "no such file or folder")]
    if not path.is_dir():
        ok = path.suffix.lower() in FILE_SUFFIXES
        return [(path, None, "" if ok else f"unsupported file type {path.suffix or '(none)'}")]
    root = path.resolve()
    out: list[tuple[Path, Path | None, str]] = []
    for f in sorted(path.rglob("*")):
        if any(p.startswith(".") for p in f.relative_to(path).parts) or not f.is_file():
            continue
        if not f.resolve().is_relative_to(root):
            out.append((f, root, "outside the folder (a link pointing elsewhere)"))
        elif f.suffix.lower() not in FILE_SUFFIXES:
            out.append((f, root, f"unsupported file type {f.suffix or '(none)'}"))
        else:
            out.append((f, root, ""))
    return out


def _read_file(
    path: Path, kind: str, max_bytes: int
) -> tuple[str, Extracted | list[dict[str, str]]]:
    """(file:// source, extracted text or CSV rows); runs in a thread."""
    source = path.resolve().as_uri()
    if path.stat().st_size > max_bytes:
        raise ExtractError(f"larger than {max_bytes} bytes")
    data = path.read_bytes()
    if kind == "csv":
        return source, extract.faq_csv(data)
    return source, _extract_file(kind, data, path.name, source)


def _extract_file(kind: str, data: bytes, name: str, source: str) -> Extracted:
    if kind == "pdf":
        return extract.pdf(data, name=name)
    if kind == "html":
        return extract.html(data, url=source)
    if kind == "markdown":
        return extract.markdown(data, name=name)
    return extract.plain(data, name=name)


def _document_from_page(url: str, page: Page) -> tuple[Document, list[str]]:
    """Extract a fetched page (runs in a thread: parsing a big page takes a while)."""
    ctype = page.content_type
    if page.content.startswith(b"%PDF-"):
        ctype = "application/pdf"  # often served as application/octet-stream
    links: list[str] = []
    if ctype in HTML_TYPES:
        extracted = extract.html(page.content, url=page.url, charset=page.charset)
        links = extract.links(page.content, page.url, charset=page.charset)
    elif ctype == "application/pdf":
        extracted = extract.pdf(page.content, name=urlsplit(url).path.rsplit("/", 1)[-1] or url)
    elif ctype in ("text/plain", "text/markdown"):
        name = urlsplit(url).path.rsplit("/", 1)[-1] or url
        extracted = extract.markdown(page.content, name=name)
    else:
        raise ExtractError(f"not HTML, PDF or text ({ctype or 'no content type'})")
    if not extracted.title:
        extracted.title = urlsplit(url).path.strip("/") or urlsplit(url).hostname or url
    doc = Document(url, extracted.title, extracted.body, ctype or "text/html",
                   etag=page.etag, last_modified=page.last_modified, lang=extracted.lang)
    return doc, links


def _is_sitemap(page: Page) -> bool:
    if page.content_type in XML_TYPES:
        return True
    head = page.content[:500].lstrip().lower()
    return urlsplit(page.url).path.endswith(".xml") and head.startswith((b"<?xml", b"<urlset",
                                                                         b"<sitemapindex"))


def _parse_sitemap(data: bytes) -> tuple[str, list[str]]:
    """("urlset" | "sitemapindex", locations); entities and DTDs are never resolved."""
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False,
                             huge_tree=False, remove_comments=True)
    try:
        root = etree.fromstring(data, parser)
    except etree.XMLSyntaxError as exc:
        raise ExtractError(f"not a valid sitemap: {exc}") from None
    if root is None:
        raise ExtractError("empty sitemap")
    kind = etree.QName(root).localname
    if kind not in ("urlset", "sitemapindex"):
        raise ExtractError(f"not a sitemap (root element {kind!r})")
    locs = [(el.text or "").strip() for el in root.iter("{*}loc")]
    return kind, [u for u in locs if u.startswith(("http://", "https://"))]
