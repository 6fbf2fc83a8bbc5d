"""``supportbot chat`` as a user runs it: a real subprocess reading a pipe."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from supportbot.testing.fake_llm import FakeLLM

REPO = Path(__file__).resolve().parents[1]


def run_cli(
    args: list[str], data_dir: Path, stdin: str = "", **env: str
) -> subprocess.CompletedProcess:
    environment = {
        k: v for k, v in os.environ.items()
        if not k.startswith("SUPPORTBOT_") or k == "SUPPORTBOT_DATABASE_URL"
    } | {"SUPPORTBOT_DATA_DIR": str(data_dir), "SUPPORTBOT_LOG_LEVEL": "WARNING", **env}
    return subprocess.run(
        [sys.executable, "-m", "supportbot", *args],
        input=stdin, capture_output=True, text=True, cwd=REPO, env=environment, timeout=120,
    )


def test_scripted_chat_answers_from_the_faq(tmp_path):
    result = run_cli(["chat"], tmp_path, "How long do refunds take?\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Ada: ")
    assert "5–10 business days" in result.stdout
    assert "**" not in result.stdout  # Markdown bold is not shown raw in a terminal


def test_json_chat_prints_one_object_per_reply(tmp_path):
    result = run_cli(
        ["chat", "--json"], tmp_path,
        "How long do refunds take?\n"
        "what is the meaning of life, really?\n"
        "I want to talk to a human\n",
    )
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["outcome"] for r in rows] == ["faq", "dont_know", "handoff"]
    assert rows[0]["sources"] and rows[0]["sources"][0]["id"]
    assert {r["conversation_id"] for r in rows} == {rows[0]["conversation_id"]}
    assert rows[2]["handed_off"] is True


def test_history_persists_across_restarts(tmp_path):
    with FakeLLM() as fake:
        env = {"SUPPORTBOT_LLM_BASE_URL": fake.url, "SUPPORTBOT_LLM_API_KEY": "sk-test"}
        first = run_cli(["chat", "--json"], tmp_path, "My order number is 4411\n", **env)
        second = run_cli(["chat", "--json"], tmp_path, "What was my order number?\n", **env)
        assert first.returncode == 0 and second.returncode == 0, second.stderr
        a, b = (json.loads(r.stdout.splitlines()[0]) for r in (first, second))
        assert a["conversation_id"] == b["conversation_id"]
        last = fake.chat_requests()[-1].messages
    # the second process sent the first process's turns from the database
    assert [m["role"] for m in last] == ["system", "user", "assistant", "user"]
    assert last[1]["content"] == "My order number is 4411"

    exported = run_cli(["conversations", "export", str(a["conversation_id"])], tmp_path)
    data = json.loads(exported.stdout)
    assert [m["role"] for m in data["messages"]] == ["user", "assistant", "user", "assistant"]


def test_staff_cli_hands_back_a_waiting_thread(tmp_path):
    out = run_cli(["chat", "--json"], tmp_path, "I want to talk to a human\n")
    conv = json.loads(out.stdout.splitlines()[0])["conversation_id"]
    listed = run_cli(["conversations", "list", "--status", "waiting", "--json"], tmp_path)
    assert [json.loads(line)["id"] for line in listed.stdout.splitlines()] == [conv]
    assert run_cli(["conversations", "handback", str(conv)], tmp_path).returncode == 0
    again = run_cli(["conversations", "handback", str(conv)], tmp_path)
    assert again.returncode == 1 and "nothing to hand back" in again.stderr
    shown = run_cli(["conversations", "show", str(conv)], tmp_path).stdout
    assert "bot -> waiting" in shown and "waiting -> bot by cli:" in shown
