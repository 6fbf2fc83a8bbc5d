"""``supportbot knowledge search|eval|check`` through click's runner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from supportbot.cli.knowledge import knowledge

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SUPPORTBOT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("SUPPORTBOT_KNOWLEDGE_DIR", str(REPO / "supportbot/defaults/knowledge"))
    monkeypatch.delenv("SUPPORTBOT_EMBEDDINGS_BASE_URL", raising=False)
    return tmp_path


def test_search(env: Path) -> None:
    r = CliRunner().invoke(knowledge, ["search", "How long do refunds take?", "-k", "2"])
    assert r.exit_code == 0, r.output
    assert r.output.splitlines()[0].split()[:3] == ["*", "1.00", "refunds"]
    assert (env / "data" / "knowledge-index.sqlite3").is_file()


def test_search_json(env: Path) -> None:
    r = CliRunner().invoke(knowledge, ["search", "忘记密码", "--json"])
    assert r.exit_code == 0, r.output
    first = json.loads(r.output.splitlines()[0])
    assert first["id"] == "zh-password-reset" and 0 <= first["score"] <= 1


def test_eval_text_and_json(env: Path) -> None:
    q = env / "q.jsonl"
    q.write_text(
        '{"query": "reset my password", "relevant": ["password-reset"]}\n'
        '{"query": "weather on mars", "relevant": ["refunds"]}\n'
    )
    r = CliRunner().invoke(
        knowledge, ["eval", str(q), "--knowledge-dir", str(REPO / "supportbot/defaults/knowledge")]
    )
    assert r.exit_code == 0, r.output
    assert "split all  lexical  queries 2" in r.output
    assert "hit@1 0.500" in r.output and "recall@5 0.500" in r.output
    # threshold 0.5: one answer from the FAQ alone (right), none wrong, nothing missed
    assert "answers from the FAQ alone 50.0% of queries, 0.0% of them with a wrong entry" in (
        r.output
    )
    r = CliRunner().invoke(knowledge, ["eval", str(q), "--json"])
    lines = [json.loads(x) for x in r.output.splitlines()]
    assert lines[0]["ranked"][0] == "password-reset"
    assert lines[-1]["summary"]["queries"] == 2 and lines[-1]["summary"]["split"] == "all"
    assert lines[-1]["confidence"]["wrong_share"] == 0.0


def test_eval_split_and_threshold(env: Path) -> None:
    q = env / "q.jsonl"
    q.write_text(
        '{"query": "reset my password", "relevant": ["password-reset"]}\n'
        '{"query": "weather on mars", "relevant": ["refunds"]}\n'
        '{"query": "how long do refunds take", "relevant": ["delivery"]}\n'
    )
    r = CliRunner().invoke(knowledge, ["eval", str(q), "--split", "odd", "--json"])
    assert r.exit_code == 0, r.output
    lines = [json.loads(x) for x in r.output.splitlines()]
    assert [x["query"] for x in lines[:-1]] == ["weather on mars"]
    r = CliRunner().invoke(knowledge, ["eval", str(q), "--split", "even", "--threshold", "0.3"])
    assert "split even  lexical  queries 2" in r.output
    # "how long do refunds take" answered from the FAQ with the entry labelled wrong here
    assert "50.0% of them with a wrong entry" in r.output, r.output


def test_eval_bad_file(env: Path) -> None:
    q = env / "q.jsonl"
    q.write_text('{"query": "x"}\n')
    r = CliRunner().invoke(knowledge, ["eval", str(q)])
    assert r.exit_code != 0 and "q.jsonl:1" in r.output


def test_check(env: Path) -> None:
    assert CliRunner().invoke(knowledge, ["check"]).exit_code == 0
    bad = env / "bad"
    bad.mkdir()
    (bad / "x.yaml").write_text("- question: q\n")
    r = CliRunner().invoke(knowledge, ["check", "--knowledge-dir", str(bad)])
    assert r.exit_code == 1 and "x.yaml:1: missing answer" in r.output
