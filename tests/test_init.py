"""A newcomer's first commands: ``supportbot init``, then ``supportbot chat`` in that folder, and
``supportbot chat`` in a folder with nothing in it (the package's own defaults)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from supportbot.cli import cli
from supportbot.cli.init import env_example, env_name
from supportbot.config import Settings


def run_in(folder: Path, args: list[str], stdin: str = "") -> subprocess.CompletedProcess:
    """The CLI as a user runs it: its own process, in ``folder``, none of our settings."""
    environment = {
        k: v for k, v in os.environ.items()
        if not k.startswith("SUPPORTBOT_") or k == "SUPPORTBOT_DATABASE_URL"
    } | {"SUPPORTBOT_LOG_LEVEL": "WARNING"}
    return subprocess.run(
        [sys.executable, "-m", "supportbot", *args], input=stdin, capture_output=True, text=True,
        cwd=folder, env=environment, timeout=120,
    )


def test_init_writes_a_project_folder(tmp_path):
    project = tmp_path / "project"
    result = CliRunner().invoke(cli, ["init", str(project)])
    assert result.exit_code == 0, result.output
    for rel in ("prompts/system.md.j2", "prompts/partials/faq.md.j2", "prompts/messages/en.yaml",
                "prompts/messages/zh.yaml", "prompts/handoff_phrases.yaml",
                "knowledge/billing/refunds.md", ".env.example", "Procfile"):
        assert (project / rel).is_file(), rel
    assert (project / "Procfile").read_text() == "web: supportbot serve --port $PORT\n"
    assert "supportbot chat" in result.output


def test_env_example_names_every_setting_commented_with_its_default():
    text = env_example()
    lines = [line for line in text.splitlines() if line.startswith("# ") and "=" in line]
    assert all(line.startswith("# ") for line in text.splitlines() if line)  # nothing active
    names = {line[2:].split("=", 1)[0] for line in lines}
    assert {env_name(field) for field in Settings.model_fields} <= names
    assert "# SUPPORTBOT_BOT_NAME=Ada" in lines
    assert "# PORT=8080" in lines
    assert "# SUPPORTBOT_LLM_API_KEY=" in lines  # secrets: the name only
    assert "# SUPPORTBOT_SLACK_STAFF_USER_IDS=[]" in lines  # JSON, as pydantic-settings reads it


def test_init_refuses_to_overwrite_unless_forced(tmp_path):
    runner = CliRunner()
    assert runner.invoke(cli, ["init", str(tmp_path)]).exit_code == 0
    edited = tmp_path / "knowledge" / "billing" / "refunds.md"
    edited.write_text("mine")
    again = runner.invoke(cli, ["init", str(tmp_path)])
    assert again.exit_code == 1
    assert "knowledge/billing/refunds.md" in again.output and "--force" in again.output
    assert edited.read_text() == "mine"
    forced = runner.invoke(cli, ["init", str(tmp_path), "--force"])
    assert forced.exit_code == 0, forced.output
    assert edited.read_text() != "mine"


def test_init_refuses_when_only_some_files_exist_and_writes_none(tmp_path):
    (tmp_path / "Procfile").write_text("web: my-own-server\n")
    result = CliRunner().invoke(cli, ["init", str(tmp_path)])
    assert result.exit_code == 1
    assert not (tmp_path / "prompts").exists()
    assert (tmp_path / "Procfile").read_text() == "web: my-own-server\n"


def test_chat_after_init_answers_from_the_project_faq(tmp_path):
    assert CliRunner().invoke(cli, ["init", str(tmp_path)]).exit_code == 0
    refunds = tmp_path / "knowledge" / "billing" / "refunds.md"
    refunds.write_text(refunds.read_text().replace("5–10 business days", "7 calendar days"))
    result = run_in(tmp_path, ["chat", "--json"], "How long do refunds take?\n转人工\n")
    assert result.returncode == 0, result.stderr
    first, second = (json.loads(line) for line in result.stdout.splitlines())
    assert first["outcome"] == "faq" and "7 calendar days" in first["reply"]
    assert second["handed_off"] is True
    check = run_in(tmp_path, ["check"])
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"knowledge: {Path('knowledge')} (override)" in check.stdout


def test_chat_in_an_empty_folder_answers_from_the_package_defaults(tmp_path):
    result = run_in(tmp_path, ["chat", "--json"], "How long do refunds take?\n转人工\n")
    assert result.returncode == 0, result.stderr
    first, second = (json.loads(line) for line in result.stdout.splitlines())
    assert first["outcome"] == "faq" and "5–10 business days" in first["reply"]
    assert second["handed_off"] is True and "人工客服" in second["reply"]
    assert "dont_know" not in result.stdout
    check = run_in(tmp_path, ["check"])
    assert check.returncode == 0, check.stdout + check.stderr
    assert "prompts: package defaults" in check.stdout
    assert "knowledge: the package's example FAQ" in check.stdout


def test_a_folder_set_but_missing_is_one_line_for_every_command(tmp_path):
    """Also for commands that read the settings themselves (knowledge, handoff)."""
    missing = tmp_path / "typo"
    for setting, args in (("SUPPORTBOT_KNOWLEDGE_DIR", ["knowledge", "search", "refunds"]),
                          ("SUPPORTBOT_PROMPTS_DIR", ["handoff", "test", "转人工"])):
        result = subprocess.run(
            [sys.executable, "-m", "supportbot", *args], capture_output=True, text=True,
            cwd=tmp_path, env={**os.environ, setting: str(missing)}, timeout=120, input="",
        )
        assert result.returncode == 2, (args, result.stderr)
        assert result.stderr.strip() == (
            f"{setting}={missing}: folder not found (unset it to use the package defaults)")
