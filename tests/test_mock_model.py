"""The Mock model: LiteLLM's own `mock_response` answers through the gateway's
usual path (keys, private models, operations, usage records), with the
catalog the project ships (models.json)."""

import base64
import json
import struct

import httpx
import openai
import pytest
from openai.types import CreateEmbeddingResponse
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.responses import Response as ResponsesResponse

from tests.conftest import gateway_env
from tests.openapi import assert_conforms
from tests.support import PROJECT_DIR, running_gateway, write_catalog, write_projects
from tests.test_usage import wait_for_record
from tests.test_wire_format import chat_chunks

TEAM_KEY = "sk-gw-mock-team-0001"
OTHER_KEY = "sk-gw-mock-other-0002"
USER = [{"role": "user", "content": "Say hello"}]
SHIPPED_ANSWER = "Hello! This is the gateway's Mock model: no provider was called."


@pytest.fixture(scope="module")
def mocked(tmp_path_factory):
    directory = tmp_path_factory.mktemp("mock-model")
    shipped = json.loads((PROJECT_DIR / "models.json").read_text())
    private = {
        "id": "team-mock",
        "provider": "Mock",
        "model_type": "Mock",
        "code": "team-mock",
        "parameters": {"response": "Only for team A.", "dimensions": 4},
        "costs": {"input": 0.5, "output": 1.0},
        "operations": ["ChatCompletion"],
        "projects": ["team-a"],
        "private": True,
    }
    throttled = {
        "id": "mock-throttled",
        "provider": "Mock",
        "model_type": "Mock",
        "code": "mock-throttled",
        "parameters": {"response": "litellm.RateLimitError"},
        "operations": ["ChatCompletion"],
    }
    catalog = write_catalog(directory / "models.json", [*shipped, private, throttled])
    projects = write_projects(directory / "projects.json", {TEAM_KEY: "team-a", OTHER_KEY: "team-b"})
    env = gateway_env(ALLOW_ANONYMOUS="false", MODELS_FILE=str(catalog), PROJECTS_FILE=str(projects))
    with running_gateway(directory, env) as process:
        yield process


def test_the_shipped_mock_model_answers_a_chat_and_leaves_a_usage_record(mocked):
    reply = mocked.client(TEAM_KEY, request_id="mock-plain").chat.completions.create(model="mock", messages=USER)

    ChatCompletion.model_validate(reply.to_dict())
    assert reply.model == "mock"
    assert reply.choices[0].message.content == SHIPPED_ANSWER
    assert reply.usage.prompt_tokens > 0 and reply.usage.completion_tokens > 0
    record = wait_for_record(mocked, "mock-plain")
    assert record["project"] == "team-a" and record["model"] == "mock" and record["status"] == 200
    assert (record["prompt_tokens"], record["completion_tokens"]) == (
        reply.usage.prompt_tokens,
        reply.usage.completion_tokens,
    )


def test_the_mock_model_streams_with_usage(mocked):
    chunks = list(
        mocked.client(TEAM_KEY, request_id="mock-stream").chat.completions.create(
            model="mock",
            messages=USER,
            stream=True,
            stream_options={"include_usage": True},
        )
    )

    for chunk in chunks:
        ChatCompletionChunk.model_validate(chunk.to_dict())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == SHIPPED_ANSWER
    assert len([c for c in chunks if c.choices]) > 1
    usage = chunks[-1].usage
    assert usage is not None and usage.completion_tokens > 0
    record = wait_for_record(mocked, "mock-stream")
    assert record["stream"] is True
    assert (record["prompt_tokens"], record["completion_tokens"]) == (usage.prompt_tokens, usage.completion_tokens)


@pytest.mark.parametrize("encoding_format", ["float", "base64"])
def test_the_mock_model_embeds(mocked, encoding_format):
    http = openai.OpenAI(base_url=f"{mocked.url}/v1", api_key=TEAM_KEY, max_retries=0).with_raw_response
    raw = http.embeddings.create(model="mock", input="hello", encoding_format=encoding_format)
    payload = raw.http_response.json()

    vector = payload["data"][0]["embedding"]
    if encoding_format == "base64":
        raw_bytes = base64.b64decode(vector)
        vector = list(struct.unpack(f"<{len(raw_bytes) // 4}f", raw_bytes))
    CreateEmbeddingResponse.model_validate(payload | {"data": [payload["data"][0] | {"embedding": vector}]})
    assert len(vector) == 8 and sum(v * v for v in vector) == pytest.approx(1.0)
    assert payload["usage"]["prompt_tokens"] > 0


def test_the_mock_model_embeds_through_the_sdk_default(mocked):
    result = mocked.client(TEAM_KEY, request_id="mock-embed").embeddings.create(model="mock", input="hello")

    assert len(result.data[0].embedding) == 8
    record = wait_for_record(mocked, "mock-embed")
    assert record["operation"] == "embeddings" and record["prompt_tokens"] == result.usage.prompt_tokens


@pytest.mark.parametrize(
    ("given", "count", "tokens"),
    [(["one two", "three"], 2, 3), ([[1, 2, 3], [4]], 2, 4), ([7, 8], 1, 2), ("a b c", 1, 3)],
)
def test_the_mock_model_embeds_each_input(mocked, given, count, tokens):
    request_id = f"mock-embed-{count}-{tokens}"
    result = mocked.client(TEAM_KEY, request_id=request_id).embeddings.create(model="mock", input=given)

    assert [item.index for item in result.data] == list(range(count))
    assert all(len(item.embedding) == 8 for item in result.data)
    assert (result.usage.prompt_tokens, result.usage.total_tokens) == (tokens, tokens)
    assert wait_for_record(mocked, request_id)["prompt_tokens"] == tokens


def test_the_mock_model_answers_the_responses_api_whole(mocked):
    response = mocked.client(TEAM_KEY, request_id="mock-responses").responses.create(model="mock", input="Say hello")

    ResponsesResponse.model_validate(response.to_dict())
    assert response.model == "mock" and response.output_text == SHIPPED_ANSWER
    record = wait_for_record(mocked, "mock-responses")
    assert record["operation"] == "Responses" and record["completion_tokens"] == response.usage.output_tokens

    with pytest.raises(openai.BadRequestError) as refused:
        mocked.client(TEAM_KEY, request_id="mock-responses-stream").responses.create(
            model="mock", input="Say hello", stream=True
        )
    assert refused.value.body["param"] == "stream"
    assert wait_for_record(mocked, "mock-responses-stream")["status"] == 400  # the Mock deployment refused it


def test_mock_models_keep_keys_private_models_and_operations(mocked):
    with pytest.raises(openai.AuthenticationError):
        mocked.client("sk-gw-not-a-key").chat.completions.create(model="mock", messages=USER)
    with pytest.raises(openai.NotFoundError):
        mocked.client(OTHER_KEY).chat.completions.create(model="team-mock", messages=USER)
    assert "team-mock" not in [m.id for m in mocked.client(OTHER_KEY).models.list()]
    with pytest.raises(openai.BadRequestError) as unsupported:
        mocked.client(TEAM_KEY).images.generate(model="mock", prompt="a fox")
    assert unsupported.value.code == "unsupported_operation"

    reply = mocked.client(TEAM_KEY, request_id="mock-private").chat.completions.create(model="team-mock", messages=USER)
    assert reply.choices[0].message.content == "Only for team A."
    record = wait_for_record(mocked, "mock-private")
    assert record["cost"] == pytest.approx((record["prompt_tokens"] * 0.5 + record["completion_tokens"] * 1.0) / 1000)
    assert record["cost"] > 0


def test_a_mock_model_can_stand_for_a_throttled_provider(mocked):
    with pytest.raises(openai.RateLimitError) as throttled:
        mocked.client(TEAM_KEY, request_id="mock-429").chat.completions.create(model="mock-throttled", messages=USER)

    assert throttled.value.body["type"] == "rate_limit_error"
    assert wait_for_record(mocked, "mock-429")["status"] == 429


def test_every_mock_answer_conforms_to_openais_schema(mocked):
    """Raw bodies and chunks (an SDK would forgive what it parses) against OpenAI's OpenAPI schema."""
    auth = {"Authorization": f"Bearer {TEAM_KEY}"}

    def post(path, body):
        response = httpx.post(f"{mocked.url}/v1/{path}", json=body, headers=auth, timeout=30)
        assert response.status_code == 200, response.text
        return response.json()

    completion = post("chat/completions", {"model": "mock", "messages": USER})
    assert_conforms("CreateChatCompletionResponse", completion, "mock completion")
    for stream_options in ({}, {"stream_options": {"include_usage": True}}):
        chunks = chat_chunks(mocked.url, {"model": "mock", "messages": USER} | stream_options, auth)
        for position, chunk in enumerate(chunks):
            assert_conforms("CreateChatCompletionStreamResponse", chunk, f"mock chunk {position}")
        assert len({chunk["id"] for chunk in chunks}) == 1
        assert bool(chunks[-1].get("usage")) == bool(stream_options)
    embeddings = post("embeddings", {"model": "mock", "input": ["a", "b"], "encoding_format": "float"})
    assert_conforms("CreateEmbeddingResponse", embeddings, "mock embeddings")
    assert_conforms("Response", post("responses", {"model": "mock", "input": "Say hello"}), "mock response")
