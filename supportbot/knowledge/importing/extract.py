"""Readable text out of HTML, PDF, Markdown and plain text; FAQ entries out of CSV.

HTML goes through trafilatura, which keeps a page's main content (headings, paragraphs, lists,
tables) and drops navigation, footers and scripts. PDF goes through pypdf, whose own limits stop
decompression bombs (``LimitReachedError``); on top of that we cap pages and characters. Every
failure is an ``ExtractError`` whose message is the reason shown to the user.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass

import lxml.html
import trafilatura
from pypdf import PdfReader, apply_configuration
from pypdf.errors import PyPdfError

from supportbot.knowledge.loader import MAX_FILE_BYTES

MAX_PDF_PAGES = 2000
# extracted text per document (UTF-8): what the knowledge loader still reads (MAX_FILE_BYTES),
# minus room for the front matter; about 500 pages of prose
MAX_TEXT_BYTES = MAX_FILE_BYTES - 20_000
MIN_TEXT_CHARS = 20  # less than this is not a document ("script-only page")
MAX_CSV_ROWS = 50_000
# pypdf's own caps on what one stream may inflate to (its default is 75 MB): a "PDF bomb" of a
# few kilobytes stops here with LimitReachedError instead of filling memory
PDF_STREAM_BYTES = 16_000_000
_PDF_LIMITS = {
    name: PDF_STREAM_BYTES
    for name in (
        "maximum_declared_stream_length",
        "array_based_stream_maximum_output_length",
        "zlib_maximum_output_length",
        "lzw_maximum_output_length",
        "run_length_maximum_output_length",
        "image_maximum_buffer_size",
    )
}


class ExtractError(Exception):
    """A document that cannot be imported; the message says why."""


@dataclass(slots=True)
class Extracted:
    title: str
    body: str  # Markdown
    lang: str | None = None


def _decode(data: bytes, charset: str | None) -> str:
    for enc in filter(None, (charset, "utf-8")):
        try:
            return data.decode(enc)
        except (LookupError, UnicodeDecodeError):
            continue
    return data.decode("latin-1")


def _first_heading(body: str) -> str | None:
    m = re.search(r"^#{1,2}[ \t]+(.+?)[ \t#]*$", body, re.M)
    return m.group(1).strip() if m else None


def _check_size(body: str) -> str:
    body = body.strip()
    if len(body) < MIN_TEXT_CHARS:
        raise ExtractError("no readable text")
    if len(body.encode()) > MAX_TEXT_BYTES:
        raise ExtractError(f"text larger than {MAX_TEXT_BYTES:,} bytes: split the document")
    return body


def html(data: bytes, *, url: str | None = None, charset: str | None = None) -> Extracted:
    """The main content of an HTML page as Markdown, and its title."""
    text = _decode(data, charset)
    try:
        body = trafilatura.extract(
            text,
            url=url,
            output_format="markdown",
            include_comments=False,
            include_tables=True,
            include_links=False,
            include_images=False,
            favor_recall=True,
            deduplicate=False,
        )
        meta = trafilatura.extract_metadata(text)
    except Exception as exc:  # trafilatura/lxml on hostile markup: skip the page, never crash
        raise ExtractError(f"cannot parse HTML: {type(exc).__name__}") from exc
    if not body:
        raise ExtractError("no readable text (empty, script-only or not an article)")
    body = _check_size(body)
    title = (meta.title if meta is not None else None) or _first_heading(body) or ""
    lang = meta.language if meta is not None else None
    return Extracted(" ".join(title.split()), body, lang)


def links(data: bytes, base_url: str, *, charset: str | None = None) -> list[str]:
    """Absolute targets of the page's ``<a href>`` links, without fragments, in page order."""
    try:
        doc = lxml.html.document_fromstring(_decode(data, charset), base_url=base_url)
        doc.make_links_absolute(base_url, resolve_base_href=True, handle_failures="discard")
    except Exception:  # malformed markup: a page without links
        return []
    out: list[str] = []
    for a in doc.iter("a"):
        href = a.get("href")
        if href and href.startswith(("http://", "https://")):
            out.append(href.split("#", 1)[0])
    return list(dict.fromkeys(out))


def pdf(data: bytes, *, name: str) -> Extracted:
    """The text of a PDF, page by page; encrypted PDFs and bombs are refused."""
    with apply_configuration(**_PDF_LIMITS):
        return _pdf(data, name)


def _pdf(data: bytes, name: str) -> Extracted:
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            try:
                ok = reader.decrypt("")  # "encrypted" with an empty user password: readable
            except Exception:
                ok = 0
            if not ok:
                raise ExtractError("encrypted PDF (needs a password)")
        if len(reader.pages) > MAX_PDF_PAGES:
            raise ExtractError(f"PDF has more than {MAX_PDF_PAGES} pages")
        parts: list[str] = []
        size = 0
        for page in reader.pages:
            text = page.extract_text() or ""
            size += len(text.encode())
            if size > MAX_TEXT_BYTES:
                raise ExtractError(f"text larger than {MAX_TEXT_BYTES:,} bytes: split the document")
            parts.append(_tidy_pdf_text(text))
        title = ""
        meta = reader.metadata
        if meta is not None and meta.title:
            title = str(meta.title)
    except ExtractError:
        raise
    except (PyPdfError, ValueError, KeyError, TypeError, RecursionError, OSError) as exc:
        raise ExtractError(f"cannot read PDF: {type(exc).__name__}: {exc}"[:200]) from exc
    body = _check_size("\n\n".join(p for p in parts if p))
    if not title.strip():
        first = next((ln.strip() for ln in body.splitlines() if ln.strip()), name)
        title = first if len(first) <= 120 else name
    return Extracted(" ".join(title.split()), body)


def _tidy_pdf_text(text: str) -> str:
    """PDF text comes as lines: join the lines of a paragraph, keep blank-line breaks."""
    paras = re.split(r"\n\s*\n", text)
    return "\n\n".join(" ".join(p.split()) for p in paras if p.strip())


def markdown(data: bytes, *, name: str) -> Extracted:
    text = _decode(data, None)
    text = re.sub(r"\A---[ \t]*\r?\n.*?^---[ \t]*\r?\n?", "", text, count=1, flags=re.S | re.M)
    body = _check_size(text)
    return Extracted(_first_heading(body) or name, body)


def plain(data: bytes, *, name: str) -> Extracted:
    body = _check_size(_decode(data, None))
    return Extracted(name, body)


def faq_csv(data: bytes) -> list[dict[str, str]]:
    """Rows of a CSV with ``question`` and ``answer`` columns (optional ``url``, ``tags``).

    Without a header row, the first two columns are taken as question and answer."""
    text = _decode(data, None).lstrip("\ufeff")
    rows = list(csv.reader(io.StringIO(text)))
    if not rows:
        raise ExtractError("empty CSV")
    if len(rows) > MAX_CSV_ROWS:
        raise ExtractError(f"CSV has more than {MAX_CSV_ROWS} rows")
    header = [h.strip().lower() for h in rows[0]]
    if "question" in header and "answer" in header:
        cols = {name: header.index(name) for name in ("question", "answer", "url", "tags")
                if name in header}
        rows = rows[1:]
    else:
        cols = {"question": 0, "answer": 1}
    out: list[dict[str, str]] = []
    for row in rows:
        entry = {k: row[i].strip() for k, i in cols.items() if i < len(row) and row[i].strip()}
        if entry.get("question") and entry.get("answer"):
            out.append(entry)
    if not out:
        raise ExtractError("no rows with both a question and an answer")
    return out
