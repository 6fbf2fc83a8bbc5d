"""Imported passages through the real engine: the LLM gets them with titles and links, replies
cite them, and without an LLM a confident passage is answered with an excerpt and the link.

The help center is served on loopback (``HelpCenter`` in test_knowledge_import.py), imported
into a knowledge folder next to a staff-written FAQ entry, and the bot is the real engine and
store (SQLite, or PostgreSQL in the PostgreSQL pass) behind ``OfflineBot``.
"""

from __future__ import annotations

from pathlib import Path

from test_knowledge_import import HelpCenter, limits

from supportbot.engine import Outcome
from supportbot.knowledge.importing.runner import Importer
from supportbot.testing import OfflineBot
from supportbot.testing.fake_llm import FakeLLM

FAQ = """---
id: refunds
title: How long do refunds take?
url: https://acme.example/help/refunds
---
Refunds take 5–10 business days after we approve them.
"""


async def imported_site(tmp_path: Path) -> tuple[Path, str]:
    kdir = tmp_path / "knowledge"
    kdir.mkdir()
    with HelpCenter() as site:
        async with Importer(kdir, limits=limits(max_depth=0)) as importer:
            report = await importer.run([f"{site.base}/sitemap.xml"])
    assert report.count("added") == 8
    return kdir, site.base


async def test_llm_gets_passages_with_titles_and_links_and_the_reply_cites_them(
    tmp_path: Path, fake_llm: FakeLLM
):
    kdir, base = await imported_site(tmp_path)
    async with OfflineBot(tmp_path / "data", knowledge_dir=kdir, llm_base_url=fake_llm.url,
                          llm_api_key="k") as bot:
        reply = await bot.ask("Which HMAC signature header do webhook deliveries carry?")
    assert reply.outcome is Outcome.LLM
    system = fake_llm.chat_requests()[-1].messages[0]["content"]
    assert "Integrations — Webhooks" in system
    assert f"{base}/articles/integrations.html" in system
    assert "X-Acme-Signature" in system
    assert "Rotterdam" not in system  # passages of other pages are not pasted in
    cited = reply.sources[0]
    assert (cited.title, cited.url) == ("Integrations — Webhooks",
                                        f"{base}/articles/integrations.html")


async def test_offline_bot_quotes_a_passage_with_its_link_and_prefers_faq(tmp_path: Path):
    kdir, base = await imported_site(tmp_path)
    (kdir / "refunds.md").write_text(FAQ)
    async with OfflineBot(tmp_path / "data", knowledge_dir=kdir) as bot:
        passage = await bot.ask("How do I set up webhooks?")
        faq = await bot.ask("How long do refunds take?", thread="t2")
        unknown = await bot.ask("Do you sell garden furniture?", thread="t3")
    # a passage is not a complete answer: an excerpt and the link to the page
    assert passage.outcome is Outcome.FAQ
    assert passage.text.startswith('From "Integrations — Webhooks": ')
    assert "X-Acme-Signature" in passage.text
    assert passage.text.endswith(f"Read more: {base}/articles/integrations.html")
    assert [(s.title, s.url) for s in passage.sources] == [
        ("Integrations — Webhooks", f"{base}/articles/integrations.html")
    ]
    # a staff-written FAQ entry still answers in full, even where a passage also matches
    assert faq.outcome is Outcome.FAQ
    assert faq.text == "Refunds take 5–10 business days after we approve them."
    assert faq.sources[0].id == "refunds"
    assert unknown.outcome is Outcome.DONT_KNOW
