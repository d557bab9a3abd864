"""Azure AI Foundry models (`AzureFoundry`) through the running gateway, end to end.

The official `openai` client calls the gateway; the gateway calls a fake of the
Azure AI model inference API (`tests/fakes/azure_foundry.py`) through LiteLLM,
with the resource's key or with a managed identity token (the fake App Service
identity endpoint, through azure-identity). Every body and chunk the caller gets
is checked against OpenAI's OpenAPI schema; every request the fake receives is
checked for its path, `api-version`, credential header and body.
"""

from __future__ import annotations

import base64
import json
import struct
import time
import uuid

import httpx
import openai
import pytest

from tests.conftest import gateway_env
from tests.fakes.azure_foundry import RETRY_AFTER_SECONDS, FakeFoundry
from tests.fakes.server import ServerThread
from tests.openapi import assert_conforms
from tests.support import WEATHER_TOOLS, running_gateway, streamed_tool_names, write_catalog
from tests.test_app_insights import FAST_EXPORT, connection_string, exported_call
from tests.test_responses_vertex import FUNCTION_TOOL
from tests.test_responses_vertex import events as response_events
from tests.test_responses_vertex import raw as raw_response
from tests.test_upstream_budgets import black_hole  # noqa: F401 (a fixture: a port whose handshake never completes)

FOUNDRY_KEY = "foundry-key-3b9d71c0e4a2"
CONNECT_SECONDS = 0.5
ENVIRONMENT_KEY = "an-environment-key-no-foundry-call-may-borrow"
USER = [{"role": "user", "content": "hello there foundry"}]
DEPLOYMENTS = {
    "DeepSeek-V3-0324": "DeepSeek-V3-0324",
    "Llama-3.3-70B-Instruct": "Llama-3.3-70B-Instruct",
    "embed-v-4-0": "embed-v-4-0",
}


def managed_identity_token(token: str) -> bool:
    return token.startswith("mi-token-cognitiveservices.azure.com-")


def foundry_entry(model_id: str, code: str, endpoint: str, keyed: bool = True, **overrides):
    parameters = {"endpoint": endpoint} | ({"api_key": "$FOUNDRY_KEY", "api_version": "2025-04-01"} if keyed else {})
    entry = {
        "id": model_id,
        "provider": "Azure",
        "model_type": "AzureFoundry",
        "code": code,
        "parameters": parameters,
        "costs": {"input": 0.001, "output": 0.004},
        "operations": ["ChatCompletion"],
    }
    return entry | overrides


@pytest.fixture(scope="module")
def foundry():
    fake = FakeFoundry(FOUNDRY_KEY, DEPLOYMENTS, managed_identity_token)
    with ServerThread(fake) as server:
        fake.url = server.url
        yield fake


@pytest.fixture(scope="module")
def foundry_gateway(foundry, identity, ingestion, black_hole, tmp_path_factory):  # noqa: F811
    resource = foundry.url  # the resource's endpoint; the gateway adds /models
    inference = f"{foundry.url}/models/"  # the model inference endpoint, as the portal shows it
    # A deployment on an endpoint that never completes the handshake, then the healthy one.
    ways = [{"name": "dead-end", "parameters": {"endpoint": black_hole}}, {"name": "healthy", "priority": 1}]
    entries = [
        foundry_entry("deepseek", "DeepSeek-V3-0324", resource, operations=["ChatCompletion", "Responses"]),
        foundry_entry(
            "llama-keyless",
            "Llama-3.3-70B-Instruct",
            inference,
            keyed=False,
            operations=["ChatCompletion", "Responses"],
        ),
        foundry_entry("foundry-embed", "embed-v-4-0", resource, operations=["embeddings"]),
        foundry_entry("foundry-embed-keyless", "embed-v-4-0", inference, keyed=False, operations=["embeddings"]),
        foundry_entry("foundry-limited", "rate-limited", resource),
        foundry_entry("foundry-filtered", "filtered", resource),
        *(
            foundry_entry(f"foundry-black-hole-{operation}", code, resource, operations=[operation], deployments=ways)
            for operation, code in (("ChatCompletion", "DeepSeek-V3-0324"), ("embeddings", "embed-v-4-0"))
        ),
        foundry_entry("foundry-to-deepseek", "broken", resource, fallbacks=["deepseek"]),
        foundry_entry("foundry-embed-broken", "broken", resource, operations=["embeddings"]),
        foundry_entry("foundry-broken", "broken", resource),
        foundry_entry(
            "foundry-wrong-key",
            "DeepSeek-V3-0324",
            resource,
            parameters={"endpoint": resource, "api_key": "$WRONG_KEY"},
        ),
    ]
    directory = tmp_path_factory.mktemp("foundry-gateway")
    catalog = write_catalog(directory / "models.json", entries)
    env = gateway_env(
        MODELS_FILE=str(catalog),
        FOUNDRY_KEY=FOUNDRY_KEY,
        WRONG_KEY="wrong-foundry-key-00",
        UPSTREAM_CONNECT_SECONDS=str(CONNECT_SECONDS),
        # LiteLLM's azure_ai provider reads these when no key is passed: a keyless model must not send them.
        AZURE_AI_API_KEY=ENVIRONMENT_KEY,
        AZURE_OPENAI_API_KEY=ENVIRONMENT_KEY,
        AZURE_API_KEY=ENVIRONMENT_KEY,
        APPLICATIONINSIGHTS_CONNECTION_STRING=connection_string(ingestion.url),
        **FAST_EXPORT,
        **identity.environment(identity.url),
    )
    with running_gateway(directory, env) as process:
        process.wait_until_answering("deepseek")
        yield process


@pytest.fixture
def client(foundry_gateway, foundry):
    foundry.clear()
    return foundry_gateway.client("local")


def assert_keyed(upstream, path: str, api_version: str = "2025-04-01") -> None:
    """The request reached the model inference API's `path` with the catalog's
    api-version and the resource's key in `api-key`, and nothing else as a credential."""
    assert upstream.path == path
    assert upstream.query == {"api-version": api_version}
    assert upstream.headers["api-key"] == FOUNDRY_KEY
    assert "authorization" not in upstream.headers


def assert_managed_identity(upstream, path: str) -> None:
    """The request carries a managed identity token for Cognitive Services and the default api-version."""
    assert upstream.path == path
    assert upstream.query == {"api-version": "2024-05-01-preview"}
    assert managed_identity_token(upstream.headers["authorization"].removeprefix("Bearer "))
    assert "api-key" not in upstream.headers


def stream_chunks(stream) -> list:
    chunks = list(stream)
    for chunk in chunks:
        assert_conforms("CreateChatCompletionStreamResponse", chunk.to_dict(), "Foundry chunk")
    return chunks


def streamed_text(chunks) -> str:
    return "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)


def test_plain_chat_with_the_resource_key(client, foundry):
    raw = client.chat.completions.with_raw_response.create(model="deepseek", messages=USER, max_tokens=50)
    assert_conforms("CreateChatCompletionResponse", raw.http_response.json(), "Foundry completion")
    completion = raw.parse()

    assert completion.model == "deepseek"
    assert completion.choices[0].message.content == "echo: hello there foundry"
    assert completion.choices[0].finish_reason == "stop"
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (3, 4)
    (upstream,) = foundry.requests
    assert_keyed(upstream, "/models/chat/completions")
    assert upstream.json["model"] == "DeepSeek-V3-0324"
    assert upstream.json["messages"] == USER
    assert upstream.json["max_tokens"] == 50


def test_streamed_chat_with_usage_when_asked(client, foundry):
    chunks = stream_chunks(
        client.chat.completions.create(
            model="deepseek", messages=USER, stream=True, stream_options={"include_usage": True}
        )
    )

    assert streamed_text(chunks) == "echo: hello there foundry"
    assert len([chunk for chunk in chunks if chunk.choices and chunk.choices[0].delta.content]) > 1
    assert {chunk.model for chunk in chunks} == {"deepseek"}
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == 7
    (upstream,) = foundry.requests
    assert_keyed(upstream, "/models/chat/completions")
    assert upstream.json["stream"] is True and upstream.json["stream_options"] == {"include_usage": True}


def test_streamed_chat_without_include_usage_has_no_usage_chunk_but_is_metered(client, foundry, foundry_gateway):
    request_id = f"foundry-{uuid.uuid4()}"
    chunks = stream_chunks(
        foundry_gateway.client("local", request_id).chat.completions.create(
            model="deepseek", messages=USER, stream=True
        )
    )

    assert all(chunk.usage is None for chunk in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"
    # The gateway asks for the usage anyway, to meter the stream.
    assert foundry.requests[0].json["stream_options"] == {"include_usage": True}
    record = foundry_gateway.usage_record(request_id)
    assert (record["model"], record["status"], record["stream"]) == ("deepseek", 200, True)
    assert (record["prompt_tokens"], record["completion_tokens"]) == (3, 4)
    assert record["cost"] == pytest.approx((3 * 0.001 + 4 * 0.004) / 1000)


def test_tool_calls_plain_and_streamed(client, foundry):
    raw = client.chat.completions.with_raw_response.create(model="deepseek", messages=USER, tools=WEATHER_TOOLS)
    body = raw.http_response.json()
    assert_conforms("CreateChatCompletionResponse", body, "Foundry tool call")
    call = raw.parse().choices[0].message.tool_calls[0]
    assert call.function.name == "lookup_weather"
    assert json.loads(call.function.arguments) == {"echo": "hello there foundry"}
    assert body["choices"][0]["finish_reason"] == "tool_calls"
    assert foundry.requests[0].json["tools"] == WEATHER_TOOLS

    chunks = stream_chunks(
        client.chat.completions.create(model="deepseek", messages=USER, tools=WEATHER_TOOLS, stream=True)
    )
    assert streamed_tool_names(chunks) == ["lookup_weather"]
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    assert_keyed(foundry.requests[1], "/models/chat/completions")


def test_chat_with_a_managed_identity(client, foundry, identity):
    raw = client.chat.completions.with_raw_response.create(model="llama-keyless", messages=USER)
    assert_conforms("CreateChatCompletionResponse", raw.http_response.json(), "Foundry keyless completion")
    assert raw.parse().choices[0].message.content == "echo: hello there foundry"
    chunks = stream_chunks(
        client.chat.completions.create(
            model="llama-keyless", messages=USER, stream=True, stream_options={"include_usage": True}
        )
    )
    assert streamed_text(chunks) == "echo: hello there foundry"
    assert chunks[-1].usage.completion_tokens == 4

    assert len(foundry.requests) == 2
    for upstream in foundry.requests:
        assert_managed_identity(upstream, "/models/chat/completions")
        assert upstream.json["model"] == "Llama-3.3-70B-Instruct"
    assert ENVIRONMENT_KEY not in json.dumps([r.headers for r in foundry.requests])
    assert {resource for resource, _ in identity.tokens_issued} == {"https://cognitiveservices.azure.com"}


def float_embeddings(body: dict) -> dict:
    """`body` with base64 vectors as the float arrays they encode (little-endian float32), which
    is all OpenAI's schema describes."""
    for item in body["data"]:
        if isinstance(item["embedding"], str):
            raw = base64.b64decode(item["embedding"], validate=True)
            item["embedding"] = list(struct.unpack(f"<{len(raw) // 4}f", raw))
    return body


def test_embeddings_with_the_resource_key_float_and_base64(client, foundry):
    vectors = {}
    for encoding_format in ("float", "base64", None):  # None: the SDK asks for base64 and decodes it
        options = {"encoding_format": encoding_format} if encoding_format else {}
        raw = client.embeddings.with_raw_response.create(
            model="foundry-embed", input=["first text", "the second text"], dimensions=6, **options
        )
        body = float_embeddings(raw.http_response.json())
        assert_conforms("CreateEmbeddingResponse", body, f"Foundry embeddings ({encoding_format})")
        assert body["model"] == "foundry-embed"
        result = raw.parse()
        assert (result.usage.prompt_tokens, result.usage.total_tokens) == (5, 5)
        vectors[encoding_format] = [value for item in body["data"] for value in item["embedding"]]
        if encoding_format is None:
            assert [value for item in result.data for value in item.embedding] == pytest.approx(vectors[None])

    assert len(vectors["float"]) == 2 * 6
    assert vectors["base64"] == pytest.approx(vectors["float"]) and vectors[None] == pytest.approx(vectors["float"])
    assert len(foundry.requests) == 3
    for upstream, encoding_format in zip(foundry.requests, ("float", "base64", "base64"), strict=True):
        assert_keyed(upstream, "/models/embeddings")
        assert upstream.json["model"] == "embed-v-4-0"
        assert upstream.json["input"] == ["first text", "the second text"]
        assert upstream.json["dimensions"] == 6
        assert upstream.json["encoding_format"] == encoding_format


def test_embeddings_with_a_managed_identity(client, foundry):
    raw = client.embeddings.with_raw_response.create(
        model="foundry-embed-keyless", input="embed me", encoding_format="float"
    )
    assert_conforms("CreateEmbeddingResponse", raw.http_response.json(), "Foundry keyless embeddings")
    assert len(raw.parse().data[0].embedding) == 4
    (upstream,) = foundry.requests
    assert_managed_identity(upstream, "/models/embeddings")
    assert upstream.json["model"] == "embed-v-4-0"


def test_the_responses_api_over_foundry_chat_completions(client, foundry, foundry_gateway):
    request_id = f"foundry-responses-{uuid.uuid4()}"
    body = {"model": "deepseek", "input": "hello there foundry", "instructions": "be brief", "max_output_tokens": 50}
    response = foundry_gateway.client("local", request_id).responses.create(**body)
    assert response.output_text == "echo: hello there foundry"
    assert (response.model, response.status, response.usage.output_tokens) == ("deepseek", "completed", 4)
    record = foundry_gateway.usage_record(request_id)
    assert (record["operation"], record["model"], record["prompt_tokens"]) == ("Responses", "deepseek", 5)
    (upstream,) = foundry.requests
    assert_keyed(upstream, "/models/chat/completions")
    assert upstream.json["model"] == "DeepSeek-V3-0324" and upstream.json["max_tokens"] == 50
    assert upstream.json["messages"] == [{"role": "system", "content": "be brief"}, *USER]
    assert raw_response(foundry_gateway, body)["output"][0]["type"] == "message"

    streamed = response_events(foundry_gateway, body)
    text = "".join(event["delta"] for event in streamed if event["type"] == "response.output_text.delta")
    assert text == "echo: hello there foundry"
    final = streamed[-1]
    assert final["type"] == "response.completed" and final["response"]["usage"]["output_tokens"] == 4
    assert foundry.requests[-1].json["stream"] is True


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_a_foundry_function_call_and_its_output_make_a_tool_turn(client, foundry, foundry_gateway, stream):
    body = {"model": "llama-keyless", "input": "Paris", "tools": [FUNCTION_TOOL]}
    if stream:
        streamed = response_events(foundry_gateway, body)
        (done,) = [event for event in streamed if event["type"] == "response.function_call_arguments.done"]
        assert done["name"] == "lookup_weather"
        output = streamed[-1]["response"]["output"]
    else:
        output = raw_response(foundry_gateway, body)["output"]
    (call,) = [item for item in output if item["type"] == "function_call"]
    assert call["name"] == "lookup_weather" and json.loads(call["arguments"]) == {"echo": "Paris"}

    answered = client.responses.create(
        model="llama-keyless",
        input=[
            {"role": "user", "content": "Paris"},
            {"type": "function_call", "call_id": call["call_id"], "name": call["name"], "arguments": call["arguments"]},
            {"type": "function_call_output", "call_id": call["call_id"], "output": "sunny and 21C"},
        ],
    )
    assert answered.output_text == "echo: sunny and 21C" and answered.status == "completed"
    sent = foundry.requests[-1]
    assert_managed_identity(sent, "/models/chat/completions")
    assert sent.json["messages"][1]["tool_calls"][0]["id"] == call["call_id"]
    assert sent.json["messages"][2] == {"role": "tool", "tool_call_id": call["call_id"], "content": "sunny and 21C"}


def test_a_stored_foundry_response_is_continued_with_previous_response_id(client, foundry):
    first = client.responses.create(model="deepseek", input="my name is Ada")
    second = client.responses.create(model="deepseek", previous_response_id=first.id, input="what is my name")
    assert second.previous_response_id == first.id and second.output_text == "echo: what is my name"
    sent = foundry.requests[-1].json
    assert "previous_response_id" not in sent  # the gateway keeps the conversation, not the provider
    assert sent["messages"] == [
        {"role": "user", "content": "my name is Ada"},
        {"role": "assistant", "content": "echo: my name is Ada"},
        {"role": "user", "content": "what is my name"},
    ]
    assert client.responses.retrieve(second.id).output_text == "echo: what is my name"
    client.responses.delete(first.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(first.id)


def test_a_rate_limited_deployment_answers_429_with_its_retry_after(client, foundry):
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model="foundry-limited", messages=USER)
    assert caught.value.response.headers["retry-after"] == str(RETRY_AFTER_SECONDS)
    assert_conforms("ErrorResponse", caught.value.response.json(), "Foundry rate limit")
    assert foundry.requests[0].extra["deployment"] == "rate-limited"


def test_a_content_filter_refusal_reaches_the_caller_as_foundry_said_it(client, foundry):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="foundry-filtered", messages=USER)
    body = caught.value.response.json()
    assert_conforms("ErrorResponse", body, "Foundry content filter")
    assert body["error"]["code"] == "content_filter"
    assert body["error"]["param"] == "prompt"
    assert "content management policy" in body["error"]["message"]
    assert caught.value.body["innererror"]["content_filter_result"]["hate"]["filtered"] is True
    assert FOUNDRY_KEY not in json.dumps(body) and foundry.url not in json.dumps(body)


def test_a_failing_deployment_falls_back_to_the_next_model(client, foundry):
    completion = client.chat.completions.create(model="foundry-to-deepseek", messages=USER)
    assert completion.model == "deepseek"
    assert completion.choices[0].message.content == "echo: hello there foundry"
    chunks = stream_chunks(client.chat.completions.create(model="foundry-to-deepseek", messages=USER, stream=True))
    assert {chunk.model for chunk in chunks} == {"deepseek"}
    deployments = [request.extra["deployment"] for request in foundry.requests]
    assert deployments == ["broken", "DeepSeek-V3-0324", "broken", "DeepSeek-V3-0324"]


def test_a_deployment_that_cannot_be_reached_is_left_after_the_connect_budget(client, foundry):
    for call in (
        lambda: client.chat.completions.create(model="foundry-black-hole-ChatCompletion", messages=USER),
        lambda: client.embeddings.create(model="foundry-black-hole-embeddings", input="embed me"),
    ):
        started = time.monotonic()
        assert call().model.startswith("foundry-black-hole-")
        assert CONNECT_SECONDS <= time.monotonic() - started < CONNECT_SECONDS + 1.5
    assert [request.path for request in foundry.requests] == ["/models/chat/completions", "/models/embeddings"]


FAILING_CALLS = {
    "chat": lambda client: client.chat.completions.create(model="foundry-broken", messages=USER),
    "embeddings": lambda client: client.embeddings.create(model="foundry-embed-broken", input="embed me"),
}


@pytest.mark.parametrize("operation", sorted(FAILING_CALLS))
def test_a_failing_deployment_is_called_once_per_call(client, foundry, operation):
    with pytest.raises(openai.InternalServerError) as caught:
        FAILING_CALLS[operation](client)
    assert caught.value.status_code == 502
    assert_conforms("ErrorResponse", caught.value.response.json(), "Foundry failure")
    # No retry inside the attempt (the openai SDK under LiteLLM would retry twice): routing decides.
    assert [request.extra["deployment"] for request in foundry.requests] == ["broken"]


def test_a_refused_key_is_a_502_that_names_neither_key_nor_endpoint(client, foundry):
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="foundry-wrong-key", messages=USER)
    assert caught.value.status_code == 502
    body = caught.value.response.json()
    assert_conforms("ErrorResponse", body, "Foundry refusal")
    assert body["error"]["code"] == "upstream_error"
    text = json.dumps(body)
    assert "wrong-foundry-key-00" not in text and foundry.url not in text


def test_what_the_gateway_refuses_never_reaches_foundry(foundry_gateway, foundry, client):
    invalid = httpx.post(
        f"{foundry_gateway.url}/v1/chat/completions",
        json={"model": "deepseek", "messages": [{"role": "wizard", "content": "hi"}]},
        timeout=30,
    )
    assert invalid.status_code == 400
    assert_conforms("ErrorResponse", invalid.json(), "validation error")
    with pytest.raises(openai.BadRequestError) as caught:
        client.embeddings.create(model="deepseek", input="not an embedding model")
    assert caught.value.code == "unsupported_operation"
    assert foundry.requests == []


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_a_foundry_call_is_traced_as_an_azure_ai_inference_dependency(foundry_gateway, ingestion, stream):
    request_id = f"foundry-traced-{uuid.uuid4()}"
    client = foundry_gateway.client("local", request_id)
    if stream:
        chunks = list(
            client.chat.completions.create(
                model="deepseek", messages=USER, stream=True, stream_options={"include_usage": True}
            )
        )
        usage = chunks[-1].usage
    else:
        usage = client.chat.completions.create(model="deepseek", messages=USER).usage

    _, dependency = exported_call(ingestion, foundry_gateway, request_id)
    properties = dependency["data"]["baseData"]["properties"]
    assert dependency["data"]["baseData"]["name"] == "chat DeepSeek-V3-0324"
    assert properties["gen_ai.provider.name"] == "azure.ai.inference"
    assert properties["gen_ai.request.model"] == "DeepSeek-V3-0324"
    # The provider's own name for its model, not LiteLLM's `azure_ai/DeepSeek-V3-0324`.
    assert properties["gen_ai.response.model"] == "DeepSeek-V3-0324"
    assert properties["gateway.model"] == "deepseek"
    assert properties["gen_ai.usage.input_tokens"] == str(usage.prompt_tokens)
    assert properties["gen_ai.usage.output_tokens"] == str(usage.completion_tokens)
