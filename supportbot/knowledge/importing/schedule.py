"""``SUPPORTBOT_KNOWLEDGE_REFRESH_HOURS``: ``supportbot serve`` re-fetches imported pages itself.

The refresh only rewrites files whose source changed, and the knowledge base already picks up
changed files on its own (``KnowledgeBase.refresh``, every ``knowledge_reload_seconds``), so the
scheduler needs nothing from the engine: it runs ``Importer.refresh`` on the knowledge folder
every N hours, in the background, and logs a summary. With several bot processes on one
knowledge folder, set it on one of them (or run ``supportbot knowledge import --refresh`` from
cron instead).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the fetcher needs the optional dependencies, imported when a refresh runs
    from supportbot.config import Settings
    from supportbot.knowledge.importing.fetch import Limits

log = logging.getLogger(__name__)


class ScheduledRefresh:
    def __init__(self, knowledge_dir: Path, hours: float, limits: Limits | None = None) -> None:
        self.knowledge_dir = Path(knowledge_dir)
        self.interval = hours * 3600.0
        self.limits = limits
        self._task: asyncio.Task[None] | None = None
        self.runs = 0  # completed refreshes (tests wait on it)

    @classmethod
    def start(cls, settings: Settings, limits: Limits | None = None) -> ScheduledRefresh:
        """Start the background refresh when the setting is on (> 0); a no-op otherwise."""
        hours = settings.knowledge_refresh_hours
        scheduler = cls(settings.knowledge_dir, hours, limits)
        if hours > 0:
            scheduler._task = asyncio.create_task(scheduler._loop(), name="knowledge-refresh")
        return scheduler

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.run_once()

    async def run_once(self) -> None:
        try:
            from supportbot.knowledge.importing.runner import Importer
        except ImportError as exc:
            log.error("knowledge refresh needs pip install 'supportbot[import]': %s", exc)
            return
        try:
            async with Importer(self.knowledge_dir, limits=self.limits) as importer:
                report = await importer.refresh()
        except Exception:  # a bug must not kill the schedule: try again next time
            log.exception("knowledge refresh failed")
            return
        finally:
            self.runs += 1
        log.info("knowledge refresh: %s", report.summary())
        for item in report.items:
            if item.status == "skipped":
                log.warning("knowledge refresh: %s", item)

    def cancel(self) -> None:
        """Stop without waiting (at shutdown: a refresh in progress is abandoned; files are
        written atomically, so none is left half-written)."""
        if self._task is not None:
            self._task.cancel()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
