"""Staff-edited files (issue 23, findings 1, 4 and 7): knowledge files only from inside the
knowledge folder (no symlink escapes), a size cap per knowledge file that ``supportbot check``
reports, and templates that cannot run code, neither in ``check`` nor at runtime.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

from click.testing import CliRunner

from supportbot.checks import run_checks
from supportbot.cli import cli
from supportbot.config import Settings
from supportbot.knowledge import KnowledgeBase, check_knowledge
from supportbot.knowledge.loader import MAX_FILE_BYTES, load_directory
from supportbot.testing import OfflineBot
from supportbot.testing.fake_llm import FakeLLM

REPO = Path(__file__).resolve().parents[1]
DEFAULT_PROMPTS = REPO / "supportbot" / "defaults" / "prompts"
FAQ = "---\nquestion: {q}\n---\n{a}\n"
OUTSIDE_ANSWER = "The root password is hunter2 and lives in /etc/shadow."


def knowledge_with_escapes(tmp: Path) -> Path:
    outside = tmp / "outside"
    (outside / "sub").mkdir(parents=True)
    (outside / "secret.md").write_text(FAQ.format(q="What is the root password?",
                                                  a=OUTSIDE_ANSWER))
    (outside / "sub" / "more.md").write_text(FAQ.format(q="Where are the backups?",
                                                        a="On the NAS, password nas-pass-99."))
    kdir = tmp / "knowledge"
    kdir.mkdir()
    (kdir / "refunds.md").write_text(FAQ.format(q="How long do refunds take?",
                                                a="Refunds take 5 days."))
    (kdir / "password.md").symlink_to(outside / "secret.md")  # a file link leading out
    (kdir / "linked").symlink_to(outside / "sub", target_is_directory=True)  # a folder link
    inner = kdir / "inner.md"
    inner.write_text(FAQ.format(q="How do I pay?", a="By card."))
    (kdir / "alias.md").symlink_to(inner)  # a link that stays inside is fine
    return kdir


async def test_symlinks_out_of_the_knowledge_folder_are_neither_loaded_nor_served(
    tmp_path: Path,
) -> None:
    kdir = knowledge_with_escapes(tmp_path)
    entries, _ = load_directory(kdir)
    answers = " ".join(e.answer for e in entries)
    assert "Refunds take 5 days." in answers and "By card." in answers
    assert "hunter2" not in answers and "nas-pass-99" not in answers
    reported = " ".join(str(p) for p in check_knowledge(kdir))
    assert "password.md" in reported and "outside" in reported

    kb = KnowledgeBase(kdir, tmp_path / "data" / "index.sqlite3")
    try:
        await kb.refresh()
        hits = await kb.search("What is the root password?", k=5)
        assert all("hunter2" not in h.entry.answer for h in hits)
        assert all("nas-pass-99" not in e.answer for e in kb.entries.values())
    finally:
        await kb.aclose()


async def test_a_knowledge_file_over_the_size_cap_is_reported_and_not_loaded(
    tmp_path: Path,
) -> None:
    kdir = tmp_path / "knowledge"
    kdir.mkdir()
    (kdir / "ok.md").write_text(FAQ.format(q="How long do refunds take?", a="Five days."))
    entry = "- question: Question number {i}?\n  answer: Answer number {i}.\n"
    with (kdir / "huge.yaml").open("w") as f:
        i = 0
        while f.tell() <= MAX_FILE_BYTES:
            f.write(entry.format(i=i))
            i += 1
    entries, problems = load_directory(kdir)
    assert [e.answer for e in entries] == ["Five days."]
    assert any("huge.yaml" in str(p) and "too large" in str(p) for p in problems)
    kb = KnowledgeBase(kdir, tmp_path / "data" / "index.sqlite3")
    try:
        await kb.refresh()
        assert len(kb.entries) == 1  # the server does not index it either
    finally:
        await kb.aclose()
    cfg = Settings(_env_file=None, data_dir=tmp_path, knowledge_dir=kdir)
    problems, _ = await asyncio.to_thread(run_checks, cfg)  # check opens its own loop
    assert any("too large" in str(p) for p in problems)


# --- templates cannot run code (finding 1) ------------------------------------------------------

PAYLOAD = "{{ cycler.__init__.__globals__.os.popen('touch %s').read() }}"


def prompts_with(tmp: Path, *, system: str = "", message: str = "") -> tuple[Path, Path]:
    """A copy of the default prompts with the payload planted; returns (folder, marker file)."""
    marker = tmp / "pwned"
    prompts = tmp / "prompts"
    shutil.copytree(DEFAULT_PROMPTS, prompts)
    if system:
        path = prompts / "system.md.j2"
        path.write_text(path.read_text() + "\n" + system.replace("%s", str(marker)) + "\n")
    if message:
        path = prompts / "messages" / "en.yaml"
        path.write_text(path.read_text() + "\nhello_attack: \"" + message.replace("%s", str(marker))
                        + "\"\n")
        text = path.read_text()
        # the bot's own words used on every answer path carry the payload too
        path.write_text(text.replace("llm_failed:", "llm_failed_original:", 1)
                        + "llm_failed: \"" + message.replace("%s", str(marker)) + "\"\n")
    return prompts, marker


def test_check_reports_a_template_that_reaches_for_code_and_runs_nothing(tmp_path: Path) -> None:
    for where in ("system", "message"):
        tmp = tmp_path / where
        tmp.mkdir()
        prompts, marker = prompts_with(tmp, **{where: PAYLOAD})
        env = {"SUPPORTBOT_DATA_DIR": str(tmp / "data"), "SUPPORTBOT_PROMPTS_DIR": str(prompts),
               "SUPPORTBOT_LOG_LEVEL": "WARNING"}
        result = CliRunner().invoke(cli, ["check"], env=env)
        assert not marker.exists(), f"check ran the {where} payload"
        assert result.exit_code != 0, result.output  # and says so
        assert "unsafe" in result.output.lower() or "not allowed" in result.output.lower() \
            or "security" in result.output.lower(), result.output


async def test_a_planted_template_runs_nothing_at_runtime(
    tmp_path: Path, fake_llm: FakeLLM
) -> None:
    prompts, marker = prompts_with(tmp_path, system=PAYLOAD, message=PAYLOAD)
    fake_llm.fail_next("500", times=10)  # so the bot also speaks its own (planted) words
    async with OfflineBot(tmp_path, llm_base_url=fake_llm.url, prompts_dir=prompts,
                          llm_max_retries=0) as bot:
        first = await bot.ask("How long do refunds take?")
        second = await bot.ask("Tell me about the weather on Mars")
    assert not marker.exists()
    for reply in (first, second):
        assert "pwned" not in (reply.text or "")
