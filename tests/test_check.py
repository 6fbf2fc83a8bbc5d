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


def test_unsafe_template_is_reported_not_run(tmp_path):
    prompts, knowledge = copy_setup(tmp_path)
    marker = tmp_path / "pwned"
    payload = "{{ cycler.__init__.__globals__.os.popen('touch " + str(marker) + "').read() }}"
    partial = prompts / "partials" / "handoff.md.j2"
    partial.write_text(partial.read_text() + "\n" + payload + "\n")
    line = len(partial.read_text().splitlines())
    messages = prompts / "messages" / "en.yaml"
    messages.write_text(messages.read_text() + f'closed: "{payload}"\n')
    closed_line = len(messages.read_text().splitlines())
    result = run_check(tmp_path, prompts, knowledge)
    assert result.exit_code == 1, result.output
    assert f"{partial}:{line}: unsafe template" in result.output
    assert f"{messages}:{closed_line}: unsafe template" in result.output
    assert not marker.exists()


def test_check_says_which_files_are_in_use(tmp_path):
    prompts = tmp_path / "prompts"
    (prompts / "messages").mkdir(parents=True)
    (prompts / "messages" / "en.yaml").write_text('closed: "Bye."\n')
    result = CliRunner().invoke(cli, ["check", "--prompts-dir", str(prompts)],
                                env={"SUPPORTBOT_DATA_DIR": str(tmp_path / "data")})
    assert result.exit_code == 0, result.output
    assert "overrides: messages/en.yaml" in result.output
    assert "knowledge: the package's example FAQ" in result.output


def test_explicit_folder_that_does_not_exist_is_an_error_naming_the_setting(tmp_path):
    for setting in ("SUPPORTBOT_PROMPTS_DIR", "SUPPORTBOT_KNOWLEDGE_DIR"):
        result = CliRunner().invoke(cli, ["check"], env={
            "SUPPORTBOT_DATA_DIR": str(tmp_path / "data"), setting: str(tmp_path / "typo")})
        assert result.exit_code == 2
        assert f"{setting}={tmp_path / 'typo'}: folder not found" in result.output
        assert "Traceback" not in result.output


def test_a_language_file_missing_keys_is_reported_by_file_and_key(tmp_path):
    prompts, knowledge = copy_setup(tmp_path)
    korean = prompts / "messages" / "ko.yaml"
    korean.write_text('dont_know: "죄송합니다, 잘 모르겠습니다."\n')
    result = run_check(tmp_path, prompts, knowledge)
    assert result.exit_code == 1
    assert f"{korean}:0: missing message 'closed' (present in en.yaml)" in result.output
    assert "missing message 'dont_know'" not in result.output
    # a shipped language's override may leave keys out: the package's own words fill them in
    (prompts / "messages" / "fr.yaml").write_text('closed: "Au revoir."\n')
    korean.unlink()
    assert run_check(tmp_path, prompts, knowledge).exit_code == 0
