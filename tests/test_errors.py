"""Every error a caller can get: OpenAI's shape, the right status, a request id."""

import json

import httpx
import openai
import pytest

from tests.conftest import UPSTREAM_KEYS
from tests.openapi import assert_conforms
from tests.support import WEATHER_TOOLS

USER = [{"role": "user", "content": "hello"}]


def post(gateway, body, **kwargs):
    return httpx.post(f"{gateway.url}/v1/chat/completions", timeout=30, **({"json": body} | kwargs))


def assert_openai_error(response, status, error_type, code=None):
    assert response.status_code == status
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == error_type
    assert error["code"] == code
    assert response.headers["x-request-id"]
    return error


def test_upstream_429_is_passed_on_with_its_retry_after(client):
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model="rate-limited", messages=USER)
    assert caught.value.status_code == 429
    assert caught.value.response.headers["retry-after"] == "7"
    assert caught.value.body["type"] == "rate_limit_error"


def test_upstream_500_is_a_502(gateway):
    error = assert_openai_error(
        post(gateway, {"model": "broken", "messages": USER}), 502, "api_error", "upstream_error"
    )
    assert "broken" in error["message"]


def test_an_unreachable_upstream_is_a_502(gateway):
    assert_openai_error(post(gateway, {"model": "unreachable", "messages": USER}), 502, "api_error", "upstream_error")


def test_a_slow_upstream_is_a_504_at_the_models_timeout(gateway):
    response = post(gateway, {"model": "slow", "messages": USER})
    assert_openai_error(response, 504, "api_error", "timeout")
    assert response.elapsed.total_seconds() < 4


def test_a_content_filter_rejection_keeps_its_status_and_message(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="filtered", messages=USER)
    assert "filter" in caught.value.message.lower()


FILTERED_CALLS = {
    "relayed chat": lambda client: client.chat.completions.create(model="filtered", messages=USER),
    "relayed chat stream": lambda client: client.chat.completions.create(model="filtered", messages=USER, stream=True),
    "LiteLLM chat": lambda client: client.chat.completions.create(model="filtered-litellm", messages=USER),
    "LiteLLM responses": lambda client: client.responses.create(model="filtered-litellm", input="hello"),
    "LiteLLM images": lambda client: client.images.generate(model="filtered-litellm", prompt="hello"),
}


@pytest.mark.parametrize("call", FILTERED_CALLS.values(), ids=FILTERED_CALLS.keys())
def test_a_content_filter_refusal_keeps_azures_param_code_and_innererror(client, call):
    with pytest.raises(openai.BadRequestError) as caught:
        call(client)
    body = caught.value.body
    assert (body["param"], body["code"], body["type"]) == ("prompt", "content_filter", "invalid_request_error")
    assert body["message"].startswith("The response was filtered due to the prompt")
    assert body["innererror"]["code"] == "ResponsibleAIPolicyViolation"
    assert body["innererror"]["content_filter_result"]["hate"] == {"filtered": True, "severity": "high"}
    assert_conforms("ErrorResponse", caught.value.response.json())


def test_an_upstream_error_body_never_carries_the_deployments_secret_or_address():
    from shared.providers.azure_relay import _status_error
    from shared.providers.mapper import AzureDeployment

    secret, endpoint = "key-in-the-body-5e1f", "https://private-resource.openai.azure.com"
    deployment = AzureDeployment(endpoint, "dep", "2024-10-21", {"api-key": secret}, 30.0, 5.0, secret)
    raw = json.dumps(
        {
            "error": {
                "message": f"bad key {secret} for {endpoint}/openai/deployments/dep",
                "code": "BadRequest",
                "param": "messages",
                "innererror": {"code": "Detail", "detail": [f"{endpoint} {secret}"]},
            }
        }
    ).encode()
    body = _status_error(400, raw, {}, "chat", deployment).body()
    assert body["error"]["param"] == "messages" and body["error"]["innererror"]["code"] == "Detail"
    text = json.dumps(body)
    assert secret not in text and endpoint not in text


def test_a_misconfigured_model_is_a_500_naming_the_reference_with_a_request_id(gateway):
    response = post(gateway, {"model": "misconfigured", "messages": USER}, headers={"x-request-id": "req-123"})
    error = assert_openai_error(response, 500, "api_error", "configuration_error")
    assert "$NOT_SET_ANYWHERE" in error["message"]
    assert response.headers["x-request-id"] == "req-123"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": USER}, "model"),
        ({"model": 3, "messages": USER}, "model"),
        ({"model": "chat-a"}, "messages"),
        ({"model": "chat-a", "messages": []}, "messages"),
        ({"model": "chat-a", "messages": ["hi"]}, "messages[0]"),
        ({"model": "chat-a", "messages": USER, "stream": "yes"}, "stream"),
        ({"model": "chat-a", "messages": USER, "n": "two"}, "n"),
    ],
)
def test_invalid_fields_are_a_400_naming_the_field(gateway, body, param):
    error = assert_openai_error(post(gateway, body), 400, "invalid_request_error")
    assert error["param"] == param
    assert param.split("[")[0] in error["message"]


FLAT_TOOL = {"type": "function", "name": "lookup_weather", "parameters": {"type": "object"}, "strict": False}


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        (
            "chat/completions",
            {"model": "chat-a", "messages": USER, "tools": [{"type": "function"}]},
            "tools[0].function",
        ),
        ("chat/completions", {"model": "chat-a", "messages": USER, "tools": [FLAT_TOOL]}, "tools[0].function"),
        (
            "chat/completions",
            {"model": "chat-a", "messages": USER, "tools": [*WEATHER_TOOLS, {"type": "function", "function": {}}]},
            "tools[1].function.name",
        ),
        ("chat/completions", {"model": "chat-a", "messages": USER, "tools": ["lookup_weather"]}, "tools[0]"),
        ("responses", {"model": "responses-model", "input": "hi", "tools": [{"type": "function"}]}, "tools[0].name"),
        ("responses", {"model": "responses-model", "input": "hi", "tools": WEATHER_TOOLS}, "tools[0].name"),
        (
            "responses",
            {"model": "responses-model", "input": "hi", "tools": [FLAT_TOOL | {"parameters": "none"}]},
            "tools[0].parameters",
        ),
    ],
)
def test_a_tool_without_its_function_or_name_is_a_400_naming_the_field(gateway, fake_azure, path, body, param):
    response = httpx.post(f"{gateway.url}/v1/{path}", json=body, timeout=30)
    error = assert_openai_error(response, 400, "invalid_request_error")
    assert error["param"] == param
    assert fake_azure.requests == []  # never relayed, so never a provider failure for the breaker


def test_a_responses_function_tool_in_its_flat_shape_is_passed_on(client, fake_azure):
    client.responses.create(model="responses-model", input="hi", tools=[FLAT_TOOL])
    (upstream,) = fake_azure.requests
    assert upstream.json["tools"][0]["name"] == "lookup_weather"


@pytest.mark.parametrize("raw", [b"", b"{not json", b"[1, 2]", b"\xff\xfe"])
def test_a_body_that_is_not_a_json_object_is_a_400(gateway, raw):
    response = httpx.post(f"{gateway.url}/v1/chat/completions", content=raw)
    assert_openai_error(response, 400, "invalid_request_error")


def test_a_body_over_the_limit_is_a_413(gateway):
    huge = b'{"model": "chat-a", "messages": [], "pad": "' + b"x" * 26_300_000 + b'"}'
    response = httpx.post(f"{gateway.url}/v1/chat/completions", content=huge, timeout=30)
    assert_openai_error(response, 413, "invalid_request_error", "request_too_large")


def test_every_response_carries_a_request_id_and_echoes_the_callers(gateway):
    assert httpx.get(f"{gateway.url}/health").headers["x-request-id"]
    echoed = httpx.get(f"{gateway.url}/v1/models", headers={"x-request-id": "abc-42"})
    assert echoed.headers["x-request-id"] == "abc-42"
    generated = post(gateway, {"model": "chat-a", "messages": USER}).headers["x-request-id"]
    assert generated and generated != "abc-42"


def test_an_error_mid_stream_ends_the_stream_with_an_error_event(client, gateway):
    stream = client.chat.completions.create(model="midstream-error", messages=USER, stream=True)
    received = []
    with pytest.raises(openai.APIError):
        for chunk in stream:
            received.append(chunk)
    assert received  # the stream had started

    with httpx.stream(
        "POST",
        f"{gateway.url}/v1/chat/completions",
        json={"model": "midstream-error", "messages": USER, "stream": True},
    ) as response:
        assert response.status_code == 200
        lines = [line for line in response.iter_lines() if line]
    assert "event: error" in lines
    assert lines[-1] == "data: [DONE]"


def test_a_stream_that_fails_before_its_first_chunk_is_a_plain_http_error(client, fake_azure):
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model="rate-limited", messages=USER, stream=True)
    assert "exceeded token rate limit" in caught.value.message  # the provider's answer, not a local one
    assert [request.json["stream"] for request in fake_azure.requests_for("rate-limited")] == [True]


def test_errors_never_echo_upstream_secrets(gateway):
    for model in ("broken", "filtered", "rate-limited", "unreachable"):
        text = post(gateway, {"model": model, "messages": USER}).text
        for key in UPSTREAM_KEYS.values():
            assert key not in text


DEEP = b'{"model": "chat-a", "messages": ' + b"[" * 5000 + b"]" * 5000 + b"}"


@pytest.mark.parametrize(
    ("path", "raw", "param"),
    [
        ("chat/completions", DEEP, None),
        (
            "chat/completions",
            b'{"model": "chat-a", "messages": [{"role": "user", "content": "x"}], "temperature": NaN}',
            None,
        ),
        (
            "chat/completions",
            b'{"model": "chat-a", "messages": [{"role": "user", "content": "x"}], "top_p": 1e400}',
            None,
        ),
        (
            "chat/completions",
            b'{"model": "chat-a", "messages": [{"role": "user", "content": "\\ud800"}]}',
            "messages[0].content",
        ),
        ("chat/completions", b'{"model": "\\udcff", "messages": [{"role": "user", "content": "x"}]}', "model"),
        (
            "chat/completions",
            b'{"model": "chat-a", "messages": [{"role": "user", "content": 123}]}',
            "messages[0].content",
        ),
        (
            "chat/completions",
            b'{"model": "chat-a", "messages": [{"role": "wizard", "content": "x"}]}',
            "messages[0].role",
        ),
        (
            "chat/completions",
            b'{"model": "chat-a", "messages": [{"role": "user", "content": [{"type": "video"}]}]}',
            "messages[0].content[0].type",
        ),
        (
            "chat/completions",
            b'{"model": "chat-a", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "file:///etc/passwd"}}]}]}',
            "messages[0].content[0].image_url.url",
        ),
        (
            "chat/completions",
            b'{"model": "chat-a", "messages": [{"role": "tool", "content": "x"}]}',
            "messages[0].tool_call_id",
        ),
        (
            "chat/completions",
            b'{"model": "chat-a", "messages": [{"role": "user", "content": "x"}],'
            b' "response_format": {"type": "json_schema", "json_schema": null}}',
            "response_format.json_schema",
        ),
        (
            "chat/completions",
            b'{"model": "chat-a", "messages": [{"role": "user", "content": "x"}], "response_format": {"type": "yaml"}}',
            "response_format",
        ),
        ("chat/completions", b'{"model": "chat-a", "messages": [{"role": "user", "content": "x"}], "n": 0}', "n"),
        ("chat/completions", b'{"model": "chat-a", "messages": [{"role": "user", "content": "x"}], "n": 100000}', "n"),
        (
            "chat/completions",
            b'{"model": "chat-a", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0}',
            "max_tokens",
        ),
        (
            "chat/completions",
            b'{"model": "chat-a", "messages": [{"role": "user", "content": "x"}], "temperature": 3}',
            "temperature",
        ),
        (
            "chat/completions",
            b'{"model": "chat-a", "messages": [{"role": "user", "content": "x"}], "stop": ["a", "b", "c", "d", "e"]}',
            "stop",
        ),
        ("embeddings", b'{"model": "embed-only", "input": "x", "dimensions": 100000000}', "dimensions"),
        ("embeddings", b'{"model": "embed-only", "input": "x", "dimensions": 0}', "dimensions"),
        ("images/generations", b'{"model": "image-model", "prompt": "x", "n": 1000}', "n"),
        ("audio/speech", b'{"model": "tts-model", "input": "x", "voice": "alloy", "speed": 100}', "speed"),
        ("responses", b'{"model": "responses-model", "input": [1, 2]}', "input[0]"),
    ],
)
def test_bad_input_is_a_400_naming_the_field_never_a_5xx(gateway, fake_azure, path, raw, param):
    response = httpx.post(
        f"{gateway.url}/v1/{path}", content=raw, headers={"content-type": "application/json"}, timeout=30
    )
    error = assert_openai_error(response, 400, "invalid_request_error")
    assert error["param"] == param
    assert fake_azure.requests == []  # nothing reached the provider


@pytest.mark.parametrize(
    "query", ["end=0001-01-01", "start=9999-12-31T23:59:59-14:00", "start=2026-02-01&end=2026-01-01", "end=soon"]
)
def test_bad_usage_dates_are_a_400(gateway, query):
    assert_openai_error(httpx.get(f"{gateway.url}/v1/usage?{query}"), 400, "invalid_request_error")


def test_unknown_routes_and_methods_are_openai_errors_and_never_redirects(gateway):
    wrong_method = httpx.get(f"{gateway.url}/v1/chat/completions")
    assert_openai_error(wrong_method, 405, "invalid_request_error", "method_not_allowed")
    assert wrong_method.headers["allow"] == "POST"
    assert_openai_error(
        httpx.delete(f"{gateway.url}/v1/models/chat-a"), 405, "invalid_request_error", "method_not_allowed"
    )
    for method, path in [
        ("POST", "/v1/nothing-here"),
        ("GET", "/v1/models/"),
        ("POST", "/v1/chat/completions/"),
        ("GET", "/"),
    ]:
        response = httpx.request(method, f"{gateway.url}{path}", json={})
        assert_openai_error(response, 404, "invalid_request_error", "not_found")
