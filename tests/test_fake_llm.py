"""FakeLLM itself, driven from sync code with plain httpx (as users' own tests would)."""

from __future__ import annotations

import math
import socket
import threading
import time

import httpx
import pytest

from supportbot.testing.fake_llm import FakeLLM, Gate, embed


def test_embeddings_are_deterministic_normalised_and_similar_for_shared_words() -> None:
    with FakeLLM() as fake:
        response = httpx.post(
            fake.url + "/embeddings",
            json={"model": "m", "input": ["reset my password", "password reset", "invoice"]},
        )
    assert response.status_code == 200
    vectors = [item["embedding"] for item in response.json()["data"]]
    assert [item["index"] for item in response.json()["data"]] == [0, 1, 2]
    assert vectors[0] == embed("reset my password")
    assert all(len(v) == 64 and math.isclose(sum(x * x for x in v), 1.0) for v in vectors)

    def cosine(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b, strict=True))

    assert cosine(vectors[0], vectors[1]) > cosine(vectors[0], vectors[2])


def test_faults_target_one_endpoint_and_are_consumed() -> None:
    with FakeLLM() as fake:
        fake.fail_next("500", endpoint="embeddings", status=503)
        chat = httpx.post(fake.url + "/chat/completions", json={"messages": []})
        first = httpx.post(fake.url + "/embeddings", json={"input": "hi"})
        second = httpx.post(fake.url + "/embeddings", json={"input": "hi"})
        assert (chat.status_code, first.status_code, second.status_code) == (200, 503, 200)
        assert [r.path for r in fake.requests] == [
            "/v1/chat/completions",
            "/v1/embeddings",
            "/v1/embeddings",
        ]
        fake.reset()
        assert fake.requests == []


def test_unknown_fault_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown fault"):
        FakeLLM().fail_next("teapot")


def test_stop_frees_the_port_and_does_not_wait_for_slow_replies() -> None:
    fake = FakeLLM().start()
    url = fake.url
    fake.fail_next("slow", seconds=60)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(url + "/chat/completions", json={"messages": []}, timeout=0.2)
    fake.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.post(url + "/chat/completions", json={"messages": []}, timeout=2)
    with pytest.raises(RuntimeError):
        _ = fake.url


def test_a_burst_of_connections_waits_in_the_backlog_while_the_fake_is_busy() -> None:
    """Benchmarks open 1,000 connections at once. With aiohttp's default listen backlog (128)
    the kernel drops the SYNs past it while the fake's loop is busy, and every dropped one
    costs the client a 1 s retransmit."""
    burst = 400
    gate = Gate()  # holds the fake's event loop, so it accepts nothing meanwhile
    with FakeLLM(responder=gate) as fake:
        host, port = fake.url.split("//")[1].split("/")[0].split(":")
        blocker = threading.Thread(
            target=httpx.post,
            args=(fake.url + "/chat/completions",),
            kwargs={"json": {"messages": [{"role": "user", "content": "hold"}]}, "timeout": 15},
        )
        blocker.start()
        sockets: list[socket.socket] = []
        try:
            deadline = time.monotonic() + 5
            while not fake.requests and time.monotonic() < deadline:
                time.sleep(0.01)
            for _ in range(burst):
                sock = socket.socket()
                sock.setblocking(False)
                sock.connect_ex((host, int(port)))
                sockets.append(sock)
            established = 0
            deadline = time.monotonic() + 3  # the first SYN retransmit comes after 1 s
            while time.monotonic() < deadline:
                established = sum(_established(sock) for sock in sockets)
                if established == burst:
                    break
                time.sleep(0.05)
            assert established == burst
        finally:
            gate.opened.set()
            for sock in sockets:
                sock.close()
            blocker.join()


def _established(sock: socket.socket) -> bool:
    """TCP_INFO's first byte is the state; 1 is ESTABLISHED (SYN_SENT while a SYN waits)."""
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0] == 1
