"""``supportbot knowledge import``: a help center, PDFs and documents into the knowledge folder."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import click

import supportbot
from supportbot.config import Settings


def _target_dir(knowledge_dir: Path | None) -> Path:
    """The staff's knowledge folder; never the example FAQ shipped inside the package."""
    directory = knowledge_dir or Settings().knowledge_dir
    package = Path(supportbot.__file__).resolve().parent
    if directory.resolve().is_relative_to(package):
        raise click.ClickException(
            "no knowledge folder to import into: create ./knowledge (or set "
            "SUPPORTBOT_KNOWLEDGE_DIR, or pass --knowledge-dir)"
        )
    return directory


@click.command(name="import")
@click.argument("sources", nargs=-1)
@click.option("--refresh", is_flag=True,
              help="Re-fetch everything imported before (unchanged pages are skipped, removed "
                   "pages are deleted).")
@click.option("--depth", type=int, default=None,
              help="Links followed from a start page (default 2; 0: only the page) or from the "
                   "pages a sitemap lists (default 0: only those pages).")
@click.option("--max-pages", default=500, show_default=True, help="Pages fetched at most.")
@click.option("--max-bytes", default=10_000_000, show_default=True,
              help="Largest document downloaded or read.")
@click.option("--rate", default=1.0, show_default=True,
              help="Requests per second to one host (robots.txt Crawl-delay may lower it).")
@click.option("--timeout", default=20.0, show_default=True, help="Seconds per HTTP request.")
@click.option("--knowledge-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Knowledge folder (default: SUPPORTBOT_KNOWLEDGE_DIR).")
@click.option("-v", "--verbose", is_flag=True, help="One line per document, not only problems.")
def import_cmd(
    sources: tuple[str, ...], refresh: bool, depth: int | None, max_pages: int, max_bytes: int,
    rate: float, timeout: float, knowledge_dir: Path | None, verbose: bool,
) -> None:
    """Import SOURCES (URLs, sitemap.xml, folders, Markdown/HTML/text/PDF/CSV files) as
    knowledge files under <knowledge>/imported/, split into passages the bot cites."""
    try:
        from supportbot.knowledge.importing.fetch import Limits
        from supportbot.knowledge.importing.runner import Importer, Item
    except ImportError as exc:
        raise click.ClickException(
            f"importing needs the optional dependencies: pip install 'supportbot[import]' ({exc})"
        ) from None
    if not sources and not refresh:
        raise click.UsageError("give at least one SOURCE, or --refresh")
    if rate <= 0:
        raise click.BadParameter("must be positive", param_hint="--rate")
    directory = _target_dir(knowledge_dir)
    limits = Limits(max_pages=max_pages, max_bytes=max_bytes, per_host_interval=1.0 / rate,
                    timeout=timeout)
    if depth is not None:
        limits.max_depth = limits.sitemap_depth = depth
    counts = {"docs": 0, "passages": 0}

    def show(item: Item | None) -> str:
        if item is None:
            return ""
        return f"{counts['passages']} passages  {item.source[-60:]}"

    async def run() -> tuple[list[Item], str]:
        with click.progressbar(length=max_pages, label="importing", file=sys.stderr,
                               show_eta=False, show_pos=True, item_show_func=show) as bar:
            def progress(item: Item) -> None:
                counts["docs"] += 1
                counts["passages"] += item.passages
                bar.update(1, item)

            async with Importer(directory, limits=limits, progress=progress) as importer:
                if refresh:
                    await importer.refresh()
                if sources:
                    await importer.run(list(sources))
            bar.length = max(counts["docs"], 1)  # done: show the bar full
        return importer.report.items, importer.report.summary()

    items, summary = asyncio.run(run())
    for item in items:
        if verbose or item.status in ("skipped", "removed"):
            click.echo(str(item))
    click.echo(summary)
    imported = any(i.status in ("added", "updated", "unchanged", "removed") for i in items)
    if items and not imported:
        sys.exit(1)
