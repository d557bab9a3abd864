"""The Mock model: LiteLLM's own `mock_response` answers through the gateway's
usual path (keys, private models, operations, usage records), with the
catalog the project ships (models.json)."""

import base64
import json
import math
import struct
import subprocess
import sys
import time
import typing

import httpx
import jsonschema
import openai
import openai.lib._pydantic
import pydantic
import pytest
from openai.types import CreateEmbeddingResponse
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.responses import Response as ResponsesResponse

from tests.conftest import gateway_env
from tests.openapi import assert_conforms
from tests.support import PROJECT_DIR, GatewayProcess, running_gateway, write_catalog, write_projects
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
        "operations": ["ChatCompletion", "embeddings"],
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
    tools = {
        "id": "mock-tools",
        "provider": "Mock",
        "model_type": "Mock",
        "code": "mock-tools",
        "parameters": {"tool_call": {"name": "get_time", "arguments": {"zone": "Europe/Paris"}}},
        "operations": ["ChatCompletion", "Responses"],
    }
    no_tools = {
        "id": "mock-no-tools",
        "provider": "Mock",
        "model_type": "Mock",
        "code": "mock-no-tools",
        "parameters": {"tool_call": False},
        "operations": ["ChatCompletion"],
    }
    catalog = write_catalog(directory / "models.json", [*shipped, private, throttled, tools, no_tools])
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


# The Mock model in a caller's CI: tools, structured outputs, streamed
# Responses, fresh ids and times, embeddings' dimensions. Every answer the
# openai client reads here is checked against OpenAI's schema first
# (`Conforming`), each stream event included.

WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "minLength": 2},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
        "hourly": {"type": "boolean"},
    },
    "required": ["city", "unit", "days"],
    "additionalProperties": False,
}
TIME = {"type": "object", "properties": {"zone": {"type": "string"}}, "required": ["zone"]}
CHAT_TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER}},
    {"type": "function", "function": {"name": "get_time", "parameters": TIME}},
]
RESPONSES_TOOLS = [{"type": "function", "name": tool["function"]["name"], **tool["function"]} for tool in CHAT_TOOLS]
#: What each endpoint's answers must be: the whole body's schema, a stream event's.
SCHEMAS = {
    "/v1/chat/completions": ("CreateChatCompletionResponse", "CreateChatCompletionStreamResponse"),
    "/v1/responses": ("Response", "ResponseStreamEvent"),
    "/v1/embeddings": ("CreateEmbeddingResponse", None),
    "/v1/completions": ("CreateCompletionResponse", "CreateCompletionResponse"),
}


class Conforming(httpx.BaseTransport):
    """The openai client's transport: each successful answer is read whole and
    checked against OpenAI's schema (a stream event by event) before the client parses it."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.checked = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        content = response.read()
        whole_schema, event_schema = SCHEMAS.get(request.url.path, (None, None))
        if response.status_code == 200 and whole_schema:
            if response.headers["content-type"].startswith("text/event-stream"):
                for line in content.decode().splitlines():
                    if line.startswith("data: ") and line != "data: [DONE]":
                        assert_conforms(event_schema, json.loads(line.removeprefix("data: ")), request.url.path)
                        self.checked += 1
            else:
                assert_conforms(whole_schema, _floats(json.loads(content)), request.url.path)
                self.checked += 1
        kept = [(k, v) for k, v in response.headers.items() if k.lower() not in ("content-length", "content-encoding")]
        return httpx.Response(response.status_code, headers=kept, content=content, request=request)

    def close(self) -> None:
        self.inner.close()


def _floats(body):
    """Embeddings with base64 vectors (the openai client's default) as the floats they encode."""
    for item in body.get("data", []) if body.get("object") == "list" else []:
        if isinstance(item.get("embedding"), str):
            raw = base64.b64decode(item["embedding"])
            item["embedding"] = list(struct.unpack(f"<{len(raw) // 4}f", raw))
    return body


@pytest.fixture
def conforming(mocked):
    """An openai client of the Mock gateway whose every answer is checked against OpenAI's schema."""
    transport = Conforming()
    clients = []

    def client(request_id=None):
        headers = {"x-request-id": request_id} if request_id else None
        made = openai.OpenAI(
            base_url=f"{mocked.url}/v1",
            api_key=TEAM_KEY,
            max_retries=0,
            default_headers=headers,
            http_client=httpx.Client(transport=transport, timeout=30),
        )
        clients.append(made)
        return made

    yield client
    for made in clients:
        made.close()
    assert transport.checked > 0


def _arguments(text, schema):
    arguments = json.loads(text)
    jsonschema.validate(arguments, schema)
    return arguments


def test_the_mock_model_calls_the_first_offered_tool_with_arguments_its_schema_accepts(conforming):
    reply = conforming("mock-tool").chat.completions.create(model="mock", messages=USER, tools=CHAT_TOOLS)

    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    [call] = choice.message.tool_calls
    assert call.function.name == "get_weather" and call.id.startswith("call_")
    assert _arguments(call.function.arguments, WEATHER) == {"city": "aa", "unit": "celsius", "days": 1}
    assert reply.usage.completion_tokens > 0


@pytest.mark.parametrize(
    ("model", "tool_choice", "called"),
    [
        ("mock", "none", None),
        ("mock", "required", "get_weather"),
        ("mock", {"type": "function", "function": {"name": "get_time"}}, "get_time"),
        ("mock-tools", "auto", "get_time"),
        ("mock-no-tools", "auto", None),
        ("mock-no-tools", "required", "get_weather"),
    ],
)
def test_the_mock_model_follows_tool_choice_and_its_catalog_entry(conforming, model, tool_choice, called):
    reply = conforming().chat.completions.create(model=model, messages=USER, tools=CHAT_TOOLS, tool_choice=tool_choice)

    calls = reply.choices[0].message.tool_calls or []
    assert [call.function.name for call in calls] == ([called] if called else [])
    assert (reply.choices[0].message.content is None) == bool(called)


def test_a_catalog_entry_gives_the_tool_calls_arguments(conforming):
    reply = conforming().chat.completions.create(model="mock-tools", messages=USER, tools=CHAT_TOOLS)
    assert json.loads(reply.choices[0].message.tool_calls[0].function.arguments) == {"zone": "Europe/Paris"}

    only_weather = conforming().chat.completions.create(model="mock-tools", messages=USER, tools=CHAT_TOOLS[:1])
    [call] = only_weather.choices[0].message.tool_calls  # the configured tool is not offered: the first one is
    assert call.function.name == "get_weather" and _arguments(call.function.arguments, WEATHER)


def test_the_mock_model_answers_once_the_tool_has_answered(conforming):
    client = conforming()
    first = client.chat.completions.create(model="mock", messages=USER, tools=CHAT_TOOLS)
    call = first.choices[0].message.tool_calls[0]
    conversation = [
        *USER,
        first.choices[0].message.to_dict(),
        {"role": "tool", "tool_call_id": call.id, "content": "Sunny, 21 degrees"},
    ]

    second = client.chat.completions.create(model="mock", messages=conversation, tools=CHAT_TOOLS)

    assert second.choices[0].finish_reason == "stop" and second.choices[0].message.content == SHIPPED_ANSWER


def test_the_mock_model_streams_a_tool_call_as_openai_does(conforming, mocked):
    chunks = list(
        conforming("mock-tool-stream").chat.completions.create(
            model="mock", messages=USER, tools=CHAT_TOOLS, stream=True, stream_options={"include_usage": True}
        )
    )

    deltas = [chunk.choices[0].delta for chunk in chunks if chunk.choices]
    opening = deltas[0].tool_calls[0]
    assert opening.id.startswith("call_") and opening.function.name == "get_weather"
    assert all(delta.tool_calls[0].index == 0 for delta in deltas[:-1]) and len(deltas) > 3
    arguments = "".join(delta.tool_calls[0].function.arguments for delta in deltas[:-1])
    assert _arguments(arguments, WEATHER)
    assert chunks[-2].choices[0].finish_reason == "tool_calls"
    usage = chunks[-1].usage
    assert usage.completion_tokens > 0
    assert wait_for_record(mocked, "mock-tool-stream")["completion_tokens"] == usage.completion_tokens


class Forecast(pydantic.BaseModel):
    city: str
    days: int
    warnings: list[str]
    unit: typing.Literal["celsius", "fahrenheit"]
    detail: "Detail | None"


class Detail(pydantic.BaseModel):
    humidity: float


Forecast.model_rebuild()


def test_the_mock_model_answers_a_json_schema_with_an_instance_of_it(conforming):
    client = conforming()
    parsed = client.chat.completions.parse(model="mock", messages=USER, response_format=Forecast)

    assert isinstance(parsed.choices[0].message.parsed, Forecast)
    schema = openai.lib._pydantic.to_strict_json_schema(Forecast)
    jsonschema.validate(json.loads(parsed.choices[0].message.content), schema)

    answered = client.responses.parse(model="mock", input="Forecast?", text_format=Forecast)
    assert isinstance(answered.output_parsed, Forecast)


def test_the_mock_model_answers_json_object_with_an_object(conforming):
    client = conforming()
    reply = client.chat.completions.create(model="mock", messages=USER, response_format={"type": "json_object"})
    assert json.loads(reply.choices[0].message.content) == {"response": SHIPPED_ANSWER}

    response = client.responses.create(model="mock", input="JSON, please", text={"format": {"type": "json_object"}})
    assert json.loads(response.output_text) == {"response": SHIPPED_ANSWER}


def test_the_mock_model_calls_tools_through_the_responses_api(conforming):
    client = conforming()
    response = client.responses.create(model="mock", input="Weather in Paris?", tools=RESPONSES_TOOLS)

    [call] = response.output
    assert call.type == "function_call" and call.name == "get_weather"
    assert call.id.startswith("fc_") and call.call_id.startswith("call_")
    assert _arguments(call.arguments, WEATHER)

    answered = client.responses.create(
        model="mock",
        input=[
            {"role": "user", "content": "Weather in Paris?"},
            call.to_dict(),
            {"type": "function_call_output", "call_id": call.call_id, "output": "Sunny"},
        ],
        tools=RESPONSES_TOOLS,
    )
    assert answered.output_text == SHIPPED_ANSWER
    forced = client.responses.create(
        model="mock", input="Time?", tools=RESPONSES_TOOLS, tool_choice={"type": "function", "name": "get_time"}
    )
    assert forced.output[0].name == "get_time"


RESPONSE_TEXT_EVENTS = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
    "response.output_text.delta",
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
]


def test_the_mock_model_streams_the_responses_api(conforming, mocked):
    with conforming("mock-responses-stream").responses.stream(model="mock", input="Say hello") as stream:
        events = list(stream)
        final = stream.get_final_response()

    names = [event.type for event in events]
    assert [name for position, name in enumerate(names) if name != names[position - 1]] == RESPONSE_TEXT_EVENTS
    assert names.count("response.output_text.delta") > 1
    assert [event.sequence_number for event in events] == list(range(len(events)))
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == SHIPPED_ANSWER
    assert final.output_text == SHIPPED_ANSWER and final.status == "completed"
    assert len({event.response.id for event in events if hasattr(event, "response")}) == 1
    record = wait_for_record(mocked, "mock-responses-stream")
    assert record["stream"] is True and record["status"] == 200
    assert record["completion_tokens"] == final.usage.output_tokens > 0


def test_the_mock_model_answers_a_legacy_completion(conforming, mocked):
    completion = conforming("mock-completion").completions.create(model="mock", prompt="Say hello", max_tokens=20)

    assert completion.object == "text_completion" and completion.model == "mock"
    assert completion.id.startswith("cmpl-") and abs(completion.created - time.time()) < 60
    assert [(choice.index, choice.text, choice.finish_reason) for choice in completion.choices] == [
        (0, SHIPPED_ANSWER, "stop")
    ]
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (2, len(SHIPPED_ANSWER.split()))
    record = wait_for_record(mocked, "mock-completion")
    assert (record["operation"], record["model"], record["stream"]) == ("Completion", "mock", False)
    assert record["completion_tokens"] == completion.usage.completion_tokens

    several = conforming().completions.create(model="mock", prompt=["one", "two three"], n=2, echo=True)
    assert [choice.index for choice in several.choices] == [0, 1, 2, 3]
    assert [choice.text for choice in several.choices] == [f"one{SHIPPED_ANSWER}"] * 2 + [
        f"two three{SHIPPED_ANSWER}"
    ] * 2
    assert several.usage.prompt_tokens == 3
    tokens = conforming().completions.create(model="mock", prompt=[[1, 2, 3], [4]], echo=True)
    assert [choice.text for choice in tokens.choices] == [SHIPPED_ANSWER] * 2 and tokens.usage.prompt_tokens == 4


@pytest.mark.parametrize("include_usage", [False, True], ids=["no-usage-chunk", "usage-chunk"])
def test_the_mock_model_streams_a_legacy_completion(conforming, mocked, include_usage):
    request_id = f"mock-completion-stream-{include_usage}"
    chunks = list(
        conforming(request_id).completions.create(
            model="mock", prompt="Say hello", stream=True, stream_options={"include_usage": include_usage}
        )
    )

    texts = [chunk.choices[0].text for chunk in chunks if chunk.choices]
    assert "".join(texts) == SHIPPED_ANSWER and len(texts) > 2
    finished = [chunk.choices[0].finish_reason for chunk in chunks if chunk.choices]
    assert finished[-1] == "stop" and set(finished[:-1]) == {None}
    assert len({chunk.id for chunk in chunks}) == 1 and {chunk.model for chunk in chunks} == {"mock"}
    assert (chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0) is include_usage
    record = wait_for_record(mocked, request_id)
    assert (record["operation"], record["stream"]) == ("Completion", True)
    assert record["completion_tokens"] == len(SHIPPED_ANSWER.split())


def test_the_mock_model_streams_a_function_call_through_the_responses_api(conforming):
    events = list(conforming().responses.create(model="mock", input="Weather?", tools=RESPONSES_TOOLS, stream=True))

    names = [event.type for event in events]
    assert names[:3] == ["response.created", "response.in_progress", "response.output_item.added"]
    assert names[-3:] == [
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    arguments = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    assert _arguments(arguments, WEATHER) and events[-3].arguments == arguments
    assert events[-1].response.output[0].type == "function_call"


def test_every_mock_answer_has_its_own_id_and_the_current_time(conforming):
    client = conforming()
    before = int(time.time())
    chats = [client.chat.completions.create(model="mock", messages=USER) for _ in range(2)]
    responses = [client.responses.create(model="mock", input="Say hello", tools=RESPONSES_TOOLS) for _ in range(2)]
    after = int(time.time())

    assert chats[0].id != chats[1].id and all(chat.id.startswith("chatcmpl-") for chat in chats)
    assert all(before <= chat.created <= after for chat in chats)
    assert responses[0].id != responses[1].id and all(r.id.startswith("resp_") for r in responses)
    assert all(before <= r.created_at <= after for r in responses)
    choices = client.chat.completions.create(model="mock", messages=USER, tools=CHAT_TOOLS, n=2).choices
    assert len({choice.message.tool_calls[0].id for choice in choices}) == 2
    assert (
        len({item.id for r in responses for item in r.output} | {item.call_id for r in responses for item in r.output})
        == 4
    )


def test_the_mock_model_embeds_in_the_dimensions_asked_for(conforming):
    client = conforming()
    asked = client.embeddings.create(model="mock", input=["a fox", "a dog", "a fox"], dimensions=5)
    vectors = [item.embedding for item in asked.data]

    assert all(len(vector) == 5 and sum(v * v for v in vector) == pytest.approx(1.0) for vector in vectors)
    assert vectors[0] == vectors[2] != vectors[1]  # the same input, the same vector
    again = client.embeddings.create(model="mock", input="a fox", dimensions=5).data[0].embedding
    assert again == pytest.approx(vectors[0])
    longer = client.embeddings.create(model="mock", input="a fox", dimensions=64).data[0].embedding
    assert len(longer) == 64
    shortened = longer[:5]
    norm = math.sqrt(sum(v * v for v in shortened))
    assert [v / norm for v in shortened] == pytest.approx(vectors[0], abs=1e-6)
    assert len(client.embeddings.create(model="team-mock", input="x").data[0].embedding) == 4  # the catalog's


_MOCK_CALLS = """
import json, sys
from pathlib import Path
from starlette.testclient import TestClient
from shared.localhost import local_app

with TestClient(local_app(Path.cwd())) as client:
    chat = {"model": "mock", "messages": [{"role": "user", "content": "hi"}]}
    answers = [
        client.post("/v1/chat/completions", json=chat),
        client.post("/v1/chat/completions", json=chat | {"stream": True}),
        client.post("/v1/responses", json={"model": "mock", "input": "hi", "stream": True}),
        client.post("/v1/embeddings", json={"model": "mock", "input": "hi"}),
    ]
print(json.dumps([[answer.status_code for answer in answers], "litellm" in sys.modules]))
"""


def test_a_gateway_serving_only_the_mock_model_never_imports_litellm(tmp_path):
    env = gateway_env(MODELS_FILE=str(PROJECT_DIR / "models.json"), USAGE_FILE=str(tmp_path / "usage.jsonl"))
    env = GatewayProcess(env, tmp_path / "unused.log").env
    command = [sys.executable, "-c", _MOCK_CALLS]
    result = subprocess.run(command, cwd=PROJECT_DIR, env=env, capture_output=True, text=True, timeout=120)

    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.splitlines()[-1]) == [[200, 200, 200, 200], False]
