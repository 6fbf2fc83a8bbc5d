"""Shared fixtures: a temp data dir per test and a FakeLLM on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from supportbot.testing.fake_llm import FakeLLM

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def fake_llm() -> Iterator[FakeLLM]:
    with FakeLLM() as fake:
        yield fake
