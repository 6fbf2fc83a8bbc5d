"""The README's FAQ examples are real: each one loads with the bot's own loader."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from supportbot.defaults import KNOWLEDGE
from supportbot.knowledge.loader import load_directory

README = Path(__file__).resolve().parents[1] / "README.md"


def faq_blocks() -> list[str]:
    """The Markdown FAQ file(s) shown in the README's Knowledge section (fenced ``markdown``
    blocks that start with front matter), with the list indentation removed."""
    text = README.read_text(encoding="utf-8")
    section = text.split("## Knowledge (FAQ files)", 1)[1].split("\n## ", 1)[0]
    blocks = []
    for match in re.finditer(r"^( *)```markdown\n(.*?)^\1```", section, re.M | re.S):
        indent, body = match.group(1), match.group(2)
        lines = [line.removeprefix(indent) for line in body.splitlines()]
        if lines and lines[0] == "---":
            blocks.append("\n".join(lines) + "\n")
    return blocks


def test_the_readme_faq_example_is_the_shipped_file_and_loads(tmp_path):
    blocks = faq_blocks()
    assert blocks, "the README shows no FAQ file example"
    for number, block in enumerate(blocks):
        (tmp_path / f"example{number}.md").write_text(block, encoding="utf-8")
    entries, problems = load_directory(tmp_path)
    assert problems == []
    assert len(entries) == len(blocks)
    refunds = next(e for e in entries if e.id == "refunds")
    assert "When will I get my money back?" in refunds.alternatives
    assert blocks[0] == (KNOWLEDGE / "billing" / "refunds.md").read_text(encoding="utf-8")


def test_inline_questions_examples_in_the_readme_are_valid_yaml():
    inline = re.findall(r"`(questions: \[.*?\])`", README.read_text(encoding="utf-8"))
    assert inline
    for example in inline:
        questions = yaml.safe_load(example)["questions"]
        assert all(isinstance(q, str) and q for q in questions), example
