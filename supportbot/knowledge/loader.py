"""Parse the knowledge directory: Markdown with front matter, YAML lists, JSONL.

Parsing never raises for bad content: every defect becomes a ``Problem`` with file and line,
and the entries that did parse are still returned, so one typo cannot take the FAQ down.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from supportbot.knowledge.importing.passages import is_imported, passage_entries
from supportbot.knowledge.models import FaqEntry
from supportbot.problems import Problem

SUFFIXES = (".md", ".markdown", ".yaml", ".yml", ".jsonl")
# Bigger files are refused (and reported by ``supportbot check``): an FAQ file is read, parsed
# and indexed at once, and one of 14 MB froze the server for seconds on every hot reload.
# Split a large FAQ into several files.
MAX_FILE_BYTES = 2_000_000
_FRONT_MATTER = re.compile(r"\A---[ \t]*\r?\n(.*?)^---[ \t]*\r?\n?", re.S | re.M)


@dataclass
class ParsedFile:
    path: Path
    entries: list[FaqEntry] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


def iter_knowledge_files(directory: Path) -> list[Path]:
    """Knowledge files under ``directory``, sorted; hidden files and folders are skipped."""
    if not directory.is_dir():
        return []
    found = []
    for p in directory.rglob("*"):
        rel = p.relative_to(directory)
        if any(part.startswith((".", "_")) for part in rel.parts):
            continue
        if p.suffix.lower() in SUFFIXES and p.is_file():
            found.append(p)
    return sorted(found)


def default_id(directory: Path, path: Path, index: int | None) -> str:
    """Stable id from the path: ``billing/refunds.md`` -> ``billing/refunds``, plus ``#n``."""
    try:
        rel = path.relative_to(directory)
    except ValueError:
        rel = Path(path.name)
    base = rel.with_suffix("").as_posix()
    return base if index is None else f"{base}#{index}"


def _strs(value: Any) -> tuple[str, ...] | None:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(v, str | int | float) for v in value):
        return tuple(str(v) for v in value)
    return None


def _build(
    data: Any,
    *,
    directory: Path,
    path: Path,
    line: int,
    index: int | None,
    body: str | None = None,
    problems: list[Problem],
) -> FaqEntry | None:
    def bad(msg: str) -> None:
        problems.append(Problem(path, line, msg))

    if not isinstance(data, dict):
        bad(f"expected a mapping with question and answer, got {type(data).__name__}")
        return None
    question = data.get("question", data.get("title"))
    answer = body if body is not None else data.get("answer")
    if not isinstance(question, str) or not question.strip():
        bad("missing question (or title)")
        return None
    if not isinstance(answer, str) or not answer.strip():
        bad("missing answer")
        return None
    alts = _strs(data.get("questions", data.get("alternatives")))
    tags = _strs(data.get("tags"))
    if alts is None:
        bad("questions/alternatives must be a list of strings")
        return None
    if tags is None:
        bad("tags must be a list of strings")
        return None
    entry_id = data.get("id")
    if entry_id is None:
        entry_id = default_id(directory, path, index)
    elif not isinstance(entry_id, str | int) or not str(entry_id).strip():
        bad("id must be a non-empty string")
        return None
    lang, url = data.get("lang"), data.get("url")
    if lang is not None and not isinstance(lang, str):
        bad("lang must be a string")
        return None
    if url is not None and not isinstance(url, str):
        bad("url must be a string")
        return None
    return FaqEntry(
        id=str(entry_id).strip(),
        question=question.strip(),
        answer=answer.strip(),
        alternatives=tuple(a.strip() for a in alts if a.strip()),
        tags=tags,
        lang=lang,
        url=url,
        path=path,
        line=line,
    )


def _yaml_error_line(exc: yaml.YAMLError, offset: int = 0) -> int:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    return (mark.line + 1 + offset) if mark is not None else 1 + offset


def _parse_markdown(directory: Path, path: Path, text: str, out: ParsedFile) -> None:
    m = _FRONT_MATTER.match(text)
    if not m:
        out.problems.append(Problem(path, 1, "missing YAML front matter (--- ... ---)"))
        return
    try:
        meta = yaml.safe_load(m.group(1)) or {}
    except yaml.YAMLError as exc:
        msg = str(getattr(exc, "problem", None) or exc)
        out.problems.append(Problem(path, _yaml_error_line(exc, 1), f"bad YAML: {msg}"))
        return
    body = text[m.end() :]
    if is_imported(meta):  # a page or document from ``supportbot knowledge import``
        base_id = default_id(directory, path, None)
        out.entries.extend(
            passage_entries(meta, body, base_id=base_id, path=path, problems=out.problems)
        )
        return
    entry = _build(
        meta, directory=directory, path=path, line=1, index=None, body=body, problems=out.problems
    )
    if entry is not None:
        out.entries.append(entry)


class _LineLoader(yaml.SafeLoader):
    """SafeLoader that records the line of every mapping, for problems and FaqEntry.line."""


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> dict[str, Any]:
    mapping = loader.construct_mapping(node, deep=True)
    mapping["__line__"] = node.start_mark.line + 1
    return mapping


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _parse_yaml(directory: Path, path: Path, text: str, out: ParsedFile) -> None:
    try:
        data = yaml.load(text, Loader=_LineLoader)
    except yaml.YAMLError as exc:
        msg = str(getattr(exc, "problem", None) or exc)
        out.problems.append(Problem(path, _yaml_error_line(exc), f"bad YAML: {msg}"))
        return
    if data is None:
        return
    if isinstance(data, dict) and isinstance(data.get("entries"), list):
        data = data["entries"]
    elif isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        out.problems.append(Problem(path, 1, "expected a list of entries"))
        return
    for i, item in enumerate(data):
        line = item.pop("__line__", 1) if isinstance(item, dict) else 1
        entry = _build(
            item, directory=directory, path=path, line=line, index=i, problems=out.problems
        )
        if entry is not None:
            out.entries.append(entry)


def _parse_jsonl(directory: Path, path: Path, text: str, out: ParsedFile) -> None:
    index = -1
    for lineno, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        index += 1
        try:
            item = json.loads(raw)
        except json.JSONDecodeError as exc:
            out.problems.append(Problem(path, lineno, f"bad JSON: {exc.msg}"))
            continue
        entry = _build(
            item, directory=directory, path=path, line=lineno, index=index, problems=out.problems
        )
        if entry is not None:
            out.entries.append(entry)


def _inside(directory: Path, path: Path) -> bool:
    """``path`` really lies in ``directory`` once symbolic links are followed."""
    try:
        return path.resolve().is_relative_to(directory.resolve())
    except (OSError, RuntimeError):  # a link loop
        return False


def parse_file(directory: Path, path: Path, data: bytes | None = None) -> ParsedFile:
    out = ParsedFile(path)
    if not _inside(directory, path):  # a symbolic link leading out of the folder
        out.problems.append(Problem(path, 1, "links to a file outside the knowledge folder: "
                                             "not loaded (copy the file in instead)"))
        return out
    try:
        size = len(data) if data is not None else path.stat().st_size
        if size > MAX_FILE_BYTES:
            out.problems.append(Problem(path, 1, f"file too large ({size:,} bytes, at most "
                                                 f"{MAX_FILE_BYTES:,}): not loaded; split it"))
            return out
        raw = path.read_bytes() if data is None else data
        text = raw.decode("utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        out.problems.append(Problem(path, 1, f"cannot read: {exc}"))
        return out
    suffix = path.suffix.lower()
    if suffix in (".md", ".markdown"):
        _parse_markdown(directory, path, text, out)
    elif suffix in (".yaml", ".yml"):
        _parse_yaml(directory, path, text, out)
    else:
        _parse_jsonl(directory, path, text, out)
    # duplicates inside one file
    seen: dict[str, FaqEntry] = {}
    kept = []
    for e in out.entries:
        if e.id in seen:
            first = seen[e.id]
            out.problems.append(
                Problem(path, e.line, f"duplicate id {e.id!r} (first at line {first.line})")
            )
            continue
        seen[e.id] = e
        kept.append(e)
    out.entries = kept
    return out


def drop_duplicates(parsed: ParsedFile, taken: dict[str, FaqEntry]) -> None:
    """Remove entries whose id another file already serves, reporting each one."""
    kept = []
    for e in parsed.entries:
        other = taken.get(e.id)
        if other is not None and other.path != e.path:
            parsed.problems.append(
                Problem(
                    e.path or parsed.path,
                    e.line,
                    f"duplicate id {e.id!r} (already defined at {other.path}:{other.line})",
                )
            )
            continue
        kept.append(e)
    parsed.entries = kept


def load_directory(directory: Path | str) -> tuple[list[FaqEntry], list[Problem]]:
    """Parse every knowledge file; first definition of an id wins, in sorted path order."""
    directory = Path(directory)
    entries: list[FaqEntry] = []
    problems: list[Problem] = []
    taken: dict[str, FaqEntry] = {}
    if not directory.is_dir():
        return [], [Problem(directory, 0, "knowledge directory does not exist")]
    for path in iter_knowledge_files(directory):
        parsed = parse_file(directory, path)
        drop_duplicates(parsed, taken)
        for e in parsed.entries:
            taken[e.id] = e
        entries.extend(parsed.entries)
        problems.extend(parsed.problems)
    return entries, problems


def check_knowledge(directory: Path | str) -> list[Problem]:
    """Every problem in the knowledge directory (empty list = all good)."""
    return load_directory(directory)[1]
