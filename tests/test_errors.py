"""Every error a caller can get: OpenAI's shape, the right status, a request id."""

import httpx
import openai
import pytest

from tests.conftest import UPSTREAM_KEYS

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
    error = assert_openai_error(post(gateway, {"model": "broken", "messages": USER}), 502, "api_error", "upstream_error")
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
        "POST", f"{gateway.url}/v1/chat/completions",
        json={"model": "midstream-error", "messages": USER, "stream": True},
    ) as response:
        assert response.status_code == 200
        lines = [line for line in response.iter_lines() if line]
    assert "event: error" in lines
    assert lines[-1] == "data: [DONE]"


def test_a_stream_that_fails_before_its_first_chunk_is_a_plain_http_error(client):
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="rate-limited", messages=USER, stream=True)


def test_errors_never_echo_upstream_secrets(gateway):
    for model in ("broken", "filtered", "rate-limited", "unreachable"):
        text = post(gateway, {"model": model, "messages": USER}).text
        for key in UPSTREAM_KEYS.values():
            assert key not in text
