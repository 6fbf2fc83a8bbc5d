"""Prompt templates: rendering, per-platform overrides, live edits, last good version."""

from __future__ import annotations

import os
import re
import shutil
from datetime import datetime
from pathlib import Path

import pytest
import yaml
from jinja2 import TemplateError
from jinja2.exceptions import SecurityError

from supportbot.defaults import PROMPTS
from supportbot.prompts import PromptLibrary, Snippet
from supportbot.prompts.library import MESSAGE_NAMES

REPO = Path(__file__).resolve().parents[1]

CONTEXT = dict(
    bot_name="Ada", company_name="Acme", customer_name="Lin", language="zh",
    now=datetime(2026, 3, 1, 10, 0), timezone="UTC", handoff_marker="[[HANDOFF]]",
    business_hours="", snippets=[Snippet("refunds", "How long do refunds take?", "5-10 days")],
)


@pytest.fixture
def prompts(tmp_path: Path) -> Path:
    shutil.copytree(REPO / "supportbot/defaults/prompts", tmp_path / "prompts")
    return tmp_path / "prompts"


def touch_later(path: Path, text: str) -> None:
    stat = path.stat()
    path.write_text(text)
    os.utime(path, (stat.st_atime + 5, stat.st_mtime + 5))  # jinja reloads on mtime change


def test_system_prompt_carries_snippets_and_instructions(prompts):
    text = PromptLibrary(prompts).render_system("slack", **CONTEXT)
    assert "[refunds] How long do refunds take?" in text
    assert "[[HANDOFF]]" in text and "Lin" in text and "slack" in text
    assert "around the clock" in text


def test_missing_variable_is_an_error_not_a_blank(prompts):
    context = dict(CONTEXT)
    del context["snippets"]
    with pytest.raises(TemplateError):
        PromptLibrary(prompts).render_system("cli", **context)


def test_platform_override_wins(prompts):
    (prompts / "telegram.md.j2").write_text("Telegram prompt for {{ customer_name }}")
    library = PromptLibrary(prompts)
    assert library.render_system("telegram", **CONTEXT) == "Telegram prompt for Lin"
    assert library.render_system("slack", **CONTEXT).startswith("You are Ada")


def test_edits_apply_live_and_a_broken_edit_keeps_the_last_good(prompts):
    library = PromptLibrary(prompts)
    system = prompts / "system.md.j2"
    library.render_system("cli", **CONTEXT)
    touch_later(system, "Version two for {{ customer_name }}")
    assert library.render_system("cli", **CONTEXT) == "Version two for Lin"
    touch_later(system, "Version three {% if %}")
    assert library.render_system("cli", **CONTEXT) == "Version two for Lin"


def test_messages_follow_the_language_and_fall_back_to_english(prompts):
    library = PromptLibrary(prompts, defaults={"bot_name": "Ada", "company_name": "Acme"})
    assert "人工客服" in library.message("dont_know", "zh-Hans")
    assert "don't know" in library.message("dont_know", "ko")
    assert "Acme" in library.message("help", "en")


def test_broken_message_file_keeps_last_good(prompts):
    library = PromptLibrary(prompts)
    before = library.message("closed", "en")
    touch_later(prompts / "messages" / "en.yaml", "closed: [unterminated\n")
    assert library.message("closed", "en") == before


# --- package defaults under staff overrides ---------------------------------------------------

PAYLOAD = "{{ cycler.__init__.__globals__.os.popen('touch MARKER').read() }}"


def test_package_defaults_alone_render_everything():
    library = PromptLibrary()  # no staff folder at all
    assert "[refunds] How long do refunds take?" in library.render_system("cli", **CONTEXT)
    assert "don't know" in library.message("dont_know", "en")
    assert "人工客服" in library.message("dont_know", "zh")
    assert {used.source for _, used in library.files_in_use()} == {"default"}


def test_one_overridden_file_leaves_the_others_to_the_package(tmp_path):
    staff = tmp_path / "prompts"
    (staff / "partials").mkdir(parents=True)
    (staff / "partials" / "rules.md.j2").write_text("Only house rules for {{ customer_name }}.")
    (staff / "messages").mkdir()
    (staff / "messages" / "en.yaml").write_text('closed: "Bye for now."\n')
    library = PromptLibrary(staff)
    text = library.render_system("cli", **CONTEXT)
    assert "Only house rules for Lin." in text
    assert "[refunds] How long do refunds take?" in text  # faq partial: the package's
    assert library.message("closed", "en") == "Bye for now."
    assert "don't know" in library.message("dont_know", "en")  # a key the override lacks
    assert library.overrides() == ["messages/en.yaml", "partials/rules.md.j2"]


def test_broken_message_file_from_the_start_falls_back_to_package_text(tmp_path):
    staff = tmp_path / "prompts"
    (staff / "messages").mkdir(parents=True)
    (staff / "messages" / "en.yaml").write_text("dont_know: [unterminated\nclosed: {% if\n")
    (staff / "messages" / "zh.yaml").write_text("- not\n- a mapping\n")
    library = PromptLibrary(staff)
    for name in ("dont_know", "closed", "help", "feedback_helpful"):
        for lang in ("en", "zh", "ko"):
            text = library.message(name, lang)
            assert text and text != name, (name, lang)
    assert "人工客服" in library.message("dont_know", "zh")


# --- the sandbox ------------------------------------------------------------------------------


def test_code_in_the_system_prompt_does_not_run(tmp_path):
    staff = tmp_path / "prompts"
    staff.mkdir()
    marker = tmp_path / "pwned"
    (staff / "system.md.j2").write_text("Hello " + PAYLOAD.replace("MARKER", str(marker)))
    with pytest.raises(SecurityError):
        PromptLibrary(staff).render_system("cli", **CONTEXT)
    assert not marker.exists()


def test_code_in_a_message_does_not_run_and_the_package_text_is_sent(tmp_path):
    staff = tmp_path / "prompts"
    (staff / "messages").mkdir(parents=True)
    marker = tmp_path / "pwned"
    payload = PAYLOAD.replace("MARKER", str(marker))
    (staff / "messages" / "en.yaml").write_text(f'dont_know: "{payload}"\n')
    text = PromptLibrary(staff).message("dont_know", "en")
    assert "don't know" in text
    assert not marker.exists()


def test_templates_cannot_change_the_values_they_are_given(tmp_path):
    staff = tmp_path / "prompts"
    staff.mkdir()
    (staff / "system.md.j2").write_text("{{ snippets.append(1) }}{{ snippets | length }}")
    context = dict(CONTEXT, snippets=[])
    with pytest.raises(SecurityError):
        PromptLibrary(staff).render_system("cli", **context)
    assert context["snippets"] == []


# --- the shipped languages ------------------------------------------------------------------

SHIPPED = ("en", "zh", "es", "fr", "de", "ja", "pt", "ru")


def test_every_shipped_language_has_every_message_in_its_own_words():
    library = PromptLibrary(defaults={"bot_name": "Ada", "company_name": "Acme"})
    assert library.check() == []  # includes: no key of en.yaml missing in any language
    english = {name: library.message(name, "en", limit=4000) for name in MESSAGE_NAMES}
    for lang in SHIPPED[1:]:
        assert (PROMPTS / "messages" / f"{lang}.yaml").is_file()
        for name in ("dont_know", "handoff_requested", "closed", "greeting", "feedback_helpful"):
            text = library.message(name, lang, customer_name="Sam")
            assert text and text != english[name], (lang, name)


def test_after_hours_notice_names_no_english_weekday_in_other_languages():
    library = PromptLibrary()
    monday = datetime(2026, 3, 2, 9, 0)
    assert "Monday" in library.message("handoff_after_hours", "en", next_open=monday)
    for lang in SHIPPED[1:]:
        text = library.message("handoff_after_hours", lang, next_open=monday)
        assert "Monday" not in text and "09:00" in text, lang


def test_chinese_and_japanese_messages_have_no_stray_spaces_from_line_folding():
    library = PromptLibrary(defaults={"bot_name": "Ada", "company_name": "Acme"})
    assert "Ada。请直接提问" in library.message("greeting", "zh", customer_name="Sam")
    assert "アシスタント、Adaです" in library.message("greeting", "ja")


def test_deleting_an_override_brings_the_package_words_back(tmp_path):
    staff = tmp_path / "prompts"
    (staff / "messages").mkdir(parents=True)
    override = staff / "messages" / "en.yaml"
    override.write_text('closed: "Bye for now."\n')
    library = PromptLibrary(staff)
    assert library.message("closed", "en") == "Bye for now."
    override.unlink()
    assert library.message("closed", "en").startswith("This conversation is closed")


def test_a_language_code_never_names_a_file_outside_the_messages_folder(tmp_path):
    staff = tmp_path / "prompts"
    (staff / "messages").mkdir(parents=True)
    (tmp_path / "secret.yaml").write_text('closed: "leaked"\n')
    library = PromptLibrary(staff)
    for language in ("../../secret", "../secret", "..", "", "x" * 50):
        assert library.message("closed", language).startswith("This conversation is closed")


def test_every_message_the_code_asks_for_by_name_exists():
    """A name missing from MESSAGE_NAMES is skipped when the files load, and the customer
    would get the raw key: catch it here rather than in a conversation."""
    source = "\n".join(p.read_text(encoding="utf-8")
                       for p in (REPO / "supportbot").rglob("*.py"))
    asked = set(re.findall(r'(?:\.message|words)\((?:self\.engine, )?\s*"([a-z_]+)"', source))
    assert asked and asked <= set(MESSAGE_NAMES), asked - set(MESSAGE_NAMES)
    english = yaml.safe_load((PROMPTS / "messages" / "en.yaml").read_text(encoding="utf-8"))
    assert set(english) == set(MESSAGE_NAMES)
