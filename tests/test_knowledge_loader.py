"""FAQ file formats, ids from paths, and broken files reported with file and line."""

from __future__ import annotations

import json
from pathlib import Path

from supportbot.knowledge import check_knowledge, load_directory
from supportbot.problems import Problem

REPO = Path(__file__).resolve().parents[1]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


MD = """---
id: refunds
title: How long do refunds take?
questions:
  - When do I get my money back?
tags: [billing]
lang: en
url: https://example.test/refunds
---
Refunds take 5-10 business days.
"""


def test_markdown_with_front_matter(tmp_path: Path) -> None:
    write(tmp_path / "refunds.md", MD)
    entries, problems = load_directory(tmp_path)
    assert problems == []
    [e] = entries
    assert e.id == "refunds"
    assert e.question == "How long do refunds take?"
    assert e.alternatives == ("When do I get my money back?",)
    assert e.answer == "Refunds take 5-10 business days."
    assert e.tags == ("billing",)
    assert (e.lang, e.url, e.line) == ("en", "https://example.test/refunds", 1)
    assert e.path == tmp_path / "refunds.md"


def test_yaml_list_with_lines_and_ids_from_path(tmp_path: Path) -> None:
    write(
        tmp_path / "sub" / "zh.yaml",
        "- question: 退款需要多久？\n  answer: 5-10 个工作日。\n  lang: zh\n"
        "- id: explicit\n  question: 如何重置密码？\n  answer: 点击忘记密码。\n",
    )
    entries, problems = load_directory(tmp_path)
    assert problems == []
    assert [(e.id, e.line) for e in entries] == [("sub/zh#0", 1), ("explicit", 4)]
    assert entries[0].lang == "zh"


def test_jsonl_entries_and_default_ids(tmp_path: Path) -> None:
    lines = [
        {"id": "a", "question": "Q a", "answer": "A a", "alternatives": ["alt"], "tags": ["t"]},
        {"question": "Q b", "answer": "A b", "url": "https://x.test"},
    ]
    write(tmp_path / "bulk.jsonl", "\n".join(json.dumps(x) for x in lines) + "\n")
    entries, problems = load_directory(tmp_path)
    assert problems == []
    assert [(e.id, e.line) for e in entries] == [("a", 1), ("bulk#1", 2)]
    assert entries[0].alternatives == ("alt",)
    assert entries[1].url == "https://x.test"


def test_markdown_without_id_gets_its_path(tmp_path: Path) -> None:
    write(tmp_path / "billing" / "plans.md", "---\ntitle: Plans?\n---\nThree plans.\n")
    [e] = load_directory(tmp_path)[0]
    assert e.id == "billing/plans"


def test_bad_yaml_front_matter_reports_line(tmp_path: Path) -> None:
    write(tmp_path / "ok.md", MD)
    bad = write(tmp_path / "bad.md", "---\nid: x\ntitle: [unclosed\n---\nbody\n")
    entries, problems = load_directory(tmp_path)
    assert [e.id for e in entries] == ["refunds"]
    [p] = problems
    assert p.path == bad
    assert p.line in (3, 4)  # the flow sequence opened on line 3 is never closed
    assert "bad YAML" in p.message
    assert str(p).startswith(f"{bad}:{p.line}: ")


def test_missing_answer_reported_with_entry_line(tmp_path: Path) -> None:
    f = write(
        tmp_path / "faq.yaml",
        "- question: first\n  answer: fine\n- question: second\n  tags: [x]\n",
    )
    entries, problems = load_directory(tmp_path)
    assert [e.question for e in entries] == ["first"]
    assert problems == [Problem(f, 3, "missing answer")]


def test_empty_markdown_body_is_missing_answer(tmp_path: Path) -> None:
    f = write(tmp_path / "empty.md", "---\ntitle: Nothing here?\n---\n\n")
    assert check_knowledge(tmp_path) == [Problem(f, 1, "missing answer")]


def test_duplicate_ids_across_files(tmp_path: Path) -> None:
    write(tmp_path / "a.md", MD)
    b = write(
        tmp_path / "b.jsonl",
        '{"id": "other", "question": "q", "answer": "a"}\n'
        '{"id": "refunds", "question": "dup", "answer": "dup"}\n',
    )
    entries, problems = load_directory(tmp_path)
    assert sorted(e.id for e in entries) == ["other", "refunds"]
    assert entries[0].question == "How long do refunds take?"
    [p] = problems
    assert (p.path, p.line) == (b, 2)
    assert "duplicate id 'refunds'" in p.message


def test_bad_jsonl_line_keeps_the_other_lines(tmp_path: Path) -> None:
    f = write(
        tmp_path / "bulk.jsonl",
        '{"id": "a", "question": "q1", "answer": "a1"}\n'
        '{"id": "b", "question": "q2", "answer": \n'
        "\n"
        '{"id": "c", "question": "q3", "answer": "a3"}\n',
    )
    entries, problems = load_directory(tmp_path)
    assert [e.id for e in entries] == ["a", "c"]
    assert entries[1].line == 4
    [p] = problems
    assert (p.path, p.line) == (f, 2)
    assert p.message.startswith("bad JSON")


def test_hidden_and_other_files_ignored(tmp_path: Path) -> None:
    write(tmp_path / ".hidden.md", "garbage")
    write(tmp_path / "notes.txt", "garbage")
    assert load_directory(tmp_path) == ([], [])


def test_example_faq_is_clean_and_answers_refunds() -> None:
    entries, problems = load_directory(REPO / "supportbot/defaults/knowledge")
    assert problems == []
    ids = {e.id: e for e in entries}
    assert "5–10 business days" in ids["refunds"].answer
    assert any(e.lang == "zh" for e in entries)
    assert len(entries) >= 12
