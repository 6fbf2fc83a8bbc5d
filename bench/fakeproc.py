"""Run a loopback fake in a process of its own, so it does not share the GIL (or a core's
time) with the code being measured::

    with fake_llm_process(delay=1.0) as url: ...
    with fake_llm_child(delay=1.0) as child: ... child.url, child.cpu_seconds()

The child prints its URL, then serves until its stdin closes.
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass

from bench.common import PYTHON, ROOT, bench_env, process_cpu_seconds


@dataclass(frozen=True)
class FakeChild:
    url: str
    pid: int

    def cpu_seconds(self) -> float | None:
        """User + system CPU the fake has used so far (Linux ``/proc``; None elsewhere), to
        tell the fake's share of a benchmark from the code under test."""
        try:
            return process_cpu_seconds(self.pid)
        except OSError:
            return None


@contextlib.contextmanager
def fake_llm_process(delay: float = 0.0) -> Iterator[str]:
    with fake_llm_child(delay) as child:
        yield child.url


@contextlib.contextmanager
def fake_llm_child(delay: float = 0.0) -> Iterator[FakeChild]:
    proc = subprocess.Popen(
        [PYTHON, "-m", "bench.fakeproc", "--delay", str(delay)],
        cwd=ROOT, env=bench_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        if not url.startswith("http"):
            raise RuntimeError("fake LLM process did not start")
        yield FakeChild(url, proc.pid)
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--delay", type=float, default=0.0)
    args = parser.parse_args()
    from supportbot.testing.fake_llm import FakeLLM

    with FakeLLM(delay=args.delay) as fake:
        print(fake.url, flush=True)
        sys.stdin.read()  # until the parent closes our stdin (or dies)


if __name__ == "__main__":
    main()
