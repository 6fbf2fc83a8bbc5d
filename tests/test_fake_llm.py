"""FakeLLM itself, driven from sync code with plain httpx (as users' own tests would)."""

from __future__ import annotations

import math

import httpx
import pytest

from supportbot.testing.fake_llm import FakeLLM, embed


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
