"""Azure OpenAI chat completions and embeddings relayed without LiteLLM.

The relay must send what LiteLLM sends (same path, query, auth header, body),
for every catalog shape it takes; the others stay with LiteLLM. What callers
get is the provider's bytes, changed only as `shared/wire.py` says.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from shared.domain import LLMModel
from shared.errors import GatewayError
from shared.providers import azure_relay
from shared.providers.aiohttp_client import ConnectionPool
from shared.providers.arguments import CHAT_COMPLETION_FIELDS, EMBEDDING_FIELDS, litellm_arguments
from shared.providers.litellm_calls import LiteLLM
from shared.providers.litellm_import import litellm
from shared.providers.mapper import AzureDeployment, ProviderCall, ProviderMapper, Transports, relayable_azure
from shared.routing import BREAKER_THRESHOLD
from tests.conftest import UPSTREAM_KEYS, azure_entry, gateway_env
from tests.fakes.azure_openai import EMBEDDING_MODEL, FakeAzureOpenAI
from tests.fakes.server import RecordedRequest
from tests.openapi import assert_conforms
from tests.support import PROJECT_DIR, GatewayProcess, write_catalog

MESSAGES = [{"role": "user", "content": 'say "model": "gpt-4o-2024-08-06" — é ü \\u00e9'}]
TOOL = {
    "type": "function",
    "function": {"name": "lookup", "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}},
}


class _Literal:
    """Parameters as the catalog holds them (no secret references)."""

    async def resolve_parameters(self, parameters: dict[str, Any], *, model_id: str) -> dict[str, Any]:
        return dict(parameters)


class _Token:
    async def token(self, scope: str) -> str:
        return "entra-token-for-relay-test"


def _model(parameters: dict[str, Any], code: str = "dep-a") -> LLMModel:
    return LLMModel.from_document(
        {
            "id": "chat-relay",
            "name": "Chat relay",
            "provider": "Azure",
            "model_type": "AzureOpenAI",
            "code": code,
            "parameters": parameters,
            "operations": ["ChatCompletion"],
        }
    )


def _relay() -> azure_relay.AzureRelay:
    return azure_relay.AzureRelay(ConnectionPool(), fallback=LiteLLM())


def _mapper() -> ProviderMapper:
    litellm_transport = LiteLLM()
    transports = Transports(litellm_transport, _relay(), litellm_transport, litellm_transport, litellm_transport)
    return ProviderMapper(_Literal(), _Token(), transports)  # type: ignore[arg-type]


async def _call_for(parameters: dict[str, Any]) -> ProviderCall:
    model = _model(parameters)
    return await _mapper().call_for(model, model.deployments[0])


LiteLLMSide = Callable[[Any, ProviderCall], Awaitable[Any]]
RelaySide = Callable[[azure_relay.AzureRelay, AzureDeployment], Awaitable[Any]]


def _sent_both_ways(
    fake_azure: FakeAzureOpenAI,
    parameters: dict[str, Any],
    through_litellm: LiteLLMSide,
    relayed: RelaySide,
    refused: bool,
) -> tuple[RecordedRequest, RecordedRequest]:
    """One call made through LiteLLM, then through the relay: what the fake received of each,
    whose query and credential headers must be the same."""

    async def both() -> None:
        call = await _call_for(parameters)
        assert call.azure_relay is not None
        try:
            await through_litellm(await litellm(), call)
        except Exception:
            assert refused  # the fake knows no token (401) and no /apim path (404): both sides are refused
        transport = _relay()
        try:
            await relayed(transport, call.azure_relay)
        except GatewayError:
            assert refused
        finally:
            await transport.pool.close()

    asyncio.run(both())
    by_litellm, by_relay = fake_azure.requests
    assert by_relay.query == by_litellm.query == {"api-version": parameters["api_version"]}
    for header in ("api-key", "authorization"):
        assert by_relay.headers.get(header) == by_litellm.headers.get(header)
    assert by_relay.headers.get("api-key" if parameters.get("api_key") else "authorization")
    assert by_relay.json["model"] == "dep-a"
    return by_litellm, by_relay


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("credential", ["api-key", "entra-id"])
@pytest.mark.parametrize(
    ("endpoint_suffix", "api_version"),
    [
        ("", "2024-10-21"),
        ("/", "2024-10-21"),
        ("", "2025-04-01-preview"),
        ("/", "2024-02-15-preview"),
        ("/apim/aoai", "2024-10-21"),  # a gateway in front: the fake answers 404, the paths still compare
    ],
)
def test_the_relay_sends_what_litellm_sends(
    fake_azure: FakeAzureOpenAI, endpoint_suffix: str, api_version: str, credential: str, stream: bool
) -> None:
    parameters = {"endpoint": fake_azure.url + endpoint_suffix, "api_version": api_version}
    if credential == "api-key":
        parameters["api_key"] = UPSTREAM_KEYS["dep-a"]
    body: dict[str, Any] = {"model": "chat-relay", "messages": MESSAGES, "temperature": 0.2, "tools": [TOOL]}
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    arguments = litellm_arguments(body, CHAT_COMPLETION_FIELDS)

    async def through_litellm(llm: Any, call: ProviderCall) -> None:
        answer = await llm.acompletion(**call.keyword_arguments(arguments))
        if stream:
            async for _ in answer:
                pass

    async def relayed(transport: azure_relay.AzureRelay, deployment: AzureDeployment) -> None:
        response = await transport.send(deployment, azure_relay.CHAT_COMPLETIONS, body, "chat-relay")
        await response.read()

    refused = credential == "entra-id" or endpoint_suffix.startswith("/apim")
    by_litellm, by_relay = _sent_both_ways(fake_azure, parameters, through_litellm, relayed, refused)
    prefix = endpoint_suffix.rstrip("/")
    assert by_relay.path == by_litellm.path == f"{prefix}/openai/deployments/dep-a/chat/completions"
    assert by_relay.json == by_litellm.json


EMBEDDING_BODIES = {
    "text": {"input": "one two"},
    "texts-dimensions-base64-user": {"input": ["a b", "c"], "dimensions": 4, "encoding_format": "base64", "user": "u"},
    "tokens-float": {"input": [[1, 2, 3]], "encoding_format": "float"},
}


@pytest.mark.parametrize("credential", ["api-key", "entra-id"])
@pytest.mark.parametrize("case", EMBEDDING_BODIES)
def test_relayed_embeddings_go_where_litellm_sends_them(
    fake_azure: FakeAzureOpenAI, credential: str, case: str
) -> None:
    parameters = {"endpoint": fake_azure.url + "/", "api_version": "2024-10-21"}
    if credential == "api-key":
        parameters["api_key"] = UPSTREAM_KEYS["dep-a"]
    body: dict[str, Any] = {"model": "chat-relay"} | EMBEDDING_BODIES[case]
    arguments = litellm_arguments(body, EMBEDDING_FIELDS)

    async def through_litellm(llm: Any, call: ProviderCall) -> None:
        await llm.aembedding(**call.keyword_arguments(arguments))

    async def relayed(transport: azure_relay.AzureRelay, deployment: AzureDeployment) -> None:
        await transport.embeddings(deployment, body, "chat-relay")

    by_litellm, by_relay = _sent_both_ways(fake_azure, parameters, through_litellm, relayed, credential == "entra-id")
    assert by_relay.path == by_litellm.path == "/openai/deployments/dep-a/embeddings"
    # Without an encoding_format the openai SDK under LiteLLM asks for base64 and decodes it
    # for LiteLLM; the relay asks for what the caller asked for, and the caller's SDK decodes.
    asked_by_litellm = by_litellm.json | ({} if "encoding_format" in body else {"encoding_format": None})
    assert by_relay.json == {key: value for key, value in asked_by_litellm.items() if value is not None}


@pytest.mark.parametrize(
    ("endpoint", "api_version", "code"),
    [
        ("https://r.openai.azure.com", "v1", "dep-a"),
        ("https://r.openai.azure.com", "preview", "dep-a"),
        ("https://r.openai.azure.com", "latest", "dep-a"),
        ("https://r.openai.azure.com", None, "dep-a"),
        ("https://r.openai.azure.com/openai", "2024-10-21", "dep-a"),
        ("https://r.openai.azure.com/openai/", "2024-10-21", "dep-a"),
        ("https://apim.example.net/aoai?subscription=x", "2024-10-21", "dep-a"),
        ("$ENDPOINT_SECRET", "2024-10-21", "dep-a"),
        ("https://r.openai.azure.com", "2024-10-21", "dep a/../x"),
    ],
)
def test_shapes_the_relay_does_not_build_stay_with_litellm(endpoint: str, api_version: str | None, code: str) -> None:
    assert not relayable_azure(endpoint, api_version, code)
    parameters = {"endpoint": endpoint, "api_version": api_version, "api_key": "k"}
    model = _model(parameters, code)
    call = asyncio.run(_mapper().call_for(model, model.deployments[0]))
    assert call.azure_relay is None


# Byte-faithful: what the gateway relays is what the provider sent, less the wire rules.

_ID = re.compile(rb'"id"\s*:\s*"chatcmpl-[^"]*"')
_CREATED = re.compile(rb'"created"\s*:\s*\d+')


_UPSTREAM_MODEL = re.compile(rb'("model"\s*:\s*)"gpt-4o-2024-08-06"')


def _spliced(raw: bytes) -> bytes:
    return _UPSTREAM_MODEL.sub(rb'\1"chat-a"', raw)


def _normalised(raw: bytes) -> bytes:
    return _CREATED.sub(b'"created":0', _ID.sub(b'"id":"chatcmpl-x"', raw))


def _direct(fake_azure: FakeAzureOpenAI, body: dict[str, Any]) -> bytes:
    url = f"{fake_azure.url}/openai/deployments/dep-a/chat/completions"
    upstream = body | {"model": "dep-a"}
    if body.get("stream"):
        upstream["stream_options"] = (body.get("stream_options") or {}) | {"include_usage": True}
    response = httpx.post(
        url, params={"api-version": "2024-10-21"}, json=upstream, headers={"api-key": "key-a-7f3a9c1e5b2d4f60"}
    )
    response.raise_for_status()
    return response.content


def _expected_stream(raw: bytes, caller_wants_usage: bool) -> bytes:
    """The provider's events less the prompt-filter chunk (and the usage chunk and
    `usage: null` unless asked), `model` spliced, then the gateway's [DONE]."""
    kept = []
    for event in raw.split(b"\n\n"):
        if not event.startswith(b"data: ") or event == b"data: [DONE]":
            continue
        chunk = json.loads(event[6:])
        if not chunk["choices"] and not (caller_wants_usage and chunk.get("usage")):
            continue
        if not caller_wants_usage:
            event = event.replace(b', "usage": null', b"")
        kept.append(_spliced(event))
    return b"".join(event + b"\n\n" for event in kept) + b"data: [DONE]\n\n"


BYTE_CASES = {
    "plain": {"messages": MESSAGES},
    "n2-logprobs": {"messages": MESSAGES, "n": 2, "logprobs": True, "top_logprobs": 2},
    "tools": {"messages": MESSAGES, "tools": [TOOL]},
    "stream-usage-asked": {"messages": MESSAGES, "stream": True, "stream_options": {"include_usage": True}},
    "stream-usage-not-asked": {"messages": MESSAGES, "stream": True, "logprobs": True},
    "stream-tools-n2": {"messages": MESSAGES, "stream": True, "n": 2, "tools": [TOOL]},
}


@pytest.mark.parametrize("case", BYTE_CASES)
def test_relayed_bytes_are_the_providers(gateway: Any, fake_azure: FakeAzureOpenAI, case: str) -> None:
    body = {"model": "chat-a"} | BYTE_CASES[case]
    direct = _direct(fake_azure, body)
    relayed = httpx.post(f"{gateway.url}/v1/chat/completions", json=body, timeout=30)
    assert relayed.status_code == 200, relayed.text
    if not body.get("stream"):
        assert _normalised(relayed.content) == _normalised(_spliced(direct))
        return
    caller_wants_usage = bool(body.get("stream_options"))
    assert _normalised(relayed.content) == _normalised(_expected_stream(direct, caller_wants_usage))


EMBEDDING_CASES = {
    "floats": {"input": ["one two", "three"]},
    "base64-dimensions": {"input": "x y", "encoding_format": "base64", "dimensions": 4},
    "token-ids": {"input": [[5, 6, 7]], "encoding_format": "float"},
}


@pytest.mark.parametrize("case", EMBEDDING_CASES)
def test_relayed_embeddings_are_the_providers_bytes(gateway: Any, fake_azure: FakeAzureOpenAI, case: str) -> None:
    body = {"model": "embed-only"} | EMBEDDING_CASES[case]
    direct = httpx.post(
        f"{fake_azure.url}/openai/deployments/dep-a/embeddings",
        params={"api-version": "2024-10-21"},
        json=body | {"model": "dep-a"},
        headers={"api-key": UPSTREAM_KEYS["dep-a"]},
    )
    direct.raise_for_status()
    relayed = httpx.post(f"{gateway.url}/v1/embeddings", json=body, timeout=30)
    assert relayed.status_code == 200, relayed.text
    assert relayed.headers["content-type"] == "application/json"
    upstream_model = json.dumps(EMBEDDING_MODEL).encode()
    assert upstream_model in direct.content
    assert relayed.content == direct.content.replace(upstream_model, b'"embed-only"')


# A provider error event mid-stream: what a caller of the relay notices.


class _Copied(httpx.SyncByteStream):
    """A response body that appends each piece it yields to `copy`."""

    def __init__(self, stream: httpx.SyncByteStream, copy: bytearray) -> None:
        self.stream = stream
        self.copy = copy

    def __iter__(self) -> Any:
        for chunk in self.stream:
            self.copy += chunk
            yield chunk

    def close(self) -> None:
        self.stream.close()


class _Recording(httpx.HTTPTransport):
    """An SDK client's transport, keeping a copy of every response byte the client read."""

    def __init__(self) -> None:
        super().__init__()
        self.received = bytearray()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        assert isinstance(response.stream, httpx.SyncByteStream)
        response.stream = _Copied(response.stream, self.received)
        return response


def _events(raw: bytes) -> list[tuple[str | None, Any]]:
    """The (event name, data) of each whole SSE event in `raw`."""
    events = []
    for block in raw.decode().split("\n\n")[:-1]:
        fields = dict(line.split(": ", 1) for line in block.split("\n"))
        data = fields["data"]
        events.append((fields.get("event"), data if data == "[DONE]" else json.loads(data)))
    return events


def _failing_stream(
    gateway: Any, fake_azure: FakeAzureOpenAI, request_id: str, held: bool = True
) -> tuple[list[Any], openai.APIError, bytes]:
    """A streamed chat with the official SDK to a deployment that sends two text chunks, then an error
    event (`held`: released once the caller has the text; else in the same write as the text): the
    chunks, the SDK's error, the bytes it read."""
    release = fake_azure.hold_error_event() if held else threading.Event()
    recording = _Recording()
    chunks = []
    with (
        openai.OpenAI(
            base_url=f"{gateway.url}/v1",
            api_key="unused-locally",
            max_retries=0,
            timeout=30,
            default_headers={"x-request-id": request_id},
            http_client=httpx.Client(transport=recording),
        ) as client,
        pytest.raises(openai.APIError) as caught,
    ):
        stream = client.chat.completions.create(
            model="midstream-error-event", messages=[{"role": "user", "content": "hello there gateway"}], stream=True
        )
        for chunk in stream:
            chunks.append(chunk)
            if len(chunks) == 3:  # the role chunk and both text chunks
                release.set()
    return chunks, caught.value, bytes(recording.received)


@pytest.mark.parametrize("held", [True, False], ids=["read-apart", "read-together"])
def test_an_error_event_mid_stream_ends_the_callers_stream_with_an_openai_error(
    gateway: Any, fake_azure: FakeAzureOpenAI, held: bool
) -> None:
    # Read together, the text chunks still reach the caller before the error: what a caller gets
    # does not depend on how the provider's bytes were split into reads.
    chunks, error, received = _failing_stream(gateway, fake_azure, f"relay-error-event-{held}", held)
    assert "".join(chunk.choices[0].delta.content or "" for chunk in chunks) == "echo: hello "
    assert type(error) is openai.APIError  # an error event, not a broken connection (a subclass)
    assert (error.type, error.code) == ("api_error", "upstream_error")
    assert "midstream-error-event" in error.message
    for secret in (fake_azure.url, *UPSTREAM_KEYS.values()):
        assert secret not in error.message
        assert secret.encode() not in received
    events = _events(received)
    assert [name for name, _ in events[:4]] == [None, None, None, "error"]
    for name, data in events[:4]:
        if name == "error":
            assert_conforms("ErrorResponse", data, "the error event")
            assert data["error"] == error.body
        else:
            assert_conforms("CreateChatCompletionStreamResponse", data, "a chunk")
            assert data["model"] == "midstream-error-event"


def test_a_stream_ended_by_an_error_event_is_recorded_as_failed(gateway: Any, fake_azure: FakeAzureOpenAI) -> None:
    _failing_stream(gateway, fake_azure, "relay-error-event-usage")
    record = gateway.usage_record("relay-error-event-usage")
    assert (record["model"], record["status"], record["stream"]) == ("midstream-error-event", 502, True)


def test_a_deployment_whose_streams_keep_failing_midway_cools_down_and_its_fallback_answers(
    fake_azure: FakeAzureOpenAI, tmp_path: Path
) -> None:
    catalog = write_catalog(
        tmp_path / "models.json",
        [
            azure_entry("flaky", "midstream-error-event", fake_azure.url, fallbacks=["steady"]),
            azure_entry("steady", "dep-b", fake_azure.url),
        ],
    )
    gateway = GatewayProcess(gateway_env(MODELS_FILE=str(catalog)), tmp_path / "gateway.log").start()
    body = {"model": "flaky", "messages": MESSAGES, "stream": True}

    def stream() -> tuple[str, bool]:
        with httpx.stream("POST", f"{gateway.url}/v1/chat/completions", json=body, timeout=30) as response:
            assert response.status_code == 200
            return response.headers["x-gateway-model"], b"event: error" in response.read()

    try:
        # A stream that started is not answered again by the fallback: the caller has its text, then
        # the error. Three such streams in a row open the deployment's breaker.
        assert [stream() for _ in range(BREAKER_THRESHOLD)] == [("flaky", True)] * BREAKER_THRESHOLD
        assert fake_azure.requests_for("dep-b") == []
        assert stream() == ("steady", False)
    finally:
        gateway.stop()
    assert len(fake_azure.requests_for("midstream-error-event")) == BREAKER_THRESHOLD
    assert len(fake_azure.requests_for("dep-b")) == 1


_GATEWAY_CALLS = """
import asyncio, json, sys
from pathlib import Path

import httpx

from shared.localhost import local_app


async def main():
    app = local_app(Path.cwd())
    body = {"model": "chat-a", "messages": [{"role": "user", "content": "hi"}]}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as client:
        plain = await client.post("/v1/chat/completions", json=body)
        streamed = await client.post("/v1/chat/completions", json=body | {"stream": True})
        embedded = await client.post("/v1/embeddings", json={"model": "chat-a", "input": ["a b", "c"]})
    await asyncio.sleep(0.5)  # an import started in the background would show by now
    print(json.dumps([plain.status_code, streamed.status_code, streamed.text.count("data: "),
                      embedded.status_code, len(embedded.json()["data"]),
                      [name for name in ("litellm", "openai") if name in sys.modules]]))


asyncio.run(main())
"""


def test_a_gateway_whose_catalog_is_azure_chat_and_embeddings_never_imports_litellm(
    fake_azure: FakeAzureOpenAI, tmp_path: Path
) -> None:
    entry = azure_entry("chat-a", "dep-a", fake_azure.url, operations=["ChatCompletion", "embeddings"])
    catalog = write_catalog(tmp_path / "models.json", [entry])
    env = GatewayProcess(gateway_env(MODELS_FILE=str(catalog)), tmp_path / "gateway.log").env
    command = [sys.executable, "-c", _GATEWAY_CALLS]
    result = subprocess.run(command, cwd=PROJECT_DIR, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    plain, streamed, chunks, embedded, vectors, loaded = json.loads(result.stdout.splitlines()[-1])
    assert (plain, streamed, embedded) == (200, 200, 200)
    assert chunks > 2
    assert vectors == 2
    assert loaded == []
