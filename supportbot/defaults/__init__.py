"""The files a bot needs to answer, shipped inside the package.

``prompts/`` (system prompt, partials, the bot's messages, handoff phrases) and ``knowledge/``
(an example FAQ) install with supportbot, so ``supportbot chat`` answers from any folder, even
an empty one. Staff files override them one by one: a file in the configured prompts folder
replaces the package file with the same relative path; a knowledge folder, when there is one,
replaces the whole example FAQ (mixing staff answers with the example's would be confusing).

Installed packages are plain directories on disk (setuptools never zips them), so the defaults
are ordinary :class:`~pathlib.Path` objects every loader can read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

ROOT = Path(__file__).resolve().parent
PROMPTS = ROOT / "prompts"
KNOWLEDGE = ROOT / "knowledge"

Source = Literal["default", "override"]


@dataclass(frozen=True, slots=True)
class Resolved:
    """Which file is in use for one relative path, and where it came from."""

    path: Path
    source: Source

    def __str__(self) -> str:
        return f"{self.path} ({'package default' if self.source == 'default' else 'override'})"


def is_default_dir(directory: Path | str | None) -> bool:
    """True when ``directory`` is one of the package's own default folders."""
    if directory is None:
        return False
    try:
        resolved = Path(directory).resolve()
    except OSError:
        return False
    return resolved in (PROMPTS, KNOWLEDGE) or resolved == ROOT


def resolve(settings_dir: Path | str | None, relative_path: str,
            default_root: Path = PROMPTS) -> Resolved:
    """``settings_dir/relative_path`` when staff put that file there, else the package's own.

    ``settings_dir`` is the configured folder (e.g. ``settings.prompts_dir``); it may be missing
    or ``None``. The handoff phrases file is ``resolve(settings.prompts_dir,
    "handoff_phrases.yaml")``.
    """
    if settings_dir is not None:
        candidate = Path(settings_dir) / relative_path
        if candidate.is_file():
            source: Source = "default" if is_default_dir(settings_dir) else "override"
            return Resolved(candidate, source)
    return Resolved(default_root / relative_path, "default")


def prompt_files() -> list[str]:
    """Every file the package ships under ``prompts/``, as relative POSIX paths."""
    return sorted(p.relative_to(PROMPTS).as_posix() for p in PROMPTS.rglob("*")
                  if p.is_file() and "__pycache__" not in p.parts)


def knowledge_files() -> list[str]:
    """Every file of the example FAQ, as relative POSIX paths."""
    return sorted(p.relative_to(KNOWLEDGE).as_posix() for p in KNOWLEDGE.rglob("*")
                  if p.is_file() and "__pycache__" not in p.parts)
