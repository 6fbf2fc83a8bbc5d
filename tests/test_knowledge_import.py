"""``supportbot knowledge import`` against a help center served on loopback, and generated PDFs.

The site (tests/data/helpcenter) has a sitemap, a robots.txt that excludes /internal/, an old
URL that redirects, a redirect loop, a redirect to another host, a 404, links to other hosts and
a page that changes between the first import and ``--refresh``. The server is a real HTTP
server (stdlib, in a thread) that honours If-None-Match, so refresh's conditional requests are
exercised end to end through httpx.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import threading
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import BytesIO
from pathlib import Path

import pytest
from click.testing import CliRunner

from supportbot.config import Settings
from supportbot.knowledge import KnowledgeBase
from supportbot.knowledge.importing.fetch import Limits
from supportbot.knowledge.importing.passages import split
from supportbot.knowledge.importing.runner import Importer
from supportbot.knowledge.importing.schedule import ScheduledRefresh

SITE = Path(__file__).parent / "data" / "helpcenter"


# --- a help center on loopback -------------------------------------------------------------


class HelpCenter:
    """Serves tests/data/helpcenter; ``version = 2`` switches to the changed site."""

    def __init__(self) -> None:
        self.version = 1
        self.requests: list[tuple[str, int, str | None]] = []  # (path, status, If-None-Match)
        self.extra: dict[str, tuple[int, str, bytes]] = {}  # path -> (status, type, body)
        self.gone: set[str] = set()  # paths answered 410
        self.release = threading.Event()  # /slow answers when set
        site = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                if self.path == "/endless.html":  # no Content-Length: the body just goes on
                    self.send_response(200)
                    self.send_header("Content-Type", "text/html")
                    self.end_headers()
                    with contextlib.suppress(OSError):  # the client hangs up, as it should
                        for _ in range(50):
                            self.wfile.write(b"<p>more</p>" * 10_000)
                    return
                status, headers, body = site.respond(self.path, self.headers.get("If-None-Match"))
                site.requests.append((self.path, status, self.headers.get("If-None-Match")))
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def respond(self, path: str, inm: str | None) -> tuple[int, dict[str, str], bytes]:
        redirects = {
            "/old/refunds": "/articles/returns.html",
            "/loop/a": "/loop/b",
            "/loop/b": "/loop/a",
            "/login": "http://elsewhere.invalid/login",
        }
        if path in redirects:
            return 301, {"Location": redirects[path]}, b""
        if path == "/slow":
            self.release.wait(10)
            return 200, {"Content-Type": "text/html"}, b"<p>too late</p>"
        if path in self.gone:
            return 410, {"Content-Type": "text/html"}, b"gone"
        if path in self.extra:
            status, ctype, body = self.extra[path]
            return status, {"Content-Type": ctype}, body
        rel = path.lstrip("/") or "index.html"
        candidates = [SITE / "v2" / rel] if self.version == 2 else []
        candidates.append(SITE / rel)
        file = next((c for c in candidates if c.is_file() and ".." not in rel), None)
        if file is None:
            return 404, {"Content-Type": "text/html"}, b"<h1>Not found</h1>"
        body = file.read_bytes().replace(b"{base}", self.base.encode())
        ctype = {".xml": "application/xml", ".txt": "text/plain"}.get(file.suffix, "text/html")
        etag = '"' + hashlib.sha1(body).hexdigest() + '"'
        if inm == etag:
            return 304, {"ETag": etag}, b""
        return 200, {"Content-Type": f"{ctype}; charset=utf-8", "ETag": etag}, body

    def __enter__(self) -> HelpCenter:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()

    def fetched(self, path: str) -> int:
        return sum(1 for p, status, _ in self.requests if p == path and status == 200)


@pytest.fixture
def site() -> Iterator[HelpCenter]:
    with HelpCenter() as s:
        yield s


def limits(**kw: object) -> Limits:
    values: dict = {"per_host_interval": 0.0, "timeout": 5.0, "max_pages": 100}
    values.update(kw)
    return Limits(**values)


# --- PDFs, written by hand so the test controls every byte --------------------------------


def make_pdf(pages: list[list[str]], *, title: str | None = None, bomb_bytes: int = 0) -> bytes:
    """A minimal valid PDF: one Helvetica text line per string; ``bomb_bytes`` adds a page whose
    content stream inflates to that many bytes from a few kilobytes."""
    objects: list[bytes] = []

    def add(body: bytes) -> int:
        objects.append(body)
        return len(objects)

    def stream(data: bytes, filters: str = "") -> bytes:
        return b"<< /Length %d%s >>\nstream\n" % (len(data), filters.encode()) + data + (
            b"\nendstream"
        )

    font = add(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    pages_id = len(objects) + 2 * (len(pages) + (1 if bomb_bytes else 0)) + bool(title) + 1
    kids = []
    for lines in pages:
        ops = [b"BT /F1 11 Tf 14 TL 72 760 Td"]
        for line in lines:
            text = line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
            ops.append(b"(" + text.encode("latin-1") + b") Tj T*")
        ops.append(b"ET")
        content = add(stream(b"\n".join(ops)))
        kids.append(add(b"<< /Type /Page /Parent %d 0 R /MediaBox [0 0 612 792] /Contents %d 0 R "
                        b"/Resources << /Font << /F1 %d 0 R >> >> >>" % (pages_id, content, font)))
    if bomb_bytes:
        z = zlib.compressobj(9)
        packed = z.compress(b"BT /F1 11 Tf 72 760 Td (Boom) Tj ET\n")
        packed += b"".join(z.compress(b" " * 1_000_000) for _ in range(bomb_bytes // 1_000_000))
        packed += z.flush()
        content = add(stream(packed, " /Filter /FlateDecode"))
        kids.append(add(b"<< /Type /Page /Parent %d 0 R /MediaBox [0 0 612 792] /Contents %d 0 R "
                        b"/Resources << /Font << /F1 %d 0 R >> >> >>" % (pages_id, content, font)))
    info = add(b"<< /Title (%s) >>" % title.encode("latin-1")) if title else None
    assert len(objects) + 1 == pages_id
    refs = b" ".join(b"%d 0 R" % k for k in kids)
    add(b"<< /Type /Pages /Kids [%s] /Count %d >>" % (refs, len(kids)))
    catalog = add(b"<< /Type /Catalog /Pages %d 0 R >>" % pages_id)
    out = BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for i, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n" % i + body + b"\nendobj\n")
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    for off in offsets:
        out.write(b"%010d 00000 n \n" % off)
    trailer = b"<< /Size %d /Root %d 0 R" % (len(objects) + 1, catalog)
    if info:
        trailer += b" /Info %d 0 R" % info
    out.write(b"trailer\n" + trailer + b" >>\nstartxref\n%d\n%%%%EOF\n" % xref)
    return out.getvalue()


def encrypt_pdf(data: bytes, password: str) -> bytes:
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(BytesIO(data)))
    writer.encrypt(user_password=password, algorithm="RC4-128")
    out = BytesIO()
    writer.write(out)
    return out.getvalue()


WARRANTY = [
    ["Acme Appliance Warranty"],
    [
        "Every Acme storage appliance has a warranty of three years from the delivery date.",
        "The warranty covers disk failures and defects of the power supply.",
    ],
    [
        "To claim the warranty, write to hardware@acme.example with the serial number,",
        "which is printed on the label under the appliance.",
    ],
]


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
<!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
<!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
<!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
<!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
<!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
<!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">]>
<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9"><url><loc>&lol9;</loc></url></urlset>
"""


def imported_files(kdir: Path) -> list[str]:
    return sorted(p.relative_to(kdir).as_posix() for p in (kdir / "imported").rglob("*.md"))


async def open_kb(kdir: Path, tmp: Path) -> KnowledgeBase:
    kb = KnowledgeBase(kdir, tmp / "index.sqlite3")
    await kb.refresh()
    return kb


# --- the site ------------------------------------------------------------------------------


async def test_sitemap_import_then_search_cites_the_page(site: HelpCenter, tmp_path: Path):
    kdir = tmp_path / "knowledge"
    async with Importer(kdir, limits=limits()) as importer:  # a sitemap's pages, no links
        report = await importer.run([f"{site.base}/sitemap.xml"])
    host = f"127-0-0-1-{site.server.server_port}"
    assert imported_files(kdir) == [
        f"imported/{host}/articles-{name}.md"
        for name in sorted(["getting-started", "account-security", "billing", "shipping",
                            "returns", "integrations", "troubleshooting", "privacy"])
    ]
    skipped = {i.source: i.reason for i in report.items if i.status == "skipped"}
    assert skipped == {f"{site.base}/internal/staff-notes.html": "excluded by robots.txt"}
    assert not any("/internal/" in p for p, _, _ in site.requests)  # robots.txt checked first
    assert not any("elsewhere" in p for p, _, _ in site.requests)
    assert report.count("added") == 8

    text = (kdir / f"imported/{host}/articles-returns.md").read_text()
    assert text.startswith("---\nkind: imported\ntitle: Returns and refunds\n")
    assert f"source: {site.base}/articles/returns.html" in text
    assert "content_hash: sha256:" in text and "etag:" in text and "fetched_at:" in text
    # boilerplate dropped: navigation, related articles, footer, scripts
    for noise in ("Follow us", "Related articles", "Was this article helpful", "analytics"):
        assert noise not in text

    kb = await open_kb(kdir, tmp_path)
    try:
        assert not kb.problems
        hits = await kb.search("how long until I get my refund", k=3)
        best = hits[0].entry
        assert best.kind == "passage"
        assert best.question == "Returns and refunds — Refund timing"
        assert best.url == f"{site.base}/articles/returns.html"
        assert "5 business days" in best.answer
        assert "Rotterdam" not in best.answer  # a passage, not the whole site or page
        hits = await kb.search("lost my phone with the authenticator app")
        assert hits[0].entry.question == "Account security — Lost your phone"
    finally:
        await kb.aclose()


async def test_crawl_follows_same_site_links_once(site: HelpCenter, tmp_path: Path):
    kdir = tmp_path / "knowledge"
    site.extra["/brochure.pdf"] = (200, "application/octet-stream",  # sniffed as a PDF
                                   make_pdf(WARRANTY, title="Brochure"))
    async with Importer(kdir, limits=limits(max_depth=1)) as importer:
        report = await importer.run([f"{site.base}/index.html"])
    reasons = {i.source.removeprefix(site.base): i.reason for i in report.items
               if i.status == "skipped"}
    assert reasons == {
        "/internal/staff-notes.html": "excluded by robots.txt",
        "/articles/removed.html": "HTTP 404",
        "/loop/a": "redirect loop",
        "/login": "redirects to another site (elsewhere.invalid)",
    }
    added = sorted(i.source.removeprefix(site.base) for i in report.items if i.status == "added")
    # /old/refunds redirects to a page already imported from the index: imported once
    assert added == sorted(
        ["/index.html", "/brochure.pdf"]
        + [f"/articles/{n}.html" for n in ["getting-started", "account-security", "billing",
                                            "shipping", "returns", "integrations",
                                            "troubleshooting", "privacy"]]
    )
    assert len(imported_files(kdir)) == 10
    assert site.fetched("/articles/billing.html") == 1  # linked from every page, fetched once
    assert site.fetched("/logo.png") == 0  # not a page: never requested
    assert not any("elsewhere" in p for p, _, _ in site.requests)


async def test_refresh_reindexes_only_what_changed(site: HelpCenter, tmp_path: Path):
    kdir = tmp_path / "knowledge"
    async with Importer(kdir, limits=limits(max_depth=0)) as importer:
        await importer.run([f"{site.base}/sitemap.xml"])
    kb = await open_kb(kdir, tmp_path)
    try:
        hits = await kb.search("how much does shipping cost")
        assert "200 euros" in hits[0].entry.answer
        shipping = hits[0].entry.path
        # a staff edit to another page survives refreshes of an unchanged source
        billing = next(kdir.rglob("articles-billing.md"))
        billing.write_text(billing.read_text() + "\nEdited by staff.\n")
        await kb.refresh()

        site.version = 2  # shipping.html changes, the sitemap lists a new article
        site.gone.add("/articles/returns.html")
        site.requests.clear()
        async with Importer(kdir, limits=limits()) as importer:
            report = await importer.refresh()
        by_status: dict[str, list[str]] = {}
        for i in report.items:
            by_status.setdefault(i.status, []).append(i.source.removeprefix(site.base))
        assert by_status["updated"] == ["/articles/shipping.html"]
        assert by_status["removed"] == ["/articles/returns.html"]
        assert by_status["added"] == ["/articles/mobile-app.html"]  # found in the sitemap
        assert by_status["skipped"] == ["/internal/staff-notes.html"]  # robots.txt, as before
        assert len(by_status["unchanged"]) == 6
        # conditional requests: unchanged pages answered 304, never re-sent
        statuses = {p: (s, inm) for p, s, inm in site.requests}
        assert statuses["/articles/billing.html"][0] == 304
        assert statuses["/articles/billing.html"][1] is not None
        assert "Edited by staff." in billing.read_text()

        await kb.refresh()
        host = f"imported/127-0-0-1-{site.server.server_port}"
        assert sorted(kb.last_reindexed) == sorted(
            [shipping.relative_to(kdir).as_posix(), f"{host}/articles-returns.md",
             f"{host}/articles-mobile-app.md"]
        )
        hits = await kb.search("how much does shipping cost")
        assert "150 euros" in hits[0].entry.answer
        assert not any("returns" in (h.entry.url or "") for h in await kb.search("refund timing"))
        hits = await kb.search("is there an app for android")
        assert hits[0].entry.url == f"{site.base}/articles/mobile-app.html"

        # nothing changed since: a second refresh touches nothing
        async with Importer(kdir, limits=limits()) as importer:
            report = await importer.refresh()
        assert {i.status for i in report.items} == {"unchanged", "skipped"}
        await kb.refresh()
        assert kb.last_reindexed == []
    finally:
        await kb.aclose()


async def test_hostile_pages_are_skipped_with_a_reason(site: HelpCenter, tmp_path: Path):
    kdir = tmp_path / "knowledge"
    site.extra.update({
        "/huge.html": (200, "text/html", b"<html><body>" + b"<p>spam</p>" * 50_000 + b"</body>"),
        "/scripts.html": (200, "text/html", b"<html><script>" + b"x=1;" * 1000 + b"</script>"),
        "/malformed.html": (200, "text/html", b"<html<<body><p>\x00\xff\xfe <div><<<p>>>"),
        "/image.html": (200, "image/png", b"\x89PNG\r\n"),
        "/broken.html": (500, "text/html", b"oops"),
        "/bomb.pdf": (200, "application/pdf", make_pdf(WARRANTY, bomb_bytes=40_000_000)),
        "/laughs.xml": (200, "application/xml", BILLION_LAUGHS),
        "/foreign.xml": (200, "application/xml", b'<urlset xmlns="http://www.sitemaps.org/schemas/'
                         b'sitemap/0.9"><url><loc>http://elsewhere.invalid/a</loc></url></urlset>'),
    })
    async with Importer(kdir, limits=limits(max_bytes=200_000)) as importer:
        report = await importer.run([f"{site.base}{p}" for p in [*site.extra, "/endless.html"]])
    reasons = {i.source.removeprefix(site.base): i.reason for i in report.items}
    assert reasons["/huge.html"] == "larger than 200000 bytes"  # said so in Content-Length
    assert reasons["/endless.html"] == "larger than 200000 bytes"  # counted while streaming
    assert reasons["/scripts.html"].startswith("no readable text")
    assert reasons["/malformed.html"].startswith(("no readable text", "cannot parse HTML"))
    assert reasons["/image.html"] == "not HTML, PDF or text (image/png)"
    assert reasons["/broken.html"] == "HTTP 500"
    assert reasons["/bomb.pdf"].startswith("cannot read PDF: LimitReachedError")
    assert reasons["/laughs.xml"].startswith("sitemap: not a valid sitemap: Maximum entity")
    assert reasons["/foreign.xml"] == "sitemap lists no page of this site"
    assert {i.status for i in report.items} == {"skipped"}
    assert not (kdir / "imported").exists() or imported_files(kdir) == []


async def test_timeout_and_page_cap(site: HelpCenter, tmp_path: Path):
    kdir = tmp_path / "knowledge"
    async with Importer(kdir, limits=limits(max_pages=3, max_depth=3)) as importer:
        report = await importer.run([f"{site.base}/index.html", "http://127.0.0.1:9/x"])
    assert report.count("added") == 3
    assert [i.reason for i in report.items if "limit" in i.reason] == [
        "page limit (3) reached, 12 more pages not fetched", "page limit (3) reached"
    ]
    # a closed port: a connection error for that source, the rest went on
    async with Importer(kdir, limits=limits(max_depth=0)) as importer:
        report = await importer.run(["http://127.0.0.1:9/x", f"{site.base}/articles/billing.html"])
    assert report.items[0].status == "skipped" and "Connect" in report.items[0].reason
    assert report.items[-1].status == "unchanged"
    # a server that never answers: that document times out, the import goes on
    async with Importer(kdir, limits=limits(timeout=0.3, max_depth=0)) as importer:
        report = await importer.run([f"{site.base}/slow", f"{site.base}/articles/billing.html"])
    assert [(i.status, i.reason) for i in report.items] == [
        ("skipped", "timed out after 0.3 s"), ("unchanged", "")
    ]


async def test_serve_refreshes_on_a_schedule(site: HelpCenter, tmp_path: Path):
    kdir = tmp_path / "knowledge"
    kdir.mkdir()
    async with Importer(kdir, limits=limits(max_depth=0)) as importer:
        await importer.run([f"{site.base}/articles/shipping.html"])
    off = ScheduledRefresh.start(Settings(knowledge_dir=kdir), limits())
    assert off._task is None  # default: no scheduled refresh
    site.version = 2
    settings = Settings(knowledge_dir=kdir, knowledge_refresh_hours=0.05 / 3600)
    scheduler = ScheduledRefresh.start(settings, limits())
    try:
        for _ in range(500):
            if scheduler.runs:
                break
            await asyncio.sleep(0.01)
    finally:
        await scheduler.stop()
    assert scheduler.runs >= 1
    assert "150 euros" in next(kdir.rglob("articles-shipping.md")).read_text()


async def test_supportbot_serve_runs_the_scheduled_refresh(site: HelpCenter, tmp_path: Path):
    import socket

    from supportbot.server import run_server

    kdir = tmp_path / "knowledge"
    kdir.mkdir()
    async with Importer(kdir, limits=limits(max_depth=0)) as importer:
        await importer.run([f"{site.base}/articles/shipping.html"])
    page = next(kdir.rglob("articles-shipping.md"))
    site.version = 2
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # 0.2 s: the per-host rate (1 request/s by default) makes the refresh itself take ~2 s
    settings = Settings(knowledge_dir=kdir, data_dir=tmp_path / "data",
                        knowledge_refresh_hours=0.2 / 3600)
    serving = asyncio.create_task(run_server(settings, host="127.0.0.1", port=port))
    try:
        for _ in range(3000):
            if "150 euros" in page.read_text() or serving.done():
                break
            await asyncio.sleep(0.01)
    finally:
        serving.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await serving
    assert "150 euros" in page.read_text()


# --- files ---------------------------------------------------------------------------------


async def test_folder_of_documents_pdfs_and_csv(tmp_path: Path):
    docs = tmp_path / "docs"
    (docs / "guides").mkdir(parents=True)
    (docs / "guides" / "setup.md").write_text(
        "# Router setup\n\n## Ports\n\nOpen TCP port 8443 on your router for remote access.\n"
    )
    (docs / "notes.txt").write_text("Maintenance happens every Sunday between 02:00 and 04:00 UTC.")
    (docs / "page.html").write_text(
        "<html><head><title>Offline mode</title></head><body><article><h1>Offline mode</h1>"
        "<p>Files marked Available offline stay on your computer when you lose the connection."
        "</p></article></body></html>"
    )
    (docs / "warranty.pdf").write_bytes(make_pdf(WARRANTY, title="Appliance warranty"))
    (docs / "secret.pdf").write_bytes(encrypt_pdf(make_pdf(WARRANTY), "hunter2"))
    (docs / "faq.csv").write_text(
        "question,answer,url\nDo you have a mobile app?,Yes: iOS and Android.,https://acme.test/m\n"
        "Empty row,,\n"
    )
    (docs / "image.png").write_bytes(b"\x89PNG")
    (docs / "big.txt").write_text("word " * 400_000)  # more than the loader reads from one file
    outside = tmp_path / "outside.md"
    outside.write_text("# Secret\n\nThis file is outside the folder and must not be imported.")
    (docs / "link.md").symlink_to(outside)

    kdir = tmp_path / "knowledge"
    async with Importer(kdir) as importer:
        report = await importer.run([str(docs), str(tmp_path / "missing")])
    reasons = {Path(i.source).name: (i.status, i.reason) for i in report.items}
    assert reasons["secret.pdf"] == ("skipped", "encrypted PDF (needs a password)")
    assert reasons["link.md"] == ("skipped", "outside the folder (a link pointing elsewhere)")
    assert reasons["image.png"] == ("skipped", "unsupported file type .png")
    assert reasons["big.txt"] == ("skipped", "text larger than 1,980,000 bytes: split the document")
    assert reasons["missing"] == ("skipped", "no such file or folder")
    assert imported_files(kdir) == [
        "imported/files/docs/guides-setup.md",
        "imported/files/docs/notes.md",
        "imported/files/docs/page.md",
        "imported/files/docs/warranty.md",
    ]
    assert (kdir / "imported" / "faq.yaml").is_file()

    kb = await open_kb(kdir, tmp_path)
    try:
        assert not kb.problems
        hit = (await kb.search("how long is the appliance warranty"))[0]
        assert hit.entry.question == "Appliance warranty"
        assert "three years" in hit.entry.answer
        assert hit.entry.url is None  # a local file has no link to cite
        hit = (await kb.search("which port must be open on the router"))[0]
        assert hit.entry.question == "Router setup — Ports"
        hit = (await kb.search("is there a mobile app"))[0]
        assert hit.entry.kind == "faq" and hit.entry.url == "https://acme.test/m"
    finally:
        await kb.aclose()

    # refresh re-reads local files: one changed, one deleted
    (docs / "notes.txt").write_text("Maintenance now happens every Saturday at 22:00 UTC.")
    (docs / "page.html").unlink()
    async with Importer(kdir) as importer:
        report = await importer.refresh()
    status = {Path(i.source).name: i.status for i in report.items}
    assert status == {"setup.md": "unchanged", "notes.txt": "updated", "page.html": "removed",
                      "warranty.pdf": "unchanged"}


async def test_refresh_reads_local_files_only_inside_imported_folders(tmp_path: Path):
    """A front matter edited to name another file must not pull that file into the knowledge."""
    docs = tmp_path / "my docs"  # a space: the file:// source is percent-encoded
    docs.mkdir()
    (docs / "hours.md").write_text("# Opening hours\n\nWe are open 9 to 5.")
    secret = tmp_path / "secret.txt"
    secret.write_text("DATABASE_PASSWORD=hunter2")
    kdir = tmp_path / "knowledge"
    async with Importer(kdir) as importer:
        await importer.run([str(docs)])
    assert "path:" in (kdir / "imported" / "_sources.yaml").read_text()
    [imported] = [kdir / f for f in imported_files(kdir)]
    text = imported.read_text()
    forged = kdir / "imported" / "forged.md"
    forged.write_text(text.replace((docs / "hours.md").resolve().as_uri(), secret.as_uri())
                      .replace("content_hash:", "content_hash: x"))
    (docs / "hours.md").write_text("# Opening hours\n\nWe are open 8 to 6.")

    async with Importer(kdir) as importer:
        report = await importer.refresh()
    status = {Path(i.source).name: (i.status, i.reason) for i in report.items}
    assert status["hours.md"][0] == "updated"  # the space in the folder name is no obstacle
    assert status["secret.txt"][0] == "skipped"
    assert "not inside a file or folder imported" in status["secret.txt"][1]
    assert "hunter2" not in forged.read_text()
    assert "8 to 6" in imported.read_text()


# --- passages ------------------------------------------------------------------------------


def test_long_sections_are_cut_with_overlap():
    para = " ".join(f"Sentence {i} explains one more detail of the setup." for i in range(60))
    body = (f"# Guide\n\nIntro.\n\n## Install\n\n{para}\n\n## Use\n\nShort.\n\n"
            "```sh\n# not a heading\n```")
    parts = split(body)
    install = [t for h, t in parts if h == "Install"]
    assert len(install) >= 3
    assert all(len(t) <= 1300 for t in install)
    # consecutive pieces overlap, so a sentence cut at a boundary is whole in one of them
    assert install[0][-60:].split(" ", 1)[1] in install[1]
    assert [h for h, _ in parts][-1] == "Use" and "# not a heading" in parts[-1][1]


def test_cli_imports_and_reports(site: HelpCenter, tmp_path: Path, monkeypatch):
    kdir = tmp_path / "knowledge"
    kdir.mkdir()
    monkeypatch.setenv("SUPPORTBOT_KNOWLEDGE_DIR", str(kdir))
    monkeypatch.setenv("SUPPORTBOT_DATA_DIR", str(tmp_path / "data"))
    from supportbot.cli import cli

    result = CliRunner().invoke(
        cli, ["knowledge", "import", f"{site.base}/sitemap.xml", "--rate", "1000"]
    )
    assert result.exit_code == 0, result.output
    assert "skipped   " in result.output and "excluded by robots.txt" in result.output
    assert "8 added, 0 updated, 0 unchanged, 0 removed, 1 skipped; " in result.output

    result = CliRunner().invoke(cli, ["knowledge", "search", "refund timing", "--json"])
    assert result.exit_code == 0, result.output
    assert f'"url": "{site.base}/articles/returns.html"' in result.output.splitlines()[0]

    result = CliRunner().invoke(cli, ["knowledge", "import", "--refresh", "--rate", "1000"])
    assert result.exit_code == 0, result.output
    assert "0 added, 0 updated, 8 unchanged" in result.output

    result = CliRunner().invoke(cli, ["knowledge", "import", str(tmp_path / "nothing-here")])
    assert result.exit_code == 1
    assert "no such file or folder" in result.output

    # without a knowledge folder of their own, nothing is written into the package's example FAQ
    monkeypatch.delenv("SUPPORTBOT_KNOWLEDGE_DIR")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    result = CliRunner().invoke(cli, ["knowledge", "import", f"{site.base}/index.html"])
    assert result.exit_code == 1
    assert "no knowledge folder to import into" in result.output


async def test_refresh_reembeds_only_changed_passages(site: HelpCenter, tmp_path: Path, fake_llm):
    """With embeddings on, a changed page costs embeddings for its changed passages only."""
    kdir = tmp_path / "knowledge"
    kdir.mkdir()
    async with Importer(kdir, limits=limits(max_depth=0)) as importer:
        await importer.run([f"{site.base}/sitemap.xml"])
    settings = Settings(knowledge_dir=kdir, data_dir=tmp_path / "data",
                        embeddings_base_url=fake_llm.url, embeddings_api_key="k")

    def embedded() -> list[str]:
        out: list[str] = []
        for r in fake_llm.requests:
            if r.path.endswith("/embeddings"):
                inp = r.json["input"]
                out.extend([inp] if isinstance(inp, str) else inp)
        return out

    kb = KnowledgeBase.from_settings(settings)
    try:
        await kb.refresh()
        first = embedded()
        assert any("Rotterdam" in t for t in first)  # every passage was embedded once
        site.version = 2
        async with Importer(kdir, limits=limits()) as importer:
            await importer.refresh()
        fake_llm.reset()
        await kb.refresh()
        again = [t for t in embedded() if "150 euros" in t or "Rotterdam" in t or "EU" in t]
        assert again and all("150 euros" in t for t in again)  # the changed section only
        # its text (and at most its title), plus the article the new sitemap lists; nothing else
        assert len([t for t in embedded() if "Mobile app" not in t]) <= 2
        assert any("35 euros" in e.answer for e in kb.entries.values())
    finally:
        await kb.aclose()


def test_offline_answer_prefers_faq_and_quotes_passages_briefly():
    from supportbot.knowledge.importing.passages import excerpt, offline_answer
    from supportbot.knowledge.models import FaqEntry, Hit

    long_text = "Refunds are issued within 5 business days. " + "More detail follows here. " * 30
    passage = FaqEntry("p#1", "Returns — Refund timing", long_text, url="https://h/r",
                       kind="passage")
    faq = FaqEntry("refunds", "How long do refunds take?", " Five to ten days. ")

    def words(name: str, **values: str) -> str:
        return f"{name}|{values['title']}|{values['excerpt']}|{values['url']}"

    best, text = offline_answer([Hit(passage, 0.9), Hit(faq, 0.7)], words)
    assert (best.entry.id, text) == ("refunds", "Five to ten days.")
    best, text = offline_answer([Hit(passage, 0.9)], words)
    name, title, quoted, url = text.split("|")
    assert (name, title, url) == ("passage_excerpt", "Returns — Refund timing", "https://h/r")
    assert quoted.startswith("Refunds are issued within 5 business days.")
    assert len(quoted) <= 300 and quoted.endswith(".")  # cut at a sentence end
    assert excerpt("## Title\n\nA **bold** `word` and " + "x " * 400).endswith(" …")
    assert "**" not in excerpt("A **bold** claim.") and "#" not in excerpt("## Head\n\nText.")
