"""Chat completions through the running gateway with the official OpenAI client."""

import asyncio
import base64

import openai
import pytest

from tests.conftest import API_VERSION, UPSTREAM_KEYS
from tests.support import WEATHER_TOOLS, streamed_tool_names

USER = [{"role": "user", "content": "hello there gateway"}]


def test_plain_chat_reaches_the_deployment_with_its_own_key(client, fake_azure):
    completion = client.chat.completions.create(model="chat-a", messages=USER)

    assert completion.choices[0].message.content == "echo: hello there gateway"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == "chat-a"
    assert completion.usage.prompt_tokens == 3
    assert completion.usage.completion_tokens == 4
    (upstream,) = fake_azure.requests
    assert upstream.path == "/openai/deployments/dep-a/chat/completions"
    assert upstream.query["api-version"] == API_VERSION
    assert upstream.headers["api-key"] == UPSTREAM_KEYS["dep-a"]
    assert "authorization" not in upstream.headers
    assert upstream.json["messages"] == USER


def test_a_model_is_also_found_by_its_code(client):
    completion = client.chat.completions.create(model="dep-b", messages=USER)
    assert completion.choices[0].message.content == "echo: hello there gateway"


def test_streaming_forwards_chunks_and_ends_with_usage_when_asked(client, fake_azure):
    stream = client.chat.completions.create(
        model="chat-a", messages=USER, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)

    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: hello there gateway"
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 1
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 7
    assert {c.model for c in chunks} == {"chat-a"}
    assert fake_azure.requests[0].json["stream"] is True


def test_streaming_without_include_usage_has_no_usage_chunk(client):
    chunks = list(client.chat.completions.create(model="chat-a", messages=USER, stream=True))
    assert all(chunk.usage is None for chunk in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_the_raw_stream_is_server_sent_events_ending_with_done(gateway):
    import httpx

    with httpx.stream(
        "POST",
        f"{gateway.url}/v1/chat/completions",
        json={"model": "chat-a", "messages": USER, "stream": True},
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"


TOOLS = WEATHER_TOOLS


def test_tool_calls_come_back_plain_and_streaming(client, fake_azure):
    completion = client.chat.completions.create(model="chat-a", messages=USER, tools=TOOLS)
    call = completion.choices[0].message.tool_calls[0]
    assert call.function.name == "lookup_weather"
    assert completion.choices[0].finish_reason == "tool_calls"
    assert fake_azure.requests[0].json["tools"] == TOOLS

    chunks = list(client.chat.completions.create(model="chat-a", messages=USER, tools=TOOLS, stream=True))
    assert streamed_tool_names(chunks) == ["lookup_weather"]


def test_image_parts_and_options_pass_through_untouched(client, fake_azure):
    image = "data:image/png;base64," + base64.b64encode(b"\x89PNG fake").decode()
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "describe"},
                {"type": "image_url", "image_url": {"url": image}},
            ],
        }
    ]
    completion = client.chat.completions.create(
        model="chat-a",
        messages=messages,
        n=2,
        seed=42,
        logprobs=True,
        response_format={"type": "json_object"},
        extra_body={"future_knob": {"level": 3}},
        metadata={"team": "a"},
        store=True,
        service_tier="priority",
        verbosity="low",
        safety_identifier="user-hash-1",
    )

    assert len(completion.choices) == 2
    assert completion.choices[0].message.content == "echo: describe [image]"
    assert completion.choices[0].logprobs is not None
    sent = fake_azure.requests[0].json
    assert sent["messages"] == messages
    assert (sent["n"], sent["seed"], sent["logprobs"]) == (2, 42, True)
    assert sent["response_format"] == {"type": "json_object"}
    assert sent["future_knob"] == {"level": 3}
    assert (sent["metadata"], sent["store"], sent["service_tier"]) == ({"team": "a"}, True, "priority")
    assert (sent["verbosity"], sent["safety_identifier"]) == ("low", "user-hash-1")


def test_caller_cannot_redirect_the_gateway_credentials(client, fake_azure):
    client.chat.completions.create(
        model="chat-a",
        messages=USER,
        extra_body={"api_base": "http://127.0.0.1:9", "api_key": "caller-key", "mock_response": "x"},
    )
    (upstream,) = fake_azure.requests
    assert upstream.headers["api-key"] == UPSTREAM_KEYS["dep-a"]
    assert upstream.json["api_base"] == "http://127.0.0.1:9"  # an opaque field, sent on as-is


def test_models_lists_what_the_caller_may_use(client):
    models = {model.id: model for model in client.models.list()}
    assert {"chat-a", "chat-b", "embed-only"} <= set(models)
    assert "team-x-only" not in models
    assert models["chat-a"].owned_by == "azure"
    assert models["embed-only"].model_extra["operations"] == ["embeddings"]

    assert client.models.retrieve("chat-b").id == "chat-b"
    for hidden in ("team-x-only", "no-such-model"):
        with pytest.raises(openai.NotFoundError) as caught:
            client.models.retrieve(hidden)
        assert caught.value.code == "model_not_found"


def test_unknown_and_private_models_are_not_found(client):
    for model in ("no-such-model", "team-x-only"):
        with pytest.raises(openai.NotFoundError) as caught:
            client.chat.completions.create(model=model, messages=USER)
        assert caught.value.code == "model_not_found"
        assert caught.value.body["param"] == "model"


def test_a_model_without_the_operation_is_refused(client, fake_azure):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="embed-only", messages=USER)
    assert caught.value.code == "unsupported_operation"
    assert "embed-only" in caught.value.message and "ChatCompletion" in caught.value.message
    assert fake_azure.requests == []


def test_concurrent_calls_each_carry_their_own_models_key(async_client, fake_azure):
    async def scenario():
        calls = [
            async_client.chat.completions.create(model=model, messages=[{"role": "user", "content": f"n{i}"}])
            for i in range(25)
            for model in ("chat-a", "chat-b")
        ]
        return await asyncio.gather(*calls)

    results = asyncio.run(scenario())

    assert len(results) == 50 and {r.model for r in results} == {"chat-a", "chat-b"}
    for deployment, key in UPSTREAM_KEYS.items():
        seen = fake_azure.requests_for(deployment)
        assert len(seen) == 25
        assert {request.headers["api-key"] for request in seen} == {key}


def test_no_secret_reaches_the_gateway_log(client, gateway):
    client.chat.completions.create(model="chat-a", messages=USER)
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="broken", messages=USER)
    log = gateway.log()
    assert log  # the gateway does log
    for key in UPSTREAM_KEYS.values():
        assert key not in log


def test_provider_headers_that_reveal_internals_are_not_passed_on(gateway, fake_azure):
    import httpx

    response = httpx.post(f"{gateway.url}/v1/chat/completions", json={"model": "chat-a", "messages": USER})
    assert response.status_code == 200
    upstream_only = {"apim-request-id", "x-ms-region", "x-ratelimit-remaining-requests", "x-ratelimit-remaining-tokens"}
    assert upstream_only.isdisjoint(name.lower() for name in response.headers)
