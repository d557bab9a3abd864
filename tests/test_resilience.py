"""Several deployments per model, retries, cool-downs, fallbacks, time budgets."""

import asyncio
import time

import httpx
import openai
import pytest

from tests.conftest import API_VERSION, azure_entry, gateway_env
from tests.support import GatewayProcess, running_gateway, write_catalog

USER = [{"role": "user", "content": "keep answering"}]


def deployment(name, code, fake_url, key="$KEY_A", **extra):
    return {
        "name": name,
        "code": code,
        "parameters": {"endpoint": fake_url, "api_version": API_VERSION, "api_key": key},
    } | extra


@pytest.fixture(scope="module")
def resilient(fake_azure, tmp_path_factory):
    url = fake_azure.url

    def spread(model_id, deployments, **extra):
        return azure_entry(model_id, "unused", url, deployments=deployments, **extra)

    catalog = [
        spread(
            "regional",
            [
                deployment("sweden-throttled", "rate-limited", url, priority=0),
                deployment("france-failing", "broken", url, priority=0),
                deployment("us-healthy", "dep-a", url, priority=1),
            ],
        ),
        spread(
            "weighted",
            [deployment("big", "dep-a", url, weight=3), deployment("small", "dep-b", url, key="$KEY_B", weight=1)],
        ),
        spread("doomed", [deployment("only", "broken", url)], fallbacks=["rescuer", "no-such-model"]),
        azure_entry("rescuer", "dep-b", url),
        spread("throttled", [deployment("one", "rate-limited", url), deployment("two", "rate-limited", url)]),
        azure_entry(
            "slow-model",
            "slow",
            url,
            parameters={"endpoint": url, "api_version": API_VERSION, "api_key": "$KEY_A", "timeout": 1},
        ),
        azure_entry(
            "slow-budget",
            "slow",
            url,
            parameters={"endpoint": url, "api_version": API_VERSION, "api_key": "$KEY_A", "timeout": 30},
        ),
        azure_entry("streamer", "slow-stream", url),
        azure_entry("mixed-operations", "broken", url, operations=["embeddings"], fallbacks=["rescuer"]),
        spread(
            "half-misconfigured",
            [
                deployment("no-secret", "dep-a", url, key="$NOT_SET_ANYWHERE", priority=0),
                deployment("sound", "dep-a", url, priority=1),
            ],
        ),
        spread("unresolvable", [deployment("only", "dep-a", url, key="$NOT_SET_ANYWHERE")], fallbacks=["rescuer"]),
    ]
    directory = tmp_path_factory.mktemp("resilience")
    env = gateway_env(
        MODELS_FILE=str(write_catalog(directory / "models.json", catalog)),
        REQUEST_TIMEOUT_SECONDS="3",
        STREAM_FIRST_BYTE_TIMEOUT_SECONDS="1",
    )
    with running_gateway(directory, env) as process:
        process.wait_until_answering("rescuer")
        yield process


def test_failing_deployments_are_absorbed_and_skipped_while_they_cool_down(resilient, fake_azure):
    client = resilient.client()
    for _ in range(5):
        assert client.chat.completions.create(model="regional", messages=USER).model == "regional"

    # 429: skipped for its Retry-After (7 s). 500: skipped after 3 failures in a row (circuit breaker).
    assert len(fake_azure.requests_for("rate-limited")) == 1
    assert len(fake_azure.requests_for("broken")) == 3
    assert len(fake_azure.requests_for("dep-a")) == 5


def test_weights_spread_traffic_within_a_priority(resilient, fake_azure):
    async def scenario():
        client = openai.AsyncOpenAI(base_url=f"{resilient.url}/v1", api_key="local", max_retries=0)
        for start in range(0, 200, 50):
            await asyncio.gather(
                *(client.chat.completions.create(model="weighted", messages=USER) for _ in range(start, start + 50))
            )

    asyncio.run(scenario())
    big, small = len(fake_azure.requests_for("dep-a")), len(fake_azure.requests_for("dep-b"))
    assert big + small == 200
    assert 120 <= big <= 180  # expected 150; the binomial standard deviation is about 6


def test_a_fallback_model_answers_when_every_deployment_fails(resilient, fake_azure):
    response = httpx.post(f"{resilient.url}/v1/chat/completions", json={"model": "doomed", "messages": USER})
    assert response.status_code == 200
    assert response.json()["model"] == "rescuer"
    assert response.headers["x-gateway-model"] == "rescuer"
    assert len(fake_azure.requests_for("dep-b")) == 1


def test_fallbacks_must_offer_the_operation(resilient, fake_azure):
    # The model fails; its fallback serves chat only, so it must not be asked for embeddings.
    response = httpx.post(f"{resilient.url}/v1/embeddings", json={"model": "mixed-operations", "input": "x"})
    assert response.status_code == 502
    assert len(fake_azure.requests_for("broken")) == 1
    assert fake_azure.requests_for("dep-b") == []


def test_a_deployment_whose_secret_does_not_resolve_is_skipped_like_a_broken_one(resilient, fake_azure):
    client = resilient.client()
    for _ in range(6):
        assert client.chat.completions.create(model="half-misconfigured", messages=USER).model == "half-misconfigured"
    assert len(fake_azure.requests_for("dep-a")) == 6
    # Logged, naming the deployment and the reference, until the breaker opens (3 failures in a row).
    logged = [line for line in resilient.log().splitlines() if "deployment no-secret cannot be called" in line]
    assert len(logged) == 3
    assert all("$NOT_SET_ANYWHERE" in line for line in logged)


def test_a_model_whose_only_deployment_is_misconfigured_falls_back(resilient, fake_azure):
    response = httpx.post(f"{resilient.url}/v1/chat/completions", json={"model": "unresolvable", "messages": USER})
    assert response.status_code == 200, response.text
    assert response.headers["x-gateway-model"] == "rescuer"


def test_when_every_deployment_is_cooling_down_the_provider_still_answers(resilient, fake_azure):
    client = resilient.client()
    with pytest.raises(openai.RateLimitError) as first:
        client.chat.completions.create(model="throttled", messages=USER)
    assert first.value.response.headers["retry-after"] == "7"
    assert len(fake_azure.requests_for("rate-limited")) == 2

    # Nowhere else to go: the deployment that recovers first is asked, and its 429 is passed on.
    with pytest.raises(openai.RateLimitError) as again:
        client.chat.completions.create(model="throttled", messages=USER)
    assert again.value.response.headers["retry-after"] == "7"
    assert "cooling down" not in again.value.message
    assert len(fake_azure.requests_for("rate-limited")) == 3


def test_a_slow_upstream_is_a_504_at_the_models_timeout(resilient):
    started = time.monotonic()
    response = httpx.post(
        f"{resilient.url}/v1/chat/completions", json={"model": "slow-model", "messages": USER}, timeout=30
    )
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "timeout"
    assert time.monotonic() - started < 2.5


def test_the_request_budget_caps_a_slower_models_timeout(resilient):
    started = time.monotonic()
    response = httpx.post(
        f"{resilient.url}/v1/chat/completions", json={"model": "slow-budget", "messages": USER}, timeout=30
    )
    assert response.status_code == 504
    assert 2.5 < time.monotonic() - started < 4.5


def test_a_stream_without_a_first_byte_in_time_is_a_504(resilient):
    started = time.monotonic()
    response = httpx.post(
        f"{resilient.url}/v1/chat/completions",
        json={"model": "slow-budget", "messages": USER, "stream": True},
        timeout=30,
    )
    assert response.status_code == 504
    assert time.monotonic() - started < 2


def test_a_stream_that_outlives_the_request_budget_ends_with_an_error_event(resilient):
    with httpx.stream(
        "POST",
        f"{resilient.url}/v1/chat/completions",
        json={"model": "streamer", "messages": USER, "stream": True},
        timeout=30,
    ) as response:
        assert response.status_code == 200
        lines = [line for line in response.iter_lines() if line]
    assert "event: error" in lines and '"timeout"' in lines[-2]
    assert lines[-1] == "data: [DONE]"


def test_a_client_that_closes_a_stream_closes_the_upstream_stream(resilient, fake_azure):
    with httpx.stream(
        "POST", f"{resilient.url}/v1/chat/completions", json={"model": "streamer", "messages": USER, "stream": True}
    ) as response:
        for line in response.iter_lines():
            if "w1" in line:
                break
    deadline = time.monotonic() + 5
    while not fake_azure.stream_outcomes and time.monotonic() < deadline:
        time.sleep(0.05)
    assert fake_azure.stream_outcomes == ["closed"]


def test_a_client_that_hangs_up_cancels_the_upstream_call(resilient, fake_azure):
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{resilient.url}/v1/chat/completions", json={"model": "slow-budget", "messages": USER}, timeout=0.5)
    deadline = time.monotonic() + 3
    while not fake_azure.abandoned and time.monotonic() < deadline:
        time.sleep(0.05)
    assert fake_azure.abandoned == 1


def test_the_litellm_import_is_not_the_first_callers_time_budget(fake_azure, tmp_path):
    """A fresh process answers /health long before LiteLLM (seconds to import) is
    loaded; a call made then still gets its whole budget once LiteLLM is there."""
    catalog = write_catalog(tmp_path / "models.json", [azure_entry("chat-a", "dep-a", fake_azure.url)])
    env = gateway_env(MODELS_FILE=str(catalog), REQUEST_TIMEOUT_SECONDS="0.5")
    process = GatewayProcess(env, tmp_path / "gateway.log").start()
    try:
        client = openai.OpenAI(base_url=f"{process.url}/v1", api_key="local", max_retries=0, timeout=120)
        reply = client.chat.completions.create(model="chat-a", messages=USER)
        assert reply.choices[0].message.content
    finally:
        process.stop()
