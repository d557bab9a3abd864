"""Every body and stream chunk a caller gets, checked against OpenAI's own OpenAPI schema.

The calls are made with raw HTTP (an SDK would parse, and so forgive, what it
reads), for every operation and every provider family the gateway serves.
"""

from __future__ import annotations

import base64
import json
import struct
from typing import Any

import httpx
import pytest

from tests.conftest import FAMILIES
from tests.openapi import assert_conforms
from tests.support import WEATHER_TOOLS, wav_bytes

USER = [{"role": "user", "content": "hello there gateway"}]
TOOLS = WEATHER_TOOLS
CHAT_FAMILIES = ["azure", *FAMILIES]


def chat_target(request: pytest.FixtureRequest, family: str) -> tuple[str, str]:
    """The gateway URL and catalog model for a provider family (the Vertex gateway starts only if needed)."""
    if family == "azure":
        return request.getfixturevalue("gateway").url, "chat-a"
    return request.getfixturevalue("vertex_gateway").url, family


def post(url: str, body: dict[str, Any], **options: Any) -> httpx.Response:
    response = httpx.post(url, json=body, timeout=30, **options)
    assert response.status_code == 200, response.text
    return response


def sse(url: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> list[tuple[str | None, Any]]:
    """The (event, data) pairs of a streamed answer, up to `[DONE]` (which must end a chat stream)."""
    events: list[tuple[str | None, Any]] = []
    event: str | None = None
    with httpx.stream("POST", url, json=body, headers=headers, timeout=30) as response:
        assert response.status_code == 200, response.read().decode()
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("event: "):
                event = line.removeprefix("event: ")
            elif line.startswith("data: "):
                data = line.removeprefix("data: ")
                events.append((event, data if data == "[DONE]" else json.loads(data)))
                event = None
    return events


def chat_chunks(url: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> list[dict[str, Any]]:
    events = sse(f"{url}/v1/chat/completions", body | {"stream": True}, headers)
    assert events[-1] == (None, "[DONE]")
    assert all(event is None for event, _ in events), "chat chunks carry no SSE event names"
    return [data for _, data in events[:-1]]


# Chat completions


@pytest.mark.parametrize("tools", [False, True], ids=["text", "tools"])
@pytest.mark.parametrize("family", CHAT_FAMILIES)
def test_chat_completion(request, family, tools):
    url, model = chat_target(request, family)
    body = {"model": model, "messages": USER, "max_tokens": 100} | ({"tools": TOOLS} if tools else {})
    completion = post(f"{url}/v1/chat/completions", body).json()

    assert_conforms("CreateChatCompletionResponse", completion, f"{family} completion")
    assert completion["model"] == model
    message = completion["choices"][0]["message"]
    assert bool(message.get("tool_calls")) == tools


@pytest.mark.parametrize("tools", [False, True], ids=["text", "tools"])
@pytest.mark.parametrize("include_usage", [False, True], ids=["usage-not-asked", "usage-asked"])
@pytest.mark.parametrize("family", CHAT_FAMILIES)
def test_chat_stream(request, family, include_usage, tools):
    url, model = chat_target(request, family)
    body = {"model": model, "messages": USER, "max_tokens": 100} | ({"tools": TOOLS} if tools else {})
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    chunks = chat_chunks(url, body)

    for position, chunk in enumerate(chunks):
        assert_conforms("CreateChatCompletionStreamResponse", chunk, f"{family} chunk {position}")
    assert len({chunk["id"] for chunk in chunks}) == 1, "every chunk of a stream carries the same id"
    assert chunks[0]["id"]
    assert len({chunk["created"] for chunk in chunks}) == 1
    assert {chunk["model"] for chunk in chunks} == {model}
    finishing = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert [c["choices"][0]["finish_reason"] for c in finishing] == ["tool_calls" if tools else "stop"]
    with_usage = [chunk for chunk in chunks if chunk.get("usage")]
    if include_usage:
        assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] > 0
        assert with_usage == [chunks[-1]]
    else:
        assert with_usage == []
        assert all(chunk["choices"] for chunk in chunks), "no choiceless chunk for a caller who did not ask for usage"


def test_azure_filter_results_are_kept(gateway):
    completion = post(f"{gateway.url}/v1/chat/completions", {"model": "chat-a", "messages": USER}).json()
    assert completion["prompt_filter_results"][0]["content_filter_results"]["hate"]["filtered"] is False
    assert completion["choices"][0]["content_filter_results"]["violence"]["severity"] == "safe"
    assert completion["system_fingerprint"] == "fp_fake"

    # In a stream, LiteLLM 1.110.2 keeps the choices' filter results but not Azure's prompt-filter chunk.
    chunks = chat_chunks(gateway.url, {"model": "chat-a", "messages": USER})
    assert any(c["choices"][0].get("content_filter_results") for c in chunks)


def test_an_unasked_usage_chunk_is_withheld_yet_metered(gateway):
    chunks = chat_chunks(gateway.url, {"model": "chat-a", "messages": USER}, headers={"x-request-id": "wire-unasked"})
    assert not any(chunk.get("usage") for chunk in chunks)
    record = gateway.usage_record("wire-unasked")
    assert (record["prompt_tokens"], record["completion_tokens"], record["total_tokens"]) == (3, 4, 7)


def test_several_choices_stream_under_one_id(gateway):
    chunks = chat_chunks(
        gateway.url, {"model": "chat-a", "messages": USER, "n": 2, "logprobs": True, "top_logprobs": 2}
    )
    for chunk in chunks:
        assert_conforms("CreateChatCompletionStreamResponse", chunk)
    assert len({chunk["id"] for chunk in chunks}) == 1
    assert {c["choices"][0]["index"] for c in chunks} == {0, 1}


# Embeddings and images


@pytest.mark.parametrize("encoding", ["float", "base64"])
@pytest.mark.parametrize("family", ["azure", "vertex"])
def test_embeddings(request, family, encoding):
    url, model = (
        (request.getfixturevalue("gateway").url, "embed-only")
        if family == "azure"
        else (request.getfixturevalue("vertex_gateway").url, "gemini-embed")
    )
    body = {"model": model, "input": ["first text", "second text"], "encoding_format": encoding}
    result = post(f"{url}/v1/embeddings", body).json()
    if encoding == "base64":
        # OpenAI's schema describes only the float form; base64 is that array as little-endian float32.
        for item in result["data"]:
            raw = base64.b64decode(item["embedding"], validate=True)
            item["embedding"] = list(struct.unpack(f"<{len(raw) // 4}f", raw))
    assert_conforms("CreateEmbeddingResponse", result, f"{family} embeddings")
    assert result["model"] == model


@pytest.mark.parametrize("response_format", ["url", "b64_json"])
def test_azure_images(gateway, response_format):
    body = {"model": "image-model", "prompt": "a red fox", "n": 2, "response_format": response_format}
    images = post(f"{gateway.url}/v1/images/generations", body).json()
    assert_conforms("ImagesResponse", images, "Azure images")
    assert len(images["data"]) == 2 and response_format in images["data"][0]


def test_azure_images_with_token_usage(gateway):
    body = {"model": "image-model", "prompt": "a red fox", "quality": "low"}
    images = post(f"{gateway.url}/v1/images/generations", body).json()
    assert_conforms("ImagesResponse", images, "Azure gpt-image images")
    assert images["usage"]["output_tokens"] > 0


def test_imagen_images(vertex_gateway):
    images = post(f"{vertex_gateway.url}/v1/images/generations", {"model": "imagen", "prompt": "a fox"}).json()
    assert_conforms("ImagesResponse", images, "Imagen images")


# Transcriptions


@pytest.mark.parametrize(
    ("response_format", "schema"),
    [("json", "CreateTranscriptionResponseJson"), ("verbose_json", "CreateTranscriptionResponseVerboseJson")],
)
def test_transcriptions(gateway, response_format, schema):
    response = httpx.post(
        f"{gateway.url}/v1/audio/transcriptions",
        data={"model": "stt-model", "response_format": response_format, "timestamp_granularities[]": "word"},
        files={"file": ("clip.wav", wav_bytes(), "audio/wav")},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    assert_conforms(schema, response.json(), f"{response_format} transcription")


# Responses API


def test_response_object(gateway):
    body = {"model": "responses-model", "input": "hello responses", "instructions": "be brief"}
    response = post(f"{gateway.url}/v1/responses", body).json()
    assert_conforms("Response", response, "Response")
    assert response["model"] == "responses-model"


def test_response_stream_events(gateway):
    events = sse(f"{gateway.url}/v1/responses", {"model": "responses-model", "input": "stream it", "stream": True})
    assert events and (None, "[DONE]") not in events
    for name, data in events:
        assert name == data["type"]
        assert_conforms("ResponseStreamEvent", data, f"event {name}")
        if "response" in data:
            assert data["response"]["model"] == "responses-model"
    assert events[-1][0] == "response.completed"


# Models and errors


def test_models(gateway):
    listing = httpx.get(f"{gateway.url}/v1/models", timeout=30).json()
    assert_conforms("ListModelsResponse", listing, "model list")
    assert_conforms("Model", httpx.get(f"{gateway.url}/v1/models/chat-a", timeout=30).json(), "model")


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/v1/chat/completions", {"model": "chat-a"}, 400),
        ("/v1/chat/completions", {"model": "no-such-model", "messages": USER}, 404),
        ("/v1/chat/completions", {"model": "embed-only", "messages": USER}, 400),
        ("/v1/chat/completions", {"model": "rate-limited", "messages": USER}, 429),
        ("/v1/chat/completions", {"model": "filtered", "messages": USER}, 400),
        ("/v1/chat/completions", {"model": "broken", "messages": USER}, 502),
        ("/v1/embeddings", {"model": "embed-only"}, 400),
        ("/v1/models/no-such-model", None, 404),
    ],
)
def test_error_bodies(gateway, path, body, status):
    if body is None:
        response = httpx.get(gateway.url + path, timeout=30)
    else:
        response = httpx.post(gateway.url + path, json=body, timeout=30)
    assert response.status_code == status, response.text
    assert_conforms("ErrorResponse", response.json(), f"{status} error")


def test_an_error_mid_stream_is_an_openai_error_event(gateway):
    events = sse(f"{gateway.url}/v1/chat/completions", {"model": "midstream-error", "messages": USER, "stream": True})
    name, error = events[-2]
    assert name == "error" and events[-1] == (None, "[DONE]")
    assert_conforms("ErrorResponse", error, "stream error")


def test_the_worker_logs_no_serialisation_warnings(gateway):
    post(f"{gateway.url}/v1/embeddings", {"model": "embed-only", "input": "x", "encoding_format": "base64"})
    post(f"{gateway.url}/v1/responses", {"model": "responses-model", "input": "hi"})
    sse(f"{gateway.url}/v1/responses", {"model": "responses-model", "input": "hi", "stream": True})
    assert "PydanticSerializationUnexpectedValue" not in gateway.log()
