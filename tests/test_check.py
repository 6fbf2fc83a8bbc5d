"""``supportbot check`` finds what staff broke and says where."""

from __future__ import annotations

import shutil
from pathlib import Path

from click.testing import CliRunner

from supportbot.cli import cli

REPO = Path(__file__).resolve().parents[1]


def copy_setup(tmp_path: Path) -> tuple[Path, Path]:
    prompts = tmp_path / "prompts"
    knowledge = tmp_path / "knowledge"
    shutil.copytree(REPO / "supportbot/defaults/prompts", prompts)
    shutil.copytree(REPO / "supportbot/defaults/knowledge", knowledge)
    return prompts, knowledge


def run_check(tmp_path: Path, prompts: Path, knowledge: Path, **env: str):
    return CliRunner().invoke(
        cli,
        ["check", "--prompts-dir", str(prompts), "--knowledge-dir", str(knowledge)],
        env={"SUPPORTBOT_DATA_DIR": str(tmp_path / "data"), **env},
    )


def test_shipped_setup_is_clean(tmp_path):
    prompts, knowledge = copy_setup(tmp_path)
    result = run_check(tmp_path, prompts, knowledge)
    assert result.exit_code == 0, result.output
    assert result.output.startswith("OK:")


def test_broken_template_is_reported_with_file_and_line(tmp_path):
    prompts, knowledge = copy_setup(tmp_path)
    partial = prompts / "partials" / "faq.md.j2"
    lines = partial.read_text().splitlines()
    lines.insert(2, "{% for x in %}")
    partial.write_text("\n".join(lines) + "\n")
    result = run_check(tmp_path, prompts, knowledge)
    assert result.exit_code == 1
    assert f"{partial}:3: " in result.output


def test_undefined_variable_is_reported_with_file_and_line(tmp_path):
    prompts, knowledge = copy_setup(tmp_path)
    system = prompts / "system.md.j2"
    system.write_text(system.read_text() + "\nSigned, {{ signature }}\n")
    result = run_check(tmp_path, prompts, knowledge)
    assert result.exit_code == 1
    line = len(system.read_text().splitlines())
    assert f"{system}:{line}: 'signature' is undefined" in result.output


def test_broken_message_template_is_reported(tmp_path):
    prompts, knowledge = copy_setup(tmp_path)
    messages = prompts / "messages" / "en.yaml"
    text = messages.read_text().replace('closed: "This', 'closed: "{% if %}This')
    messages.write_text(text)
    line = next(i for i, row in enumerate(text.splitlines(), 1) if row.startswith("closed:"))
    result = run_check(tmp_path, prompts, knowledge)
    assert result.exit_code == 1
    assert f"{messages}:{line}: " in result.output


def test_broken_faq_file_is_reported_with_file_and_line(tmp_path):
    prompts, knowledge = copy_setup(tmp_path)
    bad = knowledge / "broken.md"
    bad.write_text("---\nid: broken\nquestion: [unclosed\n---\nSome answer.\n")
    result = run_check(tmp_path, prompts, knowledge)
    assert result.exit_code == 1
    assert f"{bad}:3: " in result.output or f"{bad}:4: " in result.output


def test_bad_settings_are_reported_without_secrets(tmp_path):
    prompts, knowledge = copy_setup(tmp_path)
    result = run_check(
        tmp_path, prompts, knowledge,
        SUPPORTBOT_LLM_API_KEY="sk-very-secret-value",
        SUPPORTBOT_BUSINESS_HOURS="Someday 25:00-26:00",
    )
    assert result.exit_code == 1
    assert "SUPPORTBOT_LLM_BASE_URL" in result.output
    assert "SUPPORTBOT_BUSINESS_HOURS" in result.output
    assert "sk-very-secret-value" not in result.output
