"""The legacy `/v1/completions` (catalog operation `Completion`): Azure OpenAI
instruct deployments and every Vertex family, whole and streamed, metered,
on the `/v1`, Azure deployment and Azure v1 paths."""

from __future__ import annotations

import json

import httpx
import openai
import pytest
from openai.types import Completion

from tests.conftest import ACCOUNT_ONE, API_VERSION, FAMILIES, UPSTREAM_KEYS
from tests.openapi import assert_conforms

PROMPT = "hello there"


def sse_chunks(response: httpx.Response) -> list[dict]:
    lines = [line.removeprefix("data: ") for line in response.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    return [json.loads(line) for line in lines[:-1]]


def test_a_completion_from_an_azure_instruct_deployment(client, gateway, fake_azure):
    completion = client.completions.create(model="instruct", prompt=PROMPT, max_tokens=5, suffix="!", echo=False)

    Completion.model_validate(completion.to_dict())
    assert completion.choices[0].text == "echo: hello there"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == "instruct" and completion.object == "text_completion"
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (2, 3)
    (upstream,) = fake_azure.requests
    assert upstream.path == "/openai/deployments/dep-b/completions"
    assert upstream.query["api-version"] == API_VERSION
    assert upstream.headers["api-key"] == UPSTREAM_KEYS["dep-b"]
    assert (upstream.json["prompt"], upstream.json["max_tokens"], upstream.json["suffix"]) == (PROMPT, 5, "!")
    assert UPSTREAM_KEYS["dep-b"] not in upstream.body.decode() and UPSTREAM_KEYS["dep-b"] not in gateway.log()


def test_the_raw_body_and_chunks_conform_to_openais_schema(gateway):
    url = f"{gateway.url}/v1/completions"
    plain = httpx.post(url, json={"model": "instruct", "prompt": PROMPT}, timeout=30)
    assert plain.status_code == 200, plain.text
    assert_conforms("CreateCompletionResponse", plain.json())
    body = {"model": "instruct", "prompt": PROMPT, "stream": True, "stream_options": {"include_usage": True}}
    with httpx.stream("POST", url, json=body, timeout=30) as streamed:
        assert streamed.headers["content-type"].startswith("text/event-stream")
        chunks = sse_chunks(streamed)
    for chunk in chunks:
        assert_conforms("CreateCompletionResponse", chunk)
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] == 5


def test_a_streamed_completion_with_and_without_usage(client, gateway, fake_azure):
    chunks = list(
        client.completions.create(model="instruct", prompt=PROMPT, stream=True, stream_options={"include_usage": True})
    )
    assert "".join(chunk.choices[0].text for chunk in chunks if chunk.choices) == "echo: hello there"
    assert chunks[-1].usage.completion_tokens == 3
    assert len({chunk.id for chunk in chunks}) == 1 and {chunk.model for chunk in chunks} == {"instruct"}
    finishes = [chunk.choices[0].finish_reason for chunk in chunks if chunk.choices]
    assert finishes[-1] == "stop" and set(finishes[:-1]) == {None}

    quiet = gateway.client("local", "legacy-stream-no-usage")
    chunks = list(quiet.completions.create(model="instruct", prompt=PROMPT, stream=True))
    assert chunks and all(chunk.usage is None for chunk in chunks)
    assert fake_azure.requests[-1].json["stream_options"] == {"include_usage": True}  # the gateway meters it
    record = gateway.usage_record("legacy-stream-no-usage")
    assert (record["operation"], record["stream"], record["status"]) == ("Completion", True, 200)
    assert (record["prompt_tokens"], record["completion_tokens"]) == (2, 3)


def test_a_whole_completion_is_metered(gateway):
    gateway.client("local", "legacy-whole").completions.create(model="instruct", prompt="one two three")
    record = gateway.usage_record("legacy-whole")
    assert (record["model"], record["operation"], record["stream"]) == ("instruct", "Completion", False)
    assert (record["prompt_tokens"], record["completion_tokens"], record["total_tokens"]) == (3, 4, 7)
    assert record["cost"] == pytest.approx((3 * 0.0025 + 4 * 0.01) / 1000)


def test_the_azure_deployment_and_v1_paths(gateway, fake_azure):
    azure = openai.AzureOpenAI(azure_endpoint=gateway.url, api_version="2024-10-21", api_key="k", max_retries=0)
    completion = azure.completions.create(model="instruct", prompt=PROMPT)
    assert completion.choices[0].text == "echo: hello there" and completion.model == "instruct"
    streamed = list(azure.completions.create(model="instruct", prompt=PROMPT, stream=True))
    assert "".join(chunk.choices[0].text for chunk in streamed if chunk.choices) == "echo: hello there"

    v1 = openai.OpenAI(base_url=f"{gateway.url}/openai/v1", api_key="k", max_retries=0)
    assert v1.completions.create(model="instruct", prompt=PROMPT).choices[0].text == "echo: hello there"
    assert [request.path for request in fake_azure.requests] == ["/openai/deployments/dep-b/completions"] * 3


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "instruct"}, "prompt"),
        ({"model": "instruct", "prompt": []}, "prompt"),
        ({"model": "instruct", "prompt": [1, "a"]}, "prompt"),
        ({"model": "instruct", "prompt": "x", "logprobs": 6}, "logprobs"),
        ({"model": "instruct", "prompt": "x", "stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"model": "instruct", "prompt": "x", "stream": "yes"}, "stream"),
        ({"model": "instruct", "prompt": "x", "max_tokens": 0}, "max_tokens"),
        ({"model": "instruct", "prompt": "x", "echo": "no"}, "echo"),
        ({"prompt": "x"}, "model"),
    ],
)
def test_malformed_completions_are_a_400_naming_the_field(gateway, fake_azure, body, param):
    response = httpx.post(f"{gateway.url}/v1/completions", json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param
    assert fake_azure.requests == []


def test_the_catalog_operation_is_enforced_both_ways(gateway, fake_azure):
    refused = httpx.post(f"{gateway.url}/v1/completions", json={"model": "chat-a", "prompt": "x"})
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "unsupported_operation"
    assert "Completion" in refused.json()["error"]["message"]
    chat = httpx.post(
        f"{gateway.url}/v1/chat/completions", json={"model": "instruct", "messages": [{"role": "user", "content": "x"}]}
    )
    assert chat.status_code == 400 and chat.json()["error"]["code"] == "unsupported_operation"
    assert fake_azure.requests == []


def test_a_provider_rate_limit_is_passed_on(client, fake_azure):
    with pytest.raises(openai.RateLimitError) as caught:
        client.completions.create(model="rate-limited-everything", prompt="x")
    assert caught.value.response.headers["retry-after"] == "7"
    assert "exceeded token rate limit" in caught.value.message
    assert fake_azure.requests_for("rate-limited")[0].path == "/openai/deployments/rate-limited/completions"


# Vertex AI: LiteLLM sends the prompt as a chat turn and answers a text completion


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_a_completion_from_every_vertex_family(vertex_client, google, family):
    completion = vertex_client.completions.create(model=family, prompt=PROMPT, max_tokens=100)
    assert_conforms("CreateCompletionResponse", completion.to_dict())
    assert completion.choices[0].text == "echo: hello there"
    assert completion.model == family
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (2, 3)
    (upstream,) = google[1].requests
    assert (upstream.extra["account"], upstream.extra["project"]) == (ACCOUNT_ONE, "proj-one")


@pytest.mark.parametrize("family", ["gemini", "claude", "llama", "mistral"])
def test_a_streamed_completion_from_vertex(vertex_client, vertex_gateway, family):
    url = f"{vertex_gateway.url}/v1/completions"
    body = {"model": family, "prompt": PROMPT, "max_tokens": 100, "stream": True}
    with httpx.stream("POST", url, json=body | {"stream_options": {"include_usage": True}}, timeout=60) as streamed:
        assert streamed.status_code == 200, streamed.read()
        chunks = sse_chunks(streamed)
    for chunk in chunks:
        assert_conforms("CreateCompletionResponse", chunk)
    assert "".join(chunk["choices"][0]["text"] for chunk in chunks if chunk["choices"]) == "echo: hello there"
    assert chunks[-1]["usage"]["total_tokens"] == 5
    assert {chunk["model"] for chunk in chunks} == {family}


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"prompt": ["one", "two"]}, "prompt"),
        ({"prompt": [1, 2, 3]}, "prompt"),
        ({"suffix": "!"}, "suffix"),
        ({"echo": True}, "echo"),
        ({"best_of": 2}, "best_of"),
        ({"logprobs": 2}, "logprobs"),
    ],
)
def test_vertex_takes_one_prompt_and_what_a_chat_has(vertex_gateway, google, extra, param):
    google[1].clear()
    for stream in (False, True):
        body = {"model": "gemini", "prompt": PROMPT, "stream": stream} | extra
        response = httpx.post(f"{vertex_gateway.url}/v1/completions", json=body)
        assert response.status_code == 400, response.text
        assert response.json()["error"]["param"] == param
    assert google[1].requests == []


def test_an_azure_completion_falls_back_to_vertex(vertex_client, fake_azure):
    completion = vertex_client.completions.create(model="azure-instruct-to-gemini", prompt=PROMPT)
    assert completion.model == "gemini" and completion.choices[0].text == "echo: hello there"
    assert [request.path for request in fake_azure.requests] == ["/openai/deployments/broken/completions"]
