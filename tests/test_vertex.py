"""Google Vertex AI models through the gateway: every family, real google-auth.

Service-account JSON documents with freshly generated RSA keys point their
`token_uri` at a fake Google OAuth server, so google-auth signs real JWTs and
LiteLLM makes real calls to the fake Vertex AI server.
"""

import asyncio
import base64
import json

import httpx
import openai
import pytest

from tests.conftest import ACCOUNT_ONE, ACCOUNT_TWO, FAMILIES, PNG_DATA_URL, assert_sent_the_image
from tests.openapi import assert_conforms
from tests.support import WEATHER_TOOLS

USER = [{"role": "user", "content": "hello there"}]
TOOLS = WEATHER_TOOLS


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_chat_plain_for_every_family(vertex_client, google, family):
    completion = vertex_client.chat.completions.create(model=family, messages=USER, max_tokens=100)
    assert completion.choices[0].message.content == "echo: hello there"
    assert completion.model == family
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (2, 3)
    (upstream,) = google[1].requests
    assert upstream.extra["account"] == ACCOUNT_ONE


def test_a_relayed_azure_model_falls_back_to_a_vertex_model(vertex_client, google, fake_azure):
    completion = vertex_client.chat.completions.create(model="azure-to-gemini", messages=USER)
    assert completion.model == "gemini"
    assert completion.choices[0].message.content == "echo: hello there"
    chunks = list(
        vertex_client.chat.completions.create(
            model="azure-to-gemini", messages=USER, stream=True, stream_options={"include_usage": True}
        )
    )
    assert {chunk.model for chunk in chunks} == {"gemini"}
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "echo: hello there"
    assert chunks[-1].usage.completion_tokens == 3
    assert [request.extra["deployment"] for request in fake_azure.requests] == ["broken", "broken"]
    assert len(google[1].requests) == 2


@pytest.mark.parametrize("family", ["gemini", "claude", "llama", "mistral", "qwen"])
def test_chat_streaming_with_usage_for_families(vertex_client, family):
    chunks = list(
        vertex_client.chat.completions.create(
            model=family, messages=USER, max_tokens=100, stream=True, stream_options={"include_usage": True}
        )
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text == "echo: hello there"
    usage = [chunk.usage for chunk in chunks if chunk.usage]
    assert usage and usage[-1].total_tokens == 5


@pytest.mark.parametrize("family", ["gemini", "claude"])
def test_tool_calling(vertex_client, family):
    completion = vertex_client.chat.completions.create(model=family, messages=USER, tools=TOOLS, max_tokens=100)
    call = completion.choices[0].message.tool_calls[0]
    assert call.function.name == "lookup_weather"
    assert json.loads(call.function.arguments) == {"echo": "hello there"}


@pytest.mark.parametrize("family", ["gemini", "claude"])
def test_image_parts_reach_the_model(vertex_client, google, family):
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "describe"},
                {"type": "image_url", "image_url": {"url": PNG_DATA_URL}},
            ],
        }
    ]
    completion = vertex_client.chat.completions.create(model=family, messages=messages, max_tokens=20)
    assert completion.usage.prompt_tokens == 2  # one text word + one image part
    assert_sent_the_image(google[1].requests[0].json, family)


def test_gemini_embeddings(vertex_client, google):
    result = vertex_client.embeddings.create(
        model="gemini-embed", input="embed these words", dimensions=4, encoding_format="float"
    )
    assert len(result.data[0].embedding) == 4
    assert result.usage.prompt_tokens == 3
    assert google[1].requests[0].extra["method"] == "predict"
    # The SDK's default asks for base64, which LiteLLM refuses for Vertex: the gateway encodes it.
    default = vertex_client.embeddings.create(model="gemini-embed", input="embed these words", dimensions=4)
    assert default.data[0].embedding == pytest.approx(result.data[0].embedding)


def test_imagen_with_the_models_own_account_and_no_secret_in_the_body(vertex_client, google, vertex_gateway):
    images = vertex_client.images.generate(model="imagen", prompt="a red fox", n=2, size="1792x1024")
    assert len(images.data) == 2
    assert base64.b64decode(images.data[0].b64_json).startswith(b"\x89PNG")
    (upstream,) = google[1].requests
    assert upstream.extra["account"] == ACCOUNT_TWO
    assert upstream.json == {
        "instances": [{"prompt": "a red fox"}],
        "parameters": {"sampleCount": 2, "aspectRatio": "16:9"},
    }


def test_no_credential_ever_reaches_an_upstream_body(vertex_client, google, vertex_gateway):
    vertex_client.chat.completions.create(model="claude", messages=USER, max_tokens=50)
    vertex_client.chat.completions.create(model="llama", messages=USER)
    vertex_client.images.generate(model="imagen", prompt="a fox")
    vertex_client.embeddings.create(model="gemini-embed", input="x")
    assert google[1].requests
    secrets = [account["private_key"] for account in vertex_gateway.accounts.values()]
    secrets += [line for secret in secrets for line in secret.splitlines()[1:3]]
    for request in google[1].requests:
        body = request.body.decode()
        assert "private_key" not in body and "vertex_credentials" not in body and "client_email" not in body
        assert not any(secret in body for secret in secrets)


def test_tokens_are_reused_across_calls(vertex_client, google):
    oauth = google[0]
    before = dict(oauth.tokens_issued)
    for _ in range(5):
        vertex_client.chat.completions.create(model="gemini", messages=USER)
        vertex_client.chat.completions.create(model="claude", messages=USER, max_tokens=10)
        vertex_client.images.generate(model="imagen", prompt="x")
    assert oauth.tokens_issued.get(ACCOUNT_ONE, 0) - before.get(ACCOUNT_ONE, 0) <= 2
    assert oauth.tokens_issued.get(ACCOUNT_TWO, 0) - before.get(ACCOUNT_TWO, 0) <= 1


def test_concurrent_calls_carry_their_own_accounts_token(vertex_gateway, google):
    google[1].clear()
    vertex_client = openai.AsyncOpenAI(base_url=f"{vertex_gateway.url}/v1", api_key="local", max_retries=0)

    async def scenario():
        return await asyncio.gather(
            *(
                vertex_client.chat.completions.create(model=model, messages=[{"role": "user", "content": f"call {i}"}])
                for i in range(50)
                for model in ("gemini", "gemini-two")
            )
        )

    assert len(asyncio.run(scenario())) == 100
    expected = {"gemini-2.0-flash": ACCOUNT_ONE, "gemini-2.5-flash": ACCOUNT_TWO}
    for code, account in expected.items():
        seen = google[1].requests_for(code)
        assert len(seen) == 50 and {request.extra["account"] for request in seen} == {account}


@pytest.mark.parametrize(
    ("model", "status", "error_type"),
    [
        ("gemini-rate-limited", 429, "rate_limit_error"),
        ("gemini-invalid", 400, "invalid_request_error"),
        ("gemini-forbidden", 502, "api_error"),
        ("gemini-broken", 502, "api_error"),
        ("imagen-rate-limited", 429, "rate_limit_error"),
    ],
)
def test_vertex_errors_map_to_the_openai_table(vertex_gateway, model, status, error_type):
    path = "/v1/images/generations" if model.startswith("imagen") else "/v1/chat/completions"
    body = {"model": model, "prompt": "x"} if model.startswith("imagen") else {"model": model, "messages": USER}
    response = httpx.post(vertex_gateway.url + path, json=body, timeout=30)
    assert response.status_code == status, response.text
    assert response.json()["error"]["type"] == error_type


def test_a_streaming_rate_limit_is_a_429(vertex_client):
    with pytest.raises(openai.RateLimitError):
        vertex_client.chat.completions.create(model="gemini-rate-limited", messages=USER, stream=True)


def test_a_safety_block_is_not_a_server_error(vertex_gateway):
    response = httpx.post(
        f"{vertex_gateway.url}/v1/chat/completions", json={"model": "gemini-blocked", "messages": USER}
    )
    assert response.status_code < 500, response.text


def test_a_malformed_service_account_names_the_reference_never_the_secret(vertex_gateway):
    response = httpx.post(f"{vertex_gateway.url}/v1/chat/completions", json={"model": "bad-secret", "messages": USER})
    assert response.status_code == 500
    message = response.json()["error"]["message"]
    assert "$NOT_A_SERVICE_ACCOUNT" in message and "bad-secret" in message
    assert "not-json-but-secret-ish" not in message + vertex_gateway.log()


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_a_refusal_carries_the_providers_own_message(vertex_gateway, stream):
    body = {"model": "gemini-invalid", "messages": USER, "stream": stream}
    response = httpx.post(f"{vertex_gateway.url}/v1/chat/completions", json=body, timeout=30)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["message"] == "Request contains an invalid argument."


@pytest.mark.parametrize("family", ["gemini", "claude"])
def test_the_callers_parameters_reach_the_model(vertex_client, google, family):
    messages = [{"role": "system", "content": "be brief"}, *USER]
    vertex_client.chat.completions.create(
        model=family, messages=messages, max_tokens=40, temperature=0.25, stop=["END"]
    )
    (upstream,) = google[1].requests
    sent = upstream.json
    if family == "gemini":
        config = sent["generationConfig"]
        assert (config["max_output_tokens"], config["temperature"], config["stop_sequences"]) == (40, 0.25, ["END"])
        # LiteLLM's map says gemini-2.0-flash on Vertex takes no system instruction: it leads the user's turn.
        assert sent["contents"][0]["parts"][0] == {"text": "be brief"}
    else:
        assert (sent["max_tokens"], sent["temperature"], sent["stop_sequences"]) == (40, 0.25, ["END"])
        assert sent["system"] == [{"type": "text", "text": "be brief"}]


@pytest.mark.parametrize("family", ["gemini", "claude"])
def test_a_parameter_vertex_does_not_take_is_refused_by_name(vertex_gateway, family):
    body = {"model": family, "messages": USER, "logit_bias": {"1": 2}}
    response = httpx.post(f"{vertex_gateway.url}/v1/chat/completions", json=body, timeout=30)
    assert response.status_code == 400, response.text
    assert "logit_bias" in response.json()["error"]["message"]


def answered(gateway, body):
    """The text and the finish reason of a chat completion, whole or streamed."""
    response = httpx.post(f"{gateway.url}/v1/chat/completions", json=body, timeout=30)
    assert response.status_code == 200, response.text
    if not body.get("stream"):
        choice = response.json()["choices"][0]
        return choice["message"]["content"], choice["finish_reason"]
    chunks = [json.loads(line[6:]) for line in response.text.splitlines() if line.startswith("data: {")]
    text = "".join(chunk["choices"][0]["delta"].get("content") or "" for chunk in chunks if chunk["choices"])
    return text, [chunk["choices"][0]["finish_reason"] for chunk in chunks if chunk["choices"]][-1]


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_a_long_decode_is_continued_to_its_end(vertex_gateway, google, stream):
    google[1].clear()
    body = {"model": "gemini-long-decode", "messages": USER, "max_tokens": 100, "stream": stream}
    assert answered(vertex_gateway, body) == ("echo: hello there", "stop")
    first, hop = google[1].requests
    assert "continuationToken" not in first.json and hop.json["continuationToken"] == "hop-2"


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_a_replayed_thought_signature_gemini_refuses_is_sent_again_as_the_placeholder(vertex_gateway, google, stream):
    google[1].clear()
    call_id = "call_1__thought__" + base64.b64encode(b"minted-elsewhere").decode()
    messages = [
        *USER,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": call_id, "type": "function", "function": {"name": "lookup_weather", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": call_id, "content": "sunny"},
    ]
    body = {"model": "gemini-signature-check", "messages": messages, "tools": TOOLS, "stream": stream}
    assert answered(vertex_gateway, body) == ("echo: sunny", "stop")
    refused, accepted = google[1].requests
    signatures = [
        [part.get("thoughtSignature") for content in request.json["contents"] for part in content["parts"]]
        for request in (refused, accepted)
    ]
    assert base64.b64encode(b"minted-elsewhere").decode() in signatures[0]
    assert base64.b64encode(b"skip_thought_signature_validator").decode() in signatures[1]


def test_a_stream_cut_across_reads_mid_line_and_mid_character_comes_out_whole(vertex_client):
    words = "héllo wörld ✓ 𝄞 là"
    chunks = list(
        vertex_client.chat.completions.create(
            model="gemini-trickle",
            messages=[{"role": "user", "content": words}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    for position, chunk in enumerate(chunks):
        assert_conforms("CreateChatCompletionStreamResponse", chunk.model_dump(exclude_unset=True), f"chunk {position}")
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == f"echo: {words}"
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert chunks[-1].usage.completion_tokens == len(words.split()) + 1


def test_the_chunks_before_an_error_mid_stream_reach_the_caller_before_it(vertex_client):
    stream = vertex_client.chat.completions.create(model="gemini-midstream-error", messages=USER, stream=True)
    received = []
    with pytest.raises(openai.APIError) as raised:
        for chunk in stream:
            received.append(chunk)
    assert "".join(c.choices[0].delta.content or "" for c in received) == "echo: hello "
    assert raised.value.body["type"] == "rate_limit_error"
    assert "Resource exhausted" in raised.value.message
